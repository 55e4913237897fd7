"""The expression language on Arrow arrays: the covered subset, exactly as pandas computes it.

:mod:`chanbatch.engine.pandas_eval` is the definition of what an expression means. The evaluator
here computes the subset it covers with ``pyarrow.compute`` kernels, which release the GIL, and
raises :class:`Unsupported` for anything else (a type, an operator or a function without an
Arrow kernel, or an error from pyarrow), so that the caller hands the rows to pandas. Which
functions have an Arrow kernel is stated in :data:`chanbatch.blueprint.functions.FUNCTIONS`
(``arrow=True``) and checked against :data:`ARROW_FUNCTIONS` by a test.

pandas treats NaN as null: comparisons, ``in`` and ``is_null`` here test for NaN as well.

Decimals (``decimal128``, which pandas holds as Arrow-backed ``pd.ArrowDtype``) are covered where
pandas itself computes with one ``pyarrow.compute`` call: a comparison with a decimal, an int or
a float (Arrow's kernel brings both sides to one type, for pandas as here), ``+ - *`` with a
decimal or an int (pandas' checked kernels, narrowed to 38 digits as
:func:`chanbatch.engine.pandas_values.decimal_arith` narrows them: see
:func:`decimal_narrowing`), and negation. The same kernels on the same Arrow arrays give the
same values, types and errors; any other mix with a decimal is left to pandas. Where every
operand and every result is certain to fit an int64, ``+ - *`` are computed on the decimals'
unscaled integers instead (:func:`_int64_arith`): the same values of the kernel's type, without
its 128-bit arithmetic.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from functools import reduce
from typing import TYPE_CHECKING, Any, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from chanbatch.blueprint.expr import ExprEvalError
from chanbatch.blueprint.functions import FUNCTIONS
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
from chanbatch.engine.arrow_numpy import KnownDecimals
from chanbatch.engine.decimals import decimal_narrowing

if TYPE_CHECKING:
    from chanbatch.blueprint.nodes import Scalar

_INT64_RANGE = range(-(2**63), 2**63)
_EXACT_FLOAT = 2**53  # ints beyond this do not all survive a round trip through float64


class Unsupported(Exception):
    """The Arrow path does not cover this stage on this data; the pandas path decides."""


Array: TypeAlias = pa.ChunkedArray | pa.Array
Value = Any  # an Array, or a Python scalar: int, float, str, bool or datetime.date


def nan_to_null(values: Array) -> Array:
    nan = pc.is_nan(values)
    if not pc.any(nan).as_py():
        return values
    return pc.if_else(nan, pa.scalar(None, values.type), values)


def is_array(value: Value) -> bool:
    return isinstance(value, pa.ChunkedArray | pa.Array)


def value_kind(value: Value) -> str:
    """The evaluator's kind of a value: int, float, decimal, str, date or bool; Unsupported
    otherwise."""
    if is_array(value):
        t = value.type
        if t == pa.int64():
            return "int"
        if t == pa.float64():
            return "float"
        if pa.types.is_decimal128(t):
            return "decimal"
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return "str"
        if t == pa.date32():
            return "date"
        if t == pa.bool_():
            return "bool"
        raise Unsupported(f"column type {t}")
    kind = type(value)
    if kind is bool:
        return "bool"
    if kind is int:
        if value not in _INT64_RANGE:
            raise Unsupported("an int beyond int64")
        return "int"
    if kind is float:
        return "float"
    if kind is str:
        return "str"
    if kind is dt.date:
        return "date"
    raise Unsupported(f"a {kind.__name__} value")


def _as_float(value: Value) -> Value:
    if is_array(value):
        return value.cast(pa.float64(), safe=False) if value.type == pa.int64() else value
    return float(value)


def _boxed_number(value: Value) -> Any:
    """A number as pandas hands it to a comparison kernel: int64 or double scalars."""
    if is_array(value):
        return value
    return pa.scalar(value, pa.float64() if type(value) is float else pa.int64())


def _nulls(value: Value) -> Array | None:
    """Where ``value`` is null for pandas (null or NaN), or None if it cannot be."""
    if not is_array(value):
        return None
    if value.type == pa.float64():
        return pc.is_null(value, nan_is_null=True)
    return pc.is_null(value) if value.null_count else None


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "==": pc.equal,
    "!=": pc.not_equal,
    "<": pc.less,
    "<=": pc.less_equal,
    ">": pc.greater,
    ">=": pc.greater_equal,
}
_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": pc.add,
    "-": pc.subtract,
    "*": pc.multiply,
    "/": pc.divide,
}
#: the kernels pandas calls for arithmetic on Arrow-backed columns (decimals here)
_CHECKED: dict[str, Callable[[Any, Any], Any]] = {
    "+": pc.add_checked,
    "-": pc.subtract_checked,
    "*": pc.multiply_checked,
}


def _decimal_type(value: Value) -> pa.Decimal128Type:
    """A decimal's own type; an int column or literal counts as decimal(19, 0), as in pandas."""
    if is_array(value) and pa.types.is_decimal128(value.type):
        return value.type
    return pa.decimal128(19, 0)


