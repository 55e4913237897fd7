"""The Arrow path of the per-slice chain against the pandas path, which defines the meaning.

Every stage the Arrow path runs must give, after ``to_pandas``, exactly the frame the pandas
path gives once the engine has made it canonical (dtypes and bits included: see
``snapshot.read.canonical``), and every partial it computes must be stored as the same
bytes; anything else it must refuse with ``Unsupported``, leaving the pandas path to decide.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from blueprintkit import expressions_over
from enginekit import tables_of
from hypokit import examples
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from chanbatch.blueprint.expr import parse_aggregate, parse_expr
from chanbatch.blueprint.model import (
    Aggregate,
    Derive,
    Filter,
    Join,
    Rename,
    Select,
    Sort,
    SortKey,
    Stage,
)
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
from chanbatch.engine import aggregate, columnar, execute
from chanbatch.snapshot.freeze import encode_parquet
from chanbatch.snapshot.normalize import normalize_table
from chanbatch.snapshot.read import canonical, to_pandas

SETTINGS = settings(
    max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# -- tables -------------------------------------------------------------------------------------

_floats = st.one_of(
    st.none(),
    st.just(math.nan),
    st.sampled_from([0.0, -0.0, 1.5, -2.25, 1e16, math.inf, -math.inf]),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
)
_texts = st.one_of(st.none(), st.sampled_from(["", "a", "b", "JFK", "é", "a b", "2013-01-02"]))
_dates = st.one_of(st.none(), st.dates(dt.date(1990, 1, 1), dt.date(2030, 12, 31)))
_big = st.sampled_from([2**62, -(2**62), 2**53 + 1, 2**63 - 1, -(2**63)])
_ints = st.one_of(st.integers(-5, 9), _big)

COLUMNS = {
    "i": (pa.int64(), _ints),  # an int without nulls stays int64 in pandas
    "n": (pa.int64(), st.one_of(st.none(), _ints)),  # with nulls: pandas' nullable Int64
    "f": (pa.float64(), _floats),
    "s": (pa.string(), _texts),
    "d": (pa.date32(), _dates),
    "b": (pa.bool_(), st.booleans()),
    "k": (pa.string(), st.one_of(st.none(), st.sampled_from(["x", "y", "é"]))),
    "m": (pa.int64(), st.integers(0, 3)),
}


def tables(min_rows: int = 0) -> st.SearchStrategy[pa.Table]:
    """A table of every column kind, sometimes in several chunks, as loads and filters give."""
    return tables_of(COLUMNS, max_rows=40, min_rows=min_rows)


# -- well-typed expressions, which the Arrow path mostly covers --------------------------------

_columns = st.sampled_from([Column(name=c) for c in ("i", "n", "f")])
_numbers = st.one_of(
    _columns,
    _columns,
    st.one_of(st.integers(-3, 3), st.sampled_from([0.5, -1.25, 2**62])).map(
        lambda v: Literal(value=v)
    ),
)


def _arith(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    return st.one_of(
        st.builds(
            lambda op, a, b: BinOp(op=op, left=a, right=b),
            st.sampled_from(["+", "-", "*", "/"]),
            children,
            children,
        ),
        children.map(lambda a: Negate(operand=a)),
    )


numeric = st.recursive(_numbers, _arith, max_leaves=4)
_ops = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])
_atoms = st.one_of(
    st.builds(lambda op, a, b: Compare(operands=(a, b), ops=(op,)), _ops, numeric, numeric),
    st.builds(
        lambda op, v: Compare(operands=(Column(name="s"), Literal(value=v)), ops=(op,)),
        _ops,
        st.sampled_from(["", "a", "JFK", "é"]),
    ),
    st.builds(
        lambda op, v: Compare(operands=(Column(name="d"), v), ops=(op,)),
        _ops,
        st.sampled_from(
            [
                Literal(value="2010-06-01"),
                Call(name="date", args=(Literal(value="2001-02-03"),)),
                Column(name="d"),
            ]
        ),
    ),
    st.builds(
        lambda a, b, c: Compare(operands=(a, b, c), ops=("<", "<=")), numeric, numeric, numeric
    ),
    st.builds(
        lambda col, values, negated: InList(
            operand=Column(name=col), values=tuple(values), negated=negated
        ),
        st.sampled_from(["i", "n", "f", "s", "k", "m"]),
        st.lists(
            st.one_of(st.none(), st.integers(-3, 3), st.sampled_from(["a", "x", "é", 1.5])),
            max_size=3,
        ),
        st.booleans(),
    ),
    st.builds(
        lambda name, col: Call(name=name, args=(Column(name=col),)),
        st.sampled_from(["is_null", "not_null"]),
        st.sampled_from(["f", "n", "s", "d", "i"]),
    ),
    st.just(Compare(operands=(Column(name="b"), Literal(value=True)), ops=("==",))),
)


def _logic(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    return st.one_of(
        st.builds(
            lambda op, parts: BoolOp(op=op, operands=tuple(parts)),
            st.sampled_from(["and", "or"]),
            st.lists(children, min_size=2, max_size=3),
        ),
        children.map(lambda a: Not(operand=a)),
    )


conditions = st.recursive(_atoms, _logic, max_leaves=4)
anything = expressions_over(list(COLUMNS), max_leaves=5)


def _stage(operation: Any) -> Stage:
    return Stage(name="s1", from_="t", operation=operation)


def _pandas(stage: Stage, table: pa.Table) -> pd.DataFrame | Exception:
    try:
        return canonical(execute.apply_rowwise(stage, to_pandas(table), (), frozenset()))
    except Exception as exc:  # the pandas path's own error: the Arrow path must not succeed
        return exc


def _arrow(stage: Stage, table: pa.Table) -> pd.DataFrame | None:
    arrow = columnar.arrow_input(table)
    assert arrow is not None
    try:
        return to_pandas(columnar.apply_rowwise(stage, arrow))
    except columnar.Unsupported:
        return None


def _same(stage: Stage, table: pa.Table) -> bool:
    """The Arrow path agrees with pandas exactly; False when it declined."""
    got = _arrow(stage, table)
    want = _pandas(stage, table)
    if got is None:
        return False
    assert not isinstance(want, Exception), f"pandas raised {want!r}, Arrow did not"
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    return True


@SETTINGS
@given(tables(), conditions)
def test_filter_matches_pandas(table: pa.Table, condition: Expr) -> None:
    _same(_stage(Filter(expr=condition)), table)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("f in [0]", [-0.0, 0.0]),
        ("f in [-0.0]", [-0.0, 0.0]),
        ("f in [0, 2.5]", [-0.0, 0.0, 2.5]),
        ("f not in [0]", [2.5]),
    ],
)
def test_in_finds_negative_zero_as_equals_does(text: str, want: list) -> None:
    """``-0.0 == 0.0``, so ``f in [0]`` keeps a row of -0.0, as pandas and ``==`` do (Arrow's
    ``is_in`` looks floats up by their bits: found by the property test above). A null, and a
    NaN (which pandas takes for one), are kept by neither ``in`` nor ``not in``."""
    table = pa.table({"f": pa.array([-0.0, 0.0, 2.5, None, float("nan")], pa.float64())})
    stage = _stage(Filter(expr=parse_expr(text)))
    assert _same(stage, table)
    kept = _arrow(stage, table)
    assert kept is not None
    assert [math.copysign(1, v) * abs(v) for v in kept["f"]] == want
    assert kept["f"].tolist() == [v for v in table.column("f").to_pylist() if v in want]


@SETTINGS
@given(tables(), st.lists(numeric, min_size=1, max_size=3), st.booleans())
def test_derive_matches_pandas(table: pa.Table, exprs: list[Expr], replace: bool) -> None:
    names = ["f" if replace else "new0", "new1", "new2"]
    columns = dict(zip(names, exprs, strict=False))
    _same(_stage(Derive(columns=columns)), table)


@SETTINGS
@given(tables(), anything)
def test_any_expression_agrees_or_is_declined(table: pa.Table, expr: Expr) -> None:
    _same(_stage(Filter(expr=expr)), table)
    _same(_stage(Derive(columns={"out": expr})), table)


def test_the_typed_expressions_are_covered() -> None:
    """Not vacuous: the common shapes run on Arrow, not in the pandas fallback."""
    table = pa.table(
        {
            name: pa.array(values, type=COLUMNS[name][0])
            for name, values in {
                "i": [1, 2, 3],
                "n": [1, None, 3],
                "f": [0.5, math.nan, None],
                "s": ["a", None, "JFK"],
                "d": [dt.date(2001, 1, 1), None, dt.date(2020, 5, 5)],
                "b": [True, False, True],
                "k": ["x", None, "y"],
                "m": [0, 1, 2],
            }.items()
        }
    )
    for text in [
        "l <= date('2001-02-03')".replace("l", "d"),
        "d > '2010-01-01' and not (f > 0)",
        "i * (1 - f) >= n / 2 or s in ['a', null]",
        "is_null(f) or k not in ['x']",
        "-i < 2 < f",
    ]:
        assert _same(_stage(Filter(expr=parse_expr(text))), table), text
    derive = {"p": parse_expr("f * (1 - n)"), "q": parse_expr("p + i / 3"), "i": parse_expr("-i")}
    assert _same(_stage(Derive(columns=derive)), table)
    assert _same(_stage(Select(columns=("s", "i"))), table)
    assert _same(_stage(Rename(mapping={"s": "t", "zz": "y"})), table)


def test_declined_shapes_fall_back_to_pandas() -> None:
    table = pa.table({"i": [1, 2], "s": ["a", "b"]})
    for stage in [
        _stage(Filter(expr=parse_expr("i // 2 == 0"))),  # an operator it leaves to pandas
        _stage(Filter(expr=parse_expr("lower(s) == 'a'"))),  # a function it leaves to pandas
        _stage(Derive(columns={"c": parse_expr("i > 1")})),  # pandas' nullable boolean dtype
        _stage(Filter(expr=parse_expr("s > 1"))),  # an error pandas reports
    ]:
        with pytest.raises(columnar.Unsupported):
            columnar.apply_rowwise(stage, table)


# -- loads --------------------------------------------------------------------------------------


@SETTINGS
@given(tables())
def test_loaded_tables_convert_as_before(table: pa.Table) -> None:
    arrow = columnar.arrow_input(table)
    assert arrow is not None
    pd.testing.assert_frame_equal(to_pandas(arrow), to_pandas(table), check_exact=True)
    # a filter that drops every null gives what the pandas path's canonical result gives
    kept = arrow.filter(pa.array([False] * table.num_rows, type=pa.bool_()))
    want = canonical(to_pandas(table).iloc[:0].reset_index(drop=True))
    pd.testing.assert_frame_equal(to_pandas(kept), want, check_exact=True)


def test_a_bool_column_with_nulls_is_left_to_pandas() -> None:
    assert columnar.arrow_input(pa.table({"b": pa.array([True, None])})) is None
    assert columnar.arrow_input(pa.table({"b": pa.array([True, False])})) is not None


# -- partials -----------------------------------------------------------------------------------

_keys = st.lists(st.sampled_from(["k", "m", "d", "b", "s"]), min_size=1, max_size=2, unique=True)
_aggregates = st.lists(
    st.sampled_from(
        [
            "count()",
            "count(f)",
            "sum(f)",
            "mean(f)",
            "mean(i)",
            "mean(n)",
            "sum(f * (1 - f))",
            "sum(n)",
            "sum(i)",  # an int sum: pandas' general path, so the Arrow path declines it
            "min(f)",
            "max(f)",
            "min(i)",
            "max(n)",
            "max(f * 2)",
            # sets of distinct values (floats with -0.0 and NaN, ints with nulls, text, dates)
            "count_distinct(f)",
            "count_distinct(n)",
            "count_distinct(s)",
            "count_distinct(d)",
            "count_distinct(b)",
            # sketches of the values in row order (HLL of ints, floats, text, bools; t-digests)
            "approx_count_distinct(n)",
            "approx_count_distinct(f)",
            "approx_count_distinct(s)",
            "approx_count_distinct(b)",
            "approx_median(f)",
            "approx_median(i)",
            "approx_quantile(n, 0.9)",
        ]
    ),
    min_size=1,
    max_size=4,
    unique=True,
)


def _spec(keys: list[str], aggregates: list[str]) -> Aggregate:
    return Aggregate(
        group_by=tuple(keys),
        aggregates={f"a{i}": parse_aggregate(text) for i, text in enumerate(aggregates)},
    )


def _same_as_pandas(got: pa.Table, want: pd.DataFrame) -> None:
    """``got`` is ``want`` (the pandas path's result, canonical) as a frame, and is stored as
    the same bytes."""
    pd.testing.assert_frame_equal(to_pandas(got), want, check_exact=True)
    stored = columnar.storable(got)
    assert stored is not None
    assert bytes(encode_parquet(stored)) == _stored_bytes(want)


def _stored_bytes(frame: pd.DataFrame) -> bytes:
    """What ``cache.write_result`` writes for ``frame``."""
    return bytes(encode_parquet(normalize_table(pa.Table.from_pandas(frame, preserve_index=False))))


@SETTINGS
@given(tables(), _keys, _aggregates)
def test_partial_matches_pandas_to_the_bit(
    table: pa.Table, keys: list[str], aggregates: list[str]
) -> None:
    spec = _spec(keys, aggregates)
    arrow = columnar.arrow_input(table)
    assert arrow is not None
    want = canonical(aggregate.partial(spec, to_pandas(table)))
    try:
        got = columnar.partial(spec, arrow)
    except columnar.Unsupported:
        assume(False)
        return
    _same_as_pandas(got, want)


def test_distinct_sets_are_taken_on_arrow() -> None:
    """count_distinct beside counts runs here (the property test passes on declines alone)."""
    table = pa.table(
        {
            "k": pa.array(["x", "y", "x", "x", None]),
            "f": pa.array([0.0, -0.0, math.nan, 1.5, 1.5]),
            "s": pa.array(["a", "b", None, "a", "c"]),
        }
    )
    spec = _spec(["k"], ["count()", "count_distinct(f)", "count_distinct(s)"])
    got = columnar.partial(spec, table)
    want = canonical(aggregate.partial(spec, to_pandas(table)))
    pd.testing.assert_frame_equal(to_pandas(got), want, check_exact=True)
    # x: 0.0 and 1.5 (NaN is null, -0.0 is 0.0); s: just "a"
    assert got.column("a1\x1fvalues").to_pylist()[0] == "[0.0,1.5]"
    # ints and unescaped text are written with Arrow, escaped text value by value: same text
    lists = pa.array([[3, -12, 250], [], [7]], pa.list_(pa.int64()))
    assert columnar._distinct_states(lists).to_pylist() == ["[-12,250,3]", "[]", "[7]"]
    texts = pa.array([["a b", "a", ""], ["b,c", "["]], pa.list_(pa.string()))
    # sorted by their JSON text: '"a b"' before '"a"' (a space sorts before the quote)
    assert columnar._distinct_states(texts).to_pylist() == ['["","a b","a"]', '["[","b,c"]']
    assert columnar._distinct_states(pa.array([["é"]], pa.list_(pa.string()))) is None


def test_sketches_are_taken_on_arrow() -> None:
    """HLL and t-digest partials run here, to the bit as pandas makes them, including a slice
    of no rows (the property test passes on declines alone)."""
    rng = np.random.default_rng(7)
    rows = 5000
    table = pa.table(
        {
            "k": pa.array(rng.choice(["x", "y", "z"], rows)),
            "i": pa.array(rng.integers(0, 1500, rows)),
            "f": pa.array(np.where(rng.random(rows) < 0.1, np.nan, rng.normal(size=rows))),
            "s": pa.array([f"v{n}" for n in rng.integers(0, 800, rows)]),
        }
    )
    spec = _spec(
        ["k"],
        [
            "approx_count_distinct(i)",
            "approx_count_distinct(s)",
            "approx_count_distinct(f)",
            "approx_median(f)",
            "approx_quantile(i, 0.9)",
        ],
    )
    for part in (table, table.slice(0, 0)):
        got = columnar.partial(spec, part)
        want = canonical(aggregate.partial(spec, to_pandas(part)))
        pd.testing.assert_frame_equal(to_pandas(got), want, check_exact=True)
        stored = columnar.storable(got)
        assert stored is not None
        assert bytes(encode_parquet(stored)) == _stored_bytes(want)
    # the estimates, against pandas on the whole table: HLL within 3 standard errors (4.9%),
    # the t-digest's quantiles within 1% in rank
    finished = aggregate.finish(spec, to_pandas(columnar.partial(spec, table)))
    frame = table.to_pandas()
    exact = frame.groupby("k").agg(i=("i", "nunique"), s=("s", "nunique"), f=("f", "nunique"))
    for name, column in (("a0", "i"), ("a1", "s"), ("a2", "f")):
        assert np.all(np.abs(finished[name].to_numpy() / exact[column].to_numpy() - 1) < 0.049)
    for key, median, q90 in zip(finished["k"], finished["a3"], finished["a4"], strict=True):
        group = frame[frame["k"] == key]
        assert abs((group["f"].dropna() <= median).mean() - 0.5) < 0.01
        assert abs((group["i"] <= q90).mean() - 0.9) < 0.01


_NARROW = [
    (pa.int8(), [1, None, -3]),
    (pa.int16(), [300, None, -3]),
    (pa.int32(), [70_000, None, -3]),
    (pa.uint8(), [1, None, 255]),
    (pa.uint16(), [1, None, 65_535]),
    (pa.uint32(), [1, None, 4_000_000_000]),
    (pa.uint64(), [1, None, 2**64 - 1]),
    (pa.float32(), [1.5, None, math.nan]),
    (pa.timestamp("us", tz="UTC"), [1, None, 1_700_000_000_000_001]),
]


@pytest.mark.parametrize(("kind", "values"), _NARROW, ids=[str(t) for t, _ in _NARROW])
@pytest.mark.parametrize("nulls", [True, False], ids=["nulls", "no-nulls"])
def test_narrow_types_are_stored_from_arrow_as_pandas_stores_them(
    kind: pa.DataType, values: list[Any], nulls: bool
) -> None:
    """A slice's rows as they stand (a top-N keeps every column: TPC-H's int32 line number, a
    timestamp) are stored from Arrow as the pandas round trip stores them, with and without
    nulls, a float32 NaN as null; and a timestamp in nanoseconds is left to pandas."""
    kept = values if nulls else [v for v in values if v is not None]
    for rows in (kept, []):
        table = pa.table({"a": pa.array(rows, kind), "k": pa.array(range(len(rows)))})
        stored = columnar.storable(table)
        assert stored is not None
        assert bytes(encode_parquet(stored)) == _stored_bytes(to_pandas(table))
        assert stored.column("a").type == kind
    if kind == pa.float32():
        assert (
            columnar.storable(pa.table({"a": pa.array(values, kind)})).column("a").null_count == 2
        )
    nanos = pa.table({"a": pa.array([1, None], pa.timestamp("ns", tz="UTC"))})
    assert columnar.storable(nanos) is None


def test_distinct_sets_of_an_empty_slice_are_text_on_both_paths() -> None:
    """No rows: the set column is still a text column (it was untyped on pandas' path)."""
    table = pa.table({"k": pa.array([], pa.string()), "f": pa.array([], pa.float64())})
    spec = _spec(["k"], ["count_distinct(f)"])
    got = columnar.partial(spec, table)
    want = canonical(aggregate.partial(spec, to_pandas(table)))
    pd.testing.assert_frame_equal(to_pandas(got), want, check_exact=True)
    assert bytes(encode_parquet(columnar.storable(got))) == _stored_bytes(want)


def test_partial_sums_in_row_order_like_numpy() -> None:
    """Many values whose float sum depends on the order of the additions."""
    values = [1e16, 1.0, -1e16, 3.5, 0.1, 0.2, 0.3] * 300
    keys = ["x", "y", "x"] * 700
    table = pa.table({"k": keys, "f": values})
    table = pa.concat_tables([table.slice(0, 1000), table.slice(1000)])
    spec = _spec(["k"], ["sum(f)", "mean(f)", "count()"])
    got = to_pandas(columnar.partial(spec, table))
    want = canonical(aggregate.partial(spec, to_pandas(table)))
    pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_partial_keys_may_share_a_name_with_arrow_results() -> None:
    table = pa.table({"count_all": ["a", "b", "a"], "f_sum": [1, 2, 1], "f": [0.5, 1.5, 2.5]})
    spec = _spec(["count_all", "f_sum"], ["sum(f)", "count()"])
    got = to_pandas(columnar.partial(spec, table))
    pd.testing.assert_frame_equal(
        got, canonical(aggregate.partial(spec, to_pandas(table))), check_exact=True
    )


def test_partials_it_declines() -> None:
    table = pa.table({"k": ["a", "b"], "i": [1, 2], "f": [0.5, 1.5]})
    for keys, aggs in [
        ([], ["sum(f)"]),  # a global aggregate: pandas sums it pairwise
        (["k"], ["sum(i)", "sum(f)"]),  # a float sum on pandas' general path (compensated)
        (["k"], ["min(s)"]),  # the extremes of text: pandas' order of strings
        (["k"], ["max(d)"]),  # of dates
        (["f"], ["count()"]),  # a float key: pandas merges -0.0 and 0.0
    ]:
        with pytest.raises(columnar.Unsupported):
            columnar.partial(_spec(keys, aggs), table)


@pytest.mark.parametrize("rows", [0, 1, 7, 500])
def test_int_sums_are_exact_as_pandas_gives_them(rows: int) -> None:
    """An int64 sum (and count) on pandas' general path: exact, so Arrow's grouped sum gives
    pandas' result; a group whose values are all null sums to zero, as pandas' ``Int64``."""
    rng = np.random.default_rng(rows)
    big = rng.integers(-(2**40), 2**40, rows)
    values = pa.array(big, mask=rng.random(rows) < 0.2)
    keys = pa.array(rng.choice(["a", "b", "c", "d"], rows))
    table = pa.table({"k": keys, "i": values, "j": pa.array(rng.integers(0, 9, rows))})
    spec = _spec(["k"], ["sum(i)", "sum(j)", "count(i)", "count()"])
    got = to_pandas(columnar.partial(spec, table))
    want = canonical(aggregate.partial(spec, to_pandas(table)))
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    stored = columnar.storable(columnar.partial(spec, table))
    assert stored is not None
    assert bytes(encode_parquet(stored)) == _stored_bytes(want)


# -- sort --------------------------------------------------------------------------------------

_sort_keys = st.lists(
    st.tuples(st.sampled_from(["i", "n", "f", "s", "d", "b", "k", "m"]), st.booleans()),
    min_size=1,
    max_size=3,
    unique_by=lambda key: key[0],
)


@SETTINGS
@given(st.data(), tables(), _sort_keys)
def test_sort_matches_pandas_to_the_bit(
    data: st.DataObject, table: pa.Table, keys: list[tuple[str, bool]]
) -> None:
    """A stable sort, nulls last either way, over parts concatenated in order: the same rows
    in the same order as the pandas path, stored as the same bytes; NaN keys are declined."""
    spec = Sort(by=tuple(SortKey(column=c, ascending=a) for c, a in keys))
    cut = data.draw(st.integers(0, table.num_rows))
    parts = [table.slice(0, cut), table.slice(cut)]
    want = canonical(
        execute.apply_whole(_stage(spec), [to_pandas(p) for p in parts], [], frozenset())
    )
    try:
        got = columnar.sort(spec, parts)
    except columnar.Unsupported:
        nan_key = any(
            table.schema.field(c).type == pa.float64()
            and any(isinstance(v, float) and math.isnan(v) for v in table.column(c).to_pylist())
            for c, _ in keys
        )
        assert nan_key  # declined for that reason only
        return
    _same_as_pandas(got, want)


def test_sort_keeps_ties_in_input_order() -> None:
    table = pa.table({"k": [2, 1, 2, None, 1], "v": ["a", "b", "c", "d", "e"]})
    spec = Sort(by=(SortKey(column="k", ascending=False),))
    got = columnar.sort(spec, [table.slice(0, 2), table.slice(2)])
    assert got.column("v").to_pylist() == ["a", "c", "b", "e", "d"]


# -- joins ----------------------------------------------------------------------------------------

_join_keys = st.lists(
    st.sampled_from(["m", "k", "n", "d", "f", "b"]), min_size=1, max_size=2, unique=True
)


@SETTINGS
@given(tables(), tables(), _join_keys, st.data())
def test_inner_join_matches_pandas_to_the_bit(
    left: pa.Table, right: pa.Table, on: list[str], data: st.DataObject
) -> None:
    """A join of any kind on Arrow gives the rows, order, names and types the pandas path gives
    (left row order, then right; for a right join right row order, then left; for an outer
    join the keys' order first; null keys match nothing; an unmatched row of a kept side in
    its place; shared columns suffixed), for int, text and date keys with nulls and duplicates
    on both sides; float and bool keys are declined, and so is a null key on a side whose every
    row stays, or a bool column on a side pandas makes nullable."""
    assume(columnar.arrow_input(left) is not None and columnar.arrow_input(right) is not None)
    kept = data.draw(st.lists(st.sampled_from(right.column_names), unique=True, max_size=4))
    right = right.select([*on, *(c for c in kept if c not in on)])
    how = data.draw(st.sampled_from(["inner", "left", "right", "outer"]))
    suffixes = data.draw(st.sampled_from([("", "_right"), ("_l", "_r")]))
    op = Join(right="r", on=tuple(on), how=how, suffixes=suffixes)
    try:
        got = columnar.join(op, left, right)
    except columnar.Unsupported:
        kinds = {left.schema.field(c).type for c in on}
        # the sides whose every row stays, and those pandas makes nullable
        own, other = {
            "inner": ([], []),
            "left": ([left], [right]),
            "right": ([right], [left]),
            "outer": ([left, right], [left, right]),
        }[how]
        null_keys = any(side.column(c).null_count for side in own for c in on)
        bools = any(
            side.schema.field(c).type == pa.bool_()
            for side in other
            for c in side.column_names
            if c not in on
        )
        assert kinds & {pa.float64(), pa.bool_()} or null_keys or bools
        return
    want = canonical(execute.join(op, to_pandas(left), to_pandas(right)))
    _same_as_pandas(got, want)


@SETTINGS
@given(tables(), tables(), _join_keys, st.sampled_from(["left", "right", "outer"]), st.data())
def test_joins_that_keep_unmatched_rows_match_pandas_to_the_bit(
    left: pa.Table, right: pa.Table, on: list[str], how: str, data: st.DataObject
) -> None:
    """Left, right and outer joins, with no null key on a side whose rows all stay and no bool
    column on a side pandas makes nullable (what the Arrow path declines): always taken on
    Arrow, with the pandas path's rows, order, names and types."""
    assume(all(COLUMNS[c][0] in (pa.int64(), pa.string(), pa.date32()) for c in on))
    kept = data.draw(st.lists(st.sampled_from(right.column_names), unique=True, max_size=4))
    right = right.select([*on, *(c for c in kept if c not in on)])

    def without_null_keys(table: pa.Table) -> pa.Table:
        valid = pc.is_valid(table.column(on[0]))
        for name in on[1:]:
            valid = pc.and_(valid, pc.is_valid(table.column(name)))
        return table.filter(valid)

    if how in ("left", "outer"):
        left = without_null_keys(left)
        right = right.drop_columns([c for c in ("b",) if c in right.column_names and c not in on])
    if how in ("right", "outer"):
        right = without_null_keys(right)
        left = left.drop_columns(["b"])
    assume(columnar.arrow_input(left) is not None and columnar.arrow_input(right) is not None)
    op = Join(right="r", on=tuple(on), how=how, suffixes=("_l", "_r"))
    got = columnar.join(op, left, right)
    want = canonical(execute.join(op, to_pandas(left), to_pandas(right)))
    _same_as_pandas(got, want)


def test_outer_join_orders_rows_by_key_then_left_then_right() -> None:
    left = pa.table({"k": [2, 1, 2, 3, 5], "a": ["p", "q", "r", "s", "t"]})
    right = pa.table({"k": [1, 2, 1, 2, 4], "a": ["A", "B", "C", "D", "E"]})
    spec = Join(right="r", on=("k",), how="outer", suffixes=("_l", "_r"))
    got = columnar.join(spec, left, right)
    assert got.column("k").to_pylist() == [1, 1, 2, 2, 2, 2, 3, 4, 5]
    assert got.column("a_l").to_pylist() == ["q", "q", "p", "p", "r", "r", "s", None, "t"]
    assert got.column("a_r").to_pylist() == ["A", "C", "B", "D", "B", "D", None, "E", None]
    _same_as_pandas(got, canonical(execute.join(spec, to_pandas(left), to_pandas(right))))


def test_right_join_keeps_right_order_then_left_order() -> None:
    left = pa.table({"k": [2, 1, 2, None, 3], "a": ["p", "q", "r", "s", "t"], "n": [1, 2, 3, 4, 5]})
    right = pa.table({"k": [1, 2, 1, 4, 2], "a": ["A", "B", "C", "D", "E"]})
    spec = Join(right="r", on=("k",), how="right", suffixes=("_l", "_r"))
    got = columnar.join(spec, left, right)
    assert got.column_names == ["k", "a_l", "n", "a_r"]
    assert got.column("k").to_pylist() == [1, 2, 2, 1, 4, 2, 2]
    assert got.column("a_l").to_pylist() == ["q", "p", "r", "q", None, "p", "r"]
    assert got.column("n").to_pylist() == [2, 1, 3, 2, None, 1, 3]
    assert got.column("a_r").to_pylist() == ["A", "B", "B", "C", "D", "E", "E"]
    want = canonical(execute.join(spec, to_pandas(left), to_pandas(right)))
    _same_as_pandas(got, want)


def test_inner_join_keeps_left_order_then_right_order() -> None:
    left = pa.table({"k": [2, 1, 2, None, 3], "a": ["p", "q", "r", "s", "t"]})
    right = pa.table({"k": [1, 2, 1, 2, None], "a": ["A", "B", "C", "D", "E"]})
    got = columnar.join(Join(right="r", on=("k",), suffixes=("_l", "_r")), left, right)
    assert got.column_names == ["k", "a_l", "a_r"]
    assert got.column("a_l").to_pylist() == ["p", "p", "q", "q", "r", "r"]
    assert got.column("a_r").to_pylist() == ["B", "D", "A", "C", "B", "D"]


# -- partials of many slices at once (a batch) ------------------------------------------------


@st.composite
def _cuts(draw: st.DrawFn, rows: int) -> list[tuple[int, int]]:
    """Consecutive slices of ``rows`` rows, some empty."""
    points = sorted(draw(st.lists(st.integers(0, rows), max_size=8)))
    return list(itertools.pairwise([0, *points, rows]))


def _batched(spec: Aggregate, table: pa.Table, cuts: list[tuple[int, int]]) -> list[Any]:
    rows = [b - a for a, b in cuts]
    tags = pa.array(np.repeat(np.arange(len(rows), dtype=np.int32), rows))
    return columnar.partials(spec, table, tags, rows)


def _check_slice(spec: Aggregate, piece: pa.Table, got: pa.Table | None) -> None:
    """``got`` is what the pandas partial of ``piece`` stores, or None where the Arrow partial
    of ``piece`` alone declines (pandas' general path, on sparse keys)."""
    if got is None:
        with pytest.raises(columnar.Unsupported):
            columnar.partial(spec, piece)
        return
    want = canonical(aggregate.partial(spec, to_pandas(piece)))
    _same_as_pandas(got, want)


@SETTINGS
@given(st.data(), tables(), _keys, _aggregates)
def test_partials_of_many_slices_match_pandas_slice_by_slice(
    data: st.DataObject, table: pa.Table, keys: list[str], aggregates: list[str]
) -> None:
    spec = _spec(keys, aggregates)
    assume(columnar.arrow_input(table) is not None)
    cuts = data.draw(_cuts(table.num_rows))
    try:
        got = _batched(spec, table, cuts)
    except columnar.Unsupported:
        assume(False)
        return
    assert len(got) == len(cuts)
    for (a, b), part in zip(cuts, got, strict=True):
        _check_slice(spec, table.slice(a, b - a), part)


@SETTINGS
@given(st.data(), tables(), _sort_keys, st.integers(1, 6))
def test_top_rows_of_many_slices_are_each_slices_own(
    data: st.DataObject, table: pa.Table, keys: list[tuple[str, bool]], n: int
) -> None:
    """A batch's top rows (one sort for all its slices) are, slice by slice, the first ``n``
    rows the pandas path's stable sort of that slice alone gives, stored as the same bytes;
    NaN keys are declined, as a slice sorted alone declines them."""
    spec = Sort(by=tuple(SortKey(column=c, ascending=a) for c, a in keys))
    cuts = data.draw(_cuts(table.num_rows))
    rows = [b - a for a, b in cuts]
    tags = pa.array(np.repeat(np.arange(len(rows), dtype=np.int32), rows))
    try:
        got = columnar.tops(spec, table, tags, rows, n)
    except columnar.Unsupported:
        with pytest.raises(columnar.Unsupported):
            columnar.sort(spec, [table])
        return
    assert len(got) == len(cuts)
    for (a, b), top in zip(cuts, got, strict=True):
        piece = table.slice(a, b - a)
        whole = execute.apply_whole(_stage(spec), [to_pandas(piece)], [], frozenset())
        want = canonical(whole.head(n).reset_index(drop=True))
        _same_as_pandas(top, want)


def test_top_rows_of_many_slices_keep_ties_in_their_slice() -> None:
    """Equal keys across slices: each slice keeps its own rows, ties in row order; an empty
    slice and one shorter than ``n`` keep what they have."""
    table = pa.table({"k": [1, 1, None, 1, 2, 2, 1, 3], "v": list("abcdefgh")})
    rows = [3, 0, 1, 4]
    tags = pa.array(np.repeat(np.arange(4, dtype=np.int32), rows))
    spec = Sort(by=(SortKey(column="k", ascending=True),))
    got = columnar.tops(spec, table, tags, rows, 2)
    assert [t.column("v").to_pylist() for t in got] == [["a", "b"], [], ["d"], ["g", "e"]]


def test_partials_of_many_slices_dense_and_sparse() -> None:
    """Slices of float aggregates (pandas' numpy path where the keys are dense): one whose two
    keys are all distinct (1,600 combinations for 40 rows: sparse, left to pandas), one of as
    many groups whose keys repeat (dense), small ones, and an empty one."""
    rng = np.random.default_rng(7)
    sparse = pa.table({"k": [f"k{i}" for i in range(40)], "m": list(range(40))})
    dense = pa.table({"k": [f"k{i % 10}" for i in range(40)], "m": [i % 4 for i in range(40)]})
    small = pa.table({"k": ["a", "b", "a"], "m": [1, 1, 2]})
    keys = pa.concat_tables([sparse, dense, small, small.slice(0, 0), dense, small])
    f = rng.normal(size=keys.num_rows) * 1e6
    table = keys.append_column("f", pa.array(f))
    spec = _spec(["k", "m"], ["sum(f)", "mean(f)", "count()", "count(f)"])
    sizes = [40, 40, 3, 0, 40, 3]
    bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    cuts = list(itertools.pairwise(bounds))
    got = _batched(spec, table, cuts)
    assert got[0] is None and all(part is not None for part in got[1:])
    for (a, b), part in zip(cuts, got, strict=True):
        _check_slice(spec, table.slice(a, b - a), part)
