"""Values of the pandas evaluator and the rules that bring two of them to one type.

Shared by the evaluator (:mod:`chanbatch.engine.pandas_eval`) and the function kernels
(:mod:`chanbatch.engine.pandas_functions`), which see the evaluator only through
:class:`Evaluator`, so that neither module imports the other's internals.
"""

from __future__ import annotations

import datetime as dt
import decimal as dt_decimal
import operator
from collections.abc import Callable
from typing import Any, Protocol

import pandas as pd
from pandas.api import types as ptypes

from chanbatch.blueprint.expr import ExprEvalError
from chanbatch.blueprint.nodes import Expr
from chanbatch.engine.decimals import decimal_narrowing

Value = Any  # a pandas Series, or a Python scalar from a literal (None is null)

ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
    "**": operator.pow,
}


class Evaluator(Protocol):
    """What a function kernel may ask of the evaluator running it."""

    frame: pd.DataFrame
    index: pd.Index
    strict: bool

    def eval(self, node: Expr) -> Value:
        """The value of a sub-expression."""
        ...

    def series(self, value: Value) -> pd.Series:
        """A value broadcast to the frame's length."""
        ...

    def boolean(self, value: Value, node: Expr) -> pd.Series:
        """A value as a nullable boolean Series."""
        ...

    def compare_pair(self, op: str, left: Value, right: Value, node: Expr) -> pd.Series:
        """``left op right`` with SQL's nulls, as a comparison in the language computes it."""
        ...


def as_boolean(raw: pd.Series, nulls: Any) -> pd.Series:
    """``raw`` as pandas' nullable boolean, null where ``raw`` or ``nulls`` is.

    Built straight from numpy buffers: ``astype("boolean")`` on an Arrow-backed result goes
    through Python objects, which made a date comparison cost thirty times the comparison.
    """
    missing = raw.isna().to_numpy(dtype=bool)
    if isinstance(nulls, pd.Series):
        missing = missing | nulls.to_numpy(dtype=bool)
    values = raw.to_numpy(dtype=bool, na_value=False)
    return pd.Series(pd.arrays.BooleanArray(values, missing), index=raw.index)


def null_mask(value: Value) -> Any:
    return value.isna() if isinstance(value, pd.Series) else False


def value_kind(value: Value) -> str:
    if isinstance(value, pd.Series):
        return f"{value.dtype} column"
    return type(value).__name__


def as_float(value: Value) -> Value:
    if isinstance(value, pd.Series):
        if ptypes.is_numeric_dtype(value.dtype) and not ptypes.is_bool_dtype(value.dtype):
            return value.astype("float64")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def has_decimal(*values: Value) -> bool:
    return any(
        isinstance(v, pd.Series)
        and isinstance(v.dtype, pd.ArrowDtype)
        and str(v.dtype.pyarrow_dtype).startswith("decimal")
        for v in values
    )


def _decimal_type(value: Value) -> Any:
    """The decimal type ``value`` takes in decimal arithmetic: its own, decimal(19, 0) for an
    integer, None for anything else (a float: the arithmetic is in floats)."""
    import pyarrow as pa

    if has_decimal(value):
        return value.dtype.pyarrow_dtype
    if is_integer(value):
        return pa.decimal128(19, 0)
    return None


def decimal_arith(op: str, left: Value, right: Value) -> pd.Series | None:
    """``left op right`` with decimals whose exact result type would need more than 38 digits
    (Arrow refuses those): the operands are narrowed so that it fits, and the result is
    decimal(38, s), as DuckDB types it; a value too large for that is an error. None when the
    plain operation fits, or an operand is a float."""
    kinds = [_decimal_type(v) for v in (left, right)]
    if None in kinds:
        return None
    narrowing = decimal_narrowing(op, *kinds)
    if narrowing is None:
        return None
    *targets, result_type = narrowing
    narrowed = [_as_decimal(v, t) for v, t in zip((left, right), targets, strict=True)]
    return ARITH[op](*narrowed).astype(pd.ArrowDtype(result_type))


def _as_decimal(value: Value, target: Any) -> Value:
    if isinstance(value, pd.Series):
        return value.astype(pd.ArrowDtype(target))  # a value that does not fit raises
    return value


