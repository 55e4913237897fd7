"""Evaluate an expression tree on a pandas DataFrame: vectorised, with SQL's nulls.

This module and :mod:`chanbatch.engine.pandas_functions` are the only ones in the blueprint
package that import pandas; the package's ``__init__`` loads them on first use, so that parsing
and validating a blueprint stays free of dataframe libraries.

Nulls (None, NaN, NA, NaT) follow SQL: arithmetic and comparisons with a null are null;
``and``/``or``/``not`` use three-valued logic; ``x in [...]`` is null for a null ``x``;
``is_null`` and ``not_null`` are never null. A filter keeps only rows whose condition is true,
so a null condition drops the row. Division by zero follows pandas (inf or NaN) unless
``strict=True``, which raises instead.
"""

from __future__ import annotations

import datetime as dt
import decimal as dt_decimal
import operator
from collections.abc import Callable
from functools import reduce
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from chanbatch.blueprint.expr import ExprEvalError
from chanbatch.blueprint.nodes import (
    BinOp,
    BoolOp,
    Call,
    Column,
    Compare,
    Expr,
    InList,
    Literal,
    Negate,
    Not,
)
from chanbatch.engine.pandas_functions import DATA_ERRORS, FUNCTION_IMPLEMENTATIONS
from chanbatch.errors import did_you_mean

_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
    "**": operator.pow,
}
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}

Value = Any  # a pandas Series, or a Python scalar from a literal (None is null)


def evaluate(expr: Expr, frame: pd.DataFrame, *, strict: bool = False) -> pd.Series:
    """The value of ``expr`` on every row of ``frame``, as a Series on ``frame.index``.

    Raises ExprEvalError for a missing column, mismatched types, a value that cannot be cast,
    or (with ``strict``) a division by zero.
    """
    evaluator = _Evaluator(frame, strict=strict)
    return evaluator.series(evaluator.eval(expr))


def evaluate_mask(expr: Expr, frame: pd.DataFrame, *, strict: bool = False) -> pd.Series:
    """A plain bool Series that keeps the rows where ``expr`` is true; null counts as false.

    Raises ExprEvalError as :func:`evaluate` does, and when ``expr`` is not a condition.
    """
    evaluator = _Evaluator(frame, strict=strict)
    condition = evaluator.boolean(evaluator.eval(expr), expr)
    return condition.fillna(False).astype(bool)


