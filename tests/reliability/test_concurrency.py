"""Fault 4 of issue 7: concurrent writers and concurrent runs on one store.

Writers. 8 processes freeze 25 slices each into one dataset at the same time: 20 keys of their
own and the 5 keys of ``SHARED_KEYS``, which every writer freezes with the same rows, the first of
them first (so all 8 race for it at once). They start together, after their imports, when the
test creates a file. Afterwards nothing is lost and nothing overwritten:

- the ref log holds versions 1..N without a gap (N = 8 * 20 + 5: a shared key commits once, the
  other writers find it there unchanged), each entry's parent the snapshot before it;
- every commit a writer reports is the log entry of its version, and every log entry is one
  writer's commit; every key was added exactly once;
- the head has every key, each slice's rows equal to the rows computed here, and every writer
  got the same slice id for a shared key; ``snapshot verify`` passes, ``tmp/`` is empty.

Through the API by default (the writers count the ref commits they lost and retried); the slow
variant runs each writer's freezes through the ``chanbatch`` script.

Runs. Two ``chanbatch run`` of one blueprint on one store, both held at a gate (``udfs_load``)
until both have arrived, so their cache writes, output freezes and run records overlap. Both
succeed with the same output ids, one version per output; every cache entry parses, is a hit
for chanbatch, and names objects that hash to their ids; a third run computes nothing; verify
passes; outputs equal pandas'.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from loadkit import (
    ALLOW,
    SHARED_KEYS,
    Gate,
    Processes,
    assert_output,
    blueprint,
    cache_problems,
    chain_problems,
    child_env,
    days_frame,
    expected,
    outputs_of,
    ref_log,
    slice_frame,
    verify,
    wait_until,
    writer_keys,
)

import chanbatch as cb
from chanbatch.cache import lookup

WRITERS = 8
PER_WRITER = 25

WRITER = r"""
import json, subprocess, sys, time
from pathlib import Path

import chanbatch
from chanbatch.snapshot.storage import Storage
from loadkit import CHANBATCH, slice_frame, writer_keys

url, writer, writers, per_writer, folder, mode = sys.argv[1:7]
writer, folder = int(writer), Path(folder)
lost = 0
create = Storage.create_exclusive


def counting(self, rel, data):  # ref commits are the only exclusive creates: count lost races
    global lost
    made = create(self, rel, data)
    lost += not made
    return made


Storage.create_exclusive = counting
store = chanbatch.Store(url)
keys = writer_keys(writer, int(writers), int(per_writer))
frames = {key: slice_frame(key) for key in keys}
(folder / f"ready-{writer}").touch()
while not (folder / "go").exists():
    time.sleep(0.001)
commits = []
for key in keys:
    if mode == "api":
        info = store.freeze("events", frames[key], slice=key)
        commits.append({"key": key, "created": info.created, "version": info.version,
                        "snapshot": info.snapshot, "slice": info.slices[0].id})
        continue
    argv = [str(CHANBATCH), "snapshot", "freeze", "events", str(folder / f"{key}.csv"),
            "--store", url, "--json"]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"freeze of {key} exited {done.returncode}: {done.stderr}")
    doc = json.loads(done.stdout)
    commits.append({"key": key, "snapshot": doc["snapshot"], "slice": doc["slices"][0]["id"]})