def _boxed(value: Value) -> Any:
    """An operand as pandas hands it to a kernel: an int literal is an int64 scalar."""
    return value if is_array(value) else pa.scalar(value, pa.int64())


def _decimal_arith(op: str, left: Value, right: Value, known: KnownDecimals | None = None) -> Array:
    """``left op right`` for ``+ - *`` with a decimal and a decimal or an int, as pandas'
    ``_arith`` computes it: :func:`decimal_narrowing`'s casts where the exact type would be too
    wide, then the checked kernel pandas calls; a value that does not fit raises, as there."""
    try:
        narrowing = decimal_narrowing(op, _decimal_type(left), _decimal_type(right))
    except ValueError as exc:  # no decimal type holds the operand (pandas raises the same)
        raise Unsupported(str(exc)) from exc
    fast = _int64_arith(op, left, right, narrowing, known or KnownDecimals())
    if fast is not None:
        return fast
    if narrowing is None:
        return _CHECKED[op](_boxed(left), _boxed(right))
    first, second, result = narrowing
    # pandas casts columns only: a literal stays a scalar
    left = left.cast(first) if is_array(left) else left
    right = right.cast(second) if is_array(right) else right
    return _CHECKED[op](_boxed(left), _boxed(right)).cast(result)


def _int64_arith(
    op: str,
    left: Value,
    right: Value,
    narrowing: tuple[pa.Decimal128Type, pa.Decimal128Type, pa.Decimal128Type] | None,
    known: KnownDecimals,
) -> pa.Array | None:
    """``left op right`` as :func:`_decimal_arith` computes it, on the operands' unscaled
    integers in int64, where every one of them and every result is certain to fit (bounded by
    the largest magnitudes): the same values and type as Arrow's 128-bit checked kernel, in a
    fraction of its time. None where that is not certain (nulls, large values): the kernel
    then computes it, and raises what it raises."""
    first, second = _unscaled_operand(left, known), _unscaled_operand(right, known)
    if first is None or second is None:
        return None
    (a, scale_a, top_a), (b, scale_b, top_b) = first, second
    # the kernel on no rows: its result type, or the error it raises for these types
    empty = [_no_rows(left), _no_rows(right)]
    if narrowing is not None:
        # the casts to the narrowed types must hold every value, else the kernel raises
        for value, top, kind in ((left, top_a, narrowing[0]), (right, top_b, narrowing[1])):
            if is_array(value) and top >= 10**kind.precision:
                return None
        empty = [v.cast(t) if is_array(v) else v for v, t in zip(empty, narrowing, strict=False)]
    kind = _CHECKED[op](_boxed(empty[0]), _boxed(empty[1])).type
    if narrowing is not None:
        kind = narrowing[2]
    if op == "*":
        scale, bound = scale_a + scale_b, top_a * top_b
    else:
        scale = max(scale_a, scale_b)
        fa, fb = 10 ** (scale - scale_a), 10 ** (scale - scale_b)
        bound = top_a * fa + top_b * fb
    if kind.scale != scale or bound >= min(2**63, 10**kind.precision):
        return None
    import numpy as np

    from chanbatch.engine.arrow_numpy import decimals, pool_ints

    ints = pool_ints(len(left if is_array(left) else right))
    if op == "*":
        np.multiply(a, b, out=ints)
    else:  # a side at the larger scale as it is, the other multiplied up to it
        scaled_a = a if fa == 1 else np.multiply(a, fa, out=ints)
        (np.add if op == "+" else np.subtract)(scaled_a, b if fb == 1 else b * fb, out=ints)
    array = decimals(ints, kind)
    known.add(array, ints, bound)
    return array