class _Evaluator:
    def __init__(self, frame: pd.DataFrame, *, strict: bool) -> None:
        self.frame = frame
        self.index = frame.index
        self.strict = strict

    # -- values -------------------------------------------------------------------------

    def series(self, value: Value) -> pd.Series:
        """Broadcast a scalar to the frame's length; a null becomes a column of nulls."""
        if isinstance(value, pd.Series):
            return value
        if value is None:
            return pd.Series([None] * len(self.index), index=self.index, dtype=object)
        return pd.Series(value, index=self.index)

    def boolean(self, value: Value, node: Expr) -> pd.Series:
        """The value as a nullable boolean Series; raises if it holds anything but booleans."""
        series = self.series(value)
        if ptypes.is_bool_dtype(series.dtype):
            return _as_boolean(series, False)
        non_null = series.dropna()
        if series.dtype == object and all(isinstance(v, bool | np.bool_) for v in non_null):
            return series.astype("boolean")
        raise ExprEvalError(f"{node.render()!r} is not a condition: it has {series.dtype} values")

    def eval(self, node: Expr) -> Value:
        method = _DISPATCH.get(type(node))
        if method is None:
            raise TypeError(f"not an expression node: {node!r}")
        try:
            return method(self, node)
        except ExprEvalError:
            raise
        except DATA_ERRORS as exc:
            # The innermost node that failed names itself; its callers let that error rise.
            raise ExprEvalError(f"cannot compute {node.render()!r}: {exc}") from exc

    # -- nodes --------------------------------------------------------------------------

    def _column(self, node: Column) -> Value:
        if node.name not in self.frame.columns:
            names = [str(c) for c in self.frame.columns]
            hint = did_you_mean(node.name, names)
            raise ExprEvalError(f"unknown column {node.name!r}", hint=hint)
        return self.frame[node.name]

    def _literal(self, node: Literal) -> Value:
        return node.value

    def _negate(self, node: Negate) -> Value:
        value = self.eval(node.operand)
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value  # a negative number literal stays a scalar, cheap to broadcast
        try:
            return -self.series(value)
        except TypeError as exc:
            raise ExprEvalError(f"cannot negate {node.operand.render()!r}: {exc}") from exc

    def _binop(self, node: BinOp) -> Value:
        # ``a + b + c`` is ((a + b) + c): a long flat sum is a deep chain, walked in a loop
        first, links = node.chain()
        value = self.eval(first)
        for link in links:
            value = self._arith(link, value, self.eval(link.right))
        return value

    def _arith(self, node: BinOp, left: Value, right: Value) -> Value:
        if left is None or right is None:
            return None
        if not isinstance(left, pd.Series) and not isinstance(right, pd.Series):
            left = self.series(left)
        if self.strict and node.op in ("/", "//", "%"):
            self._check_divisor(left, right, node)
        if node.op in ("+", "-", "*") and _has_decimal(left, right):
            wide = _decimal_arith(node.op, left, right)
            if wide is not None:
                return wide
        if node.op == "%" and _has_decimal(left, right) and _exact_mod(left, right):
            return _decimal_mod(self.series(left) if not _has_decimal(left) else left, right)
        if node.op == "**" or (node.op in ("/", "//", "%") and _has_decimal(left, right)):
            # Powers are computed in floating point: integer powers overflow silently and
            # refuse negative exponents. A division involving a decimal gives a float, as `/`
            # always does (and DuckDB's // and % of decimals do), with inf or null for a zero.
            left, right = _as_float(left), _as_float(right)
        if node.op == "**":
            # numpy's nan ** 0 is 1; a null operand gives null, as in all arithmetic
            with np.errstate(all="ignore"):
                power = _ARITH["**"](left, right)
            missing = _null_mask(left) | _null_mask(right)
            return power.mask(missing) if isinstance(missing, pd.Series) else power
        if node.op in ("//", "%") and _is_integer(left) and _is_integer(right):
            return self._integer_division(node.op, left, right)
        try:
            with np.errstate(all="ignore"):
                return _ARITH[node.op](left, right)
        except (TypeError, ValueError) as exc:
            raise ExprEvalError(
                f"cannot compute {node.render()!r}: {_kind(left)} {node.op} {_kind(right)}"
            ) from exc

    def _integer_division(self, op: str, left: Value, right: Value) -> pd.Series:
        """``//`` or ``%`` of integers: an integer column, null where the divisor is zero (as
        in SQL), whatever the data; numpy would give floats (inf) on a zero divisor only."""
        left, right = _nullable_int(left), _nullable_int(right)
        if isinstance(right, pd.Series):
            right = right.mask(right == 0)
        elif right == 0:
            return self.series(None).astype("Int64")
        if not isinstance(left, pd.Series):
            left = self.series(left).astype("Int64")
        return _ARITH[op](left, right)

    def _check_divisor(self, left: Value, right: Value, node: BinOp) -> None:
        if isinstance(right, pd.Series):
            zero = (right == 0).fillna(False).astype(bool) & right.notna()
        else:
            zero = pd.Series(right == 0, index=self.index)
        if isinstance(left, pd.Series):
            zero &= left.notna()  # null / 0 is null, as in SQL, not an error
        rows = int(zero.sum())
        if rows:
            raise ExprEvalError(f"division by zero in {node.render()!r} on {rows} row(s)")

    def _compare(self, node: Compare) -> Value:
        values = [self.eval(operand) for operand in node.operands]
        parts = [
            self._compare_pair(op, left, right, node)
            for op, left, right in zip(node.ops, values, values[1:], strict=False)
        ]
        return reduce(operator.and_, parts)

    def _compare_pair(self, op: str, left: Value, right: Value, node: Expr) -> pd.Series:
        if left is None or right is None:
            return self.series(None).astype("boolean")
        left, right = _align_temporal(left, right), _align_temporal(right, left)
        if not isinstance(left, pd.Series) and not isinstance(right, pd.Series):
            left = self.series(left)
        try:
            raw = _COMPARE[op](left, right)
        except TypeError as exc:
            raise ExprEvalError(
                f"cannot compare {_kind(left)} with {_kind(right)} in {node.render()!r}"
            ) from exc
        nulls = _null_mask(left) | _null_mask(right)
        return _as_boolean(raw, nulls)

    def _in_list(self, node: InList) -> Value:
        operand = self.series(self.eval(node.operand))
        values = [_align_temporal(v, operand) for v in node.values if v is not None]
        found = operand.isin(values).astype(bool)
        result = found.astype("boolean")
        if len(values) < len(node.values):
            # `x in [1, null]` is true for 1 and unknown otherwise: x might equal the null.
            result = result.mask(~found)
        result = result.mask(operand.isna())
        return ~result if node.negated else result

    def _bool_op(self, node: BoolOp) -> Value:
        parts = [self.boolean(self.eval(operand), operand) for operand in node.operands]
        # pandas' nullable boolean implements Kleene logic: false and null is false.
        return reduce(operator.and_ if node.op == "and" else operator.or_, parts)

    def _not(self, node: Not) -> Value:
        return ~self.boolean(self.eval(node.operand), node.operand)

    def _call(self, node: Call) -> Value:
        if len(self.frame) > 1 and not node.columns():
            # A call on literals only, such as date('1998-09-02'): compute it once per process,
            # on one row, instead of on a column as long as every frame.
            return fold(node, strict=self.strict)
        return FUNCTION_IMPLEMENTATIONS[node.name](self, node)


