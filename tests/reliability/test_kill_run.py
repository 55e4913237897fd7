"""Issue 7, fault 2: SIGKILL ``chanbatch run`` anywhere in its life (DESIGN.md section 6: a run
records each finished result at once; a killed run, run again, computes only what is missing).

Each trial copies a starting store that holds one input dataset of ten slices, runs a blueprint
with per-slice stages, a per-slice aggregate and a whole-input aggregate (70-odd tasks, three
outputs) with the real console script, and kills it at some point (see ``reliakit``). Where the
kill landed is read from the store's files. After each kill:

- ``chanbatch snapshot verify`` passes, the starting files are unchanged, and an output that
  already has a version has exactly one: the snapshot of an undisturbed run;
- ``chanbatch run --json`` again succeeds with the output snapshots of an undisturbed run, and
  its run record shows that no task whose result was in ``cache/`` after the kill was computed
  again: each such key is a task of the rerun, reused or cut off.

The undisturbed run's outputs are checked once against pandas.
"""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from clikit import ok_json
from opskit import assert_same
from reliakit import (
    EXITED,
    Landing,
    Phases,
    Shot,
    argv,
    assert_campaign,
    contents,
    fresh_copy,
    kill,
    listing,
    timed_together,
)

import chanbatch as cb

SLICES = 10
ROWS = 20_000  # per slice
SEED = 2_2013
JOBS = 2

BLUEPRINT = """\
name: killrun
inputs:
  t: t
stages:
  widened:
    from: t
    derive: {w: "x * 2 + 1", hi: "y > 50"}
  kept:
    from: widened
    filter: "x > 0"
  per_g:
    from: kept
    per_slice: true
    group_by: [g]
    aggregate: {n: count(), total: sum(y)}
  totals:
    from: kept
    group_by: [g, hi]
    aggregate: {n: count(), total: sum(y), top: max(x), avg: mean(w), sd: std(x)}
outputs:
  kept: kill_rows
  per_g: kill_per_g
  totals: kill_totals
"""
OUTPUTS = ("kill_rows", "kill_per_g", "kill_totals")

#: Where a kill landed, from the earliest: nothing new in the store; files (the "running" run
#: record, objects) but no cache entry; cache entries but no output ref; some output refs but no
#: finished run record; the finished run record written.
#: A campaign must hit each of: before any result; some results; some outputs committed.
PHASES = Phases(
    order=("clean", "started", "cache", "outputs", "recorded"),
    required=(("clean", "started"), ("cache",), ("outputs", "recorded")),
)


def frame() -> pd.DataFrame:
    """``SLICES`` slices (column ``s``) of ``ROWS`` rows, with nulls in ``g`` and ``x``."""
    rng = np.random.default_rng(SEED)
    n = SLICES * ROWS
    x = rng.normal(size=n)
    x[rng.random(n) < 0.05] = np.nan
    g = rng.choice(np.array(["a", "b", "c", "d", None], dtype=object), n)
    return pd.DataFrame(
        {
            "s": np.repeat(np.arange(1, SLICES + 1), ROWS).astype("int64"),
            "g": pd.Series(g, dtype="str"),
            "x": x,
            "y": rng.integers(0, 100, n).astype("int64"),
        }
    )


def run_args(blueprint: Path, store: Path) -> list[str]:
    return argv("run", blueprint, "--store", store, "--json", "--scheduler", "threads")


def kept_after_gc(store: Path) -> dict[str, Any]:
    """What gc keeps of a store: its objects and manifests (bytes), and its cache entries
    (without their creation time and the checksum that covers it)."""
    kept: dict[str, Any] = dict(contents(store, "objects", "manifests"))
    for rel, data in contents(store, "cache").items():
        entry = json.loads(data)
        for stamped in ("created_at", "checksum"):  # the checksum covers the time too
            entry.pop(stamped, None)
        kept[rel] = entry
    return kept