def _unscaled_operand(value: Value, known: KnownDecimals) -> tuple[Any, int, int] | None:
    """A decimal (or int) operand as (its unscaled int64s, its scale, a bound of their
    magnitudes); None for nulls or values past an int64."""
    if not is_array(value):  # an int literal: decimal(19, 0)
        return value, 0, abs(value)
    if value.null_count:
        return None
    made = known.get(value)
    if made is not None:
        return made[0], value.type.scale, made[1]
    from chanbatch.engine.arrow_numpy import numbers, unscaled

    if value.type == pa.int64():
        ints = numbers(value)
        return ints, 0, max(int(ints.max()), -int(ints.min())) if len(ints) else 0
    found = unscaled(value)
    return None if found is None else (found[0], value.type.scale, found[1])


def _no_rows(value: Value) -> Value:
    return value.slice(0, 0) if is_array(value) else value


class ArrowEvaluator:
    """Evaluates the covered subset of the expression language on one table."""

    def __init__(self, table: pa.Table, known: KnownDecimals | None = None) -> None:
        self.table = table
        # decimals computed on int64s, with their int64s: kept for this evaluation only
        self.known = KnownDecimals() if known is None else known

    def eval(self, node: Expr) -> Value:
        if isinstance(node, Column):
            if node.name not in self.table.column_names:
                raise Unsupported("unknown column")
            return self.table.column(node.name)
        if isinstance(node, Literal):
            if node.value is None:
                raise Unsupported("null literal")
            return node.value
        if isinstance(node, Negate):
            return self._negate(node)
        if isinstance(node, BinOp):
            return self._binop(node)
        if isinstance(node, Compare):
            return self._compare(node)
        if isinstance(node, InList):
            return self._in_list(node)
        if isinstance(node, BoolOp):
            parts = [self._condition(o) for o in node.operands]
            return reduce(pc.and_kleene if node.op == "and" else pc.or_kleene, parts)
        if isinstance(node, Not):
            return pc.invert(self._condition(node.operand))
        if isinstance(node, Call):
            return self._call(node)
        raise Unsupported(type(node).__name__)

    def _condition(self, node: Expr) -> Array:
        value = self.eval(node)
        if not is_array(value) or value_kind(value) != "bool":
            raise Unsupported("not a boolean column")
        return value

    def _negate(self, node: Negate) -> Value:
        value = self.eval(node.operand)
        kind = value_kind(value)
        if kind == "decimal":
            return pc.negate_checked(value)  # as pandas negates an Arrow-backed column
        if kind not in ("int", "float"):
            raise Unsupported("negate")
        return pc.negate(value) if is_array(value) else -value

    def _binop(self, node: BinOp) -> Value:
        # a long flat sum is a deep left chain: walked in a loop, not by recursion
        first, links = node.chain()
        value = self.eval(first)
        for link in links:
            value = self._arith(link, value, self.eval(link.right))
        return value

    def _arith(self, node: BinOp, left: Value, right: Value) -> Value:
        kinds = (value_kind(left), value_kind(right))
        if node.op not in _ARITH or not (is_array(left) or is_array(right)):
            raise Unsupported(f"operator {node.op}")
        if node.op == "+" and kinds == ("str", "str"):
            # text + text joins them; a null on either side gives null, as in pandas and SQL
            return pc.binary_join_element_wise(_scalar(left), _scalar(right), _scalar(""))
        if "decimal" in kinds:
            if node.op not in _CHECKED or not set(kinds) <= {"decimal", "int"}:
                raise Unsupported("this arithmetic with a decimal")
            return _decimal_arith(node.op, left, right, self.known)
        if any(k not in ("int", "float") for k in kinds):
            raise Unsupported("arithmetic on a non-number")
        # numpy's promotions: int op int stays int64 (wrapping on overflow, as Arrow's unchecked
        # kernels do), anything with a float, and every true division, is float64.
        if node.op == "/" or "float" in kinds:
            left, right = _as_float(left), _as_float(right)
        return _ARITH[node.op](_scalar(left), _scalar(right))

    def _compare(self, node: Compare) -> Value:
        values = [self.eval(o) for o in node.operands]
        parts = [
            self._compare_pair(op, left, right)
            for op, left, right in zip(node.ops, values, values[1:], strict=False)
        ]
        return reduce(pc.and_kleene, parts)

    def _compare_pair(self, op: str, left: Value, right: Value) -> Array:
        if not (is_array(left) or is_array(right)):
            raise Unsupported("a comparison of constants")
        left, right = _temporal(left, right), _temporal(right, left)
        kinds = {value_kind(left), value_kind(right)}
        if "decimal" in kinds:
            # pandas calls the same kernel on the Arrow arrays (a decimal and a float compare
            # as floats, a decimal and an int exactly); NaN is masked below, as pandas does
            if not kinds <= {"decimal", "int", "float"}:
                raise Unsupported("a comparison of different kinds")
            left, right = _boxed_number(left), _boxed_number(right)
        elif kinds <= {"int", "float"}:
            if "float" in kinds:
                left, right = _as_float(left), _as_float(right)
        elif len(kinds) != 1 or (kinds == {"bool"} and op not in ("==", "!=")):
            raise Unsupported("a comparison of different kinds")
        result = _COMPARE[op](_scalar(left), _scalar(right))
        return _mask_nulls(result, [_nulls(left), _nulls(right)])

    def _in_list(self, node: InList) -> Array:
        operand = self.eval(node.operand)
        if not is_array(operand):
            raise Unsupported("in on a constant")
        values = [_member(v, operand) for v in node.values if v is not None]
        value_set = pa.array(values, type=operand.type)
        if pa.types.is_floating(operand.type):
            # is_in looks a float up by its bits, so -0.0 would miss 0.0, which == (and pandas)
            # find equal: both sides made +0.0 first (-0.0 + 0.0 is 0.0; nothing else changes)
            zero = pa.scalar(0.0, operand.type)
            operand, value_set = pc.add(operand, zero), pc.add(value_set, zero)
        found = pc.is_in(operand, value_set=value_set)
        result: Array = found
        if len(values) < len(node.values):
            # `x in [1, null]` is true for 1 and unknown otherwise: x might equal the null.
            result = pc.if_else(found, True, pa.scalar(None, pa.bool_()))
        result = _mask_nulls(result, [_nulls(operand)])
        return pc.invert(result) if node.negated else result

    def _call(self, node: Call) -> Value:
        if not node.columns():
            value = _fold(node)
            value_kind(value)  # a type this module knows, or Unsupported
            return value
        kernel = ARROW_FUNCTIONS.get(node.name)
        if kernel is None:  # the registry says so (``arrow=False``): pandas computes it
            raise Unsupported(f"function {node.name}")
        return kernel(self, node)


