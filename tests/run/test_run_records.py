"""Run records and gc roots: the one reader, gc on a damaged record, and a store written before
the roots format (tests/run/data/legacy_store, made by chanbatch as of commit 594071f)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from chanbatch.cache.runs import RecordDamaged, RunRecord, latest_record, read_record, tally
from chanbatch.hashing import seal, unseal
from chanbatch.snapshot import SnapshotStore
from chanbatch.snapshot.gc import gc
from chanbatch.snapshot.roots import RootsDamaged

LEGACY = Path(__file__).parent / "data" / "legacy_store"
OLD = time.time() - 3 * 24 * 3600  # older than the grace period, younger than a week


def legacy_copy(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(LEGACY, root)
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (OLD, OLD))
    return root


def the_record(root: Path) -> Path:
    (path,) = (root / "runs").glob("*.json")
    return path


def test_a_legacy_store_keeps_what_its_run_and_cache_name(tmp_path: Path) -> None:
    root = legacy_copy(tmp_path)
    record = json.loads(the_record(root).read_bytes())
    entries = {p.stem: json.loads(p.read_bytes()) for p in (root / "cache").glob("*.json")}
    assert all("roots" not in e for e in entries.values())  # written before the roots format
    # debris: an old object nothing names, and a cache entry no run names
    stray = root / "objects" / "00" / ("0" * 62)
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"debris")
    os.utime(stray, (OLD, OLD))
    # and an entry in the old format that no run names, with an object of its own
    orphan, orphan_object = "0" * 63 + "1", "1" * 64
    (root / "objects" / "11").mkdir(exist_ok=True)
    (root / "objects" / "11" / orphan_object[2:]).write_bytes(b"orphaned result")
    (root / "cache" / f"{orphan}.json").write_bytes(
        seal({**next(iter(entries.values())), "key": orphan, "objects": [orphan_object]})
    )
    for path in (root / "objects" / "11").iterdir():
        os.utime(path, (OLD, OLD))
    os.utime(root / "cache" / f"{orphan}.json", (OLD, OLD))
    dropped = [orphan]

    report = gc(SnapshotStore(str(root)).storage, grace_seconds=3600)

    # expected, from the documents themselves: the objects of the entries the run names, and of
    # the two snapshots' slices (input and output); everything else goes
    live = {
        o for key in record["roots"]["cache"] if key in entries for o in entries[key]["objects"]
    }
    for manifest in (root / "manifests").rglob("*.json"):
        doc = json.loads(manifest.read_bytes())
        if doc["kind"] == "slice":
            live.update(p["object"] for p in doc["parts"])
    on_disk = {p.parent.name + p.name for p in (root / "objects").rglob("*") if p.is_file()}
    assert sorted(report.cache) == sorted(f"cache/{k}.json" for k in dropped)
    assert on_disk == live
    assert "0" * 64 in report.objects and orphan_object in report.objects
    named = [k for k in record["roots"]["cache"] if k in entries]
    assert named and all((root / "cache" / f"{k}.json").is_file() for k in named)


def test_gc_refuses_a_damaged_recent_run_record(tmp_path: Path) -> None:
    root = legacy_copy(tmp_path)
    path = the_record(root)
    path.write_bytes(path.read_bytes().replace(b'"status":"finished"', b'"status":"finishes"'))
    os.utime(path, (OLD, OLD))
    before = sorted(p for p in root.rglob("*") if p.is_file())

    with pytest.raises(RootsDamaged) as caught:
        gc(SnapshotStore(str(root)).storage, grace_seconds=0)

    assert f"runs/{path.name}" in caught.value.message
    assert "checksum" in caught.value.message
    assert sorted(p for p in root.rglob("*") if p.is_file()) == before  # nothing deleted


def test_a_damaged_record_is_named_and_passed_over_as_the_latest(tmp_path: Path) -> None:
    root = legacy_copy(tmp_path)
    storage = SnapshotStore(str(root)).storage
    path = the_record(root)
    good = read_record(storage, path.stem)
    assert latest_record(storage, blueprint="legacy_delay") == good
    path.write_bytes(path.read_bytes().replace(b"legacy_delay", b"legacy_delaz", 1))

    with pytest.raises(RecordDamaged, match=f"run record runs/{path.name} is damaged"):
        read_record(storage, path.stem)
    assert latest_record(storage, blueprint="legacy_delay") is None


def test_a_record_reads_back_as_written(tmp_path: Path) -> None:
    root = legacy_copy(tmp_path)
    data = the_record(root).read_bytes()
    record = RunRecord.parse(unseal(data))
    assert record.to_bytes() == data  # the same bytes: nothing lost, nothing added
    assert record.finished and record.blueprint == "legacy_delay"


def test_stage_statistics_are_the_tally_of_the_tasks(tmp_path: Path) -> None:
    record = read_record(
        SnapshotStore(str(legacy_copy(tmp_path))).storage, the_record(tmp_path / "store").stem
    )
    tasks = record.tasks or []
    # counted here by hand from the recorded tasks
    for stage, stats in record.stage_stats().items():
        mine = [t for t in tasks if t["stage"] == stage]
        assert stats.computed == sum(t.get("outcome") == "computed" for t in mine)
        assert stats.reused == len(mine) - stats.computed
        assert stats.seconds == round(sum(t.get("seconds", 0.0) for t in mine), 3)
    assert {s: c.document() for s, c in tally(tasks).items()} == (record.stats or {})["stages"]
