"""Merging partials on Arrow tables, and finishing them: the tables
:func:`chanbatch.engine.aggregate.combine` and :func:`~chanbatch.engine.aggregate.finish`'s
results are stored as, to the bit, without a round trip through pandas.

A combine task merges a few partials (one row per group each) into one. On pandas it costs an
Arrow -> pandas conversion per input, a concat and a groupby; its result is stored, and the
stored bytes feed the keys of every task after it and the id of the output. So this module
reproduces what pandas computes, step by step, and raises :class:`Unsupported` for anything it
does not reproduce exactly, leaving that combine to the pandas path:

- groups: pandas groups the stacked partials on their keys (``dropna=False``: a null key is a
  group) and sorts them by key, nulls last (``_sorted``). Here a stable
  ``pyarrow.compute.sort_indices`` with nulls at the end orders the rows, and a group starts
  where a key differs from the row before (null equals null). Keys may be int64, string, date32
  or bool (without nulls): types whose order and equality are the same for both libraries. With
  no keys (a global aggregate) every row is one group, and the result has one row.
- ``total`` and ``sum`` states: pandas' ``group_sum`` (pandas/_libs/groupby.pyx) visits the
  rows in stacked order, which is partial order. An int64 column is added plainly (wrapping,
  as the C loop does); a float64 column with Kahan's compensation, reset to zero whenever it is
  not finite (GH#53606, GH#60303), skipping NaN. ``total`` sums with ``min_count=0`` (zero for
  a group of nulls), ``sum`` with ``min_count=1`` (null). Each group gets its first row, then
  its second, and so on: the loop here runs over those ranks, vectorised over the groups, so
  every group's additions happen in pandas' order with pandas' operations.
- ``min`` and ``max`` states (int64 or float64): pandas keeps the running extreme, replaced
  only by a value strictly beyond it (so of 0.0 and -0.0 the first seen stays), starting from
  the type's extreme, skipping NaN; null for a group without values. The same loop does that.
- the result is what ``write_result`` would store: float NaN as null, every field nullable.
  As pandas does, all-empty inputs give the first partial, and one non-empty input is the
  result as it is.

- decimal ``sum`` states (decimal(38, s), a sum's or a mean's): pandas sums them with Arrow's
  grouped sum, exactly, null for a group without values. Here they are added exactly too, in
  int64 where no sum can leave it, else by Arrow's grouped sum; past 38 digits pandas computes
  it otherwise, so that is left to it. A decimal mean finishes as pandas' ``astype("float64")``
  of the exact sum (each the nearest float, as Python's ``float(Decimal)``) over the count.
- ``union`` states (``count_distinct``'s sets, JSON texts): each group's values' texts, cut out
  of its sets without parsing where that is certain (``_set_texts``), their distinct texts
  sorted and joined; pandas' combine gives the same text through
  :func:`~chanbatch.engine.aggregate_kernels.union_states`.
- ``hll`` and ``tdigest`` states (serialized sketches): merged group by group in the order
  pandas' grouped ``agg`` visits them (partial order), by the same :mod:`.sketches` functions.

The ``moments`` of var and std, decimal min and max, and every other state or key type are left
to pandas. tests/engine/test_arrow_combine.py checks the stored bytes against the pandas path on
partials computed by both partial paths.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from chanbatch.blueprint.model import Aggregate
from chanbatch.engine import sketches
from chanbatch.engine.aggregate_kernels import (
    decomposing,
    distinct_count,
    state_column,
    union_states,
)
from chanbatch.engine.arrow_eval import Unsupported, nan_to_null
from chanbatch.engine.arrow_numpy import arrow, decimals, numbers, unscaled

_KEY_TYPES = (pa.int64(), pa.string(), pa.date32(), pa.bool_())
_STATE_TYPES = {
    "total": (pa.int64(),),
    "sum": (pa.int64(), pa.float64()),
    "min": (pa.int64(), pa.float64()),
    "max": (pa.int64(), pa.float64()),
    "union": (pa.string(),),  # a set of distinct values as its JSON text
    # a serialized sketch; a partial of no rows has none, and pandas types its column null
    "hll": (pa.binary(), pa.null()),
    "tdigest": (pa.binary(), pa.null()),
}
_SKETCH_MERGES = {"hll": sketches.hll_union, "tdigest": sketches.tdigest_merge}
_OWNER = "\x1fcombine"  # the combine of a stacked row: a name no column can spell


def combine(spec: Aggregate, tables: list[pa.Table]) -> pa.Table:
    """The partials ``tables`` (in slice-key order) merged into one, as the pandas combine's
    result is stored (see the module docstring); raises Unsupported where that is not certain."""
    return combine_many(spec, [tables])[0]


def combine_many(spec: Aggregate, groups: list[list[pa.Table]]) -> list[pa.Table]:
    """:func:`combine` of each list of partials in ``groups``, in one pass: their partials
    stacked, each row tagged with its combine, and merged as one table grouped by (combine,
    group keys). Every group of keys is still merged alone, its rows in its own combine's
    order, so each result is, to the bit, what :func:`combine` gives on its partials alone (a
    combine whose partials pandas would sum pairwise is summed pairwise, the others with
    Kahan's compensation). Raises Unsupported where :func:`combine` would raise it for any of
    them, or where the merge cannot tell (then combine them one by one)."""
    keys = list(spec.group_by)
    states = _states(spec)
    if not groups or any(not tables for tables in groups):
        raise Unsupported("no partials")
    out: list[pa.Table | None] = [None] * len(groups)
    merged: list[int] = []  # the combines with partials of rows to merge
    present: list[pa.Table] = []
    counts: list[int] = []  # of each merged combine, its stacked rows
    for index, tables in enumerate(groups):
        mine = [t for t in tables if t.num_rows]
        if len(mine) <= 1:  # as pandas does: all empty gives the first, one gives itself
            out[index] = _stored(mine[0] if mine else tables[0], keys, states)
            continue
        merged.append(index)
        present.extend(mine)
        counts.append(sum(t.num_rows for t in mine))
    if merged:
        schema = _schema(present[0], keys, states)
        try:
            stacked = _stacked(present, schema)
            owner = None
            if len(merged) > 1:
                owner = np.repeat(np.arange(len(merged), dtype=np.int64), counts)
            table, widths = _merge(stacked, keys, states, schema, owner, len(merged))
        except (pa.ArrowException, ArithmeticError) as exc:
            raise Unsupported(str(exc)) from exc
        offset = 0
        for index, width in zip(merged, widths, strict=True):
            out[index] = table.slice(offset, width) if len(merged) > 1 else table
            offset += width
    return [t for t in out if t is not None]


def _stacked(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    """The partials one under the other, of ``schema``; raises Unsupported for partials of
    other types, or with a bool key holding a null."""
    first = tables[0].schema
    if all(t.schema.equals(first) for t in tables):  # the common case: checked once
        _checked(tables[0], schema)
        stacked = pa.concat_tables(tables)
        for field in schema:
            if field.type == pa.bool_() and stacked.column(field.name).null_count:
                raise Unsupported("a bool key with nulls")
        return pa.Table.from_arrays(stacked.columns, schema=schema)
    return pa.concat_tables(
        [pa.Table.from_arrays(_checked(t, schema).columns, schema=schema) for t in tables]
    )


def _states(spec: Aggregate) -> list[tuple[str, str]]:
    """(state column, how it merges), in the order of the partial's columns."""
    out: list[tuple[str, str]] = []
    for name, agg in spec.aggregates.items():
        try:
            kernel = decomposing(agg.func)
        except (KeyError, ValueError) as exc:
            raise Unsupported(str(exc)) from exc
        for state in kernel.states:
            if state.merge not in _STATE_TYPES:
                raise Unsupported(f"{state.merge} states")
            out.append((state_column(name, state.part), state.merge))
    if not out:
        raise Unsupported("no aggregates")
    return out


def _schema(table: pa.Table, keys: list[str], states: list[tuple[str, str]]) -> pa.Schema:
    """The schema every partial must have to be merged here: the keys, then the states, of the
    types this module covers; raises Unsupported otherwise."""
    names = [*keys, *(column for column, _ in states)]
    if table.column_names != names or len(set(names)) != len(names):
        raise Unsupported("unexpected partial columns")
    for key in keys:
        column = table.column(key)
        if column.type not in _KEY_TYPES:
            raise Unsupported("group key type")
        if column.type == pa.bool_() and column.null_count:
            raise Unsupported("a bool key with nulls")
    for column, merge in states:
        kind = table.schema.field(column).type
        if kind not in _STATE_TYPES[merge] and not (merge == "sum" and _is_decimal(kind)):
            raise Unsupported("state type")
    return pa.schema([pa.field(f.name, f.type, nullable=True) for f in table.schema])


def _checked(table: pa.Table, schema: pa.Schema) -> pa.Table:
    if table.column_names != schema.names or any(
        table.schema.field(i).type != field.type for i, field in enumerate(schema)
    ):
        raise Unsupported("partials of different types")
    for field in schema:
        if field.type == pa.bool_() and table.column(field.name).null_count:
            raise Unsupported("a bool key with nulls")
    return table


def _stored(table: pa.Table, keys: list[str], states: list[tuple[str, str]]) -> pa.Table:
    """A partial as it is, as ``Table.from_pandas`` stores its pandas form: NaN as null."""
    schema = _schema(table, keys, states)
    columns = [
        nan_to_null(column) if column.type == pa.float64() else column for column in table.columns
    ]
    return pa.Table.from_arrays(columns, schema=schema).combine_chunks()


def _merge(
    stacked: pa.Table,
    keys: list[str],
    states: list[tuple[str, str]],
    schema: pa.Schema,
    owner: Any = None,
    owners: int = 1,
) -> tuple[pa.Table, list[int]]:
    """The stacked partials merged, group by group. ``owner`` (None: one combine) is the
    combine of each stacked row, the rows in combine order: a group is then one combine's
    group of keys, and everything pandas decides per combine (the reduceat path below) is
    decided per combine. Returns the merged rows, sorted by combine and then by keys, and how
    many rows each combine has."""
    rows = stacked.num_rows
    sorted_owner = owner  # stacked in combine order, and sorted by combine first
    if keys or owner is not None:
        sort_keys = [(key, "ascending", "at_end") for key in keys]
        work = stacked.select(keys)
        if owner is not None:  # combine by combine, each stable as it is alone
            work = pa.Table.from_arrays([arrow(owner), *work.columns], names=[_OWNER, *keys])
            sort_keys = [(_OWNER, "ascending", "at_end"), *sort_keys]
        order = pc.sort_indices(work, sort_keys=sort_keys)
        ordered_keys = stacked.select(keys).take(order)
        starts_mask = np.zeros(rows, dtype=bool)
        starts_mask[0] = True
        if owner is not None:
            starts_mask[1:] |= owner[1:] != owner[:-1]
        for key in keys:
            column = ordered_keys.column(key)
            after, before = column.slice(1), column.slice(0, rows - 1)
            # a group starts where a key differs; null equals null, and nothing else
            differs = pc.fill_null(pc.not_equal(after, before), True)
            both_null = pc.and_(pc.is_null(after), pc.is_null(before))
            differs = pc.and_(differs, pc.invert(both_null))
            starts_mask[1:] |= numbers(differs)
        positions = numbers(order)
        starts = np.flatnonzero(starts_mask)
        group = np.cumsum(starts_mask) - 1  # of each row in sorted order
        out_keys = [ordered_keys.column(key).take(arrow(starts)) for key in keys]
    else:
        positions = np.arange(rows)
        starts = np.zeros(1, dtype=np.int64)
        group = np.zeros(rows, dtype=np.int64)
        out_keys = []
    n_groups = len(starts)
    group_owner = sorted_owner[starts] if owner is not None else np.zeros(n_groups, np.int64)
    # pandas 3.1 reduces with ``ufunc.reduceat`` instead of its Cython loop when the group of
    # each stacked row never decreases (always, for a global aggregate) and a block of float
    # values has no NaN (ops.py, ``_reduceat_aggregate``): then a float sum is numpy's, not
    # Kahan's. The float sums share one block or are one block each; which, depends on how
    # concat built it, so a mix of columns with and without NaN is left to pandas.
    monotonic = np.ones(owners, dtype=bool)
    if rows > 1:
        broken = positions[1:] <= positions[:-1]
        if owner is not None:
            broken &= sorted_owner[1:] == sorted_owner[:-1]
            monotonic[sorted_owner[1:][broken]] = False
        else:
            monotonic[0] = not broken.any()
    pairwise = np.zeros(owners, dtype=bool)
    float_sums = [
        column
        for column, merge in states
        if merge == "sum" and schema.field(column).type == pa.float64()
    ]
    if monotonic.any() and float_sums:
        with_nan = np.stack([_has_nan(stacked.column(c), owner, owners) for c in float_sums])
        mixed = with_nan.any(axis=0) & ~with_nan.all(axis=0)
        if (mixed & monotonic).any():
            raise Unsupported("float sums with and without NaN, on pandas' reduceat path")
        pairwise = monotonic & ~with_nan.any(axis=0)
    # the rank of each sorted row within its group: 0 for the first partial's row, ...
    rank = np.arange(rows) - starts[group]
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(rank))])
    steps = [by_rank[bounds[k] : bounds[k + 1]] for k in range(len(bounds) - 1)]
    take = arrow(positions)
    arrays: list[Any] = list(out_keys)
    for column, merge in states:
        values = stacked.column(column).take(take)
        if column in float_sums and pairwise.any():
            # what np.add.reduceat gives pandas: the first value plus numpy's pairwise sum of
            # the rest, whatever the layout of pandas' block (it reduces each segment alone)
            data = numbers(values)
            with np.errstate(all="ignore"):
                total = np.add.reduceat(data, starts)
            if pairwise.all():
                arrays.append(arrow(total, mask=np.isnan(total)))
                continue
            acc, empty = _reduced(values, merge, group, steps, n_groups)
            assert empty is not None
            summed = pairwise[group_owner]  # the groups of the combines summed pairwise
            acc = np.where(summed, total, acc)
            empty = np.where(summed, np.isnan(total), empty)
            arrays.append(arrow(acc, mask=empty))
            continue
        if merge == "union":
            arrays.append(_union(values, group, n_groups))
            continue
        if merge in _SKETCH_MERGES:
            arrays.append(_sketch_merge(values, merge, group, n_groups))
            continue
        if _is_decimal(values.type):
            arrays.append(_decimal_sum(values, group, n_groups))
            continue
        arrays.append(_reduce(values, merge, group, steps, n_groups))
    widths = np.bincount(group_owner, minlength=owners).tolist()
    return pa.Table.from_arrays(arrays, schema=schema), widths


