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

import dataclasses
import itertools
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from chanbatch.blueprint.model import Aggregate, Derive, Filter, Join, Rename, Select, Sort, Stage
from chanbatch.blueprint.nodes import Column, Expr
from chanbatch.engine import sketches
from chanbatch.engine.aggregate_kernels import distinct_state
from chanbatch.engine.arrow_eval import (
    Array,
    ArrowEvaluator,
    Unsupported,
    is_array,
    nan_to_null,
    value_kind,
)
from chanbatch.engine.arrow_numpy import KnownDecimals, arrow, decimals, numbers, unscaled

SEP = "\x1f"  # as in chanbatch.engine.aggregate: partial state columns are NAME<SEP>PART


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


# binary: a serialized sketch; null: a column of them with no rows, as pandas types it. The
# narrower ints come back from pandas as they went (a column with nulls as Int32, ...), and a
# float32 as a float64 does, its NaN as null.
_STORABLE = (
    pa.int64(),
    pa.float64(),
    pa.string(),
    pa.date32(),
    pa.bool_(),
    pa.binary(),
    pa.null(),
    pa.int8(),
    pa.int16(),
    pa.int32(),
    pa.uint8(),
    pa.uint16(),
    pa.uint32(),
    pa.uint64(),
    pa.float32(),
    pa.timestamp("us", tz="UTC"),
)


def storable(table: pa.Table) -> pa.Table | None:
    """``table`` exactly as writing ``to_pandas(table)`` to the cache stores it, or None when
    that is not certain for one of its column types.

    ``Table.from_pandas`` stores a float NaN as null; the other types listed, and decimal128s
    (which pandas holds Arrow-backed), round-trip as they are. (A timestamp is listed only in
    microseconds: the cache keeps nanoseconds only where microseconds would lose digits.)
    """
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if field.type not in _STORABLE and not pa.types.is_decimal128(field.type):
            return None
        if pa.types.is_floating(field.type):
            column = nan_to_null(column)
        columns.append(column)
    fields = [pa.field(f.name, f.type, nullable=True) for f in table.schema]
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


# -- stages --------------------------------------------------------------------------------------


def apply_rowwise(stage: Stage, table: pa.Table) -> pa.Table:
    """A filter, derive, select or rename on one slice's table; raises Unsupported otherwise."""
    return apply_tagged(stage, table, None)[0]


def apply_tagged(
    stage: Stage, table: pa.Table, tags: Array | None
) -> tuple[pa.Table, Array | None]:
    """:func:`apply_rowwise`, with ``tags`` (one value per row, or None) kept beside the rows:
    a filter drops the tags of the rows it drops. Every operation here works row by row, so
    the rows of many slices concatenated give each slice's rows, in order, and the tags say
    which slice a row came from."""
    op = stage.operation
    try:
        if isinstance(op, Filter):
            condition = ArrowEvaluator(table).eval(op.expr)
            if value_kind(condition) != "bool" or not is_array(condition):
                raise Unsupported("not a boolean column")
            if not condition.null_count and pc.all(condition).as_py():
                return table, tags  # every row kept: the same rows, not copied
            if tags is not None:
                tags = pc.filter(tags, condition)
            # A null condition drops the row, as in SQL. Column by column: Table.filter costs
            # about half as much again on slices of this size.
            if not table.num_columns:
                return table.filter(condition), tags
            kept = [pc.filter(column, condition) for column in table.columns]
            return pa.Table.from_arrays(kept, schema=table.schema), tags
        return _apply_columns(op, table), tags
    except (pa.ArrowException, ArithmeticError) as exc:
        raise Unsupported(str(exc)) from exc


def _apply_columns(op: Any, table: pa.Table) -> pa.Table:
    """A derive, select or rename: every row kept."""
    if isinstance(op, Derive):
        known = KnownDecimals()  # a later column may read an earlier one's decimals
        for name, expr in op.columns.items():
            table = _set_column(table, name, _derived(expr, table, known))
        return table
    if isinstance(op, Select):
        if len(set(op.columns)) != len(op.columns):
            raise Unsupported("select")
        # a column no later stage reads is not loaded (the plan projects loads): skip it
        present = set(table.column_names)
        return table.select([c for c in op.columns if c in present])
    if isinstance(op, Rename):
        names = [op.mapping.get(c, c) for c in table.column_names]
        if len(set(names)) != len(names):
            raise Unsupported("rename to a duplicate name")
        return table.rename_columns(names)
    raise Unsupported(type(op).__name__)


