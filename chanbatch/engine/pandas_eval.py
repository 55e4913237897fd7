"""Evaluate an expression tree on a pandas DataFrame: vectorised, with SQL's nulls.

This is the definition of what an expression means; :mod:`chanbatch.engine.arrow_eval` computes
the subset it covers on Arrow arrays, equal to this. Function kernels are in
:mod:`chanbatch.engine.pandas_functions`, one per entry of
:data:`chanbatch.blueprint.functions.FUNCTIONS`.

Nulls (None, NaN, NA, NaT) follow SQL: arithmetic and comparisons with a null are null;
``and``/``or``/``not`` use three-valued logic; ``x in [...]`` is null for a null ``x``;
``is_null`` and ``not_null`` are never null. A filter keeps only rows whose condition is true,
so a null condition drops the row. Division by zero follows pandas (inf or NaN) unless
``strict=True``, which raises instead.
"""

from __future__ import annotations

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
from chanbatch.engine.pandas_values import (
    ARITH,
    Value,
    align_temporal,
    as_boolean,
    as_float,
    decimal_arith,
    decimal_mod,
    exact_mod,
    has_decimal,
    is_integer,
    null_mask,
    nullable_int,
    value_kind,
)
from chanbatch.errors import did_you_mean

_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


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
            return as_boolean(series, False)
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
        if node.op in ("+", "-", "*") and has_decimal(left, right):
            wide = decimal_arith(node.op, left, right)
            if wide is not None:
                return wide
        if node.op == "%" and has_decimal(left, right) and exact_mod(left, right):
            return decimal_mod(self.series(left) if not has_decimal(left) else left, right)
        if node.op == "**" or (node.op in ("/", "//", "%") and has_decimal(left, right)):
            # Powers are computed in floating point: integer powers overflow silently and
            # refuse negative exponents. A division involving a decimal gives a float, as `/`
            # always does (and DuckDB's // and % of decimals do), with inf or null for a zero.
            left, right = as_float(left), as_float(right)
        if node.op == "**":
            # numpy's nan ** 0 is 1; a null operand gives null, as in all arithmetic
            with np.errstate(all="ignore"):
                power = ARITH["**"](left, right)
            missing = null_mask(left) | null_mask(right)
            return power.mask(missing) if isinstance(missing, pd.Series) else power
        if node.op in ("//", "%") and is_integer(left) and is_integer(right):
            return self._integer_division(node.op, left, right)
        try:
            with np.errstate(all="ignore"):
                return ARITH[node.op](left, right)
        except (TypeError, ValueError) as exc:
            raise ExprEvalError(
                f"cannot compute {node.render()!r}: {value_kind(left)} {node.op} {value_kind(right)}"
            ) from exc

    def _integer_division(self, op: str, left: Value, right: Value) -> pd.Series:
        """``//`` or ``%`` of integers: an integer column, null where the divisor is zero (as
        in SQL), whatever the data; numpy would give floats (inf) on a zero divisor only."""
        left, right = nullable_int(left), nullable_int(right)
        if isinstance(right, pd.Series):
            right = right.mask(right == 0)
        elif right == 0:
            return self.series(None).astype("Int64")
        if not isinstance(left, pd.Series):
            left = self.series(left).astype("Int64")
        return ARITH[op](left, right)

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
            self.compare_pair(op, left, right, node)
            for op, left, right in zip(node.ops, values, values[1:], strict=False)
        ]
        return reduce(operator.and_, parts)

    def compare_pair(self, op: str, left: Value, right: Value, node: Expr) -> pd.Series:
        if left is None or right is None:
            return self.series(None).astype("boolean")
        left, right = align_temporal(left, right), align_temporal(right, left)
        if not isinstance(left, pd.Series) and not isinstance(right, pd.Series):
            left = self.series(left)
        try:
            raw = _COMPARE[op](left, right)
        except TypeError as exc:
            raise ExprEvalError(
                f"cannot compare {value_kind(left)} with {value_kind(right)} in {node.render()!r}"
            ) from exc
        nulls = null_mask(left) | null_mask(right)
        return as_boolean(raw, nulls)

    def _in_list(self, node: InList) -> Value:
        operand = self.series(self.eval(node.operand))
        values = [align_temporal(v, operand) for v in node.values if v is not None]
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