def cache_keys(store: Path) -> set[str]:
    """The keys of every cached result: entry files, and the members of pack indexes."""
    keys = {p.name.removesuffix(".json") for p in (store / "cache").glob("*.json")}
    for index in (store / "cache" / "packs").glob("*.json"):
        keys.update(member[0] for member in json.loads(index.read_bytes())["members"])
    return keys


@dataclass(frozen=True)
class Setup:
    start: Path  # the starting store: the input dataset only
    base_files: dict[str, bytes]  # all of its files
    blueprint: Path
    expected: dict[str, Any]  # the undisturbed run's --json document
    undisturbed: Path  # its store
    swept: dict[str, Any]  # what gc keeps of it (kept_after_gc)
    lives: list[float]  # CPU seconds of undisturbed runs
    work: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    root = tmp_path_factory.mktemp("kill_run")
    start = root / "start"
    cb.Store(start).freeze("t", frame(), slice_by="s")
    blueprint = root / "killrun.yaml"
    blueprint.write_text(BLUEPRINT)

    # Two undisturbed runs at once, under the load of the kills: their CPU time is the span the
    # kills are spread over, and they must agree on every output.
    copies = [fresh_copy(start, root / f"undisturbed{i}") for i in range(JOBS)]
    runs = timed_together([run_args(blueprint, c) for c in copies])
    for _seconds, result in runs:
        assert result.code == 0 and result.stderr == "", str(result)
    documents = [r.json() for _s, r in runs]
    assert all(d["outputs"] == documents[0]["outputs"] for d in documents)
    expected = documents[0]
    assert expected["stats"]["reused"] == 0 and expected["stats"]["computed"] > 3 * SLICES
    assert sorted(o["dataset"] for o in expected["outputs"].values()) == sorted(OUTPUTS)
    swept = ok_json("gc", "--grace", "0s", store=copies[0])  # nothing to sweep: no crash here
    assert not any(swept["removed"].values()), swept

    return Setup(
        start=start,
        base_files={rel: (start / rel).read_bytes() for rel in listing(start)},
        blueprint=blueprint,
        expected=expected,
        undisturbed=copies[0],
        swept=kept_after_gc(copies[0]),
        lives=[seconds for seconds, _r in runs],
        work=root,
    )


def test_the_undisturbed_outputs_are_right(setup: Setup) -> None:
    """The snapshots every rerun must reproduce hold what pandas computes from the input."""
    source = frame()
    kept = source[source.x > 0].assign(w=lambda f: f.x * 2 + 1, hi=lambda f: f.y > 50)
    kept = kept[["s", "g", "x", "y", "w", "hi"]]
    store = cb.Store(setup.undisturbed)

    rows = store.read("kill_rows").compute()
    assert_same(rows, kept, ordered=True)

    per_g = store.read("kill_per_g")  # one partition per slice, without the slice column
    assert per_g.npartitions == SLICES
    for i, (_s, part) in enumerate(kept.groupby("s", sort=True)):
        want = (
            part.groupby("g", dropna=False, sort=True)
            .agg(n=("y", "size"), total=("y", "sum"))
            .reset_index()
        )
        assert_same(per_g.get_partition(i).compute(), want, by=["g"])

    totals = store.read("kill_totals").compute()
    want = (
        kept.groupby(["g", "hi"], dropna=False, sort=True)
        .agg(
            n=("y", "size"),
            total=("y", "sum"),
            top=("x", "max"),
            avg=("w", "mean"),
            sd=("x", "std"),
        )
        .reset_index()
    )
    assert_same(totals, want, by=["g", "hi"])
    outputs = setup.expected["outputs"]
    assert outputs["kept"]["rows"] == len(kept)
    assert outputs["totals"]["rows"] == len(want)


def landed(store: Path, setup: Setup) -> str:
    """The phase a kill landed in, from the files it left (the latest one it reached)."""
    new = listing(store) - set(setup.base_files)
    records = [json.loads((store / rel).read_bytes()) for rel in new if rel.startswith("runs/")]
    # a run writes its record twice: "running" before it reads anything, "finished" at the end
    if any(record.get("status") != "running" for record in records):
        return "recorded"
    if any(rel.startswith("refs/") for rel in new):
        return "outputs"
    if any(rel.startswith("cache/") and rel.endswith(".json") for rel in new):
        return "cache"
    return "started" if new else "clean"