def _derived(expr: Expr, table: pa.Table, known: KnownDecimals) -> Array:
    if isinstance(expr, Column):  # a copy of a column, whatever its type
        if expr.name not in table.column_names:
            raise Unsupported("unknown column")
        return table.column(expr.name)
    value = ArrowEvaluator(table, known).eval(expr)
    # pandas holds a comparison's result as its nullable "boolean" dtype, which an Arrow bool
    # does not convert back to; and a literal would be broadcast to a column of its own dtype.
    if not is_array(value) or value_kind(value) == "bool":
        raise Unsupported("derive of a condition or a constant")
    return value


def _set_column(table: pa.Table, name: str, values: Array) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


def sort(spec: Sort, tables: list[pa.Table]) -> pa.Table:
    """The rows of ``tables`` (a whole input's parts, in key order) in ``spec``'s order, as the
    pandas path sorts them: stable, nulls last in either direction. Raises Unsupported for parts
    of different types and for a float key holding NaN (pandas places NaN with the nulls,
    Arrow between the numbers and the nulls)."""
    if not tables:
        raise Unsupported("no parts")
    schema = tables[0].schema
    if any(not t.schema.equals(schema) for t in tables[1:]):
        raise Unsupported("parts of different types")
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if table.num_rows == 0:
        return table
    order = pc.sort_indices(table, sort_keys=_sort_keys(spec, table))
    return table.take(order).combine_chunks()


def join(spec: Join, left: pa.Table, right: pa.Table) -> pa.Table:
    """A join as the pandas path gives it (:func:`chanbatch.engine.execute.join`): the rows
    whose keys match, none with a null key, the left columns (``on`` among them) and then the
    right's but ``on``, those both sides have suffixed.

    - inner and left: in left row order, then right; a left join keeps each unmatched left
      row in its place, its right columns null;
    - right: in right row order, then left; each unmatched right row in its place, its left
      columns null and its keys its own;
    - outer: in the order of their keys (pandas sorts them, whatever ``sort`` says), then
      left row order, then right.

    Raises Unsupported for a null key on a side whose every row stays (the left of a left
    join, the right of a right join, either of an outer one: pandas moves those rows last), a
    result pandas would hold as its nullable bool, and keys whose matching pandas and Arrow
    may not agree on: floats (-0.0 and 0.0, NaN), keys of different types, any but int, text
    and date keys; and for result names that clash."""
    import numpy as np

    if spec.how not in ("inner", "left", "right", "outer"):
        raise Unsupported(f"a {spec.how} join")
    on = list(spec.on)
    for name in on:
        if name not in left.column_names or name not in right.column_names:
            raise Unsupported(f"no key column {name!r}")
        kind = left.schema.field(name).type
        if kind != right.schema.field(name).type or not (
            pa.types.is_integer(kind) or kind in (pa.string(), pa.date32())
        ):
            raise Unsupported(f"a join on {kind}")
        kept = {"left": [left], "right": [right], "outer": [left, right]}.get(spec.how, [])
        if any(side.column(name).null_count for side in kept):  # sides whose rows all stay
            raise Unsupported(f"a {spec.how} join with null keys on a side it keeps")
    left_names, right_names = spec.output_names(left.column_names, right.column_names)
    names = [left_names[c] for c in left.column_names] + [
        right_names[c] for c in right.column_names if c not in on
    ]
    if len(set(names)) != len(names) or len(set(left.column_names)) != left.num_columns:
        raise Unsupported("result columns of one name")
    position = "\x1fpos"
    while position in names:
        position += "_"
    sides: list[pa.Table] = []
    for table, renamed in ((left, left_names), (right, {c: c for c in on} | right_names)):
        table = table.select([c for c in table.column_names if c in renamed])
        table = table.rename_columns([renamed[c] for c in table.column_names])
        if any(table.column(c).null_count for c in on):  # a null key matches nothing
            valid = pc.is_valid(table.column(on[0]))
            for name in on[1:]:
                valid = pc.and_(valid, pc.is_valid(table.column(name)))
            table = table.filter(valid)
        rows = pa.array(np.arange(table.num_rows, dtype=np.int64))
        sides.append(table.append_column(f"{position}{len(sides)}", rows))
    # a right join is the left join of the right side (its keys are the right's)
    first, second = (1, 0) if spec.how == "right" else (0, 1)
    kind = {"inner": "inner", "outer": "full outer"}.get(spec.how, "left outer")
    try:
        joined = sides[first].join(sides[second], keys=on, join_type=kind, use_threads=False)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise Unsupported(f"Arrow's join: {exc}") from exc
    by_key = [(name, "ascending") for name in on] if spec.how == "outer" else []
    order = pc.sort_indices(
        joined,
        sort_keys=[
            *by_key,
            (f"{position}{first}", "ascending", "at_end"),
            (f"{position}{second}", "ascending", "at_end"),
        ],
    )
    result = joined.take(order).select(names).combine_chunks()
    if arrow_input(result) is None:  # a bool column given nulls: pandas' three-valued kind
        raise Unsupported("a bool column with nulls")
    return result


