"""Resume after a crash (DESIGN.md sections 2 and 6): a run killed with SIGKILL half-way keeps
every result it recorded, leaves the store valid and the outputs untouched, and the next run
computes only what is missing and produces exactly the snapshots of an uninterrupted run.

The run is a real ``chanbatch run`` process. Its map function (``udfs_resume``) is held forever
once a few results are in ``cache/``, so the kill always lands mid-run, on a busy machine too,
without any timing guesses; the rerun and the uninterrupted run see a plain function with the
same ``version``, so the keys are the same.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from opskit import CHANBATCH, assert_same, cli

import chanbatch as cb

HERE = Path(__file__).resolve().parent
SLICES = 24
#: The map holds once the cache has this many entries, a partial among them (``udfs_resume``).
HOLD_AFTER = 5

BLUEPRINT = """\
name: resume
inputs:
  t: t
stages:
  widened:
    from: t
    map: {function: "udfs_resume:hold_after_some", version: "1"}
  kept:
    from: widened
    filter: "x > 0"
  totals:
    from: kept
    group_by: [g]
    aggregate: {n: count(), total: sum(y), top: max(x), avg: mean(w)}
outputs:
  widened: resume_rows
  totals: resume_totals
"""
OUTPUT_DATASETS = ("resume_rows", "resume_totals")
NOT_NEEDED = "not needed: every result that uses it is cached"


def frame() -> pd.DataFrame:
    """``SLICES`` slices (column ``s``) of 20 rows each, with nulls in ``g`` and ``x``."""
    rng = np.random.default_rng(42)
    rows = SLICES * 20
    x = rng.integers(-20, 40, rows).astype("float64") / 4
    x[rng.random(rows) < 0.1] = np.nan
    g = rng.choice(np.array(["a", "b", "c", "d", None], dtype=object), rows)
    return pd.DataFrame(
        {
            "s": np.repeat(np.arange(1, SLICES + 1), 20).astype("int64"),
            "g": pd.Series(g, dtype="str"),
            "x": x,
            "y": rng.integers(0, 100, rows).astype("int64"),
        }
    )


def new_store(root: Path) -> Path:
    path = root / "snapshots"
    cb.Store(path).freeze("t", frame(), slice_by="s")
    return path


def cache_keys(store: Path) -> set[str]:
    return {p.name.removesuffix(".json") for p in (store / "cache").glob("*.json")}


def partial_entries(store: Path) -> set[str]:
    """Keys of the cache entries that hold an aggregate's per-slice partial."""
    out = set()
    for key in cache_keys(store):
        entry = json.loads((store / "cache" / f"{key}.json").read_bytes())
        if entry["kind"] == "partial":
            out.add(key)
    return out


def shape(plan: dict[str, Any]) -> Counter[tuple[str, Any, str]]:
    """The tasks of a ``plan --json`` document as (stage, slice, kind), without their keys."""
    return Counter((t["stage"], t["slice"], t["kind"]) for t in plan["tasks"])


def run_argv(blueprint: Path, store: Path, scheduler: str) -> list[str]:
    return [
        str(CHANBATCH),
        "run",
        str(blueprint),
        "--store",
        str(store),
        "--json",
        "--scheduler",
        scheduler,
        "--allow-module",
        "udfs_resume",
    ]


def run_json(blueprint: Path, store: Path, scheduler: str) -> dict[str, Any]:
    """An uninterrupted ``chanbatch run --json`` (the map is not held)."""
    argv = run_argv(blueprint, store, scheduler)[1:]
    result = cli(*argv, pythonpath=str(HERE), timeout=120)
    assert result.code == 0 and result.stderr == "", str(result)
    return result.json()


@pytest.fixture(scope="module")
def blueprint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("blueprint") / "resume.yaml"
    path.write_text(BLUEPRINT)
    return path


@dataclass(frozen=True)
class Cold:
    """A cold, uninterrupted run on a fresh store with the same data."""

    store: Path
    plan: dict[str, Any]
    run: dict[str, Any]


@pytest.fixture(scope="module")
def uninterrupted(blueprint: Path, tmp_path_factory: pytest.TempPathFactory) -> Cold:
    store = new_store(tmp_path_factory.mktemp("cold"))
    plan = cli("plan", blueprint, "--store", store, "--json")
    assert plan.code == 0, str(plan)
    doc = run_json(blueprint, store, "sync")
    assert doc["stats"]["computed"] == plan.json()["summary"]["compute"] > 0
    assert doc["stats"].get("cutoff", 0) == 0
    assert doc["stats"]["reused"] == 0
    return Cold(store, plan.json(), doc)