def assert_intact(store: Path, setup: Setup) -> None:
    """The store after a kill: valid, its starting files unchanged, and any output version the
    run committed is the undisturbed run's."""
    verify = ok_json("snapshot", "verify", store=store)
    assert verify["ok"] is True and not verify["corrupt"] and not verify["missing"], verify
    for rel, data in setup.base_files.items():
        assert (store / rel).read_bytes() == data, f"{rel} changed"
    want = {o["dataset"]: o["snapshot"] for o in setup.expected["outputs"].values()}
    for dataset, snapshot in want.items():
        versions = sorted((store / "refs" / dataset).glob("*.json"))
        assert len(versions) <= 1, versions
        for path in versions:
            assert json.loads(path.read_bytes())["snapshot"] == snapshot, path


def assert_resumed(store: Path, setup: Setup, recorded: set[str], phase: str) -> None:
    """Run again: the undisturbed outputs, and no result recorded before the kill computed."""
    again = ok_json("run", setup.blueprint, "--scheduler", "threads", store=store)
    assert again["outputs"] == setup.expected["outputs"], phase
    for output in again["outputs"].values():  # one version each: a rerun adds none
        versions = contents(store, f"refs/{output['dataset']}")
        assert len(versions) == 1, (phase, sorted(versions))
    record = json.loads((store / "runs" / f"{again['run']}.json").read_bytes())
    if record.get("repeats"):
        # nothing changed since the run that finished before the kill: a repeat of it, whose
        # record has the tasks
        assert again["stats"]["computed"] == 0 and phase in ("recorded", EXITED), phase
        record = json.loads((store / "runs" / f"{record['repeats']}.json").read_bytes())
        record["tasks"] = [{k: v for k, v in t.items() if k != "outcome"} for t in record["tasks"]]
    tasks = {t["key"]: t for t in record["tasks"]}
    assert len(tasks) == len(record["tasks"])
    computed = {key for key, t in tasks.items() if t.get("outcome") == "computed"}
    assert len(computed) == again["stats"]["computed"], again["stats"]
    assert not computed & recorded, (
        f"recomputed after a kill in {phase}: {sorted(computed & recorded)}"
    )
    assert recorded <= set(tasks), (
        f"cache entries that are no task: {sorted(recorded - set(tasks))}"
    )
    total = setup.expected["stats"]["computed"]
    assert again["stats"]["computed"] + again["stats"]["reused"] == total
    if phase in ("recorded", EXITED):
        assert again["stats"]["computed"] == 0, again["stats"]


def kill_once(setup: Setup, index: int, shot: Shot) -> Landing:
    store = fresh_copy(setup.start, setup.work / f"kill{index}")
    at, finished = kill(
        run_args(setup.blueprint, store), shot, phases=PHASES, landed=lambda: landed(store, setup)
    )
    if finished is not None:
        assert finished.code == 0, str(finished)
    phase = EXITED if finished is not None else landed(store, setup)
    recorded = cache_keys(store)
    assert_intact(store, setup)
    assert_resumed(store, setup, recorded, phase)
    # what the kill left is debris that gc sweeps, after which the store is the undisturbed one
    ok_json("gc", "--grace", "0s", store=store)
    assert kept_after_gc(store) == setup.swept, f"kill at {at:.2f} CPU s ({phase})"
    shutil.rmtree(store)  # keep the work folder small
    return Landing(index=index, at=at, phase=phase)


@pytest.mark.parametrize("kills", [6, pytest.param(20, marks=pytest.mark.slow)])
def test_sigkill_during_run(setup: Setup, kills: int) -> None:
    trial = functools.partial(kill_once, setup)
    assert_campaign(
        "run", trial, kills=kills, lives=setup.lives, phases=PHASES, seed=SEED, jobs=JOBS
    )
