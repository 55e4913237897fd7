"""Per-slice partials, combined in any tree, then finished, equal pandas on the whole input.

The reference is pandas on the concatenated frame, with SQL's rules written out by hand: null
group keys form one group (``dropna=False``), ``count()`` counts rows, ``count(x)`` non-null
values, ``sum`` over a group with no values is null (``min_count=1``), and ``var``/``std`` are
sample statistics (``ddof=1``). Nothing here is computed by the code under test.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypokit import examples
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from chanbatch.blueprint.expr import parse_aggregate
from chanbatch.blueprint.model import Aggregate
from chanbatch.engine import aggregate

AGGREGATES: dict[str, str] = {
    "rows": "count()",
    "n_f": "count(f)",
    "n_g": "count(g)",
    "sum_i": "sum(i)",
    "sum_f": "sum(f)",
    "mean_i": "mean(i)",
    "mean_f": "mean(f)",
    "min_i": "min(i)",
    "min_f": "min(f)",
    "max_i": "max(i)",
    "max_f": "max(f)",
    "var_i": "var(i)",
    "var_f": "var(f)",
    "std_i": "std(i)",
    "std_f": "std(f)",
    "min_g": "min(g)",
    "max_g": "max(g)",
}
GROUPINGS: list[tuple[str, ...]] = [(), ("g",), ("g", "k"), ("k",)]

SETTINGS = settings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def spec_of(group_by: tuple[str, ...], names: list[str]) -> Aggregate:
    return Aggregate(
        group_by=group_by, aggregates={name: parse_aggregate(AGGREGATES[name]) for name in names}
    )


# -- the independent reference --------------------------------------------------------------


def _one(func: str, arg: str | None, rows: pd.DataFrame) -> Any:
    if arg is None:
        return len(rows)
    col = rows[arg]
    if func == "count":
        return int(col.notna().sum())
    if col.dtype == object:  # text: only count, min and max apply
        texts = [v for v in col if v is not None]
        return (min(texts) if func == "min" else max(texts)) if texts else None
    values = col.dropna().astype("float64").to_numpy()
    if func == "sum":
        return math.fsum(values) if len(values) else None
    if func == "mean":
        return math.fsum(values) / len(values) if len(values) else None
    if func == "min":
        return values.min() if len(values) else None
    if func == "max":
        return values.max() if len(values) else None
    if func in ("var", "std"):
        if len(values) < 2:
            return None
        var = float(np.var(values, ddof=1))
        return math.sqrt(var) if func == "std" else var
    raise AssertionError(func)


def reference(frame: pd.DataFrame, spec: Aggregate) -> list[dict[str, Any]]:
    """One dict per group (SQL GROUP BY semantics), in no particular order."""
    keys = list(spec.group_by)
    if keys:
        groups = [
            (dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)), rows)
            for key, rows in frame.groupby(keys, dropna=False, sort=False)
        ]
    else:
        groups = [({}, frame)]
    out = []
    for key, rows in groups:
        row = dict(key)
        for name, agg in spec.aggregates.items():
            arg = None if agg.arg is None else agg.arg.render()
            row[name] = _one(agg.func, arg, rows)
        out.append(row)
    return out


# -- comparison ---------------------------------------------------------------------------


def _null(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _key_token(row: dict[str, Any], keys: list[str]) -> tuple:
    return tuple(("null",) if _null(row[k]) else ("v", row[k]) for k in keys)


def assert_same_groups(got: pd.DataFrame, want: list[dict[str, Any]], spec: Aggregate) -> None:
    keys = list(spec.group_by)
    assert list(got.columns) == [*keys, *spec.aggregates]
    got_rows = got.to_dict("records")
    assert len(got_rows) == len(want), (got, want)
    by_key = {_key_token(r, keys): r for r in want}
    assert len(by_key) == len(want)
    for row in got_rows:
        token = _key_token(row, keys)
        assert token in by_key, f"unexpected group {token} in\n{got}"
        expected = by_key[token]
        for name, agg in spec.aggregates.items():
            g, w = row[name], expected[name]
            where = f"{name} of group {token}: got {g!r}, want {w!r}\n{got}"
            if _null(w):
                assert _null(g), where
                continue
            assert not _null(g), where
            if agg.func == "count" or isinstance(w, str):
                assert g == w, where
            else:
                scale = 1.0 + abs(w)
                assert math.isclose(float(g), float(w), rel_tol=1e-9, abs_tol=1e-9 * scale), where


def assert_sorted_by_keys(got: pd.DataFrame, keys: list[str]) -> None:
    """Groups come out sorted by their keys, nulls last (the module's promise)."""
    if not keys or len(got) < 2:
        return
    tokens = [
        tuple((1, "") if _null(v) else (0, v) for v in row)
        for row in got[keys].itertuples(index=False)
    ]
    assert tokens == sorted(tokens)


# -- strategies ---------------------------------------------------------------------------

FLOATS = st.one_of(
    st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_subnormal=False),
    st.integers(-50, 50).map(float),
    st.just(float("nan")),
)


