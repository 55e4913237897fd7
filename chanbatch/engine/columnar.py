"""The per-slice chain on Arrow tables: loads, filter, derive, select, rename and partials.

A cold run spends most of its time in the tasks of each slice. Run on pandas, they decode every
column into pandas, build nullable booleans and factorise group keys in Python-level code that
holds the GIL. Here the same steps run in ``pyarrow.compute``, whose kernels release it, and the
rows reach pandas only where something needs pandas: a ``map``, a join, a whole-input stage, a
combine of partials, an output.

The pandas path (:mod:`chanbatch.engine.execute`, :mod:`chanbatch.engine.pandas_eval`) stays
the definition of what a stage means. This module covers a subset of it exactly and raises
:class:`Unsupported` for anything else: a column type, a function or an operator it does not
handle, or an error from pyarrow, so that the caller converts the table to pandas and lets the
pandas path compute the result or raise its own error (naming the stage and slice). The contract, which the tests check:

- for every stage run here, ``to_pandas(result)`` equals the pandas path's result on
  ``to_pandas(input)`` as :func:`~chanbatch.snapshot.read.canonical` gives it, dtypes
  included;
- a partial computed here is the same table, to the bit, as the pandas partial written to the
  cache, so the cached result format and every key built on it are unchanged.

Pandas and Arrow disagree in three places, handled as follows. An integer column with nulls is
pandas' nullable ``Int64``, whose arithmetic matches Arrow's; a bool column with nulls is the
nullable ``boolean``: :func:`arrow_input` leaves a table with one to pandas. pandas treats NaN
as null: comparisons, ``in``,
``is_null`` and the partials' counts here test for NaN as well as null. And pandas sums a
group's values in row order (``np.bincount``): Arrow's grouped sum does too, single-threaded.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from functools import reduce
from typing import TYPE_CHECKING, Any, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from chanbatch.blueprint.expr import ExprEvalError
from chanbatch.blueprint.model import Aggregate, Derive, Filter, Rename, Select, Stage
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
from chanbatch.engine.pandas_eval import fold

if TYPE_CHECKING:
    from chanbatch.blueprint.nodes import Scalar

SEP = "\x1f"  # as in chanbatch.engine.aggregate: partial state columns are NAME<SEP>PART
_INT64_RANGE = range(-(2**63), 2**63)
_EXACT_FLOAT = 2**53  # ints beyond this do not all survive a round trip through float64


class Unsupported(Exception):
    """The Arrow path does not cover this stage on this data; the pandas path decides."""


Array: TypeAlias = pa.ChunkedArray | pa.Array
Value = Any  # an Array, or a Python scalar: int, float, str, bool or datetime.date


# -- tables in and out -------------------------------------------------------------------------


def arrow_input(table: pa.Table) -> pa.Table | None:
    """``table`` as the Arrow path works on it, or None when pandas must take it from here.

    A bool column with nulls is pandas' nullable ``boolean`` in :func:`to_pandas`, whose
    three-valued results the evaluator here does not reproduce; such a table goes to pandas.
    """
    for index, field in enumerate(table.schema):
        if pa.types.is_boolean(field.type) and table.column(index).null_count:
            return None
    return table


_STORABLE = (pa.int64(), pa.float64(), pa.string(), pa.date32(), pa.bool_())


def storable(table: pa.Table) -> pa.Table | None:
    """``table`` exactly as writing ``to_pandas(table)`` to the cache stores it, or None when
    that is not certain for one of its column types.

    ``Table.from_pandas`` stores a float NaN as null; the other types listed round-trip as
    they are.
    """
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if field.type not in _STORABLE:
            return None
        if field.type == pa.float64():
            column = _nan_to_null(column)
        columns.append(column)
    fields = [pa.field(f.name, f.type, nullable=True) for f in table.schema]
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


# -- stages --------------------------------------------------------------------------------------


def apply_rowwise(stage: Stage, table: pa.Table) -> pa.Table:
    """A filter, derive, select or rename on one slice's table; raises Unsupported otherwise."""
    op = stage.operation
    try:
        if isinstance(op, Filter):
            condition = _Evaluator(table).eval(op.expr)
            if _kind(condition) != "bool" or not _is_array(condition):
                raise Unsupported("not a boolean column")
            # A null condition drops the row, as in SQL. Column by column: Table.filter costs
            # about half as much again on slices of this size.
            if not table.num_columns:
                return table.filter(condition)
            kept = [pc.filter(column, condition) for column in table.columns]
            return pa.Table.from_arrays(kept, schema=table.schema)
        if isinstance(op, Derive):
            for name, expr in op.columns.items():
                table = _set_column(table, name, _derived(expr, table))
            return table
        if isinstance(op, Select):
            missing = set(op.columns) - set(table.column_names)
            if missing or len(set(op.columns)) != len(op.columns):
                raise Unsupported("select")
            return table.select(list(op.columns))
        if isinstance(op, Rename):
            names = [op.mapping.get(c, c) for c in table.column_names]
            if len(set(names)) != len(names):
                raise Unsupported("rename to a duplicate name")
            return table.rename_columns(names)
    except (pa.ArrowException, ArithmeticError) as exc:
        raise Unsupported(str(exc)) from exc
    raise Unsupported(type(op).__name__)