def _union(values: pa.ChunkedArray, group: Any, n_groups: int) -> pa.Array:
    """Each group's sets (JSON texts, rows in sorted order) merged, as pandas' combine does
    (:func:`~chanbatch.engine.aggregate_kernels.union_states`): the values' texts of every
    set, cut out at once, then each group's distinct texts sorted and joined."""
    lists = _set_texts(values)
    if lists is None:  # texts with escapes, or beside numbers: parsed, set by set
        sets: list[list[str]] = [[] for _ in range(n_groups)]
        for g, text in zip(group.tolist(), values.to_pylist(), strict=True):
            sets[g].append(text)
        return pa.array([union_states(texts) for texts in sets], pa.string())
    texts = pc.list_flatten(lists)
    owner = np.asarray(group)[numbers(pc.list_parent_indices(lists))]
    return joined_sets(texts, owner, n_groups)


def _sketch_merge(values: pa.ChunkedArray, merge: str, group: Any, n_groups: int) -> pa.Array:
    """Each group's sketches (rows in sorted order: partial order within a group) merged, as
    pandas' combine merges them, one group at a time."""
    states: list[list[bytes]] = [[] for _ in range(n_groups)]
    for g, state in zip(group.tolist(), values.to_pylist(), strict=True):
        states[g].append(state)
    merged = _SKETCH_MERGES[merge]
    return pa.array([merged(group_states) for group_states in states], pa.binary())