@st.composite
def frames(draw: st.DrawFn, max_rows: int = 40) -> pd.DataFrame:
    n = draw(st.integers(0, max_rows))
    g = draw(st.lists(st.sampled_from(["a", "b", "c", None]), min_size=n, max_size=n))
    k = draw(st.lists(st.sampled_from(["x", "y", None]), min_size=n, max_size=n))
    i = draw(st.lists(st.integers(-1000, 1000), min_size=n, max_size=n))
    f = draw(st.lists(FLOATS, min_size=n, max_size=n))
    return pd.DataFrame(
        {
            "g": pd.Series(g, dtype=object),
            "k": pd.Series(k, dtype=object),
            "i": pd.Series(i, dtype="int64"),
            "f": pd.Series(f, dtype="float64"),
        }
    )


@st.composite
def sliced(draw: st.DrawFn) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """A frame and a split of it into 1..6 contiguous slices, some possibly empty."""
    frame = draw(frames())
    count = draw(st.integers(1, 6))
    cuts = sorted(
        draw(st.lists(st.integers(0, len(frame)), min_size=count - 1, max_size=count - 1))
    )
    bounds = [0, *cuts, len(frame)]
    parts = [frame.iloc[a:b].reset_index(drop=True) for a, b in itertools.pairwise(bounds)]
    return frame, parts


specs = st.builds(
    spec_of,
    st.sampled_from(GROUPINGS),
    st.lists(st.sampled_from(sorted(AGGREGATES)), min_size=1, max_size=6, unique=True),
)


def combine_tree(
    spec: Aggregate, partials: list[pd.DataFrame], data: st.DataObject
) -> pd.DataFrame:
    """Combine ``partials`` by merging runs of neighbours, in a shape drawn by hypothesis."""
    level = list(partials)
    while len(level) > 1:
        start = data.draw(st.integers(0, len(level) - 2), label="start")
        stop = data.draw(st.integers(start + 2, len(level)), label="stop")
        merged = aggregate.combine(spec, level[start:stop])
        level[start:stop] = [merged]
    return level[0]


# -- properties ---------------------------------------------------------------------------


@SETTINGS
@given(split=sliced(), spec=specs)
def test_partials_combined_in_slice_order_equal_pandas(
    split: tuple[pd.DataFrame, list[pd.DataFrame]], spec: Aggregate
) -> None:
    frame, parts = split
    partials = [aggregate.partial(spec, part) for part in parts]
    got = aggregate.finish(spec, aggregate.combine(spec, partials))
    assert_same_groups(got, reference(frame, spec), spec)
    assert_sorted_by_keys(got, list(spec.group_by))


