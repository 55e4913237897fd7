"""The allowlisted functions, implemented on pandas Series (see ``functions.FUNCTIONS``).

Every function takes the evaluator and the call node and returns a Series or, for null input,
None. Nulls in give nulls out, except for ``is_null``/``not_null`` and ``coalesce``. Failures
from pandas or pyarrow are turned into one ExprEvalError that names the call, here and only here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.api import types as ptypes

from chanbatch.blueprint.expr import ExprEvalError
from chanbatch.blueprint.functions import CAST_TYPES, FUNCTIONS
from chanbatch.blueprint.nodes import Call, constant
from chanbatch.engine.pandas_values import Evaluator, common_type

Implementation = Callable[[Evaluator, Call], Any]

#: What pandas, numpy and pyarrow raise when data does not fit an operation; each is turned
#: into an ExprEvalError naming the sub-expression that failed.
DATA_ERRORS: tuple[type[Exception], ...] = (
    TypeError,
    ValueError,
    AttributeError,
    NotImplementedError,
    OverflowError,
    ZeroDivisionError,
    pa.ArrowException,
)
FUNCTION_IMPLEMENTATIONS: dict[str, Implementation] = {}

_DATE = pd.ArrowDtype(pa.date32())
_TRUE_WORDS = {"true": True, "t": True, "yes": True, "1": True}
_FALSE_WORDS = {"false": False, "f": False, "no": False, "0": False}


def _implements(name: str) -> Callable[[Implementation], Implementation]:
    def register(function: Implementation) -> Implementation:
        @functools.wraps(function)
        def guarded(evaluator: Evaluator, node: Call) -> Any:
            try:
                return function(evaluator, node)
            except ExprEvalError:
                raise
            except DATA_ERRORS as exc:
                raise ExprEvalError(f"cannot compute {node.render()!r}: {exc}") from exc

        FUNCTION_IMPLEMENTATIONS[name] = guarded
        return guarded

    return register


def _literal(node: Call, index: int) -> Any:
    literal = constant(node.args[index])
    assert literal is not None  # the parser only lets literals through here
    return literal.value


def _argument(evaluator: Evaluator, node: Call, index: int = 0) -> pd.Series | None:
    value = evaluator.eval(node.args[index])
    return None if value is None else evaluator.series(value)


def _is_text(series: pd.Series) -> bool:
    if ptypes.is_string_dtype(series.dtype) and series.dtype != object:
        return True
    return series.dtype == object and all(isinstance(v, str) for v in series.dropna())


def _text(evaluator: Evaluator, node: Call) -> pd.Series | None:
    series = _argument(evaluator, node)
    if series is not None and not _is_text(series):
        raise ExprEvalError(
            f"{node.name}() needs text, got {series.dtype} values in {node.render()!r}"
        )
    return series


def _numeric(evaluator: Evaluator, node: Call) -> pd.Series | None:
    series = _argument(evaluator, node)
    if series is not None and not (
        ptypes.is_numeric_dtype(series.dtype) and not ptypes.is_bool_dtype(series.dtype)
    ):
        raise ExprEvalError(
            f"{node.name}() needs numbers, got {series.dtype} values in {node.render()!r}"
        )
    return series


def _timestamps(evaluator: Evaluator, node: Call) -> pd.Series | None:
    series = _argument(evaluator, node)
    if series is None:
        return None
    dtype = series.dtype
    if ptypes.is_datetime64_any_dtype(dtype) or dtype == _DATE:
        return series
    if _is_text(series):
        return _parse_timestamps(series, node)
    raise ExprEvalError(
        f"{node.name}() needs a date or timestamp, got {dtype} values in {node.render()!r}"
    )


def _parse_timestamps(series: pd.Series, node: Call) -> pd.Series:
    parsed = pd.to_datetime(series, utc=True, format="mixed", errors="coerce")
    _refuse_unparsed(series, parsed, "a timestamp", node)
    return parsed


def _refuse_unparsed(original: pd.Series, parsed: pd.Series, what: str, node: Call) -> None:
    bad = parsed.isna() & original.notna()
    if bad.any():
        example = original[bad].iloc[0]
        raise ExprEvalError(
            f"cannot read {example!r} as {what} in {node.render()!r} ({int(bad.sum())} rows)"
        )


def _to_date(series: pd.Series) -> pd.Series:
    if series.dtype == _DATE:
        return series
    if getattr(series.dtype, "tz", None) is not None:
        # The date a reader of the timestamp would see, in the timestamp's own zone.
        series = series.dt.tz_localize(None)
    return series.astype(_DATE)


@_implements("is_null")
def _is_null(evaluator: Evaluator, node: Call) -> Any:
    return evaluator.series(evaluator.eval(node.args[0])).isna()


@_implements("not_null")
def _not_null(evaluator: Evaluator, node: Call) -> Any:
    return evaluator.series(evaluator.eval(node.args[0])).notna()


@_implements("abs")
def _abs(evaluator: Evaluator, node: Call) -> Any:
    series = _numeric(evaluator, node)
    return None if series is None else series.abs()


@_implements("round")
def _round(evaluator: Evaluator, node: Call) -> Any:
    series = _numeric(evaluator, node)
    digits = _literal(node, 1) if len(node.args) > 1 else 0
    if series is not None and _is_decimal(series):
        return _round_decimal(series, digits)
    # pandas rounds half to even (2.5 -> 2), like numpy; documented rather than emulating SQL.
    return None if series is None else series.round(digits)


def _is_decimal(series: pd.Series) -> bool:
    dtype = series.dtype
    return isinstance(dtype, pd.ArrowDtype) and pa.types.is_decimal(dtype.pyarrow_dtype)


def _round_decimal(series: pd.Series, digits: int) -> pd.Series:
    """decimal(p, s) rounded to ``digits`` places, half to even, as decimal(p, digits): one
    more integer digit than before, so the largest value rounds up without overflowing."""
    import pyarrow.compute as pc

    kind = series.dtype.pyarrow_dtype
    wide = pa.array(series.array).cast(pa.decimal128(min(kind.precision + 1, 38), kind.scale))
    rounded = pc.round(wide, ndigits=digits, round_mode="half_to_even")
    target = pa.decimal128(kind.precision, max(0, min(digits, kind.scale)))
    return pd.Series(rounded.cast(target), dtype=pd.ArrowDtype(target), index=series.index)


@_implements("lower")
def _lower(evaluator: Evaluator, node: Call) -> Any:
    series = _text(evaluator, node)
    return None if series is None else series.str.lower()


@_implements("upper")
def _upper(evaluator: Evaluator, node: Call) -> Any:
    series = _text(evaluator, node)
    return None if series is None else series.str.upper()


@_implements("length")
def _length(evaluator: Evaluator, node: Call) -> Any:
    series = _text(evaluator, node)
    return None if series is None else series.str.len().astype("Int64")


@_implements("starts_with")
def _starts_with(evaluator: Evaluator, node: Call) -> Any:
    series = _text(evaluator, node)
    if series is None:
        return None
    return series.str.startswith(_literal(node, 1)).astype("boolean").mask(series.isna())


@_implements("contains")
def _contains(evaluator: Evaluator, node: Call) -> Any:
    series = _text(evaluator, node)
    if series is None:
        return None
    found = series.str.contains(_literal(node, 1), regex=False)
    return found.astype("boolean").mask(series.isna())


def _date_part(part: str) -> Implementation:
    def extract(evaluator: Evaluator, node: Call) -> Any:
        series = _timestamps(evaluator, node)
        if series is None:
            return None
        return getattr(series.dt, part).astype("Int64")

    return extract


for _part in ("year", "month", "day", "hour"):
    _implements(_part)(_date_part(_part))


@_implements("date")
def _date(evaluator: Evaluator, node: Call) -> Any:
    series = _timestamps(evaluator, node)
    return None if series is None else _to_date(series)


@_implements("year_month")
def _year_month(evaluator: Evaluator, node: Call) -> Any:
    """The month as text, "2013-01" (a slice key that sorts as time does)."""
    series = _timestamps(evaluator, node)
    if series is None:
        return None
    years, months = series.dt.year.astype("Int64"), series.dt.month.astype("Int64")
    text = years.astype("string").str.zfill(4) + "-" + months.astype("string").str.zfill(2)
    return text.astype("str")


@_implements("coalesce")
def _coalesce(evaluator: Evaluator, node: Call) -> Any:

    result = None
    for value in common_type([evaluator.eval(argument) for argument in node.args]):
        if value is None:
            continue
        result = value if result is None else result.where(result.notna(), value)
        if not isinstance(result, pd.Series):
            break  # a non-null literal: nothing after it can be reached
    return result


@_implements("if_else")
def _if_else(evaluator: Evaluator, node: Call) -> Any:
    condition_node, then_node, otherwise_node = node.args
    # A null condition takes the 'otherwise' branch, as SQL's CASE WHEN does.
    condition = evaluator.boolean(evaluator.eval(condition_node), condition_node)
    condition = condition.fillna(False).astype(bool)

    then, otherwise = common_type([evaluator.eval(then_node), evaluator.eval(otherwise_node)])
    if then is None and otherwise is None:
        return None
    if then is None:
        return evaluator.series(otherwise).where(~condition)
    if otherwise is None:
        return evaluator.series(then).where(condition)
    return evaluator.series(then).where(condition, otherwise)


@_implements("between")
def _between(evaluator: Evaluator, node: Call) -> Any:
    value, low, high = (evaluator.eval(argument) for argument in node.args)
    above = evaluator.compare_pair(">=", value, low, node)
    below = evaluator.compare_pair("<=", value, high, node)
    return above & below


@_implements("cast")
def _cast(evaluator: Evaluator, node: Call) -> Any:
    series = _argument(evaluator, node)
    if series is None:
        return None
    target = _literal(node, 1)
    return CAST_KERNELS[target](series, node)


def _numbers(series: pd.Series, node: Call) -> pd.Series:
    if ptypes.is_bool_dtype(series.dtype):
        return series.astype("Int64")
    if ptypes.is_numeric_dtype(series.dtype):
        return series
    if _is_text(series):
        parsed = pd.to_numeric(series.str.strip(), errors="coerce")
        _refuse_unparsed(series, parsed, "a number", node)
        return parsed
    raise ExprEvalError(f"cannot cast {series.dtype} values to a number in {node.render()!r}")


def _cast_int(series: pd.Series, node: Call) -> pd.Series:
    if _is_decimal(series):  # toward zero, exactly (no detour through floats)
        import pyarrow.compute as pc

        whole = pc.trunc(pa.array(series.array)).cast(pa.int64())
        return pd.Series(pd.array(whole, dtype="Int64"), index=series.index)
    numbers = _numbers(series, node)
    if ptypes.is_float_dtype(numbers.dtype):
        if np.isinf(numbers.astype("float64")).any():
            raise ExprEvalError(f"cannot cast an infinite value to int in {node.render()!r}")
        # Toward zero, as C, Java and Spark do; Int64 keeps the nulls.
        numbers = np.trunc(numbers)
    return numbers.astype("Int64")


def _cast_float(series: pd.Series, node: Call) -> pd.Series:
    return _numbers(series, node).astype("float64")


def _cast_str(series: pd.Series, node: Call) -> pd.Series:
    dtype = series.dtype
    if ptypes.is_datetime64_any_dtype(dtype) and dtype != _DATE:
        return _timestamp_text(series)
    return series.astype("str")


def _timestamp_text(series: pd.Series) -> pd.Series:
    """Timestamps in Python's text form, as docs/blueprints.md gives it:
    ``2013-01-01 05:00:00+00:00``, with ``.123000`` only when there are microseconds."""
    text = series.dt.strftime("%Y-%m-%d %H:%M:%S").astype("str")
    micro = series.dt.microsecond
    fraction = ("." + micro.astype("Int64").astype("str").str.zfill(6)).where(micro != 0, "")
    zone = getattr(series.dtype, "tz", None)
    suffix = "+00:00" if zone is not None else ""
    return (text + fraction.fillna("") + suffix).where(series.notna())


def _cast_bool(series: pd.Series, node: Call) -> pd.Series:
    if ptypes.is_bool_dtype(series.dtype):
        return series.astype("boolean")
    if ptypes.is_numeric_dtype(series.dtype):
        return (series != 0).astype("boolean").mask(series.isna())
    if _is_text(series):
        words = {**_TRUE_WORDS, **_FALSE_WORDS}
        parsed = series.str.strip().str.lower().map(words)
        _refuse_unparsed(series, parsed, "true or false", node)
        return parsed.astype("boolean")
    raise ExprEvalError(f"cannot cast {series.dtype} values to bool in {node.render()!r}")


def _cast_date(series: pd.Series, node: Call) -> pd.Series:
    return _to_date(_cast_timestamp(series, node)) if series.dtype != _DATE else series


def _cast_timestamp(series: pd.Series, node: Call) -> pd.Series:
    dtype = series.dtype
    if dtype == _DATE:  # midnight UTC of each date (pandas counts an Arrow date as datetime64)
        stamps = pa.array(series.array).cast(pa.timestamp("us")).cast(pa.timestamp("us", "UTC"))
        return pd.Series(stamps.to_pandas(), index=series.index)
    if ptypes.is_datetime64_any_dtype(dtype):
        zone = getattr(dtype, "tz", None)
        return series.dt.tz_localize("UTC") if zone is None else series.dt.tz_convert("UTC")
    if _is_text(series):
        return _parse_timestamps(series, node)
    raise ExprEvalError(f"cannot cast {dtype} values to timestamp in {node.render()!r}")


CAST_KERNELS: dict[str, Callable[[pd.Series, Call], pd.Series]] = {
    "int": _cast_int,
    "float": _cast_float,
    "str": _cast_str,
    "bool": _cast_bool,
    "date": _cast_date,
    "timestamp": _cast_timestamp,
}


# every function, and every cast target, has its pandas kernel
if set(FUNCTION_IMPLEMENTATIONS) != set(FUNCTIONS) or set(CAST_KERNELS) != set(CAST_TYPES):
    raise RuntimeError("the pandas kernels and the registry (blueprint.functions) differ")