def _nulls_of(evaluator: ArrowEvaluator, node: Call) -> Array:
    """Where the argument is null for pandas: null or NaN."""
    value = evaluator.eval(node.args[0])
    if not is_array(value):
        raise Unsupported("is_null of a constant")
    value_kind(value)
    return pc.is_null(value, nan_is_null=True)


#: The Arrow kernel of each function that has one: exactly those with ``arrow=True`` in
#: :data:`chanbatch.blueprint.functions.FUNCTIONS` (checked below and by a test).
ARROW_FUNCTIONS: dict[str, Callable[[ArrowEvaluator, Call], Value]] = {
    "is_null": _nulls_of,
    "not_null": lambda evaluator, node: pc.invert(_nulls_of(evaluator, node)),
}


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _fold(node: Call) -> Value:
    """The value of a call on literals only, as the pandas evaluator folds it.

    ``date('1998-09-02')``, the usual way to write a date, is read here (an ISO date is the
    same day to pandas and to Python), so that a chain on Arrow does not import pandas for it;
    any other call is folded by pandas, the definition.
    """
    if node.name == "date" and len(node.args) == 1 and isinstance(node.args[0], Literal):
        text = node.args[0].value
        if isinstance(text, str) and _ISO_DATE.fullmatch(text):
            try:
                return dt.date.fromisoformat(text)
            except ValueError:
                pass  # not a day of the calendar: pandas says what is wrong
    from chanbatch.engine.pandas_eval import fold

    try:
        return fold(node)
    except ExprEvalError as exc:
        raise Unsupported(str(exc)) from exc


