"""Approximate aggregates on DataSketches sketches (issue 18, item 2): within their stated error
of DuckDB's exact answers, incremental, and deterministic (the same sketch bytes, so the same
output snapshot id, on every scheduler and in every order of arrival)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

import chanbatch as cb
from chanbatch.engine import sketches

BLUEPRINT = """
name: sketches
inputs: {t: t}
stages:
  per_g:
    from: t
    group_by: [g]
    aggregate: {rows: count(), u: approx_count_distinct(x), us: approx_count_distinct(s), m: approx_median(y), p90: "approx_quantile(y, 0.9)"}
  overall:
    from: t
    aggregate: {u: approx_count_distinct(x), m: approx_median(y)}
outputs: {per_g: sketch_per_g, overall: sketch_overall}
"""


def data(days: int = 30, rows: int = 800, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = days * rows
    y = np.where(rng.random(n) < 0.5, rng.normal(size=n), rng.exponential(size=n))
    frame = pd.DataFrame(
        {
            "day": np.repeat(np.arange(days), rows),
            "g": rng.choice(["a", "b", "c"], n),
            "x": pd.array(rng.integers(0, 6000, n), dtype="Int64"),
            "s": pd.array([f"k{v}" for v in rng.integers(0, 300, n)], dtype="string"),
            "y": y,
        }
    )
    frame.loc[rng.random(n) < 0.05, "x"] = pd.NA  # nulls are skipped
    frame.loc[rng.random(n) < 0.05, "y"] = np.nan
    return frame


def run(store: cb.Store, tmp_path: Path, scheduler: str = "sync") -> cb.run.runner.RunResult:
    path = tmp_path / "sketches.yaml"
    path.write_text(BLUEPRINT)
    return cb.Blueprint.from_yaml(path).run(store, scheduler=scheduler)


def check_against_duckdb(store: cb.Store, frame: pd.DataFrame) -> None:
    con = duckdb.connect()
    con.register("frame", frame)
    exact = {
        g: (u, us)
        for g, u, us in con.execute(
            "SELECT g, count(DISTINCT x), count(DISTINCT s) FROM frame GROUP BY g"
        ).fetchall()
    }
    got = store.read_pandas("sketch_per_g")
    assert sorted(got["g"]) == sorted(exact)
    for row in got.itertuples(index=False):
        u, us = exact[row.g]
        # HLL, lg_k 12: within 3 standard errors (4.9%) of the true count
        assert abs(row.u - u) <= 0.049 * u, (row.g, row.u, u)
        assert abs(row.us - us) <= 0.049 * us, (row.g, row.us, us)
        # t-digest: the estimate's rank among the group's values is within 1% of the median's
        rank = con.execute(
            "SELECT avg((y < ?)::INT) FROM frame WHERE g = ? AND y IS NOT NULL AND NOT isnan(y)",
            [row.m, row.g],
        ).fetchone()[0]
        assert abs(rank - 0.5) <= 0.01, (row.g, rank)
        rank = con.execute(
            "SELECT avg((y < ?)::INT) FROM frame WHERE g = ? AND y IS NOT NULL AND NOT isnan(y)",
            [row.p90, row.g],
        ).fetchone()[0]
        assert abs(rank - 0.9) <= 0.01, (row.g, rank)
    overall = store.read_pandas("sketch_overall").iloc[0]
    (u,) = con.execute("SELECT count(DISTINCT x) FROM frame").fetchone()
    assert abs(overall["u"] - u) <= 0.049 * u
    rank = con.execute(
        "SELECT avg((y < ?)::INT) FROM frame WHERE y IS NOT NULL AND NOT isnan(y)", [overall["m"]]
    ).fetchone()[0]
    assert abs(rank - 0.5) <= 0.01


def test_estimates_are_within_their_bounds_and_the_same_bytes_in_any_order(
    tmp_path: Path,
) -> None:
    frame = data()
    cold = cb.Store(tmp_path / "cold")
    cold.freeze("t", frame, slice_by="day")
    first = run(cold, tmp_path)
    check_against_duckdb(cold, frame)

    threads = cb.Store(tmp_path / "threads")
    threads.freeze("t", frame, slice_by="day")
    assert run(threads, tmp_path, scheduler="threads").snapshots == first.snapshots

    days = list(range(30))
    random.Random(7).shuffle(days)
    grown = cb.Store(tmp_path / "grown")
    for start in range(0, 30, 6):  # slices arrive out of order, a run after each arrival
        grown.freeze("t", frame[frame["day"].isin(days[start : start + 6])], slice_by="day")
        last = run(grown, tmp_path)
    assert last.snapshots == first.snapshots
    check_against_duckdb(grown, frame)


def test_a_new_slice_merges_its_sketch_up_its_path(tmp_path: Path) -> None:
    frame = data(days=84, rows=60, seed=3)
    store = cb.Store(tmp_path / "store")
    store.freeze("t", frame[frame["day"] < 83], slice_by="day")
    run(store, tmp_path)
    store.freeze("t", frame[frame["day"] == 83], slice_by="day")
    appended = run(store, tmp_path)
    record = json.loads((tmp_path / "store" / "runs" / f"{appended.run_id}.json").read_text())
    kinds: dict[str, int] = {}
    for task in record["tasks"]:
        if task["stage"] == "per_g" and task.get("outcome") == "computed":
            kinds[task["kind"]] = kinds.get(task["kind"], 0) + 1
    assert kinds["partial"] == 1 and kinds["combine"] <= 7 and kinds["finish"] == 1
    check_against_duckdb(store, frame)


@pytest.mark.parametrize("values", [[], [None, float("nan")], [3.0], [1.0, 2.0]])
def test_tiny_inputs(values: list) -> None:
    """No values: a median of null and a count of 0; one or two values: exact."""
    digest = sketches.tdigest_merge([sketches.tdigest_state(values)])
    present = [v for v in values if v is not None and v == v]
    median = sketches.tdigest_quantile(digest, 0.5)
    if not present:
        assert median is None
    else:
        assert min(present) <= median <= max(present)
    hll = sketches.hll_union([sketches.hll_state(values), None])
    assert sketches.hll_estimate(hll) == len(set(present))
