"""The Arrow combine against the pandas combine, whose stored result defines it: same bytes.

Partials are computed as a run computes them (the Arrow partial where it applies, else the
pandas one) over random cuts of random tables, and stored as the cache stores them; then both
combines merge them, and what each would store must be the same Parquet bytes.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from enginekit import tables_of
from hypokit import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chanbatch.blueprint.expr import parse_aggregate
from chanbatch.blueprint.model import Aggregate
from chanbatch.engine import aggregate, aggregate_kernels, arrow_combine, columnar
from chanbatch.snapshot.freeze import encode_parquet
from chanbatch.snapshot.normalize import normalize_table
from chanbatch.snapshot.read import canonical, to_pandas

SETTINGS = settings(
    max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

_floats = st.one_of(
    st.none(),
    st.just(math.nan),
    # magnitudes far apart, so that compensation matters; overflow to inf; signed zeros
    st.sampled_from(
        [0.0, -0.0, 0.1, 1.0, -1.0, 1e16, -1e16, 3e-17, 5e-324, 1e308, -1e308, 1.7e308]
    ),
    st.sampled_from([math.inf, -math.inf]),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.floats(allow_nan=False, allow_infinity=False),
)
_ints = st.one_of(st.integers(-5, 9), st.sampled_from([2**62, -(2**62), 2**63 - 1, -(2**63)]))
_texts = st.one_of(st.none(), st.sampled_from(["", "a", "b", "é", "Z", "a b"]))
_dates = st.one_of(st.none(), st.dates(dt.date(1990, 1, 1), dt.date(1990, 1, 4)))

COLUMNS = {
    "k": (pa.string(), _texts),
    "m": (pa.int64(), st.integers(0, 3)),
    "q": (pa.int64(), st.one_of(st.none(), st.integers(0, 2))),  # an int key with nulls
    "d": (pa.date32(), _dates),
    "b": (pa.bool_(), st.booleans()),
    "f": (pa.float64(), _floats),
    "g": (pa.float64(), _floats),
    "i": (pa.int64(), _ints),
    "n": (pa.int64(), st.one_of(st.none(), _ints)),
}

_keys = st.lists(st.sampled_from(["k", "m", "q", "d", "b"]), min_size=0, max_size=3, unique=True)
_aggregates = st.lists(
    st.sampled_from(
        [
            "count()",
            "count(f)",
            "sum(f)",
            "sum(g)",
            "mean(f)",
            "mean(i)",
            "mean(n)",
            "sum(f * g)",
            "sum(i)",
            "sum(n)",
            "min(f)",
            "max(g)",
            "min(i)",
            "max(n)",
            "count_distinct(f)",  # sets of distinct values, merged by union
            "count_distinct(n)",
            "count_distinct(k)",
            "approx_count_distinct(i)",  # sketches, merged group by group in partial order
            "approx_count_distinct(k)",
            "approx_median(f)",
            "approx_quantile(n, 0.25)",
        ]
    ),
    min_size=1,
    max_size=5,
    unique=True,
)


def tables() -> st.SearchStrategy[pa.Table]:
    return tables_of(COLUMNS, max_rows=40, chunked=False)


@st.composite
def cuts(draw: st.DrawFn, rows: int) -> list[tuple[int, int]]:
    """Slices of ``rows`` rows in order, some empty."""
    points = sorted(draw(st.lists(st.integers(0, rows), min_size=1, max_size=24)))
    bounds = [0, *points, rows]
    return list(itertools.pairwise(bounds))


def _spec(keys: list[str], aggregates: list[str]) -> Aggregate:
    return Aggregate(
        group_by=tuple(keys),
        aggregates={f"a{i}": parse_aggregate(text) for i, text in enumerate(aggregates)},
    )


def _stored_frame(frame: pd.DataFrame) -> pa.Table:
    """What ``cache.write_result`` stores for a task's frame (``run_task`` makes it canonical)."""
    return normalize_table(pa.Table.from_pandas(canonical(frame), preserve_index=False))


def _partial(spec: Aggregate, table: pa.Table) -> pa.Table:
    """A slice's partial as a run computes it: on Arrow where it can (unstored, as a consumer
    in the same run gets it), else on pandas and stored."""
    arrow = columnar.arrow_input(table)
    if arrow is not None:
        try:
            return columnar.partial(spec, arrow)
        except columnar.Unsupported:
            pass
    return _stored_frame(aggregate.partial(spec, to_pandas(table)))