# A literal's Arrow type, as pyarrow infers it: given here so that no kernel call converts an
# untyped Python value (pyarrow's inference imports pandas, a third of a small run's time).
_LITERAL_TYPES: dict[type, pa.DataType] = {
    bool: pa.bool_(),
    int: pa.int64(),
    float: pa.float64(),
    str: pa.string(),
    dt.date: pa.date32(),
}


def _scalar(value: Value) -> Any:
    """A kernel argument: an array or Arrow scalar as it is, a Python literal as the Arrow
    scalar pyarrow would infer for it (an int beyond int64 is left to pyarrow's inference)."""
    if is_array(value) or isinstance(value, pa.Scalar):
        return value
    arrow_type = _LITERAL_TYPES.get(type(value))
    if arrow_type is None or (arrow_type == pa.int64() and value not in _INT64_RANGE):
        return value
    return pa.scalar(value, arrow_type)


def _temporal(value: Value, other: Value) -> Value:
    """A text literal compared with a date column is read as a date, as pandas' path does."""
    if isinstance(value, str) and is_array(other) and other.type == pa.date32():
        try:
            return dt.date.fromisoformat(value)
        except ValueError as exc:
            raise Unsupported("not a date") from exc
    return value


def _member(value: Scalar, operand: Array) -> Any:
    """A value of an ``in`` list as the operand's type; Unsupported unless it is exact."""
    kind = value_kind(operand)
    if kind == "date" and isinstance(value, str):
        return _temporal(value, operand)
    if kind == "float" and type(value) is int and abs(value) <= _EXACT_FLOAT:
        return float(value)
    if value_kind(value) == kind:
        return value
    raise Unsupported("an in-list value of another type")


def _mask_nulls(result: Array, masks: list[Array | None]) -> Array:
    present = [m for m in masks if m is not None]
    if not present:
        return result
    null = reduce(pc.or_, present)
    if not pc.any(null).as_py():
        return result
    return pc.if_else(null, pa.scalar(None, pa.bool_()), result)


if set(ARROW_FUNCTIONS) != {name for name, spec in FUNCTIONS.items() if spec.arrow}:
    raise RuntimeError("ARROW_FUNCTIONS and the registry's arrow=True functions differ")
