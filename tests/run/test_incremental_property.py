"""Property (DESIGN.md section 6): however the slices of a dataset arrive, running after each
arrival ends exactly where one cold run over all of them ends.

Hypothesis draws a small frame (an int column, a nullable int, a float and a string column with
nulls, a group column with nulls, and the slice key: an int, text or a date), cuts it into 1 to 8
slices, freezes a random subset first and the rest in random groups, in random order, and runs
a blueprint after every freeze: a filter, a per-slice derive, and a grouped and an ungrouped
aggregate (count, sum, min, max, mean, var, std) after the filter. The final incremental
outputs must be the very snapshots (same ids) that a cold run on a fresh store with all the
slices produces, and their values must be what plain pandas computes. Every run after the
first must reuse the partials of the slices it has seen before.

Floats are multiples of 0.5 between -50 and 50, so every sum is exact in any order; the values
are still compared to pandas with a tolerance, and it is the snapshot ids that must be equal.
The default run tries a few examples and three fixed edge cases; ``--runslow`` adds a variant
with many more.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Sequence
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opskit import in_slice_order, normalize

import chanbatch as cb

AGGREGATES = {
    "by_g": {
        "n": "count()",
        "nf": "count(f)",
        "si": "sum(i)",
        "sf": "sum(f)",
        "lo": "min(i)",
        "hi": "max(f)",
        "avg": "mean(f)",
        "tlo": "min(t)",
        "thi": "max(t)",
        "fv": "var(f)",
        "fs": "std(f)",
        "ks": "sum(k)",
        "kl": "min(k)",
        "km": "mean(k)",
    },
    "overall": {
        "n": "count()",
        "nt": "count(t)",
        "si": "sum(i)",
        "sf": "sum(f)",
        "lo": "min(f)",
        "hi": "max(i)",
        "avg": "mean(i)",
        "favg": "mean(f)",
        "kn": "count(k)",
        "ks": "sum(k)",
        "kh": "max(k)",
        "km": "mean(k)",
    },
}


def blueprint(threshold: int) -> cb.Blueprint:
    """A filter, a per-slice derive, and a grouped and an ungrouped aggregate after it."""

    def aggregate(name: str) -> str:
        return ", ".join(f"{k}: {v}" for k, v in AGGREGATES[name].items())

    return cb.Blueprint.from_yaml(
        f"""
name: incremental
inputs: {{t: t}}
stages:
  kept: {{from: t, filter: "i > {threshold}"}}
  rows: {{from: kept, derive: {{j: "i * 2 + f"}}}}
  by_g: {{from: kept, group_by: [g], aggregate: {{{aggregate("by_g")}}}}}
  overall: {{from: kept, aggregate: {{{aggregate("overall")}}}}}
outputs: {{rows: inc_rows, by_g: inc_by_g, overall: inc_overall}}
"""
    )


class Case:
    """A frame sliced by ``s``, the order its slices arrive in, and the filter threshold.

    It prints as the ``make_case(...)`` call that builds it, so a failing example that
    hypothesis reports can be pasted into an ``@example``.
    """

    def __init__(
        self, frame: pd.DataFrame, arrivals: tuple[tuple[Any, ...], ...], threshold: int
    ) -> None:
        self.frame, self.arrivals, self.threshold = frame, arrivals, threshold

    def __repr__(self) -> str:
        records = self.frame.astype(object).where(self.frame.notna(), None).to_dict("list")
        return f"make_case({records!r}, arrivals={self.arrivals!r}, threshold={self.threshold})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def make_case(
    columns: dict[str, list], *, arrivals: Sequence[Sequence[Any]], threshold: int
) -> Case:
    """A Case from plain lists (as printed by ``Case.__repr__``), with chanbatch's column types."""
    first = columns["s"][0]
    key_type = "int64" if isinstance(first, int) else "str" if isinstance(first, str) else object
    frame = pd.DataFrame(
        {
            "s": pd.Series(columns["s"], dtype=key_type),
            "g": pd.Series(columns["g"], dtype="str"),
            "i": pd.Series(columns["i"], dtype="int64"),
            "f": pd.Series([np.nan if v is None else v for v in columns["f"]], dtype="float64"),
            "t": pd.Series(columns["t"], dtype="str"),
            "k": pd.Series(columns["k"], dtype="Int64"),
        }
    )
    return Case(frame, tuple(tuple(group) for group in arrivals), threshold)