def _set_texts(sets: pa.Array | pa.ChunkedArray) -> pa.Array | None:
    """Each ``count_distinct`` state's values' texts, as a list (null for no state or an
    empty set), cut out of the JSON text as
    :func:`~chanbatch.engine.aggregate_kernels.state_texts` cuts them; None where it would
    parse one of them."""
    if isinstance(sets, pa.ChunkedArray):
        sets = sets.combine_chunks()
    present = pc.fill_null(pc.not_equal(sets, pa.scalar("[]")), False)
    sets = pc.if_else(present, sets, pa.scalar(None, pa.string()))
    if not pc.any(pc.match_substring(sets, '"')).as_py():  # numbers, booleans
        return pc.split_pattern(pc.utf8_slice_codeunits(sets, 1, -1), ",")
    texts_only = pc.and_(
        pc.and_(pc.starts_with(sets, '["'), pc.ends_with(sets, '"]')),
        pc.invert(pc.match_substring(sets, "\\")),
    )
    if not pc.all(texts_only).as_py():
        return None
    inner = pc.split_pattern(pc.utf8_slice_codeunits(sets, 2, -2), '","')
    quoted = pc.binary_join_element_wise('"', pc.list_flatten(inner), '"', "")
    offsets = pc.subtract(inner.offsets, inner.offsets[0])  # list_flatten starts at the first
    return pa.ListArray.from_arrays(offsets, quoted, mask=pc.is_null(inner))


