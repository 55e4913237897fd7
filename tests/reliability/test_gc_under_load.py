"""Fault 5 of issue 7: ``chanbatch gc`` looping while freezes and a run are in progress.

``chanbatch gc --grace 10s`` runs again and again in the background (:class:`loadkit.GcLoop`)
while, at the same time:

- ``chanbatch run`` of a blueprint whose input just got a new slice is held at a gate
  (``udfs_load``) on that slice: it reuses the partials of the older slices, cache entries an
  hour old (older than the grace period) that only the previous run's record protects;
- a freeze (through the API, in its own process) is held between its last object write and its
  ref commit. Most of its slices are already in the store, a day old: debris of an earlier
  failed freeze, which the freeze reuses instead of writing. This is the case where gc used to
  delete what a freeze was about to commit (see ``tests/snapshot/test_store_gc_reuse.py``);
- unrelated debris, a day old, waits to be collected, so the loop must really sweep.

Once both writers are held, the gc loop starts: at least two full passes (eight in the slow
variant, with three freezes and a run on ``--scheduler processes``) run while they are held;
then the test opens the gate, and two more passes run after both have finished. Afterwards
every ref-log entry of every dataset resolves and reads back as its sources say; the run's
output ids equal an undisturbed run's and its outputs pandas'; every cache entry is sound;
``snapshot verify`` passes; the reused debris is still there, the very same files, named by the
freeze; and the unrelated debris is gone.

The grace period has to be longer than a writer's time from its first write to its ref: 10 s,
against the one or two seconds the writers here are held.

A run that reuses a cache entry older than a week (older than the last run record's
protection) keeps it too: the run writes a record of what it will use before it reads it, and
gc reads the records written while it swept once more before it deletes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
from loadkit import (
    ALLOW,
    Gate,
    GcLoop,
    Processes,
    age,
    assert_output,
    blueprint,
    cache_problems,
    chain_problems,
    child_env,
    copy_store,
    days_frame,
    expected,
    outputs_of,
    ref_log,
    slice_frame,
    verify,
    wait_until,
)

import chanbatch as cb
from chanbatch.snapshot import refs

GRACE = "10s"
HOUR, DAY = 3600.0, 86400.0

FREEZER = r"""
import sys, time
from pathlib import Path

import pandas as pd
import chanbatch
from chanbatch.snapshot import refs
from loadkit import slice_frame

url, dataset, folder, keys = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4]
commit = refs.commit


def held(*args, **kwargs):  # every object and slice manifest is written or reused by now
    (folder / f"at-commit-{dataset}").touch()
    while not (folder / "go").exists():
        time.sleep(0.01)
    return commit(*args, **kwargs)