report = {"writer": writer, "lost_races": lost if mode == "api" else None, "commits": commits}
(folder / f"report-{writer}.json").write_text(json.dumps(report))
"""


@pytest.mark.parametrize("mode", ["api", pytest.param("cli", marks=pytest.mark.slow)])
def test_eight_writers_with_overlapping_keys_lose_nothing(tmp_path: Path, mode: str) -> None:
    store, folder = tmp_path / "store", tmp_path / "writers"
    folder.mkdir()
    every = sorted({k for w in range(WRITERS) for k in writer_keys(w, WRITERS, PER_WRITER)})
    if mode == "cli":
        for key in every:
            slice_frame(key).to_csv(folder / f"{key}.csv", index=False)
    env = child_env()
    with Processes(tmp_path / "logs") as procs:
        writers = [
            procs.python(
                WRITER,
                str(store),
                str(w),
                str(WRITERS),
                str(PER_WRITER),
                str(folder),
                mode,
                name=f"writer-{w}",
                env=env,
            )
            for w in range(WRITERS)
        ]
        wait_until(
            lambda: all((folder / f"ready-{w}").exists() for w in range(WRITERS)),
            what="every writer ready",
            watch=writers,
        )
        (folder / "go").touch()
        for w, writer in enumerate(writers):
            result = writer.finish(timeout=600)
            assert result.code == 0, f"writer {w}: {result}"
    reports = [json.loads((folder / f"report-{w}.json").read_text()) for w in range(WRITERS)]

    own = (PER_WRITER - len(SHARED_KEYS)) * WRITERS
    log = ref_log(store, "events")
    assert not chain_problems(log)
    assert len(log) == own + len(SHARED_KEYS)  # each shared key committed once
    added = sorted(key for entry in log for key in entry["added"])
    assert added == every and not any(entry["replaced"] for entry in log)
    by_snapshot = {entry["snapshot"]: entry for entry in log}
    shared_ids: dict[int, set[str]] = {}
    commits = [c for r in reports for c in r["commits"]]
    for commit in commits:
        assert commit["snapshot"] in by_snapshot, commit  # what a writer saw as head is logged
        if commit["key"] in SHARED_KEYS:
            shared_ids.setdefault(commit["key"], set()).add(commit["slice"])
        else:  # an own key: the writer's commit is the entry that added it
            assert by_snapshot[commit["snapshot"]]["added"] == [commit["key"]], commit
    assert all(len(ids) == 1 for ids in shared_ids.values()), shared_ids
    if mode == "api":
        created = [c for c in commits if c["created"]]
        assert sorted(c["version"] for c in created) == list(range(1, len(log) + 1))
        for commit in created:
            assert log[commit["version"] - 1]["snapshot"] == commit["snapshot"], commit
        assert sorted(c["key"] for c in commits if not c["created"]) == sorted(
            SHARED_KEYS * (WRITERS - 1)
        )

    head = cb.Store(store)
    assert [e.key for e in head.slices("events")] == every
    got = head.read_pandas("events")
    want = pd.concat([slice_frame(k) for k in every], ignore_index=True)
    pd.testing.assert_frame_equal(
        got.assign(label=got["label"].astype(str)),
        want.assign(label=want["label"].astype(str)),
        check_dtype=False,
    )
    verify(store)
    tmp = store / "tmp"
    assert not tmp.exists() or not any(tmp.iterdir()), "a writer left a temporary file"
    lost = [r["lost_races"] for r in reports]
    print(f"\n{mode}: {WRITERS} writers x {PER_WRITER} slices, {len(log)} versions, lost races "
          f"retried per writer: {lost}")  # fmt: skip


# -- two runs at once ----------------------------------------------------------------------------

DAYS = 6
HOLD = 3


def test_two_concurrent_runs_agree_and_leave_a_sound_cache(tmp_path: Path) -> None:
    store = tmp_path / "store"
    frame = days_frame(DAYS, 30, seed=8)
    cb.Store(store).freeze("t", frame, slice_by="day")
    path = tmp_path / "twin.yaml"
    path.write_text(blueprint("twin"))
    gate = Gate(tmp_path / "gate", [HOLD])
    args = ("run", path, "--store", store, "--workers", "2", "--json", *ALLOW)
    with Processes(tmp_path / "logs") as procs:
        runs = [
            procs.chanbatch(*args, name=f"run-{i}", env=child_env(**gate.env())) for i in (1, 2)
        ]
        wait_until(
            lambda: {a.pid for a in gate.arrivals()} == {r.pid for r in runs},
            what="both runs at the gate",
            watch=runs,
        )
        held_with = len(list((store / "cache").glob("*.json")))
        gate.open()
        first, second = (run.finish() for run in runs)
    assert outputs_of(first) == outputs_of(second)
    for stage in ("by_g", "daily"):
        log = ref_log(store, f"twin_{stage}")
        assert len(log) == 1 and not chain_problems(log), log  # the same snapshot commits once

    entries, problems = cache_problems(store)
    assert entries > 0 and not problems, problems
    storage = cb.Store(store).storage
    for path in sorted((store / "cache").glob("*.json")):
        assert lookup(storage, path.stem, verify=True) is not None, f"{path.name} is a miss"

    with Processes(tmp_path / "logs") as procs:
        third = procs.chanbatch(*args, name="run-3", env=child_env()).finish()
    assert outputs_of(third) == outputs_of(first)
    assert third.json()["stats"]["computed"] == 0, third.json()["stats"]
    out = cb.Store(store)
    for stage, want in expected(frame).items():
        assert_output(out.read_pandas(f"twin_{stage}"), want)
    verify(store)
    print(f"\ntwo runs: both at the gate with {held_with} cache entries written, {entries} after; "
          f"third run computed 0, reused {third.json()['stats']['reused']}")  # fmt: skip