def joined_sets(texts: pa.Array, owner: Any, n_groups: int) -> pa.Array:
    """Each group's state of the set of ``texts`` (values' JSON texts; ``owner``: the group of
    each): its distinct texts sorted, as Python sorts text (UTF-8 bytes sort alike), joined."""
    table = pa.table({"g": arrow(owner, pa.int64()), "t": texts})
    order = pc.sort_indices(table, sort_keys=[("g", "ascending"), ("t", "ascending")])
    g = np.asarray(owner, dtype=np.int64)[numbers(order)]
    t = texts.take(order)
    keep = np.ones(len(t), dtype=bool)
    if len(t) > 1:
        same = numbers(pc.fill_null(pc.equal(t.slice(1), t.slice(0, len(t) - 1)), False))
        keep[1:] = ~(same & (g[1:] == g[:-1]))
    if not keep.all():
        t, g = t.filter(arrow(keep)), g[keep]
    offsets = np.zeros(n_groups + 1, dtype=np.int32)
    np.cumsum(np.bincount(g, minlength=n_groups), out=offsets[1:])
    joined = pc.binary_join(pa.ListArray.from_arrays(arrow(offsets), t), ",")
    return pc.binary_join_element_wise("[", joined, "]", "")


def _is_decimal(kind: pa.DataType) -> bool:
    """A decimal sum's state type: decimal(38, s), as the partials make it."""
    return bool(pa.types.is_decimal128(kind) and kind.precision == 38)


