"""Run records and gc roots: the one reader, gc on a damaged record, and a store written before
the roots format (tests/run/data/legacy_store, made by chanbatch as of commit 594071f); verify
reads only the roots format, and finds the same in a legacy store as in its documents restated
in this version's format (and in a fresh store as in its documents in the old format)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import chanbatch as cb
from chanbatch.cache.index import memo_name
from chanbatch.cache.runs import RecordDamaged, RunRecord, latest_record, read_record, tally
from chanbatch.errors import ChanbatchError
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


# -- verify reads only the roots format; legacy documents verify as they did ----------------------

LEGACY_BLUEPRINT = """
name: legacy_delay
inputs:
  orders: orders
stages:
  late:
    from: orders
    filter: delay > 2
  by_carrier:
    from: late
    group_by: [carrier]
    aggregate:
      n: count()
      total: sum(delay)
outputs:
  by_carrier: delay_by_carrier
"""


def fresh_store(tmp_path: Path) -> Path:
    """The legacy store's blueprint, run by this version on a store of its own."""
    root = tmp_path / "fresh"
    store = cb.Store(str(root))
    orders = pd.DataFrame(
        {"carrier": list("aabbc"), "delay": [1, 3, 5, 7, 9], "day": [1, 1, 2, 2, 3]}
    )
    store.freeze("orders", orders, slice_by="day")
    cb.Blueprint.from_yaml(LEGACY_BLUEPRINT).run(store, scheduler="sync")
    # the outcome a run leaves for the next one to repeat (memo/<name hash>.last.json) and
    # the chain memo (memo/<name hash>.chains.json) are new in this version: no earlier
    # version wrote them to compare with
    for newer in (*(root / "memo").glob("*.last.json"), *(root / "memo").glob("*.chains.json")):
        newer.unlink()
    return root


def documents(root: Path) -> dict[Path, dict[str, Any]]:
    return {
        path: json.loads(path.read_bytes())
        for top in ("runs", "cache", "memo")
        for path in sorted((root / top).glob("*.json"))
    }