def _pandas_combine(spec: Aggregate, partials: list[pa.Table]) -> pa.Table:
    return _stored_frame(aggregate.combine(spec, [to_pandas(p) for p in partials]))


def _same_bits(got: pa.Table, want: pa.Table) -> None:
    assert got.schema == want.schema
    assert got.equals(want)
    for name in want.column_names:
        if want.schema.field(name).type == pa.float64():
            a = np.array(got.column(name).fill_null(0.0).to_numpy()).view("int64")
            b = np.array(want.column(name).fill_null(0.0).to_numpy()).view("int64")
            assert (a == b).all(), name
            assert got.column(name).null_count == want.column(name).null_count
    assert bytes(encode_parquet(got)) == bytes(encode_parquet(want))


def _both(spec: Aggregate, partials: list[pa.Table]) -> pa.Table | None:
    """Both combines on ``partials``; the stored table when the Arrow one took them."""
    want = _pandas_combine(spec, partials)
    try:
        got = arrow_combine.combine(spec, partials)
    except arrow_combine.Unsupported:
        return None
    _same_bits(got, want)
    # what the engine writes for an Arrow result (graph._store)
    stored = columnar.storable(got)
    assert stored is not None
    _same_bits(stored, want)
    return got


@SETTINGS
@given(st.data(), tables(), _keys, _aggregates)
def test_combine_matches_pandas_to_the_bit(
    data: st.DataObject, table: pa.Table, keys: list[str], aggregates: list[str]
) -> None:
    spec = _spec(keys, aggregates)
    partials = [_partial(spec, table.slice(a, b - a)) for a, b in data.draw(cuts(table.num_rows))]
    got = _both(spec, partials)
    if got is None:
        return
    # a second level of the tree, on results both computed and read back from the cache
    split = data.draw(st.integers(0, len(partials)))
    halves = [p for p in (partials[:split], partials[split:]) if p]
    level = [_either(spec, half) for half in halves]
    _both(spec, level)
    read_back = [_pandas_combine(spec, half) for half in halves]
    _both(spec, read_back)
    # the finish, on the combined result as computed and as read back from the cache
    _finished(spec, got)
    _finished(spec, _pandas_combine(spec, partials))


def _finished(spec: Aggregate, combined: pa.Table) -> pa.Table | None:
    """Both finishes of ``combined``; the stored table when the Arrow one took it."""
    want = _stored_frame(aggregate.finish(spec, to_pandas(combined)))
    try:
        got = arrow_combine.finish(spec, combined)
    except arrow_combine.Unsupported:
        return None
    _same_bits(got, want)
    stored = columnar.storable(got)
    assert stored is not None
    _same_bits(stored, want)
    return got


@SETTINGS
@given(tables(), _keys, _aggregates)
def test_a_per_slice_aggregate_matches_pandas_to_the_bit(
    table: pa.Table, keys: list[str], aggregates: list[str]
) -> None:
    """A ``per_slice`` aggregate of one slice on Arrow stores what the pandas path stores: its
    own partial finished at once, never read back from the cache in between."""
    spec = _spec(keys, aggregates)
    want = _stored_frame(aggregate.finish(spec, aggregate.partial(spec, to_pandas(table))))
    arrow = columnar.arrow_input(table)
    assert arrow is not None
    try:
        got = columnar.aggregated(spec, arrow)
    except columnar.Unsupported:
        return
    stored = columnar.storable(got)
    assert stored is not None
    _same_bits(stored, want)
    # one row per group of the keys, as plain Python counts them
    groups = {tuple(row[k] for k in keys) for row in table.to_pylist()}
    assert got.num_rows == (len(groups) if keys else 1)


def _either(spec: Aggregate, partials: list[pa.Table]) -> pa.Table:
    try:
        return arrow_combine.combine(spec, partials)
    except arrow_combine.Unsupported:
        return _pandas_combine(spec, partials)


def test_the_common_shapes_are_taken() -> None:
    """Counts, sums, means, min and max over float, int and text keys run here, and global
    aggregates too; the property test above would pass on declines alone."""
    rng = np.random.default_rng(3)
    rows = 300
    table = pa.table(
        {
            "k": pa.array(rng.choice(["A", "N", "R"], rows)).cast(pa.string()),
            "m": pa.array(rng.integers(0, 3, rows)),
            "f": pa.array(rng.choice([1e16, 1.0, -1e16, 0.1, math.nan], rows)),
            "i": pa.array(rng.integers(-5, 5, rows)),
        }
    )
    aggs = ["count()", "sum(f)", "mean(f)", "min(f)", "max(f)", "sum(i)", "min(i)", "count(f)"]
    aggs_distinct = ["count()", "count_distinct(f)", "count_distinct(k)", "sum(i)"]
    for keys, names in ((["k"], aggs), (["k", "m"], aggs), ([], aggs), (["m"], aggs_distinct)):
        spec = _spec(keys, names)
        partials = [_partial(spec, table.slice(a, 30)) for a in range(0, rows, 30)]
        combined = _both(spec, partials)
        assert combined is not None, keys
        assert _finished(spec, combined) is not None, keys