refs.commit = held
frame = pd.concat([slice_frame(int(k)) for k in keys.split(",")], ignore_index=True)
print(chanbatch.Store(url).freeze(dataset, frame, slice_by="key").snapshot)
"""


def keyed(keys: list[int]) -> pd.DataFrame:
    return pd.concat([slice_frame(k) for k in keys], ignore_index=True)


def failed_freeze(
    store: Path, dataset: str, keys: list[int], patch: pytest.MonkeyPatch
) -> set[str]:
    """Freeze ``keys`` into ``dataset`` and crash before the ref; the files it left behind."""
    before = {p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file()}

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed before the ref")

    with patch.context() as inner:
        inner.setattr(refs, "commit", crash)
        with pytest.raises(RuntimeError):
            cb.Store(store).freeze(dataset, keyed(keys), slice_by="key")
    after = {p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file()}
    debris = {rel for rel in after - before if not rel.startswith("tmp/")}
    assert debris and all(rel.startswith(("objects/", "manifests/")) for rel in debris)
    return debris


def manifest_objects(store: Path, snapshot: str) -> set[str]:
    """Object ids a snapshot names, read from its manifest files."""

    def load(mid: str) -> dict:
        return json.loads((store / "manifests" / mid[:2] / f"{mid[2:]}.json").read_bytes())

    return {
        part["object"] for entry in load(snapshot)["slices"] for part in load(entry["id"])["parts"]
    }


def rel_of(oid: str) -> str:
    return f"objects/{oid[:2]}/{oid[2:]}"


@pytest.mark.parametrize(
    ("days", "freezers", "scheduler", "held_passes"),
    [(6, 1, "threads", 2), pytest.param(16, 3, "processes", 8, marks=pytest.mark.slow)],
)
def test_gc_looping_under_a_freeze_and_a_run_deletes_nothing_they_use(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    days: int,
    freezers: int,
    scheduler: str,
    held_passes: int,
) -> None:
    store = tmp_path / "store"
    frame = days_frame(days + 1, 25, seed=21)
    older, newest = frame[frame["day"] <= days], frame[frame["day"] == days + 1]
    path = tmp_path / "load.yaml"
    path.write_text(blueprint("load"))
    bp = cb.Blueprint.from_yaml(path)
    cb.Store(store).freeze("t", older, slice_by="day")
    bp.run(str(store), scheduler="threads", allow_modules=ALLOW[1:])
    age(store, HOUR, ["objects", "manifests", "cache", "memo"])  # only run records protect these
    cb.Store(store).freeze("t", newest, slice_by="day")

    fresh = {f"fresh{i}": [10 * i + k for k in range(1, 6)] for i in range(freezers)}
    reused = {ds: failed_freeze(store, ds, keys[:3], monkeypatch) for ds, keys in fresh.items()}
    junk = failed_freeze(store, "junk", [900, 901], monkeypatch)
    age(store, DAY, sorted({rel.split("/")[0] for rels in reused.values() for rel in rels}))
    calm = bp.run(
        str(copy_store(store, tmp_path / "calm")), scheduler="threads", allow_modules=ALLOW[1:]
    )
    assert calm.stats["reused"] > 0

    gate = Gate(tmp_path / "gate", [days + 1])
    env = child_env(**gate.env())
    run_args = ["run", path, "--store", store, "--scheduler", scheduler, "--workers", "2"]
    inodes = {rel: (store / rel).stat().st_ino for rels in reused.values() for rel in rels}
    with Processes(tmp_path / "logs") as procs:
        run = procs.chanbatch(*run_args, "--json", *ALLOW, name="run", env=env)
        wait_until(lambda: gate.arrivals(), what="the run at the gate", watch=[run], timeout=120)
        writers = [
            procs.python(
                FREEZER,
                str(store),
                ds,
                str(gate.folder),
                ",".join(map(str, keys)),
                name=f"freeze-{ds}",
                env=env,
            )
            for ds, keys in fresh.items()
        ]
        wait_until(
            lambda: all((gate.folder / f"at-commit-{ds}").exists() for ds in fresh),
            what="every freeze at its commit",
            watch=[run, *writers],
        )
        # both held: the freezes have reused the old debris, the run has planned its reuse
        held = time.monotonic()
        with GcLoop(store, GRACE, child_env()) as loop:
            loop.wait_passes(held_passes, after=held, watch=[run, *writers])
            released = time.monotonic()
            gate.open()
            result = run.finish()
            frozen = [w.finish() for w in writers]
            loop.wait_passes(2, after=time.monotonic())
    passes = loop.passes

    assert all(p.code == 0 for p in passes), [p.stderr for p in passes if p.code]
    assert result.code == 0, str(result)
    assert outputs_of(result) == {s: i["snapshot"] for s, i in calm.snapshots.items()}
    assert result.json()["stats"]["reused"] == calm.stats["reused"]
    for freeze in frozen:
        assert freeze.code == 0, str(freeze)

    # every version of every dataset resolves and reads back as its sources say
    sources: dict[str, list[pd.DataFrame]] = {"t": [older, frame]}
    sources.update({ds: [keyed(keys)] for ds, keys in fresh.items()})
    before, after = expected(older), expected(frame)  # the first run's outputs, then this one's
    for stage in after:
        sources[f"load_{stage}"] = [before[stage], after[stage]]
    out = cb.Store(store)
    assert sorted(out.datasets()) == sorted(sources)
    for dataset, versions in sources.items():
        log = ref_log(store, dataset)
        assert not chain_problems(log) and len(log) == len(versions), (dataset, log)
        for entry, want in zip(log, versions, strict=True):
            got = out.read_pandas(f"{dataset}@{entry['snapshot']}")
            if dataset.startswith("load_"):
                assert_output(got, want)
            else:
                pd.testing.assert_frame_equal(
                    got.astype({c: str for c in got.columns if got[c].dtype != "float64"}),
                    want.astype({c: str for c in want.columns if want[c].dtype != "float64"}),
                    check_dtype=False,
                )
    entries, problems = cache_problems(store)
    assert not problems, problems
    verify(store)

    # the freezes committed the very debris gc saw as old, and gc swept the rest
    for ds, rels in reused.items():
        named = {rel_of(o) for o in manifest_objects(store, ref_log(store, ds)[-1]["snapshot"])}
        objects = {rel for rel in rels if rel.startswith("objects/")}
        assert objects <= named, ds
        # the same files, never rewritten: the freeze reused them while gc swept
        assert all((store / rel).stat().st_ino == inodes[rel] for rel in rels), ds
    assert not any((store / rel).exists() for rel in junk), "gc never swept the old debris"
    during = loop.passes_within(held, released)
    print(f"\ngc under load: {len(passes)} gc passes (grace {GRACE}), {len(during)} while both "
          f"writers were held ({released - held:.1f} s), removed {loop.removed()}; run reused "
          f"{calm.stats['reused']} old results; {entries} cache entries after")  # fmt: skip


def test_a_run_keeps_a_week_old_cache_entry_it_reuses(tmp_path: Path) -> None:
    """The previous run is 8 days old: its record no longer protects its cache entries. A new
    run that reuses them is held at the gate (on the new slice) while one gc runs.

    gc used to delete them, and the run failed ("stage 'by_g' failed: IntegrityError: object
    ... is missing from the store"). The run now writes its record, with the cache keys it
    reuses as roots, before it executes.
    """
    store = tmp_path / "store"
    frame = days_frame(5, 20, seed=4)
    path = tmp_path / "week.yaml"
    path.write_text(blueprint("week"))
    cb.Store(store).freeze("t", frame[frame["day"] <= 4], slice_by="day")
    cb.Blueprint.from_yaml(path).run(str(store), scheduler="threads", allow_modules=ALLOW[1:])
    age(store, 8 * DAY, ["objects", "manifests", "cache", "memo", "runs", "refs"])
    cb.Store(store).freeze("t", frame[frame["day"] == 5], slice_by="day")

    gate = Gate(tmp_path / "gate", [5])
    with Processes(tmp_path / "logs") as procs:
        run = procs.chanbatch(
            "run", path, "--store", store, "--json", *ALLOW, name="run",
            env=child_env(**gate.env()),
        )  # fmt: skip
        wait_until(lambda: gate.arrivals(), what="the run at the gate", watch=[run])
        swept = procs.chanbatch(
            "gc", "--grace", GRACE, "--store", store, "--json", name="gc", env=child_env()
        ).finish()
        gate.open()
        result = run.finish()
    assert swept.code == 0, str(swept)
    verify(store)  # whatever happened to the run, nothing references a missing file
    assert result.code == 0, f"{result}\n(gc removed {swept.json()['removed']})"
    for stage, want in expected(frame).items():
        assert_output(cb.Store(store).read_pandas(f"week_{stage}"), want)