_DISPATCH: dict[type, Callable[[_Evaluator, Any], Value]] = {
    Column: _Evaluator._column,
    Literal: _Evaluator._literal,
    Negate: _Evaluator._negate,
    BinOp: _Evaluator._binop,
    Compare: _Evaluator._compare,
    InList: _Evaluator._in_list,
    BoolOp: _Evaluator._bool_op,
    Not: _Evaluator._not,
    Call: _Evaluator._call,
}


_FOLDED: dict[tuple[Call, bool], Any] = {}


def fold(node: Call, *, strict: bool = False) -> Value:
    """The value of a call on literals only (``date('1998-09-02')``), as a Python scalar; None
    for null. Computed once per process.

    Raises ExprEvalError as :func:`evaluate` does, when the call fails on its literals.
    """
    key = (node, strict)
    if key not in _FOLDED:
        one = _Evaluator(pd.DataFrame(index=pd.RangeIndex(1)), strict=strict)
        value = FUNCTION_IMPLEMENTATIONS[node.name](one, node)
        if isinstance(value, pd.Series):
            value = value.iloc[0]
            value = None if pd.isna(value) else value
        _FOLDED[key] = value
    return _FOLDED[key]


def _as_boolean(raw: pd.Series, nulls: Any) -> pd.Series:
    """``raw`` as pandas' nullable boolean, null where ``raw`` or ``nulls`` is.

    Built straight from numpy buffers: ``astype("boolean")`` on an Arrow-backed result goes
    through Python objects, which made a date comparison cost thirty times the comparison.
    """
    missing = raw.isna().to_numpy(dtype=bool)
    if isinstance(nulls, pd.Series):
        missing = missing | nulls.to_numpy(dtype=bool)
    values = raw.to_numpy(dtype=bool, na_value=False)
    return pd.Series(pd.arrays.BooleanArray(values, missing), index=raw.index)


def _null_mask(value: Value) -> Any:
    return value.isna() if isinstance(value, pd.Series) else False


def _kind(value: Value) -> str:
    if isinstance(value, pd.Series):
        return f"{value.dtype} column"
    return type(value).__name__