def _decimal_sum(values: pa.ChunkedArray, group: Any, n_groups: int) -> pa.Array:
    """Each group's decimal sums added exactly, null for a group without values: pandas'
    grouped ``sum(min_count=1)`` of an Arrow decimal(38, s), which is Arrow's grouped sum, of
    the same type. Past 38 digits pandas computes it otherwise: an ArrowInvalid (Unsupported)."""
    found = unscaled(values)  # None with nulls
    if found is not None and len(found[0]):
        # no nulls, so every group has a value; if no sum can leave an int64, numpy adds them
        exact, top = found
        if top < (2**63 - 1) // len(exact):
            total = np.zeros(n_groups, dtype=np.int64)
            np.add.at(total, group, exact)
            return decimals(total, values.type)
    table = pa.table({"g": arrow(group, pa.int64()), "v": values})
    options = pc.ScalarAggregateOptions(skip_nulls=True, min_count=1)
    grouped = table.group_by("g", use_threads=False).aggregate([("v", "sum", options)])
    total = grouped.sort_by("g").column("v_sum").combine_chunks()
    if grouped.num_rows != n_groups or total.type != values.type:
        raise Unsupported("a decimal sum of another shape")
    total.validate(full=True)  # past 38 digits: ArrowInvalid
    return total


def _has_nan(values: pa.ChunkedArray, owner: Any = None, owners: int = 1) -> Any:
    """Whether pandas sees a NaN in this float column (a null or a NaN), per combine."""
    if owner is None:
        found = bool(values.null_count) or bool(pc.any(pc.is_nan(values)).as_py())
        return np.array([found])
    missing = numbers(pc.is_null(values, nan_is_null=True))
    return np.bincount(owner[missing], minlength=owners) > 0


