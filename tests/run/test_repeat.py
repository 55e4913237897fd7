"""Repeats (issue 17): a run that finds nothing changed since the last computing run is answered
without planning. It must be one exactly when a planned run would compute nothing, give the
same snapshots, and keep alive, for gc, what the run it repeats kept alive.

Expected answers come from plain pandas on the same rows; records are read here as JSON.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from opskit import cli

import chanbatch as cb

BLUEPRINT = """\
name: again
inputs:
  t: t
stages:
  kept:
    from: t
    filter: "x > {cut}"
  per_group:
    from: kept
    group_by: [g]
    aggregate: {{rows: count(), total: sum(x)}}
outputs:
  per_group: again_out
"""

DAYS = 12


def blueprint(cut: float = 0.3) -> cb.Blueprint:
    return cb.Blueprint.from_yaml(BLUEPRINT.format(cut=cut))


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(23)
    rows = DAYS * 40
    return pd.DataFrame(
        {
            "day": np.repeat(np.arange(DAYS, dtype="int64"), 40),
            "g": rng.choice(np.array(["a", "b", "c"], dtype=object), rows),
            "x": rng.random(rows).round(4),
        }
    )


def expected(frame: pd.DataFrame, cut: float = 0.3) -> pd.DataFrame:
    kept = frame[frame.x > cut]
    out = kept.groupby("g").agg(rows=("x", "size"), total=("x", "sum")).reset_index()
    return out.sort_values("g").reset_index(drop=True)


def check(result: cb.run.runner.RunResult, frame: pd.DataFrame, cut: float = 0.3) -> None:
    got = result.outputs["per_group"].compute().sort_values("g").reset_index(drop=True)
    want = expected(frame, cut)
    assert got["g"].tolist() == want["g"].tolist()
    assert got["rows"].tolist() == want["rows"].tolist()
    np.testing.assert_allclose(got["total"], want["total"], rtol=1e-12)


def record(root: Path, result: cb.run.runner.RunResult) -> dict:
    return json.loads((root / "runs" / f"{result.run_id}.json").read_text())


@pytest.fixture
def root(tmp_path: Path, frame: pd.DataFrame) -> Path:
    root = tmp_path / "store"
    cb.Store(root).freeze("t", frame[frame.day < DAYS - 1], slice_by="day")
    return root


def test_a_run_with_nothing_changed_repeats_the_last_one(root: Path, frame: pd.DataFrame) -> None:
    store = cb.Store(root)
    first = blueprint().run(store, scheduler="sync")
    again = blueprint().run(store, scheduler="threads")
    assert again.snapshots == first.snapshots
    doc = record(root, again)
    assert doc["repeats"] == first.run_id
    assert doc["tasks"] == []
    assert doc["roots"]["records"] == [first.run_id]
    assert doc["scheduler"] == "threads"
    # the statistics say what a planned run would: every task reused
    planned = record(root, first)["stats"]
    assert again.stats["computed"] == 0
    assert again.stats["reused"] == planned["computed"] + planned["reused"]
    check(again, frame[frame.day < DAYS - 1])
    # a plan still explains against the run that computed, and computes nothing
    plan = blueprint().plan(store).document()
    assert plan["summary"]["compute"] == 0
    assert store.verify().ok


def test_anything_changed_is_planned(root: Path, frame: pd.DataFrame) -> None:
    store = cb.Store(root)
    first = blueprint().run(store, scheduler="sync")
    # a new slice: planned, and only its path computed
    store.freeze("t", frame[frame.day == DAYS - 1], slice_by="day")
    grown = blueprint().run(store, scheduler="sync")
    assert "repeats" not in record(root, grown)
    assert 0 < grown.stats["computed"] < record(root, first)["stats"]["computed"]
    check(grown, frame)
    # an edited stage: planned
    edited = blueprint(cut=0.5).run(store, scheduler="sync")
    assert "repeats" not in record(root, edited)
    check(edited, frame, cut=0.5)
    # the result evicted: planned, the finish computed again
    store.evict(stage="per_group")
    evicted = blueprint(cut=0.5).run(store, scheduler="sync")
    assert "repeats" not in record(root, evicted)
    assert evicted.stats["computed"] > 0
    assert evicted.snapshots == edited.snapshots
    # and now nothing changed: a repeat of that run
    last = blueprint(cut=0.5).run(store, scheduler="sync")
    assert record(root, last)["repeats"] == evicted.run_id


def test_an_output_moved_on_is_planned(root: Path, frame: pd.DataFrame) -> None:
    store = cb.Store(root)
    first = blueprint().run(store, scheduler="sync")
    # someone else's rows frozen over the output: the run takes its dataset back
    store.freeze("again_out", pd.DataFrame({"g": ["z"], "rows": [1], "total": [1.0]}), slice="all")
    result = cli(
        "run",
        _write(root, BLUEPRINT.format(cut=0.3)),
        "--store",
        root,
        "--json",
        "--overwrite",
        "again_out",
    )
    assert result.code == 0, str(result)
    doc = result.json()
    assert "repeats" not in json.loads((root / "runs" / f"{doc['run']}.json").read_text())
    assert doc["outputs"]["per_group"]["snapshot"] == first.snapshots["per_group"]["snapshot"]


def test_a_run_with_a_report_is_planned(root: Path, tmp_path: Path) -> None:
    store = cb.Store(root)
    blueprint().run(store, scheduler="sync")
    again = blueprint().run(store, scheduler="sync", report=tmp_path / "report.html")
    doc = record(root, again)
    assert "repeats" not in doc and doc["tasks"]
    assert (tmp_path / "report.html").stat().st_size > 1000


def test_gc_keeps_what_a_repeated_old_run_keeps(root: Path, frame: pd.DataFrame) -> None:
    store = cb.Store(root)
    first = blueprint().run(store, scheduler="sync")
    blueprint().run(store, scheduler="sync")  # a repeat
    # the computing run's record is older than gc's window for run records (7 days); every
    # cache file is older than the grace period
    old = time.time() - 8 * 86400
    os.utime(root / "runs" / f"{first.run_id}.json", (old, old))
    for path in (root / "cache").rglob("*.json"):
        os.utime(path, (old, old))
    swept = cli("gc", "--grace", "0s", "--store", root, "--json")
    assert swept.code == 0, str(swept)
    assert swept.json()["removed"]["cache"] == 0, swept.stdout
    # so a new slice costs only its path, not every slice again
    store.freeze("t", frame[frame.day == DAYS - 1], slice_by="day")
    grown = blueprint().run(store, scheduler="sync")
    partials = [
        t
        for t in record(root, grown)["tasks"]
        if t["kind"] == "partial" and t.get("outcome") == "computed"
    ]
    assert len(partials) == 1
    check(grown, frame)
    assert store.verify().ok


def _write(root: Path, text: str) -> Path:
    path = root.parent / "again.yaml"
    path.write_text(text)
    return path