def _derived(expr: Expr, table: pa.Table) -> Array:
    if isinstance(expr, Column):  # a copy of a column, whatever its type
        if expr.name not in table.column_names:
            raise Unsupported("unknown column")
        return table.column(expr.name)
    value = _Evaluator(table).eval(expr)
    # pandas holds a comparison's result as its nullable "boolean" dtype, which an Arrow bool
    # does not convert back to; and a literal would be broadcast to a column of its own dtype.
    if not _is_array(value) or _kind(value) == "bool":
        raise Unsupported("derive of a condition or a constant")
    return value


def _set_column(table: pa.Table, name: str, values: Array) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


def partial(spec: Aggregate, table: pa.Table) -> pa.Table:
    """The partial state of ``spec`` over one slice, as :func:`aggregate.partial` gives it
    (same columns, types, values and group order); raises Unsupported where that function
    would not take its numpy path, whose sums this reproduces bit for bit.
    """
    keys = list(spec.group_by)
    rows = table.num_rows
    if not keys or len(set(keys)) != len(keys):
        raise Unsupported("a global aggregate")
    try:
        # Internal names, which no column can spell, so that none collides with the
        # aggregates' result columns (a column may well be called "count_all").
        inner = [f"{SEP}key{i}" for i in range(len(keys))]
        work: dict[str, Array] = {}
        for key, name in zip(keys, inner, strict=True):
            if key not in table.column_names or not _groupable(table.schema.field(key).type):
                raise Unsupported("group key type")
            work[name] = table.column(key)
        requests: dict[str, tuple[Any, str, Any]] = {}  # result column -> Arrow aggregate
        outputs: list[tuple[str, str]] = []  # (state column, result column)
        sources: dict[tuple[str, bool], str] = {}
        evaluator = _Evaluator(table)

        def request(src: str, func: str, options: Any, state: str) -> None:
            column = f"{src}_{func}" if src else func
            requests.setdefault(column, (src or [], func, options))
            outputs.append((state, column))

        for name, agg in spec.aggregates.items():
            if agg.func not in ("count", "sum", "mean"):
                raise Unsupported(f"aggregate {agg.func}")
            if agg.arg is None:
                request("", "count_all", None, f"{name}{SEP}n")
                continue
            as_float = agg.func == "mean"
            ident = (agg.arg.render(), as_float)
            src = sources.get(ident)
            if src is None:
                value = evaluator.eval(agg.arg)
                src = sources[ident] = f"{SEP}arg{len(sources)}"
                work[src] = _aggregated(value, as_float)
                if _is_array(value) and value.type == pa.float64():
                    # already float: mean(x) sums the very values sum(x) does
                    sources[(ident[0], not as_float)] = src
            if work[src].null_count:
                request(src, "count", pc.CountOptions(mode="only_valid"), f"{name}{SEP}n")
            else:  # no nulls: it counts every row, and one count of rows serves them all
                request("", "count_all", None, f"{name}{SEP}n")
            if agg.func in ("sum", "mean"):
                options = pc.ScalarAggregateOptions(skip_nulls=True, min_count=1)
                request(src, "sum", options, f"{name}{SEP}sum")
        names = [*keys, *(state for state, _ in outputs)]
        if not rows:  # what pandas' general path gives on no rows: the same columns, empty
            empty = [pa.array([], _STATE_TYPES[column.rsplit("_", 1)[-1]]) for _, column in outputs]
            return pa.Table.from_arrays([work[n].combine_chunks() for n in inner] + empty, names)
        grouped = (
            pa.table(work)
            .group_by(inner, use_threads=False)  # one thread: sums in row order, as np.bincount
            .aggregate([(s, f) if o is None else (s, f, o) for s, f, o in requests.values()])
        )
        space = 1
        for name in inner:
            space *= pc.count_distinct(grouped.column(name), mode="all").as_py()
        if space > 4 * rows + 1024:  # pandas' general path, whose sums are compensated
            raise Unsupported("sparse group keys")
        grouped = grouped.sort_by([(name, "ascending", "at_end") for name in inner])
        arrays = [grouped.column(name) for name in inner]
        arrays += [grouped.column(column) for _, column in outputs]
        return pa.Table.from_arrays(arrays, names=names)
    except (pa.ArrowException, ArithmeticError) as exc:
        raise Unsupported(str(exc)) from exc