@SETTINGS
@given(split=sliced(), spec=specs, data=st.data())
def test_partials_combined_in_a_random_tree_equal_pandas(
    split: tuple[pd.DataFrame, list[pd.DataFrame]], spec: Aggregate, data: st.DataObject
) -> None:
    frame, parts = split
    partials = [aggregate.partial(spec, part) for part in parts]
    root = combine_tree(spec, partials, data)
    got = aggregate.finish(spec, root)
    assert_same_groups(got, reference(frame, spec), spec)


@SETTINGS
@given(split=sliced(), spec=specs, data=st.data())
def test_partials_combined_in_any_order_equal_pandas(
    split: tuple[pd.DataFrame, list[pd.DataFrame]], spec: Aggregate, data: st.DataObject
) -> None:
    frame, parts = split
    partials = [aggregate.partial(spec, part) for part in parts]
    shuffled = data.draw(st.permutations(partials), label="order")
    got = aggregate.finish(spec, combine_tree(spec, shuffled, data))
    assert_same_groups(got, reference(frame, spec), spec)


@pytest.mark.slow
@settings(SETTINGS, max_examples=1000)
@given(split=sliced(), spec=specs, data=st.data())
def test_many_random_trees_equal_pandas(
    split: tuple[pd.DataFrame, list[pd.DataFrame]], spec: Aggregate, data: st.DataObject
) -> None:
    test_partials_combined_in_any_order_equal_pandas.hypothesis.inner_test(split, spec, data)


@SETTINGS
@given(frame=frames(), spec=specs)
def test_one_partial_finished_equals_pandas(frame: pd.DataFrame, spec: Aggregate) -> None:
    got = aggregate.finish(spec, aggregate.partial(spec, frame))
    assert_same_groups(got, reference(frame, spec), spec)


@settings(SETTINGS, max_examples=25)
@given(frame=frames(max_rows=30), spec=specs)
def test_combining_a_partial_with_itself_doubles_the_data(
    frame: pd.DataFrame, spec: Aggregate
) -> None:
    one = aggregate.partial(spec, frame)
    got = aggregate.finish(spec, aggregate.combine(spec, [one, one]))
    assert_same_groups(got, reference(pd.concat([frame, frame], ignore_index=True), spec), spec)


# -- examples worth naming ----------------------------------------------------------------


def _frame(**columns: list[Any]) -> pd.DataFrame:
    return pd.DataFrame(
        {k: pd.Series(v, dtype=object if k in "gk" else None) for k, v in columns.items()}
    )


def test_null_group_keys_form_one_group_across_slices() -> None:
    spec = spec_of(("g",), ["rows", "sum_f"])
    a = _frame(g=["a", None], f=[1.0, 2.0])
    b = _frame(g=[None, None, "a"], f=[3.0, np.nan, 4.0])
    got = aggregate.finish(
        spec, aggregate.combine(spec, [aggregate.partial(spec, p) for p in (a, b)])
    )
    assert got["g"].tolist()[0] == "a" and _null(got["g"].tolist()[1])
    assert got["rows"].tolist() == [2, 3]
    assert got["sum_f"].tolist() == [5.0, 5.0]


def test_sum_over_an_all_null_group_is_null_but_count_is_zero() -> None:
    spec = spec_of(("g",), ["rows", "n_f", "sum_f", "mean_f", "min_f", "max_f", "var_f"])
    a = _frame(g=["a", "b"], f=[np.nan, 1.0])
    b = _frame(g=["a"], f=[np.nan])
    got = aggregate.finish(
        spec, aggregate.combine(spec, [aggregate.partial(spec, p) for p in (a, b)])
    )
    row = got.set_index("g").loc["a"]
    assert row["rows"] == 2 and row["n_f"] == 0
    for name in ("sum_f", "mean_f", "min_f", "max_f", "var_f"):
        assert _null(row[name]), name