def _kahan(values: list[float]) -> float:
    """pandas' group_sum on one group's values, in order."""
    total = compensation = 0.0
    for value in values:
        y = value - compensation
        t = total + y
        compensation = (t - total) - y
        if not math.isfinite(compensation):
            compensation = 0.0
        total = t
    return total


_SUMMANDS = [1e16, 1.0, 1.0, 1.0, -1e16, 0.1, 3e-17, 1.0, 1e16, 0.7, -1e16, 1.0, 2.5]


def test_interleaved_groups_sum_with_kahan() -> None:
    """Two groups in every partial: pandas' Cython loop, compensated."""
    spec = _spec(["m"], ["sum(f)"])
    partials = [columnar.partial(spec, pa.table({"m": [0, 1], "f": [v, -v]})) for v in _SUMMANDS]
    got = _both(spec, partials)
    assert got is not None
    assert got.column("a0\x1fsum").to_pylist() == [
        _kahan(_SUMMANDS),
        _kahan([-v for v in _SUMMANDS]),
    ]


def test_groups_in_order_sum_as_numpy_does() -> None:
    """One group, or groups that only grow from partial to partial (a global aggregate always):
    pandas takes ``np.add.reduceat``, pairwise past eight values; with a NaN, its Cython loop."""
    for keys in ([], ["m"]):
        spec = _spec(keys, ["sum(f)", "sum(g)", "count()"])
        partials = [
            _partial(spec, pa.table({"m": [i // 4], "f": [v], "g": [v * 3]}))
            for i, v in enumerate(_SUMMANDS * 3)
        ]
        assert _both(spec, partials) is not None
        with_nan = [
            *partials,
            _partial(
                spec,
                pa.table(
                    {
                        "m": [9],
                        "f": pa.array([None], pa.float64()),
                        "g": pa.array([None], pa.float64()),
                    }
                ),
            ),
        ]
        assert _both(spec, with_nan) is not None
    spec = _spec(["m"], ["sum(f)", "sum(g)"])
    no_g = pa.array([None], pa.float64())
    one_nan = [_partial(spec, pa.table({"m": [0], "f": [v], "g": no_g})) for v in (1.0, 2.0)]
    with pytest.raises(arrow_combine.Unsupported):  # which path depends on pandas' blocks
        arrow_combine.combine(spec, one_nan)


def test_signed_zero_extremes_are_left_to_pandas() -> None:
    spec = _spec(["m"], ["min(f)"])
    partials = [
        _stored_frame(aggregate.partial(spec, pd.DataFrame({"m": [0], "f": [v]})))
        for v in (0.0, -0.0)
    ]
    with pytest.raises(arrow_combine.Unsupported):
        arrow_combine.combine(spec, partials)


def test_empty_partials() -> None:
    spec = _spec(["m"], ["sum(f)", "count()", "mean(f)", "min(f)"])
    empty = _partial(
        spec, pa.table({"m": pa.array([], pa.int64()), "f": pa.array([], pa.float64())})
    )
    one = _partial(spec, pa.table({"m": [1, 1, 2], "f": [math.nan, 2.0, None]}))
    assert _both(spec, [empty, empty]) is not None
    combined = _both(spec, [empty, one, empty])
    assert combined is not None
    finished = _finished(spec, combined)
    assert finished is not None
    # group 2 has no values: its sum, mean and min are null, its count of rows is 1
    assert finished.to_pylist() == [
        {"m": 1, "a0": 2.0, "a1": 2, "a2": 2.0, "a3": 2.0},
        {"m": 2, "a0": None, "a1": 1, "a2": None, "a3": None},
    ]


def test_what_it_declines() -> None:
    table = pa.table({"m": [0, 1], "f": [1.0, 2.0], "x": [1.5, 2.5]})
    for text in ("var(f)", "std(f)"):
        spec = _spec(["m"], [text])
        partials = [_stored_frame(aggregate.partial(spec, to_pandas(table)))] * 2
        with pytest.raises(arrow_combine.Unsupported):
            arrow_combine.combine(spec, partials)
    spec = _spec(["x"], ["count()"])  # a float key
    partials = [_stored_frame(aggregate.partial(spec, to_pandas(table)))] * 2
    with pytest.raises(arrow_combine.Unsupported):
        arrow_combine.combine(spec, partials)
    spec = _spec(["m"], ["sum(f)"])
    good = columnar.partial(spec, table)
    other = good.set_column(1, "a0\x1fsum", pa.array([1, 2]))  # an int sum beside a float one
    with pytest.raises(arrow_combine.Unsupported):
        arrow_combine.combine(spec, [good, other])


# Texts that cut a set's JSON text in the wrong place if its texts were split naively: commas,
# quotes and '","' inside a value, a space (sorts before the closing quote), escapes.
_tricky = st.lists(
    st.sampled_from(["", ",", '"', '","', ',"', '",', "a", "a b", "a,b", "[", "]", "é", "\\"]),
    max_size=3,
).map("".join)


@SETTINGS
@given(
    st.data(),
    tables_of(
        {
            "m": (pa.int64(), st.integers(0, 2)),
            "s": (pa.string(), st.one_of(st.none(), _tricky)),
            "n": (pa.int64(), st.one_of(st.none(), _ints)),
        },
        max_rows=40,
        chunked=False,
    ),
)
def test_distinct_sets_merge_to_their_union(data: st.DataObject, table: pa.Table) -> None:
    """Sets cut out of their JSON text (no parsing) merge to the set of all the values: the
    counts pandas' nunique gives on the whole table, and the pandas combine's bytes."""
    spec = _spec(["m"], ["count_distinct(s)", "count_distinct(n)"])
    partials = [_partial(spec, table.slice(a, b - a)) for a, b in data.draw(cuts(table.num_rows))]
    combined = _both(spec, partials)
    if combined is None:
        return
    finished = _finished(spec, combined)
    assert finished is not None
    whole = to_pandas(table).groupby("m", sort=True)[["s", "n"]].nunique(dropna=True)
    assert finished.column("m").to_pylist() == whole.index.tolist()
    assert finished.column("a0").to_pylist() == whole["s"].tolist()
    assert finished.column("a1").to_pylist() == whole["n"].tolist()


def test_distinct_sets_cut_out_of_their_text() -> None:
    """A set's texts cut out of it are json's, and their union is the set of all values."""
    values = [["a b", "a", ",", "a,b"], ["", "a", "[", ","], [], ["é", '"', '","', "a"]]
    states = [aggregate_kernels.distinct_state(v) for v in values]
    for state, v in zip(states, values, strict=True):
        assert aggregate_kernels.state_texts(state) == sorted(json.dumps(x) for x in set(v))
        assert aggregate_kernels.distinct_count(state) == len(set(v))
    everything = {x for v in values for x in v}
    merged = arrow_combine._union(pa.chunked_array([states]), np.zeros(4, np.int64), 1)
    assert json.loads(merged[0].as_py()) == sorted(everything, key=json.dumps)
    assert merged[0].as_py() == aggregate_kernels.union_states(states)
    # without the escaped ones, the texts are cut out on Arrow too
    plain = pa.chunked_array([states[:3]])
    assert arrow_combine._set_texts(plain) is not None
    assert arrow_combine._set_texts(pa.chunked_array([states])) is None


def test_sketches_merge_and_finish_here() -> None:
    """HLL and t-digest states merge and finish here, to pandas' bytes (the property test
    passes on declines alone), over empty slices too; the estimates against the exact answers
    pandas computes on the whole table."""
    rng = np.random.default_rng(5)
    rows = 3000
    table = pa.table(
        {
            "m": pa.array(rng.integers(0, 3, rows)),
            "i": pa.array(rng.integers(0, 900, rows)),
            "f": pa.array(rng.exponential(size=rows)),
        }
    )
    spec = _spec(["m"], ["approx_count_distinct(i)", "approx_median(f)", "approx_quantile(f, 0.1)"])
    partials = [
        _partial(spec, table.slice(a, b))
        for a, b in ((0, 0), *((a, 200) for a in range(0, rows, 200)))
    ]
    combined = _both(spec, partials)
    assert combined is not None
    level = [_either(spec, partials[:5]), _either(spec, partials[5:])]
    assert _both(spec, level) is not None
    finished = _finished(spec, combined)
    assert finished is not None
    frame = table.to_pandas()
    for row in finished.to_pylist():
        group = frame[frame["m"] == row["m"]]
        assert abs(row["a0"] / group["i"].nunique() - 1) < 0.049
        assert abs((group["f"] <= row["a1"]).mean() - 0.5) < 0.01
        assert abs((group["f"] <= row["a2"]).mean() - 0.1) < 0.01
    empty = [_partial(spec, table.slice(0, 0))] * 2
    assert _both(spec, empty) is not None


@st.composite
def groupings(draw: st.DrawFn, n: int) -> list[tuple[int, int]]:
    """``n`` partials cut into consecutive combines of at least one partial each."""
    points = sorted(set(draw(st.lists(st.integers(1, max(n - 1, 1)), min_size=1, max_size=8))))
    bounds = [0, *(p for p in points if 0 < p < n), n]
    return list(itertools.pairwise(bounds))


@SETTINGS
@given(st.data(), tables(), _keys, _aggregates)
def test_many_combines_at_once_match_pandas(
    data: st.DataObject, table: pa.Table, keys: list[str], aggregates: list[str]
) -> None:
    """``combine_many`` gives each combine what the pandas combine stores for its partials
    alone, to the bit, whatever the other combines merged beside it hold."""
    spec = _spec(keys, aggregates)
    partials = [_partial(spec, table.slice(a, b - a)) for a, b in data.draw(cuts(table.num_rows))]
    groups = [partials[a:b] for a, b in data.draw(groupings(len(partials)))]
    try:
        got = arrow_combine.combine_many(spec, groups)
    except arrow_combine.Unsupported:
        # then it is not certain for one of them: each alone either declines or is exact
        for group in groups:
            _both(spec, group)
        return
    assert len(got) == len(groups)
    for group, result in zip(groups, got, strict=True):
        want = _pandas_combine(spec, group)
        _same_bits(result, want)
        stored = columnar.storable(result)
        assert stored is not None
        _same_bits(stored, want)


def test_many_combines_sum_each_as_pandas_would_alone() -> None:
    """In one call: a combine whose groups only grow (pandas sums it pairwise), one whose
    groups interleave (Kahan), one with a NaN (Kahan), a combine of one partial and one of
    empty partials; each equals the pandas combine of its own partials."""
    spec = _spec(["m"], ["sum(f)", "count()", "min(f)", "mean(f)"])
    growing = [
        _partial(spec, pa.table({"m": [i // 4], "f": [v]})) for i, v in enumerate(_SUMMANDS * 3)
    ]
    interleaved = [_partial(spec, pa.table({"m": [0, 1], "f": [v, -v]})) for v in _SUMMANDS]
    with_nan = [
        *growing[:9],
        _partial(spec, pa.table({"m": [9], "f": pa.array([None], pa.float64())})),
    ]
    empty = _partial(
        spec, pa.table({"m": pa.array([], pa.int64()), "f": pa.array([], pa.float64())})
    )
    groups = [growing, interleaved, with_nan, growing[:1], [empty, empty], [empty, *growing[3:5]]]
    got = arrow_combine.combine_many(spec, groups)
    for group, result in zip(groups, got, strict=True):
        _same_bits(result, _pandas_combine(spec, group))
    # and the interleaved one with Kahan's compensation, as alone
    assert got[1].column("a0\x1fsum").to_pylist() == [
        _kahan(_SUMMANDS),
        _kahan([-v for v in _SUMMANDS]),
    ]


def test_many_global_combines() -> None:
    """Global aggregates (no keys): each combine is one group, its own sum."""
    spec = _spec([], ["sum(f)", "count()", "max(i)"])
    rng = np.random.default_rng(11)
    table = pa.table({"f": rng.normal(size=200) * 1e10, "i": rng.integers(-9, 9, 200)})
    partials = [_partial(spec, table.slice(a, 10)) for a in range(0, 200, 10)]
    groups = [partials[:7], partials[7:8], partials[8:20]]
    got = arrow_combine.combine_many(spec, groups)
    frame = table.to_pandas()
    for (a, b), result in zip(((0, 70), (70, 80), (80, 200)), got, strict=True):
        assert result.column("a1\x1fn").to_pylist() == [b - a]
        assert result.column("a2\x1fmax").to_pylist() == [int(frame["i"][a:b].max())]
        assert math.isclose(result.column("a0\x1fsum")[0].as_py(), frame["f"][a:b].sum())
    for group, result in zip(groups, got, strict=True):
        _same_bits(result, _pandas_combine(spec, group))