def kill_mid_run(blueprint: Path, store: Path, scheduler: str, marker: Path) -> set[str]:
    """Start a run, wait until it is held with results in the cache, SIGKILL it, and return
    the keys of the cache entries it left."""
    env = {k: v for k, v in os.environ.items() if k != "CHANBATCH_STORE"}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")])),
            "NO_COLOR": "1",
            "CHANBATCH_TEST_HOLD_CACHE": str(store / "cache"),
            "CHANBATCH_TEST_HOLD_AFTER": str(HOLD_AFTER),
            "CHANBATCH_TEST_HELD_MARKER": str(marker),
        }
    )
    proc = subprocess.Popen(
        run_argv(blueprint, store, scheduler),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not (marker.exists() and partial_entries(store)):
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"the run ended before it was held ({proc.returncode}):\n{out}\n{err}")
            if time.monotonic() > deadline:
                pytest.fail("the run was not held within 60 s")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        out, _err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGKILL, proc.returncode
    assert out == ""  # killed before it could print its document
    return cache_keys(store)


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_a_killed_run_resumes_where_it_stopped(
    scheduler: str,
    blueprint: Path,
    uninterrupted: Cold,
    tmp_path: Path,
) -> None:
    cold_plan, cold = uninterrupted.plan, uninterrupted.run
    store = new_store(tmp_path)
    before = {p.relative_to(store) for p in (store / "refs").rglob("*.json")}

    recorded = kill_mid_run(blueprint, store, scheduler, tmp_path / "held")
    assert len(recorded) >= HOLD_AFTER
    partials = partial_entries(store)
    assert partials and len(partials) < SLICES

    # the kill committed nothing: no output version, same ref log, and only the record the run
    # wrote before it read anything (what it meant to use, for gc), never finished
    assert cb.Store(store).datasets() == ["t"]
    assert {p.relative_to(store) for p in (store / "refs").rglob("*.json")} == before
    for dataset in OUTPUT_DATASETS:
        assert not (store / "refs" / dataset).exists()
    records = [json.loads(p.read_bytes()) for p in store.glob("runs/*.json")]
    assert [r["status"] for r in records] == ["running"]
    assert "outputs" not in records[0]

    # ... and left the store valid
    verify = cli("snapshot", "verify", "--store", store, "--json")
    assert verify.code == 0, str(verify)
    assert verify.json()["ok"] is True and verify.json()["corrupt"] == []

    # every entry recorded before the kill is reused as cached; the rest is computed
    plan = cli("plan", blueprint, "--store", store, "--json")
    assert plan.code == 0, str(plan)
    # the same tasks as a cold plan (the keys above a partial hash its content, so a cold plan
    # has placeholders where this one has real keys)
    assert shape(plan.json()) == shape(cold_plan)
    tasks = {t["key"]: t for t in plan.json()["tasks"]}
    for key in recorded:
        assert key in tasks, f"cache entry {key[:12]} is not a task of the plan"
        task = tasks[key]
        assert task["action"] == "reuse", task
        if task["stage"] == "kept":
            # a checkpoint (docs/blueprints.md 6.4) whose partial was recorded too is not read
            assert task["reason"] in ("cached", NOT_NEEDED), task
        else:
            assert task["reason"] == "cached", task
    assert {k for k in recorded if tasks[k]["kind"] == "partial"} == partials
    summary = plan.json()["summary"]
    assert 0 < summary["compute"] < cold_plan["summary"]["compute"]
    assert summary["compute"] + summary["reuse"] == len(plan.json()["tasks"])

    # the rerun computes just that, and ends where the uninterrupted run ended
    again = run_json(blueprint, store, scheduler)
    stats = again["stats"]
    assert 0 < stats["computed"] < cold["stats"]["computed"]
    # a provisional task whose inputs come out as before is cut off, not computed
    assert stats["computed"] + stats.get("cutoff", 0) == summary["compute"]
    assert stats["reused"] >= len(recorded)
    assert again["outputs"] == cold["outputs"]
    for name, info in cold["outputs"].items():
        assert cb.Store(store).resolve(info["dataset"]).snapshot == info["snapshot"], name

    verify = cli("snapshot", "verify", "--store", store, "--json")
    assert verify.code == 0 and verify.json()["ok"] is True, str(verify)
    # nothing is left to do
    final = cli("plan", blueprint, "--store", store, "--json")
    assert final.code == 0 and final.json()["summary"]["compute"] == 0, str(final)


def test_the_uninterrupted_outputs_are_right(uninterrupted: Cold) -> None:
    """The snapshots that the resumed runs must reproduce hold the right rows (against pandas)."""
    source = frame()
    store = cb.Store(uninterrupted.store)
    rows = store.read("resume_rows").compute().reset_index(drop=True)
    want_rows = source.assign(w=source.x * 2 + 1)
    assert_same(rows, want_rows, ordered=True)

    totals = store.read("resume_totals").compute().reset_index(drop=True)
    kept = want_rows[want_rows.x > 0]
    want = (
        kept.groupby("g", dropna=False, sort=True)
        .agg(n=("y", "size"), total=("y", "sum"), top=("x", "max"), avg=("w", "mean"))
        .reset_index()
    )
    assert_same(totals, want, ordered=True)
    outputs = uninterrupted.run["outputs"]
    assert outputs["widened"]["rows"] == len(source)
    assert outputs["totals"]["rows"] == len(want)