def restated(path: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with the members this version writes in its roots, worked out here from the
    document's own fields (not by the fallback under test)."""
    roots = dict(doc.get("roots", {"snapshots": [], "cache": []}))
    top = path.parent.name
    if top == "runs":
        versions = doc["output_versions"]
        refs = [
            {**{k: i[k] for k in ("dataset", "snapshot", "version")}, "what": f"input {n!r}"}
            for n, i in sorted(doc["inputs"].items())
        ] + [
            {
                "dataset": o["dataset"],
                "snapshot": o["snapshot"],
                "version": versions.get(s),
                "what": f"output {s!r}",
            }
            for s, o in sorted(doc["outputs"].items())
        ]
        roots.update(name=doc["run"], refs=refs)
    elif top == "cache":
        roots.update(name=doc["key"], stage=doc["stage"], objects=doc["objects"])
    else:
        roots.update(name=memo_name(doc["blueprint"]))
    return {**doc, "roots": roots}


def stripped(path: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` as the previous version wrote it: roots without name, stage and refs (run
    records, cache entries), and memos without roots."""
    if path.parent.name == "memo":
        return {k: v for k, v in doc.items() if k != "roots"}
    roots = {k: v for k, v in doc["roots"].items() if k not in ("name", "stage", "refs")}
    return {**doc, "roots": roots}


def rewrite(root: Path, how: Any) -> None:
    for path in documents(root):
        path.write_bytes(seal(how(path, unseal(path.read_bytes()))))


def result_object(root: Path) -> str:
    """An object that only a cache entry names (no slice of a snapshot holds it)."""
    held = {
        p["object"]
        for m in (root / "manifests").rglob("*.json")
        if (doc := json.loads(m.read_bytes()))["kind"] == "slice"
        for p in doc["parts"]
    }
    cached = [
        o for p in (root / "cache").glob("*.json") for o in json.loads(p.read_bytes())["objects"]
    ]
    return sorted(set(cached) - held)[0]


def damage(root: Path, how: str) -> None:
    record = the_record(root)
    entries = sorted((root / "cache").glob("*.json"))
    (memo,) = (root / "memo").glob("*.json")
    if how == "deleted heads":
        for ref in (root / "refs").rglob("*.json"):
            ref.unlink()
    elif how == "damaged record":
        record.write_bytes(record.read_bytes().replace(b'"finished"', b'"finishes"'))
    elif how == "record under another name":
        record.rename(record.with_name("20990101T000000-00000000.json"))
    elif how == "entry copied over another":
        entries[1].write_bytes(entries[0].read_bytes())
    elif how == "memo under another name":
        memo.rename(memo.with_name("0" * 32 + ".json"))
    elif how == "result object flipped":
        oid = result_object(root)
        path = root / "objects" / oid[:2] / oid[2:]
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))


def findings(root: Path) -> dict[str, Any]:
    """What verify reports of the whole store and of each dataset, without the timing and the
    byte count (the documents of the two formats differ in size)."""
    store = cb.Store(str(root))
    found = {}
    for ref in (None, "orders", "delay_by_carrier"):
        try:
            doc = store.verify(ref).document() if ref else store.verify().document()
        except ChanbatchError as exc:  # a REF whose ref log is gone
            found[str(ref)] = {"error": type(exc).__name__}
            continue
        found[str(ref)] = {k: v for k, v in doc.items() if k not in ("seconds", "bytes")}
    return found


DAMAGES = [
    "intact",
    "deleted heads",
    "damaged record",
    "record under another name",
    "entry copied over another",
    "memo under another name",
    "result object flipped",
]


@pytest.mark.parametrize("how", DAMAGES)
def test_a_legacy_store_verifies_as_the_same_store_restated(tmp_path: Path, how: str) -> None:
    """Documents without the new roots members (the fallback in chanbatch.snapshot.roots) and
    the same documents with them give the same findings."""
    legacy = legacy_copy(tmp_path)
    assert all("name" not in d.get("roots", {}) for d in documents(legacy).values())
    new = tmp_path / "restated"
    shutil.copytree(legacy, new)
    rewrite(new, restated)
    record = f"runs/{the_record(legacy).name}"
    for root in (legacy, new):
        damage(root, how)

    found = findings(legacy)
    assert found == findings(new)

    doc = found["None"]
    if how == "intact":
        assert doc["ok"] and doc["checked"] > 0
    elif how == "deleted heads":
        assert [(p["problem"], p["named_by"]) for p in doc["ref_log"]] == [
            ("dangling", record),
            ("dangling", record),
        ]
        assert [p["message"].split(" in ")[0] for p in doc["ref_log"]] == [
            "input 'orders'",
            "output 'by_carrier'",
        ]
        assert [p["version"] for p in doc["ref_log"]] == [1, 1]
        assert found["orders"] == {"error": "RefNotFoundError"}
    elif how == "damaged record":
        assert [f["path"] for f in doc["files"]] == [record]
    elif how == "result object flipped":
        (damaged,) = doc["damaged"]
        assert damaged["dataset"] is None and damaged["cache"]
        assert all(c["stage"] == "by_carrier" for c in damaged["cache"])
    else:
        assert len(doc["files"]) == 1 and not doc["ok"]


@pytest.mark.parametrize("how", DAMAGES)
def test_a_fresh_store_verifies_as_the_same_store_in_the_old_format(
    tmp_path: Path, how: str
) -> None:
    """This version's documents state their name, stage and refs in their roots; verify finds
    the same in them as in the same documents written as the previous version wrote them."""
    fresh = fresh_store(tmp_path)
    docs = documents(fresh)
    for path, doc in docs.items():
        roots = doc["roots"]
        assert roots["name"] == path.stem
        if path.parent.name == "cache":
            assert roots["stage"] == doc["stage"] and roots["objects"] == doc["objects"]
        if path.parent.name != "runs":
            continue
        assert [r["what"] for r in roots["refs"]] == ["input 'orders'", "output 'by_carrier'"]
        assert roots == restated(path, doc)["roots"]
    old = tmp_path / "old"
    shutil.copytree(fresh, old)
    rewrite(old, stripped)
    for root in (fresh, old):
        damage(root, how)

    found = findings(fresh)
    assert found == findings(old)
    assert found["None"]["ok"] is (how == "intact")


def test_run_ids_sort_by_start_time_within_a_second() -> None:
    """Two runs started in the same second: the later one's id sorts last, whatever the random
    digits (the newest run of a blueprint is found by sorting ids)."""
    import datetime as dt

    from chanbatch.run.recording import new_run_id

    second = dt.datetime(2026, 12, 6, 12, 36, 21, tzinfo=dt.UTC)
    starts = [second.replace(microsecond=us) for us in (0, 1, 15, 4095, 65536, 500000, 999999)]
    for _ in range(50):
        ids = [new_run_id(start) for start in starts]
        assert sorted(ids) == ids
        assert all(i.startswith("20261206T123621-") and len(i) == 24 for i in ids)
    later = new_run_id(second + dt.timedelta(seconds=1))
    assert later > new_run_id(second.replace(microsecond=999999))