INT_KEYS = st.integers(0, 30)
#: Text keys whose text order differs from their number order (``k10`` < ``k9``).
STR_KEYS = st.integers(0, 30).map(lambda n: f"k{n}")
DATE_KEYS = st.integers(0, 30).map(lambda n: dt.date(2024, 1, 1) + dt.timedelta(days=17 * n))
HALVES = st.integers(-100, 100).map(lambda n: n / 2)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    keys = draw(
        st.lists(
            draw(st.sampled_from([INT_KEYS, STR_KEYS, DATE_KEYS])),
            min_size=1,
            max_size=8,
            unique=True,
        )
    )
    columns: dict[str, list] = {name: [] for name in ("s", "g", "i", "f", "t", "k")}
    for key in keys:
        n = draw(st.integers(1, 5))
        columns["s"] += [key] * n
        columns["g"] += draw(
            st.lists(st.sampled_from(["a", "b", "c", None]), min_size=n, max_size=n)
        )
        columns["i"] += draw(st.lists(st.integers(-20, 20), min_size=n, max_size=n))
        columns["f"] += draw(st.lists(st.none() | HALVES, min_size=n, max_size=n))
        columns["k"] += draw(st.lists(st.none() | st.integers(-9, 9), min_size=n, max_size=n))
        columns["t"] += draw(
            st.lists(st.sampled_from(["x", "yy", "z", None]), min_size=n, max_size=n)
        )
    # rows of the slices interleave, as in a real file
    order = draw(st.permutations(range(len(columns["s"]))))
    columns = {name: [values[k] for k in order] for name, values in columns.items()}

    arrival = draw(st.permutations(keys))
    cuts = (
        draw(st.sets(st.integers(1, len(keys) - 1), max_size=len(keys) - 1))
        if len(keys) > 1
        else set()
    )
    bounds = [0, *sorted(cuts), len(keys)]
    arrivals = [arrival[a:b] for a, b in itertools.pairwise(bounds)]
    threshold = draw(st.integers(-22, 22))
    return make_case(columns, arrivals=arrivals, threshold=threshold)


# -- the oracle: plain pandas ------------------------------------------------------------------


def want_rows(kept: pd.DataFrame) -> pd.DataFrame:
    return in_slice_order(kept.assign(j=kept.i * 2 + kept.f))


def want_by_g(kept: pd.DataFrame) -> pd.DataFrame:
    groups = kept.groupby("g", dropna=False, sort=True)  # nulls last
    return pd.DataFrame(
        {
            "n": groups.size(),
            "nf": groups.f.count(),
            "si": groups.i.sum(),
            "sf": groups.f.sum(min_count=1),
            "lo": groups.i.min(),
            "hi": groups.f.max(),
            "avg": groups.f.mean(),
            "tlo": groups.t.min(),
            "thi": groups.t.max(),
            "fv": groups.f.var(),
            "fs": groups.f.std(),
            "ks": groups.k.sum(min_count=1),
            "kl": groups.k.min(),
            "km": groups.k.mean(),
        }
    ).reset_index()


def want_overall(kept: pd.DataFrame) -> pd.DataFrame:
    """One row; SQL's nulls for an empty input (pandas' ``sum`` of nothing is 0)."""
    return pd.DataFrame(
        {
            "n": [len(kept)],
            "nt": [kept.t.count()],
            "si": [kept.i.sum(min_count=1)],
            "sf": [kept.f.sum(min_count=1)],
            "lo": [kept.f.min()],
            "hi": [kept.i.max()],
            "avg": [kept.i.mean()],
            "favg": [kept.f.mean()],
            "kn": [kept.k.count()],
            "ks": [kept.k.sum(min_count=1)],
            "kh": [kept.k.max()],
            "km": [kept.k.mean()],
        }
    )