def join_tagged(
    spec: Join, left: pa.Table, left_tags: Array, right: pa.Table, right_tags: Array
) -> tuple[pa.Table, Array]:
    """Many co-sliced joins at once: ``left`` and ``right`` hold the rows of many slices, one
    after another, ``left_tags`` and ``right_tags`` each row's slice; a slice's left rows meet
    only its own right rows. Returns the rows :func:`join` gives each slice alone, slice after
    slice, and the slice of each. The tag is one more key: the rows come out in left row
    order (so slice by slice) and then right row order, as one slice's do."""
    tag = "\x1ftag"
    while tag in left.column_names or tag in right.column_names:
        tag += "_"
    tagged = dataclasses.replace(spec, on=(tag, *spec.on))
    joined = join(tagged, left.append_column(tag, left_tags), right.append_column(tag, right_tags))
    return joined.drop_columns([tag]), joined.column(tag).combine_chunks()


def tops(spec: Sort, table: pa.Table, tags: Array, counts: list[int], n: int) -> list[pa.Table]:
    """The first ``n`` rows of each slice of ``table`` in ``spec``'s order: ``table`` holds
    the rows of many slices one after another, ``counts`` of each, ``tags`` the index of each
    row's slice. Slice ``i``'s are the rows ``sort(spec, [its rows]).slice(0, n)`` gives, in
    one sort for all: by slice first, then by ``spec``'s keys, stable (Arrow's sort is), so
    rows that tie keep their order within their slice. Raises Unsupported as :func:`sort`."""
    if table.num_rows == 0:
        return [table] * len(counts)
    keys = _sort_keys(spec, table)
    tag = "\x1ftag"
    while tag in table.column_names:
        tag += "_"
    order = pc.sort_indices(
        table.append_column(tag, tags), sort_keys=[(tag, "ascending", "at_end"), *keys]
    )
    import numpy as np

    sizes = np.minimum(np.asarray(counts, dtype=np.int64), n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    # the first ``sizes[i]`` positions of each slice's run in ``order``
    within = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    taken = table.take(numbers(order)[np.repeat(starts, sizes) + within]).combine_chunks()
    firsts = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    return [taken.slice(firsts[i], int(sizes[i])) for i in range(len(counts))]


def _sort_keys(spec: Sort, table: pa.Table) -> list[tuple[str, str, str]]:
    """``spec``'s keys as Arrow sorts by them, nulls last; raises Unsupported for a key not in
    ``table`` and a float key holding NaN (see :func:`sort`)."""
    for key in spec.by:
        if key.column not in table.column_names:
            raise Unsupported(f"no column {key.column!r}")
        column = table.column(key.column)
        if pa.types.is_floating(column.type) and pc.any(pc.is_nan(column)).as_py():
            raise Unsupported("NaN in a sort key")
    return [(k.column, "ascending" if k.ascending else "descending", "at_end") for k in spec.by]


def partial(spec: Aggregate, table: pa.Table) -> pa.Table:
    """The partial state of ``spec`` over one slice, as :func:`aggregate.partial` gives it
    (same columns, types, values and group order); raises Unsupported where this does not
    reproduce it bit for bit.

    :func:`aggregate.partial` takes one of two paths. When every argument it reduces is
    float64, its numpy path, whose row-order float sums Arrow's single-threaded grouped sum
    reproduces. Otherwise pandas' grouped ``agg``, whose float sums are compensated: this
    reproduces it only for counts, for sums (also a mean's) of decimals, which pandas computes
    with Arrow's grouped sum, exactly: decimal(38, s), zero for a group with no values (summed
    here on the unscaled integers in int64 where no sum can leave it), and for
    sums of int64, which are exact too. Sets of distinct values (``count_distinct``) and
    sketches (``approx_*``, from each group's values in row order: Arrow's single-threaded
    ``list`` keeps it) are made on pandas' general path too, value for value alike.
    """
    try:
        request = _Grouping(spec, table)
        if not table.num_rows:  # what pandas' general path gives on no rows: the same columns
            return request.empty()
        grouped = request.aggregate([])
        if not request.general and not request.dense(grouped, table.num_rows):
            raise Unsupported("sparse group keys")
        return request.states(grouped.sort_by(request.order))
    except (pa.ArrowException, ArithmeticError) as exc:
        raise Unsupported(str(exc)) from exc


def aggregated(spec: Aggregate, table: pa.Table) -> pa.Table:
    """A ``per_slice`` aggregate of one slice: its :func:`partial`, finished, as the pandas path
    computes it (``finish(partial(slice))``) and stores it; raises Unsupported where either
    step does not reproduce that to the bit."""
    if not spec.decomposable:
        raise Unsupported("not decomposable: aggregated whole, on pandas")
    from chanbatch.engine.arrow_combine import finish

    return finish(spec, partial(spec, table))


def partials(
    spec: Aggregate, table: pa.Table, tags: Array, rows: list[int]
) -> list[pa.Table | None]:
    """:func:`partial` of each of many slices at once: ``table`` holds their rows concatenated,
    ``tags`` (int32) the index of the slice of each row, ``rows`` how many rows each has.

    One grouped aggregate keyed by (slice, group keys) over all of them: its single-threaded
    sums still add each group's values in row order, so every slice's state is, to the bit,
    what :func:`partial` gives on its rows alone. A slice whose partial :func:`partial` would
    not compute (sparse group keys) is None; raises Unsupported as :func:`partial` does for
    anything else, which concerns every slice alike.
    """
    try:
        request = _Grouping(spec, table)
        tag = f"{SEP}slice"
        grouped = request.aggregate([(tag, tags)])
        grouped = grouped.sort_by([(tag, "ascending"), *request.order])
        counts = pc.value_counts(grouped.column(tag))
        groups = dict(zip(counts.field(0).to_pylist(), counts.field(1).to_pylist(), strict=True))
        # Each state is made group by group, so the states of all slices at once, cut slice
        # by slice, are each slice's own; sets of values and sketches are made slice by slice.
        states = None if request.by_slice else request.states(grouped)
        out: list[pa.Table | None] = []
        offset = 0
        keys = len(request.inner)
        for index, n in enumerate(rows):
            if not n:
                start = sum(rows[:index])
                out.append(partial(spec, table.slice(start, 0)))
                continue
            width = groups.get(index, 0)
            mine = grouped.slice(offset, width)
            # no key has more values than the slice has groups: dense without counting them
            dense = request.general or width**keys <= 4 * n + 1024 or request.dense(mine, n)
            if not dense:
                out.append(None)
            elif states is not None:
                out.append(states.slice(offset, width))
            else:
                out.append(request.states(mine))
            offset += width
        return out
    except (pa.ArrowException, ArithmeticError) as exc:
        raise Unsupported(str(exc)) from exc


class _Grouping:
    """The grouped aggregate a partial of ``spec`` runs over ``table``'s rows."""

    def __init__(self, spec: Aggregate, table: pa.Table) -> None:
        keys = list(spec.group_by)
        if not keys or len(set(keys)) != len(keys):
            raise Unsupported("a global aggregate")
        # Internal names, which no column can spell, so that none collides with the
        # aggregates' result columns (a column may well be called "count_all").
        self.inner = [f"{SEP}key{i}" for i in range(len(keys))]
        self.work: dict[str, Array] = {}
        for key, name in zip(keys, self.inner, strict=True):
            if key not in table.column_names or not _groupable(table.schema.field(key).type):
                raise Unsupported("group key type")
            self.work[name] = table.column(key)
        arguments = _arguments(spec, table)
        # pandas' numpy path, if every argument it reduces is a float (counted or summed), and
        # no aggregate keeps a set of values or a sketch
        self.general = any(not _is_float(value) for value, _ in arguments.values()) or any(
            agg.func == "count_distinct" or agg.func in _SKETCHES
            for agg in spec.aggregates.values()
        )
        self.requests = _Requests()
        for name, agg in spec.aggregates.items():
            self.requests.add(name, agg, arguments.get(name), self.work, self.general)
        self.names = [*keys, *(state for state, _, _ in self.requests.outputs)]
        self.order = [(name, "ascending", "at_end") for name in self.inner]
        # whether a state is made from each group's values (a set, a sketch) rather than
        # read off a grouped aggregate: then made for one slice at a time
        self.by_slice = any(
            func in ("distinct", "list") for _, func, _ in self.requests.requests.values()
        )

    def empty(self) -> pa.Table:
        # pandas' general path types a column of sketches (bytes) by its values: none, null
        empty = [
            pa.array([], pa.null() if state in self.requests.sketches else kind)
            for state, _, kind in self.requests.outputs
        ]
        columns = [self.work[n].combine_chunks() for n in self.inner]
        return pa.Table.from_arrays(columns + empty, self.names)

    def aggregate(self, before: list[tuple[str, Array]]) -> pa.Table:
        """The grouped aggregate, keyed by the ``before`` columns, then the group keys."""
        work = {**dict(before), **self.work}
        return (
            pa.table(work)
            .group_by([*(n for n, _ in before), *self.inner], use_threads=False)
            .aggregate(self.requests.arrow())
        )  # one thread: sums in row order, as np.bincount

    def dense(self, grouped: pa.Table, rows: int) -> bool:
        """Whether pandas takes its numpy path for these groups of ``rows`` rows: their keys'
        combinations are few enough; else its general path, whose sums are compensated."""
        space = 1
        for name in self.inner:
            space *= pc.count_distinct(grouped.column(name), mode="all").as_py()
        return space <= 4 * rows + 1024

    def states(self, grouped: pa.Table) -> pa.Table:
        """The partial's table from the sorted grouped aggregate."""
        arrays = [grouped.column(name) for name in self.inner]
        arrays += [
            _state_values(grouped.column(column), kind, self.requests.sketches.get(state))
            for state, column, kind in self.requests.outputs
        ]
        return pa.Table.from_arrays(arrays, names=self.names)


class _Requests:
    """The Arrow grouped aggregates a partial asks for, and the state column each one fills."""

    def __init__(self) -> None:
        self.requests: dict[str, tuple[Any, str, Any]] = {}  # result column -> Arrow aggregate
        self.outputs: list[tuple[str, str, pa.DataType]] = []  # (state, result, its type)
        self.sources: dict[tuple[str, bool], str] = {}  # (argument, cast) -> column in work
        self.sketches: dict[str, str] = {}  # state -> "hll" or "tdigest", made from a list

    def request(self, src: str, func: str, options: Any, state: str, kind: pa.DataType) -> None:
        column = f"{src}_{func}" if src else func
        self.requests.setdefault(column, (src or [], func, options))
        self.outputs.append((state, column, kind))

    def arrow(self) -> list[tuple[Any, ...]]:
        return [(s, f) if o is None else (s, f, o) for s, f, o in self.requests.values()]

    def add(
        self,
        name: str,
        agg: Any,
        argument: tuple[Array, bool] | None,
        work: dict[str, Array],
        general: bool,
    ) -> None:
        """The states of aggregate ``name``: its count, and the sum of a sum or mean."""
        if agg.arg is None or argument is None:
            self.request("", "count_all", None, f"{name}{SEP}n", pa.int64())
            return
        value, cast = argument
        # sum(x) and mean(x) reduce the same values unless the mean's were made floats
        ident = (agg.arg.render(), cast)
        src = self.sources.get(ident)
        if src is None:
            src = self.sources[ident] = f"{SEP}arg{len(self.sources)}"
            work[src] = nan_to_null(value) if _is_float(value) else value
        if work[src].null_count:
            only_valid = pc.CountOptions(mode="only_valid")
            self.request(src, "count", only_valid, f"{name}{SEP}n", pa.int64())
        else:  # no nulls: it counts every row, and one count of rows serves them all
            self.request("", "count_all", None, f"{name}{SEP}n", pa.int64())
        if agg.func == "count":
            return
        if agg.func == "count_distinct":  # the group's set of values, as its JSON text
            only_valid = pc.CountOptions(mode="only_valid")
            self.request(src, "distinct", only_valid, f"{name}{SEP}values", _DISTINCT)
            return
        if agg.func in _SKETCHES:  # the group's values in row order, then its sketch
            part, how = _SKETCHES[agg.func]
            self.request(src, "list", None, f"{name}{SEP}{part}", pa.binary())
            self.sketches[f"{name}{SEP}{part}"] = how
            return
        if agg.func in ("min", "max"):  # the group's extreme, null for a group of nulls
            options = pc.ScalarAggregateOptions(skip_nulls=True, min_count=1)
            self.request(src, agg.func, options, f"{name}{SEP}{agg.func}", value.type)
            return
        if not general:
            options = pc.ScalarAggregateOptions(skip_nulls=True, min_count=1)
            self.request(src, "sum", options, f"{name}{SEP}sum", pa.float64())
        elif pa.types.is_decimal128(value.type):
            # pandas' grouped sum of a decimal: a group of nulls sums to zero
            options = pc.ScalarAggregateOptions(skip_nulls=True, min_count=0)
            total = pa.decimal128(38, value.type.scale)
            summed = self._unscaled(src, work)
            self.request(summed or src, "sum", options, f"{name}{SEP}sum", total)
        elif value.type == pa.int64():
            # pandas' grouped sum of an int64 (or Int64): exact, zero for a group of nulls;
            # both wrap past 2**63 alike
            options = pc.ScalarAggregateOptions(skip_nulls=True, min_count=0)
            self.request(src, "sum", options, f"{name}{SEP}sum", pa.int64())
        else:  # a float sum on pandas' general path (compensated): not reproduced here
            raise Unsupported("a sum pandas computes on its general path")

    def _unscaled(self, src: str, work: dict[str, Array]) -> str | None:
        """The column of ``work`` holding the decimal argument ``src``'s unscaled integers as
        int64, made once, if no group's sum of them can leave an int64 (summed there exactly,
        then read as decimals again by :func:`_state_values`); None where that is not certain,
        or with nulls: Arrow sums the decimals themselves."""
        name = f"{src}{SEP}unscaled"
        if name not in work:
            found, rows = unscaled(work[src]), len(work[src])
            if found is None or not rows or found[1] >= 2**63 // rows:
                return None
            work[name] = arrow(found[0])
        return name


# The state type of a set of distinct values: their JSON text (aggregate_kernels.distinct_state)
_DISTINCT = pa.string()
# The aggregates kept as sketches: (their state's part, its kind), as aggregate_kernels has them
_SKETCHES = {
    "approx_count_distinct": ("hll", "hll"),
    "approx_median": ("digest", "tdigest"),
    "approx_quantile": ("digest", "tdigest"),
}


def _state_values(values: Array, kind: pa.DataType, sketch: str | None = None) -> Array:
    """A grouped aggregate's column as the state pandas stores; ``sketch`` (hll, tdigest) for
    a column of each group's values, made into its sketch."""
    if sketch is not None:
        return _sketch_states(values, sketch)
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):  # distinct values
        made = _distinct_states(values)
        if made is not None:
            return made
        return pa.array([distinct_state(v) for v in values.to_pylist()], _DISTINCT)
    if pa.types.is_decimal(kind) and values.type == pa.int64():  # summed unscaled: exact
        return decimals(numbers(values), kind)
    if values.type != kind:  # a decimal sum, as pandas widens it for older pyarrow
        values = values.cast(kind)
    if pa.types.is_decimal(kind):
        values.validate(full=True)  # past 38 digits pandas computes it otherwise
    return values


