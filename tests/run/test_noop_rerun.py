"""A rerun with nothing changed computes nothing, keeps the output snapshots, and (as a whole
process) imports neither pandas nor dask: it resolves refs, computes keys and finds every
output in the cache and the run log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

import chanbatch as cb

ROOT = Path(__file__).resolve().parents[2]

BLUEPRINT = """
name: noop
inputs: {t: t}
stages:
  big: {from: t, filter: "x > 2"}
  per_k: {from: big, group_by: [g], aggregate: {n: count(), s: sum(x)}}
  rows: {from: big, per_slice: true, derive: {y: "x * 2"}}
outputs: {per_k: noop_per_k, rows: noop_rows}
"""

PROBE = """
import contextlib, io, json, sys
from chanbatch.cli import main
PLANNER = {"chanbatch.run.planned", "chanbatch.compile.plan", "chanbatch.compile.decide",
           "chanbatch.snapshot.freeze", "pyarrow", "importlib.abc", "tempfile"}
import chanbatch.snapshot.refs as refs_module
manifests = []
get_snapshot = refs_module.get_snapshot
refs_module.get_snapshot = lambda storage, sid: manifests.append(sid) or get_snapshot(storage, sid)
sys.argv = ["chanbatch", "run", sys.argv[1], "--store", sys.argv[2], "--json"]
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main()
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "doc": json.loads(out.getvalue()),
                  "pandas": "pandas" in sys.modules, "dask": "dask" in sys.modules,
                  "distributed": "distributed" in sys.modules,
                  "planner": sorted(m for m in sys.modules if m in PLANNER),
                  "manifests": manifests}))
"""


FRAME = pd.DataFrame({"k": [1, 1, 2, 2, 3], "g": list("ababa"), "x": [1, 3, 5, 7, 9]})


def _store_and_blueprint(tmp_path: Path) -> tuple[cb.Store, Path]:
    store = cb.Store(tmp_path / "store")
    store.freeze("t", FRAME, slice_by="k")
    path = tmp_path / "noop.yaml"
    path.write_text(BLUEPRINT)
    return store, path


def _probe(path: Path, store: cb.Store) -> dict:
    """``chanbatch run --json`` in a fresh process, with what it imported."""
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), store.url],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(probe.stdout.strip().splitlines()[-1])


def test_noop_rerun_reads_nothing_and_imports_no_dataframe_library(tmp_path: Path) -> None:
    store, path = _store_and_blueprint(tmp_path)
    first = cb.Blueprint.from_yaml(path).run(store)
    assert first.stats["computed"] > 0

    report = _probe(path, store)
    assert report["code"] == 0
    assert report["doc"]["stats"]["computed"] == 0
    assert report["doc"]["outputs"] == first.snapshots
    assert report["pandas"] is False
    assert report["dask"] is False
    # answered from the last run's outcome: the planner, the freezer and pyarrow stay unloaded,
    # and so do importlib.abc and what it loads (tempfile, shutil; chanbatch.deferred)
    assert report["planner"] == []
    # nor the input's snapshot manifest: its id (in the ref log) is all the answer needs
    assert report["manifests"] == []
    # and the head of each output is still the same snapshot, with no new version written
    for info in first.snapshots.values():
        assert store.resolve(info["dataset"]).snapshot == info["snapshot"]
        assert len(store.history(info["dataset"])) == 1


def test_a_computing_run_on_threads_imports_neither_dask_nor_distributed(tmp_path: Path) -> None:
    """distributed costs a process about 0.2 s to import and dask about 0.06 s; the threads
    scheduler needs neither (chanbatch.run.local walks the graph), and a run that computes
    every task must not pull them in (it did: distributed through the task ledger asking
    whether it ran on a distributed worker, dask through its threaded scheduler)."""
    store, path = _store_and_blueprint(tmp_path)
    report = _probe(path, store)
    assert report["code"] == 0
    assert report["doc"]["stats"]["computed"] > 0
    assert report["distributed"] is False
    assert report["dask"] is False
    got = store.read_pandas("noop_per_k").sort_values("g").reset_index(drop=True)
    kept = FRAME[FRAME.x > 2]
    want = kept.groupby("g").x.agg(["count", "sum"]).reset_index()
    assert got["n"].tolist() == want["count"].tolist()
    assert got["s"].tolist() == want["sum"].tolist()


def test_a_run_whose_stages_stay_on_arrow_imports_no_pandas(tmp_path: Path) -> None:
    """Filters, derives, count/sum/mean/min/max partials of floats, combines, finishes and a
    sort all have an Arrow path: a computing run of them, cold or with a new slice, never
    imports pandas (0.3 s of a small run), and its answers are pandas' answers."""
    store = cb.Store(tmp_path / "store")
    store.freeze("t", FRAME, slice_by="k")
    path = tmp_path / "arrow.yaml"
    path.write_text(
        """
name: arrow_only
inputs: {t: t}
stages:
  big: {from: t, filter: "x > 2"}
  halves: {from: big, derive: {y: "x * 0.5"}}
  per_g:
    from: halves
    group_by: [g]
    aggregate: {n: count(), s: sum(y), m: mean(y), lo: min(y), hi: max(y)}
  ordered: {from: per_g, sort: [-s]}
outputs: {ordered: arrow_ordered}
"""
    )
    more = pd.DataFrame({"k": [4, 4], "g": ["a", "c"], "x": [11, 13]})
    for frame in (None, more):
        if frame is not None:
            store.freeze("t", frame, slice_by="k")  # a new slice, k=4
        report = _probe(path, store)
        assert report["code"] == 0 and report["doc"]["stats"]["computed"] > 0
        assert report["pandas"] is False
        everything = pd.concat([FRAME, more]) if frame is not None else FRAME
        kept = everything[everything.x > 2].assign(y=lambda f: f.x * 0.5)
        want = kept.groupby("g").y.agg(["count", "sum", "mean", "min"]).reset_index()
        want["hi"] = kept.groupby("g").y.max().to_numpy()
        want = want.sort_values("sum", ascending=False, kind="stable").reset_index(drop=True)
        got = store.read_pandas("arrow_ordered")
        assert got["g"].tolist() == want["g"].tolist()
        assert got["n"].tolist() == want["count"].tolist()
        assert got["s"].tolist() == want["sum"].tolist()
        assert got["m"].tolist() == want["mean"].tolist()
        assert got["lo"].tolist() == want["min"].tolist()
        assert got["hi"].tolist() == want["hi"].tolist()