_STATE_TYPES = {"all": pa.int64(), "count": pa.int64(), "sum": pa.float64()}  # by Arrow aggregate


def _groupable(t: pa.DataType) -> bool:
    return (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_integer(t)
        or t == pa.date32()
        or t == pa.bool_()
    )


def _aggregated(value: Value, as_float: bool) -> Array:
    """An aggregate's argument as the numpy path sums it: float64, NaN counted as null."""
    if not _is_array(value):
        raise Unsupported("a constant argument")
    if as_float and value.type == pa.int64():
        value = value.cast(pa.float64(), safe=False)
    if value.type != pa.float64():
        raise Unsupported("a non-float argument")  # pandas groups these without numpy
    return _nan_to_null(value)


def _nan_to_null(values: Array) -> Array:
    nan = pc.is_nan(values)
    if not pc.any(nan).as_py():
        return values
    return pc.if_else(nan, pa.scalar(None, values.type), values)


# -- expressions ---------------------------------------------------------------------------------


def _is_array(value: Value) -> bool:
    return isinstance(value, pa.ChunkedArray | pa.Array)


def _kind(value: Value) -> str:
    """The evaluator's kind of a value: int, float, str, date or bool; Unsupported otherwise."""
    if _is_array(value):
        t = value.type
        if t == pa.int64():
            return "int"
        if t == pa.float64():
            return "float"
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
    if _is_array(value):
        return value.cast(pa.float64(), safe=False) if value.type == pa.int64() else value
    return float(value)


def _nulls(value: Value) -> Array | None:
    """Where ``value`` is null for pandas (null or NaN), or None if it cannot be."""
    if not _is_array(value):
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