def _reduce(
    values: pa.ChunkedArray, merge: str, group: Any, steps: list[Any], n_groups: int
) -> pa.Array:
    """One state column merged per group, as pandas' grouped reduction visits the rows."""
    acc, empty = _reduced(values, merge, group, steps, n_groups)
    return arrow(acc, mask=empty)


def _reduced(
    values: pa.ChunkedArray, merge: str, group: Any, steps: list[Any], n_groups: int
) -> tuple[Any, Any]:
    """:func:`_reduce`'s values, and which are null (None: none can be)."""
    is_float = values.type == pa.float64()
    if is_float:
        data = numbers(values)  # null -> NaN, which pandas skips alike
        valid = data == data
    else:
        valid = numbers(pc.is_valid(values))
        data = numbers(pc.fill_null(values, pa.scalar(0, values.type)))
    dtype = data.dtype
    nobs = np.zeros(n_groups, dtype=np.int64)
    if merge in ("total", "sum"):
        acc = np.zeros(n_groups, dtype=dtype)
        comp = np.zeros(n_groups, dtype=dtype)
    elif merge == "min":
        acc = np.full(n_groups, np.inf if is_float else np.iinfo(np.int64).max, dtype=dtype)
    else:
        acc = np.full(n_groups, -np.inf if is_float else np.iinfo(np.int64).min, dtype=dtype)
    if is_float and merge in ("min", "max"):
        # pandas keeps the first of equal extremes on its Cython path, and numpy's choice on
        # its reduceat path; the two differ only between 0.0 and -0.0: left to pandas
        zero = valid & (data == 0)
        negative = np.signbit(data)
        both = np.bincount(group[zero & negative], minlength=n_groups) * np.bincount(
            group[zero & ~negative], minlength=n_groups
        )
        if both.any():
            raise Unsupported("0.0 and -0.0 in one group's extreme")
    with np.errstate(all="ignore"):
        for step in steps:  # each group at most once per step
            step = step[valid[step]]
            g, val = group[step], data[step]
            nobs[g] += 1
            if merge in ("total", "sum"):
                if is_float:
                    # Kahan, as group_sum: y = v - c; t = s + y; c = (t - s) - y
                    s = acc[g]
                    y = val - comp[g]
                    t = s + y
                    c = (t - s) - y
                    c[~np.isfinite(c)] = 0.0
                    comp[g] = c
                    acc[g] = t
                else:
                    acc[g] = acc[g] + val  # int64: wraps, as the C loop does
            elif merge == "min":
                cur = acc[g]
                acc[g] = np.where(val < cur, val, cur)
            else:
                cur = acc[g]
                acc[g] = np.where(val > cur, val, cur)
    if merge == "total":
        return acc, None
    empty = nobs == 0
    if is_float:  # a NaN sum (inf - inf) is stored as null too, as Table.from_pandas does
        empty |= np.isnan(acc)
    return acc, empty


# -- finish --------------------------------------------------------------------------------------