def exact_mod(left: Value, right: Value) -> bool:
    """Both sides are ints or decimals whose unscaled values at the larger scale fit an int64."""
    if not all(has_decimal(v) or is_integer(v) for v in (left, right)):
        return False
    kinds = [v.dtype.pyarrow_dtype for v in (left, right) if has_decimal(v)]
    scale = max(k.scale for k in kinds)
    return all(k.precision - k.scale + scale <= 18 for k in kinds)


def decimal_mod(left: Value, right: Value) -> pd.Series:
    """``left % right`` with a decimal, exactly: both as integers of the larger scale, Python's
    floor modulo (the divisor's sign; null for a zero divisor), back to a decimal of that
    scale and the larger precision, as SQL types it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kinds = [v.dtype.pyarrow_dtype for v in (left, right) if has_decimal(v)]
    scale = max(k.scale for k in kinds)
    precision = max(k.precision for k in kinds)

    def scaled(value: Value) -> Value:
        if not isinstance(value, pd.Series):
            return int(value) * 10**scale
        array = pa.array(value.array)
        if pa.types.is_decimal(array.type):
            wide = array.cast(pa.decimal128(18, scale))
            whole = pc.multiply(wide, pa.scalar(10**scale, pa.int64())).cast(pa.int64())
        else:
            whole = pc.multiply(array.cast(pa.int64()), pa.scalar(10**scale, pa.int64()))
        return pd.Series(pd.array(whole, dtype="Int64"), index=value.index)

    a, b = scaled(left), scaled(right)
    if isinstance(b, pd.Series):
        b = b.mask(b == 0)
    elif b == 0:
        b = pd.NA
    remainder = pa.array((a % b).astype("Int64").array, type=pa.int64())
    target = pa.decimal128(precision, scale)
    unit = pa.scalar(dt_decimal.Decimal(1).scaleb(-scale), pa.decimal128(scale + 1, scale))
    out = pc.multiply(remainder.cast(pa.decimal128(19, 0)), unit).cast(target)
    return pd.Series(out, dtype=pd.ArrowDtype(target), index=left.index)


def is_integer(value: Value) -> bool:
    if isinstance(value, pd.Series):
        dtype = value.dtype
        return ptypes.is_integer_dtype(dtype) and not isinstance(dtype, pd.ArrowDtype)
    return isinstance(value, int) and not isinstance(value, bool)


def nullable_int(value: Value) -> Value:
    """An integer Series as pandas' nullable Int64 (an int literal stays a scalar)."""
    return value.astype("Int64") if isinstance(value, pd.Series) else value


def common_type(values: list[Value]) -> list[Value]:
    """Values that will be mixed row by row (``if_else``, ``coalesce``) in one type that holds
    nulls, so that the result's type follows the arguments' types and never their data: ints
    stay ints (nullable Int64), an int and a float give floats, bools stay nullable booleans.
    """
    kinds = {_number_kind(v) for v in values if v is not None}
    if kinds == {"int"}:
        return [nullable_int(v) for v in values]
    if kinds <= {"int", "float"} and "float" in kinds:
        return [as_float(v) for v in values]
    if kinds == {"bool"}:
        return [v.astype("boolean") if isinstance(v, pd.Series) else v for v in values]
    return values


def _number_kind(value: Value) -> str:
    if isinstance(value, pd.Series):
        dtype = value.dtype
        if isinstance(dtype, pd.ArrowDtype):
            return "other"
        if ptypes.is_bool_dtype(dtype):
            return "bool"
        if ptypes.is_integer_dtype(dtype):
            return "int"
        if ptypes.is_float_dtype(dtype):
            return "float"
        return "other"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "other"


def align_temporal(value: Value, other: Value) -> Value:
    """Read a string literal as a date or timestamp when it is compared with one.

    ``ts > '2013-06-01'`` should compare times, not fail on a str; the literal takes the
    column's time zone, as snapshots store timestamps in UTC.
    """
    if not isinstance(value, str) or not isinstance(other, pd.Series):
        return value
    dtype = other.dtype
    try:
        if isinstance(dtype, pd.ArrowDtype) and str(dtype.pyarrow_dtype).startswith("date"):
            return dt.date.fromisoformat(value)
        if ptypes.is_datetime64_any_dtype(dtype):
            stamp = pd.Timestamp(value)
            zone = getattr(dtype, "tz", None)
            if zone is not None and stamp.tzinfo is None:
                stamp = stamp.tz_localize(zone)
            return stamp
    except ValueError as exc:
        raise ExprEvalError(f"cannot read {value!r} as a {dtype} value") from exc
    return value