def test_the_extremes_of_ints_are_taken_on_arrow_and_stay_ints(tmp_path: Path) -> None:
    """min and max of an int column, with nulls in some slices, on the Arrow path from the
    partials to the finish: no pandas in the process, the answers are pandas' on the raw rows,
    and the extremes are ints (a group of nulls only: null)."""
    frame = pd.DataFrame(
        {
            "k": [1, 1, 2, 2, 3, 3],
            "g": ["a", "b", "a", "c", "b", "c"],
            "v": pd.array([4, None, -7, None, 2**62, None], dtype="Int64"),
        }
    )
    store = cb.Store(tmp_path / "store")
    store.freeze("t", frame, slice_by="k")
    path = tmp_path / "extremes.yaml"
    path.write_text(
        """
name: extremes
inputs: {t: t}
stages:
  per_g: {from: t, group_by: [g], aggregate: {n: count(v), lo: min(v), hi: max(v)}}
outputs: {per_g: extremes_per_g}
"""
    )
    report = _probe(path, store)
    assert report["code"] == 0 and report["doc"]["stats"]["computed"] > 0
    assert report["pandas"] is False
    got = store.read_pandas("extremes_per_g").sort_values("g").reset_index(drop=True)
    want = frame.groupby("g").v.agg(["count", "min", "max"]).reset_index()
    assert got["g"].tolist() == want["g"].tolist() == ["a", "b", "c"]
    assert got["n"].tolist() == want["count"].tolist() == [2, 1, 0]
    assert got["lo"].tolist()[:2] == want["min"].tolist()[:2] == [-7, 2**62]
    assert got["hi"].tolist()[:2] == want["max"].tolist()[:2] == [4, 2**62]
    assert pd.isna(got["lo"][2]) and pd.isna(got["hi"][2])  # c: nulls only
    assert str(got["lo"].dtype) == str(got["hi"].dtype) == "Int64"