# Text json.dumps writes as it is: printable ASCII but for the quote and the backslash
_PLAIN_TEXT = r"^[ !#-\[\]-~]*$"


def _distinct_states(lists: Array) -> pa.Array | None:
    """Each group's set of distinct values (a list each) as
    :func:`~chanbatch.engine.aggregate_kernels.distinct_state` writes it, made with Arrow where
    Arrow writes each value's JSON text as json does: ints, bools, and text that json writes
    unescaped; None for anything else (floats, dates, escaped text)."""
    import numpy as np

    from chanbatch.engine.arrow_combine import joined_sets

    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    values = pc.list_flatten(lists)
    owner = np.asarray(pc.list_parent_indices(lists))
    valid = np.asarray(values.is_valid(), dtype=bool)
    values, owner = values.filter(arrow(valid)), owner[valid]
    t = values.type
    if t == pa.int64() or t == pa.bool_():
        texts = values.cast(pa.string())
    elif t == pa.string() and pc.all(pc.match_substring_regex(values, _PLAIN_TEXT)).as_py():
        texts = pc.binary_join_element_wise('"', values, '"', "")
    else:
        return None
    return joined_sets(texts, owner, len(lists))


def _sketch_states(lists: Array, how: str) -> pa.Array:
    """Each group's sketch of its values (a list each, in row order; nulls skipped), as the
    pandas partial makes it from the group's non-null values (:mod:`.sketches`)."""
    import numpy as np

    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    values = pc.list_flatten(lists)
    owner = np.asarray(pc.list_parent_indices(lists))
    valid = np.asarray(values.is_valid(), dtype=bool)
    counts = np.bincount(owner[valid], minlength=len(lists))
    bounds = np.concatenate([[0], np.cumsum(counts)]).tolist()
    if how == "hll":
        keys = sketches.hll_keys(values)  # the valid values, in order
        if keys is None:
            raise Unsupported("an approximate distinct count of this type")
        made = [sketches.hll_of(keys[a:b]) for a, b in itertools.pairwise(bounds)]
    else:
        numbers = values.drop_null().to_numpy(zero_copy_only=False)
        made = [sketches.tdigest_of(numbers[a:b]) for a, b in itertools.pairwise(bounds)]
    return pa.array(made, pa.binary())