class _Evaluator:
    """Evaluates the covered subset of the expression language on one table."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

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
        if not _is_array(value) or _kind(value) != "bool":
            raise Unsupported("not a boolean column")
        return value

    def _negate(self, node: Negate) -> Value:
        value = self.eval(node.operand)
        kind = _kind(value)
        if kind not in ("int", "float"):
            raise Unsupported("negate")
        return pc.negate(value) if _is_array(value) else -value

    def _binop(self, node: BinOp) -> Value:
        # a long flat sum is a deep left chain: walked in a loop, not by recursion
        first, links = node.chain()
        value = self.eval(first)
        for link in links:
            value = self._arith(link, value, self.eval(link.right))
        return value

    def _arith(self, node: BinOp, left: Value, right: Value) -> Value:
        kinds = (_kind(left), _kind(right))
        if node.op not in _ARITH or not (_is_array(left) or _is_array(right)):
            raise Unsupported(f"operator {node.op}")
        if node.op == "+" and kinds == ("str", "str"):
            # text + text joins them; a null on either side gives null, as in pandas and SQL
            return pc.binary_join_element_wise(left, right, "")
        if any(k not in ("int", "float") for k in kinds):
            raise Unsupported("arithmetic on a non-number")
        # numpy's promotions: int op int stays int64 (wrapping on overflow, as Arrow's unchecked
        # kernels do), anything with a float, and every true division, is float64.
        if node.op == "/" or "float" in kinds:
            left, right = _as_float(left), _as_float(right)
        return _ARITH[node.op](left, right)

    def _compare(self, node: Compare) -> Value:
        values = [self.eval(o) for o in node.operands]
        parts = [
            self._compare_pair(op, left, right)
            for op, left, right in zip(node.ops, values, values[1:], strict=False)
        ]
        return reduce(pc.and_kleene, parts)

    def _compare_pair(self, op: str, left: Value, right: Value) -> Array:
        if not (_is_array(left) or _is_array(right)):
            raise Unsupported("a comparison of constants")
        left, right = _temporal(left, right), _temporal(right, left)
        kinds = {_kind(left), _kind(right)}
        if kinds <= {"int", "float"}:
            if "float" in kinds:
                left, right = _as_float(left), _as_float(right)
        elif len(kinds) != 1 or (kinds == {"bool"} and op not in ("==", "!=")):
            raise Unsupported("a comparison of different kinds")
        result = _COMPARE[op](left, right)
        return _mask_nulls(result, [_nulls(left), _nulls(right)])

    def _in_list(self, node: InList) -> Array:
        operand = self.eval(node.operand)
        if not _is_array(operand):
            raise Unsupported("in on a constant")
        values = [_member(v, operand) for v in node.values if v is not None]
        found = pc.is_in(operand, value_set=pa.array(values, type=operand.type))
        result: Array = found
        if len(values) < len(node.values):
            # `x in [1, null]` is true for 1 and unknown otherwise: x might equal the null.
            result = pc.if_else(found, True, pa.scalar(None, pa.bool_()))
        result = _mask_nulls(result, [_nulls(operand)])
        return pc.invert(result) if node.negated else result

    def _call(self, node: Call) -> Value:
        if not node.columns():
            try:
                value = fold(node)
            except ExprEvalError as exc:
                raise Unsupported(str(exc)) from exc
            _kind(value)  # a type this module knows, or Unsupported
            return value
        if node.name in ("is_null", "not_null"):
            value = self.eval(node.args[0])
            if not _is_array(value):
                raise Unsupported("is_null of a constant")
            _kind(value)
            nulls = pc.is_null(value, nan_is_null=True)
            return nulls if node.name == "is_null" else pc.invert(nulls)
        raise Unsupported(f"function {node.name}")


def _temporal(value: Value, other: Value) -> Value:
    """A text literal compared with a date column is read as a date, as pandas' path does."""
    if isinstance(value, str) and _is_array(other) and other.type == pa.date32():
        try:
            return dt.date.fromisoformat(value)
        except ValueError as exc:
            raise Unsupported("not a date") from exc
    return value


def _member(value: Scalar, operand: Array) -> Any:
    """A value of an ``in`` list as the operand's type; Unsupported unless it is exact."""
    kind = _kind(operand)
    if kind == "date" and isinstance(value, str):
        return _temporal(value, operand)
    if kind == "float" and type(value) is int and abs(value) <= _EXACT_FLOAT:
        return float(value)
    if _kind(value) == kind:
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