def assert_equal(name: str, got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Same columns and rows in the same order, nulls equal to nulls, floats within 1e-9 (like
    ``opskit.assert_same``, which formats both frames for every column it checks)."""
    assert list(got.columns) == list(want.columns), (name, list(got.columns))
    g, w = normalize(got), normalize(want)
    same = len(g) == len(w)
    for column in g.columns if same else ():
        a, b = g[column], w[column]
        if a.dtype == "float64" and b.dtype == "float64":
            same = np.allclose(a.to_numpy(), b.to_numpy(), rtol=1e-9, atol=1e-9, equal_nan=True)
        else:
            same = [None if pd.isna(v) else v for v in a] == [None if pd.isna(v) else v for v in b]
        if not same:
            break
    if not same:
        pytest.fail(f"output {name!r} differs from pandas\n--- got\n{g}\n--- want\n{w}")


# -- the property ---------------------------------------------------------------------------------


def fresh_store() -> cb.Store:
    return cb.Store(f"memory://incremental-{uuid.uuid4().hex}")


def drop(store: cb.Store) -> None:
    fs = fsspec.filesystem("memory")
    if fs.exists(store.storage.root):
        fs.rm(store.storage.root, recursive=True)


def as_json(key: Any) -> Any:
    """A slice key as ``plan --json`` shows it (a date as ISO text)."""
    return key.isoformat() if isinstance(key, dt.date) else key


def partials_of(doc: dict[str, Any], stage: str) -> dict[Any, str]:
    return {
        t["slice"]: t["action"]
        for t in doc["tasks"]
        if t["stage"] == stage and t.get("kind") == "partial"
    }


def check_incremental_equals_cold(case: Case) -> None:
    frame, bp = case.frame, blueprint(case.threshold)
    incremental, cold = fresh_store(), fresh_store()
    try:
        seen: list[Any] = []
        for group in case.arrivals:
            incremental.freeze("t", frame[frame.s.isin(group)], slice_by="s")
            doc = bp.plan(incremental).document()
            for stage in ("by_g", "overall"):
                partials = partials_of(doc, stage)
                assert set(partials) == {as_json(k) for k in (*seen, *group)}, (stage, partials)
                assert all(partials[as_json(k)] == "reuse" for k in seen), (stage, partials)
                assert all(partials[as_json(k)] == "compute" for k in group), (stage, partials)
            result = bp.run(incremental, scheduler="sync")
            # a provisional task (above a recomputed partial) may be cut off instead of computed
            stats = result.stats
            assert stats["computed"] + stats.get("cutoff", 0) == doc["summary"]["compute"]
            seen += group

        cold.freeze("t", frame, slice_by="s")
        assert incremental.resolve("t").snapshot == cold.resolve("t").snapshot
        want = bp.run(cold, scheduler="sync")
        assert result.snapshots == want.snapshots

        kept = frame[frame.i > case.threshold]
        expected = {"rows": want_rows(kept), "by_g": want_by_g(kept), "overall": want_overall(kept)}
        for name, wanted in expected.items():
            got = result.outputs[name].compute().reset_index(drop=True)
            assert_equal(name, got, wanted)
    finally:
        drop(incremental)
        drop(cold)


SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


#: Edge cases that every default run covers, whatever hypothesis draws.
EDGES = (
    # the filter keeps nothing (an ungrouped aggregate of nothing is one row of nulls), and the
    # first arrival has only nulls in ``f``, ``t`` and ``k``
    make_case(
        {
            "s": [2, 1, 2, 3],
            "g": [None, "a", "a", None],
            "i": [5, -3, 7, 0],
            "f": [None, 2.5, None, -1.0],
            "t": [None, "x", None, "z"],
            "k": [None, None, 4, None],
        },
        arrivals=[[2], [3, 1]],
        threshold=22,
    ),
    # groups whose ``f`` is all null (null sum, mean, max, var), ``k`` null everywhere, every
    # row kept, text keys whose text order is not their number order, arriving one by one and
    # out of order
    make_case(
        {
            "s": ["k9", "k10", "k1", "k9", "k10"],
            "g": ["a", "b", "a", None, "b"],
            "i": [1, 2, 3, 4, 5],
            "f": [None, 0.5, None, None, -0.5],
            "t": ["x", None, "yy", None, None],
            "k": [None, None, None, None, None],
        },
        arrivals=[["k9"], ["k10"], ["k1"]],
        threshold=-22,
    ),
    # 11 slices: a two-level combine tree, whose boundaries shift as earlier keys arrive late
    make_case(
        {
            "s": [k for k in range(11) for _ in range(2)],
            "g": ["a", "b", None, "c"] * 5 + ["a", "a"],
            "i": list(range(-11, 11)),
            "f": [None if k % 3 == 0 else k / 2 for k in range(22)],
            "t": ["x", "yy", None, "z", "x", None, "yy"] * 3 + ["z"],
            "k": [None if k % 4 == 1 else k - 9 for k in range(22)],
        },
        arrivals=[[10, 9, 8], [0], [5, 4], [1, 2, 3, 6, 7]],
        threshold=0,
    ),
)


@settings(SETTINGS, max_examples=10)
@given(cases())
@example(EDGES[0])
@example(EDGES[1])
@example(EDGES[2])
def test_incremental_runs_end_where_a_cold_run_ends(case: Case) -> None:
    check_incremental_equals_cold(case)


@pytest.mark.slow
@settings(SETTINGS, max_examples=300)
@given(cases())
def test_incremental_runs_end_where_a_cold_run_ends_many(case: Case) -> None:
    check_incremental_equals_cold(case)