def _as_float(value: Value) -> Value:
    if isinstance(value, pd.Series):
        if ptypes.is_numeric_dtype(value.dtype) and not ptypes.is_bool_dtype(value.dtype):
            return value.astype("float64")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _has_decimal(*values: Value) -> bool:
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

    if _has_decimal(value):
        return value.dtype.pyarrow_dtype
    if _is_integer(value):
        return pa.decimal128(19, 0)
    return None


def _decimal_arith(op: str, left: Value, right: Value) -> pd.Series | None:
    """``left op right`` with decimals whose exact result type would need more than 38 digits
    (Arrow refuses those): the operands are narrowed so that it fits, and the result is
    decimal(38, s), as DuckDB types it; a value too large for that is an error. None when the
    plain operation fits, or an operand is a float."""
    import pyarrow as pa

    kinds = [_decimal_type(v) for v in (left, right)]
    if None in kinds:
        return None
    (p1, s1), (p2, s2) = ((k.precision, k.scale) for k in kinds)
    if op == "*":
        scale, digits = s1 + s2, p1 + p2 + 1
        if digits <= 38:
            return None
        # p1' + p2' + 1 <= 38: narrow the wider operand first
        q2 = min(p2, max(s2 + 1, 37 - p1)) if p2 <= p1 else p2
        q1 = min(p1, 37 - q2)
        q2 = min(q2, 37 - q1)
        targets = [pa.decimal128(max(q1, s1), s1), pa.decimal128(max(q2, s2), s2)]
    else:
        scale = max(s1, s2)
        digits = max(p1 - s1, p2 - s2) + scale + 1
        if digits <= 38:
            return None
        whole = 37 - scale  # integer digits each operand may keep
        targets = [pa.decimal128(min(p, whole + s), s) for p, s in ((p1, s1), (p2, s2))]
    narrowed = [_as_decimal(v, t) for v, t in zip((left, right), targets, strict=True)]
    result = _ARITH[op](*narrowed)
    return result.astype(pd.ArrowDtype(pa.decimal128(38, scale)))


def _as_decimal(value: Value, target: Any) -> Value:
    if isinstance(value, pd.Series):
        return value.astype(pd.ArrowDtype(target))  # a value that does not fit raises
    return value


def _exact_mod(left: Value, right: Value) -> bool:
    """Both sides are ints or decimals whose unscaled values at the larger scale fit an int64."""
    if not all(_has_decimal(v) or _is_integer(v) for v in (left, right)):
        return False
    kinds = [v.dtype.pyarrow_dtype for v in (left, right) if _has_decimal(v)]
    scale = max(k.scale for k in kinds)
    return all(k.precision - k.scale + scale <= 18 for k in kinds)


def _decimal_mod(left: Value, right: Value) -> pd.Series:
    """``left % right`` with a decimal, exactly: both as integers of the larger scale, Python's
    floor modulo (the divisor's sign; null for a zero divisor), back to a decimal of that
    scale and the larger precision, as SQL types it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kinds = [v.dtype.pyarrow_dtype for v in (left, right) if _has_decimal(v)]
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


def _is_integer(value: Value) -> bool:
    if isinstance(value, pd.Series):
        dtype = value.dtype
        return ptypes.is_integer_dtype(dtype) and not isinstance(dtype, pd.ArrowDtype)
    return isinstance(value, int) and not isinstance(value, bool)


def _nullable_int(value: Value) -> Value:
    """An integer Series as pandas' nullable Int64 (an int literal stays a scalar)."""
    return value.astype("Int64") if isinstance(value, pd.Series) else value


def common_type(values: list[Value]) -> list[Value]:
    """Values that will be mixed row by row (``if_else``, ``coalesce``) in one type that holds
    nulls, so that the result's type follows the arguments' types and never their data: ints
    stay ints (nullable Int64), an int and a float give floats, bools stay nullable booleans.
    """
    kinds = {_number_kind(v) for v in values if v is not None}
    if kinds == {"int"}:
        return [_nullable_int(v) for v in values]
    if kinds <= {"int", "float"} and "float" in kinds:
        return [_as_float(v) for v in values]
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


def _align_temporal(value: Value, other: Value) -> Value:
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