@pytest.mark.parametrize("group_by", [(), ("g",)])
def test_every_slice_empty(group_by: tuple[str, ...]) -> None:
    spec = spec_of(group_by, list(AGGREGATES))
    empty = _frame(g=[], k=[], i=[], f=[]).astype({"i": "int64", "f": "float64"})
    partials = [aggregate.partial(spec, empty) for _ in range(3)]
    got = aggregate.finish(spec, aggregate.combine(spec, partials))
    assert_same_groups(got, reference(empty, spec), spec)
    if not group_by:
        assert len(got) == 1 and got["rows"].tolist() == [0]


def test_global_aggregate_over_slices_with_an_empty_one() -> None:
    spec = spec_of((), list(AGGREGATES))
    frame = _frame(g=["a", None, "b", "c"], k=["x"] * 4, i=[1, 2, 3, 4], f=[0.5, np.nan, 2.5, 4.0])
    frame = frame.astype({"i": "int64", "f": "float64"})
    parts = [frame.iloc[:2], frame.iloc[2:2], frame.iloc[2:]]
    got = aggregate.finish(
        spec, aggregate.combine(spec, [aggregate.partial(spec, p) for p in parts])
    )
    assert_same_groups(got, reference(frame, spec), spec)


def test_variance_is_stable_for_a_large_offset() -> None:
    """Chan's merge keeps precision where a naive sum of squares would lose it."""
    spec = spec_of(("g",), ["var_f"])
    values = 1e9 + np.array([4.0, 7.0, 13.0, 16.0, 1.0, 2.0])
    parts = [_frame(g=["a"] * 2, f=list(values[:2])), _frame(g=["a"] * 4, f=list(values[2:]))]
    got = aggregate.finish(
        spec, aggregate.combine(spec, [aggregate.partial(spec, p) for p in parts])
    )
    want = float(np.var(values - 1e9, ddof=1))
    assert math.isclose(got["var_f"].iloc[0], want, rel_tol=1e-6)


def _combine_column_by_column(spec: Aggregate, partials: list[pd.DataFrame]) -> pd.DataFrame:
    """The combine of counts and sums as one pandas reduction per state column."""
    frames = [p for p in partials if len(p)]
    keys = list(spec.group_by)
    stacked = pd.concat(frames, ignore_index=True)
    grouped = stacked.groupby(keys, dropna=False, sort=True, observed=True)
    out = {}
    for name, agg in spec.aggregates.items():
        out[f"{name}\x1fn"] = grouped[f"{name}\x1fn"].sum()
        if agg.func in ("sum", "mean"):
            out[f"{name}\x1fsum"] = grouped[f"{name}\x1fsum"].sum(min_count=1)
    frame = pd.DataFrame(out).reset_index()
    return frame.sort_values(keys, na_position="last", kind="stable").reset_index(drop=True)


@SETTINGS
@given(split=sliced(), data=st.data())
def test_combined_sums_are_pandas_sums_to_the_bit(
    split: tuple[pd.DataFrame, list[pd.DataFrame]], data: st.DataObject
) -> None:
    """Counts and sums are reduced in one call each; pandas' compensated sums come out the same
    as with one call per column, bit for bit."""
    _frame, parts = split
    spec = spec_of(
        data.draw(st.sampled_from([g for g in GROUPINGS if g])),
        data.draw(
            st.lists(st.sampled_from(["rows", "n_f", "sum_f", "mean_f"]), min_size=1, unique=True)
        ),
    )
    partials = [aggregate.partial(spec, p) for p in parts]
    assume(sum(1 for p in partials if len(p)) > 1)
    # large and small values, whose sum depends on how the additions are compensated
    big = [
        p.assign(**{c: p[c] * 1e15 + 0.1 for c in p.columns if c.endswith("sum")}) for p in partials
    ]
    for group in (partials, big):
        got = aggregate.combine(spec, group)
        pd.testing.assert_frame_equal(got, _combine_column_by_column(spec, group), check_exact=True)