# How each aggregate's output comes from its combined states, as aggregate_kernels' finishers
# compute it on pandas: count is the count; sum the sum (null without values); mean the sum
# as a float divided by the count (null without values); min and max the state (null without
# values). var and std are left to pandas.
_FINISHED = {
    "count",
    "sum",
    "mean",
    "min",
    "max",
    "count_distinct",
    "approx_count_distinct",
    "approx_median",
    "approx_quantile",
}
# read off a sketch (none for a group without values: 0 distinct, a null quantile), unmasked
_SKETCHED = ("approx_count_distinct", "approx_median", "approx_quantile")


def finish(spec: Aggregate, combined: pa.Table) -> pa.Table:
    """The aggregate's output from its combined partial, as the pandas finish's result is
    stored: group keys, then aggregates, float NaN as null, every field nullable. Raises
    Unsupported where that is not certain."""
    keys = list(spec.group_by)
    states = _states(spec)
    _schema(combined, keys, states)  # the types the combine covers, or Unsupported
    if not keys and combined.num_rows == 0:
        raise Unsupported("a global aggregate over no partial rows")
    columns: list[Any] = [combined.column(key) for key in keys]
    names = list(keys)
    for name, agg in spec.aggregates.items():
        if agg.func not in _FINISHED:
            raise Unsupported(f"finishing {agg.func}")
        n = combined.column(state_column(name, "n"))
        some = pc.greater(n, pa.scalar(0, n.type))
        if agg.func == "count":
            value = n
        elif agg.func == "count_distinct":
            value = _distinct_counts(combined.column(state_column(name, "values")))
        elif agg.func == "approx_count_distinct":
            states = combined.column(state_column(name, "hll")).to_pylist()
            value = pa.array([sketches.hll_estimate(s) for s in states], pa.int64())
        elif agg.func in _SKETCHED:
            q = 0.5 if agg.q is None else agg.q
            states = combined.column(state_column(name, "digest")).to_pylist()
            value = pa.array([sketches.tdigest_quantile(s, q) for s in states], pa.float64())
        elif agg.func == "mean":
            total = combined.column(state_column(name, "sum"))
            if _is_decimal(total.type):
                floats = _decimal_floats(total)
            else:
                floats = total.cast(pa.float64(), safe=False)
            value = pc.divide(floats, n.cast(pa.float64()))
        else:
            value = combined.column(state_column(name, agg.func))
        if agg.func not in ("count", "count_distinct", *_SKETCHED):
            value = pc.if_else(some, value, pa.scalar(None, value.type))
        columns.append(value)
        names.append(name)
    fields = [
        pa.field(name, column.type, nullable=True)
        for name, column in zip(names, columns, strict=True)
    ]
    columns = [nan_to_null(c) if c.type == pa.float64() else c for c in columns]
    return pa.Table.from_arrays(columns, schema=pa.schema(fields)).combine_chunks()


def _decimal_floats(values: pa.ChunkedArray) -> pa.Array:
    """Each decimal as the nearest float64, as pandas' ``astype("float64")`` makes it (Python's
    ``float`` of each ``Decimal``, correctly rounded); null stays null.

    Where the unscaled integer and ``10**scale`` are both exact as floats (below 2**53, a scale
    of at most 22), their IEEE quotient is the correctly rounded value itself; anything else is
    converted value by value, as pandas does it."""
    found = unscaled(values)  # None with nulls or past an int64
    scale = values.type.scale
    if found is not None and scale <= 22 and found[1] <= 2**53:
        return arrow(found[0].astype(np.float64) / float(10**scale), pa.float64())
    return pa.array([None if d is None else float(d) for d in values.to_pylist()], pa.float64())


def _distinct_counts(sets: pa.ChunkedArray) -> pa.Array:
    """The size of each ``count_distinct`` state's set (0 for none), as
    :func:`~chanbatch.engine.aggregate_kernels.distinct_count` reads it."""
    lists = _set_texts(sets)
    if lists is None:
        return pa.array([distinct_count(text) for text in sets.to_pylist()], pa.int64())
    return pc.fill_null(pc.list_value_length(lists), 0).cast(pa.int64())