def _arguments(spec: Aggregate, table: pa.Table) -> dict[str, tuple[Array, bool]]:
    """Each aggregate's argument (by result name) as :func:`aggregate.partial` reduces it, and
    whether it was cast for that: a mean's int argument becomes float64; a decimal stays one."""
    evaluator = ArrowEvaluator(table)
    values: dict[str, Array] = {}
    out: dict[str, tuple[Array, bool]] = {}
    for name, agg in spec.aggregates.items():
        if agg.func not in ("count", "sum", "mean", "min", "max", "count_distinct", *_SKETCHES):
            raise Unsupported(f"aggregate {agg.func}")
        if agg.arg is None:
            continue
        text = agg.arg.render()
        if text not in values:
            value = evaluator.eval(agg.arg)
            if not is_array(value):
                raise Unsupported("a constant argument")
            values[text] = value
        # counted and summed: numbers; a set of distinct values: also text, dates and bools
        # (their Python values give the text pandas' give; a timestamp's would not)
        kinds: tuple[str, ...] = ("int", "float", "decimal")
        if agg.func == "count_distinct":
            kinds += ("str", "date", "bool")
        elif agg.func == "approx_count_distinct":  # hashed as their Python values (sketches)
            kinds = ("int", "float", "str", "bool")
        elif agg.func in (*_SKETCHES, "min", "max"):
            # a t-digest of floats, as the pandas partial casts them; the extremes of ints and
            # floats, the states arrow_combine merges
            kinds = ("int", "float")
        if value_kind(values[text]) not in kinds:
            raise Unsupported("an argument of this type")
        value = values[text]
        # a mean's int argument becomes float64, and a t-digest's
        cast = agg.func in ("mean", "approx_median", "approx_quantile") and value.type == pa.int64()
        out[name] = (value.cast(pa.float64(), safe=False) if cast else value, cast)
    return out


def _is_float(value: Array) -> bool:
    return bool(value.type == pa.float64())


def _groupable(t: pa.DataType) -> bool:
    return (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_integer(t)
        or t == pa.date32()
        or t == pa.bool_()
    )
