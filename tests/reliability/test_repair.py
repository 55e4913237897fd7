"""Repair: damage is named by what it harms, and there is a way back.

- A flipped byte in an object: ``snapshot verify`` names the dataset, version and slice that
  hold it (and the cache entries that point at it) and how to heal it; freezing the slice's
  source file again rewrites the object (the freeze reports it healed) and verify is clean.
- A run that needs the damaged object (after ``cache evict --all``) fails, and runs again once
  the object is healed.
- A damaged cached result is named by its cache entry; evicting it heals the store.
- A gap in a ref log, and a run record or pin naming a version that is gone (a deleted head),
  fail verify, naming the dataset and the missing version; gc's own pruning does not.

Every case runs the real ``chanbatch`` script on a store on disk, and checks the store from its
files: objects re-hashed with blake3 here, manifests and refs read as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from clikit import (
    PERIODS,
    assert_one_error_line,
    b3,
    csv_frame,
    flip_byte,
    object_file,
    ok,
    ok_json,
    read_manifest,
    run,
)

import chanbatch as cb

# -- a store and what it holds, read from its files ------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "snapshots"


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Path]:
    """One CSV file per period, named by it (each file is one slice, keyed by its stem)."""
    folder = tmp_path / "src"
    folder.mkdir()
    out = {}
    for i, period in enumerate(PERIODS):
        path = folder / f"{period}.csv"
        csv_frame(rows=40, seed=i + 1).to_csv(path, index=False)
        out[period] = path
    return out


def ref_log(store: Path, dataset: str) -> dict[int, dict[str, Any]]:
    """The ref-log entries of ``dataset`` by version, read from its files."""
    folder = store / "refs" / dataset
    return {int(p.stem): json.loads(p.read_bytes()) for p in folder.glob("[0-9]*.json")}


def head_of(store: Path, dataset: str) -> dict[str, Any]:
    log = ref_log(store, dataset)
    return log[max(log)]


def slice_objects(store: Path, dataset: str, key: str) -> list[str]:
    """The object ids of slice ``key`` of ``dataset``'s head, from the manifests' files."""
    snapshot = read_manifest(store, head_of(store, dataset)["snapshot"])
    (entry,) = [s for s in snapshot["slices"] if str(s["key"]) == key]
    return [p["object"] for p in read_manifest(store, entry["id"])["parts"]]


def intact(store: Path, oid: str) -> bool:
    return b3(object_file(store, oid).read_bytes()) == oid


def damage(store: Path, oid: str) -> None:
    """Flip one byte of object ``oid`` past its magic number, and check that it is damaged."""
    flip_byte(object_file(store, oid), 8)
    assert not intact(store, oid)


def verify_failure(store: Path) -> tuple[dict[str, Any], str]:
    """``snapshot verify --json`` and plain, both exit 1: (the document, the plain stderr)."""
    result = run("snapshot", "verify", "--json", store=store)
    assert result.code == 1, str(result)
    plain = run("snapshot", "verify", store=store)
    assert plain.code == 1 and "Traceback" not in plain.stderr, str(plain)
    return result.json(), plain.stderr


def assert_clean(store: Path) -> None:
    doc = ok_json("snapshot", "verify", store=store)
    assert doc["ok"] and doc["corrupt"] == [] and doc["damaged"] == [], doc


# -- item 10: a damaged object is named, and healed by freezing its source again -------------------


def test_a_flipped_byte_is_named_by_dataset_version_and_slice(
    store: Path, sources: dict[str, Path]
) -> None:
    ok("snapshot", "freeze", "flights", *sources.values(), store=store)
    (oid,) = slice_objects(store, "flights", "2024-02")
    damage(store, oid)

    doc, plain = verify_failure(store)
    assert doc["ok"] is False and doc["corrupt"] == [oid]
    assert doc["checked"] > 0
    (record,) = doc["damaged"]
    head = head_of(store, "flights")
    assert record["object"] == oid and record["problem"] == "corrupt"
    assert record["dataset"] == "flights" and record["slice"] == "2024-02"
    assert record["version"] == 1 and record["versions"] == [1] and record["head"] is True
    assert record["snapshot"] == head["snapshot"]
    assert "chanbatch snapshot freeze flights FILE --slice 2024-02" in record["heal"]
    # the plain report says the same, under the object's path
    lines = plain.splitlines()
    at = next(i for i, line in enumerate(lines) if oid in line)
    assert lines[at].startswith("corrupt: objects/")
    assert "flights version 1 (the head), slice 2024-02" in lines[at + 1]
    assert "snapshot freeze flights FILE --slice 2024-02" in lines[at + 1]

    # re-freezing the same data rewrites the object instead of trusting it
    before = ref_log(store, "flights")
    frozen = ok_json("snapshot", "freeze", "flights", *sources.values(), store=store)
    healed = {s["key"]: s["healed"] for s in frozen["slices"]}
    assert healed == {"2024-01": False, "2024-02": True, "2024-03": False}
    assert frozen["healed"] == 1 and not any(s["new"] for s in frozen["slices"])
    assert ref_log(store, "flights") == before  # the same snapshot: no new version
    assert intact(store, oid)
    assert_clean(store)
    # and once healed, a freeze has nothing left to heal
    again = ok("snapshot", "freeze", "flights", *sources.values(), store=store)
    assert "healed" not in again.stdout


def test_freeze_reports_healed_in_plain_output(store: Path, sources: dict[str, Path]) -> None:
    ok("snapshot", "freeze", "flights", *sources.values(), store=store)
    (oid,) = slice_objects(store, "flights", "2024-01")
    damage(store, oid)
    out = ok("snapshot", "freeze", "flights", sources["2024-01"], store=store).stdout
    assert "healed" in out and "1 healed (damaged files rewritten)" in " ".join(out.split())
    assert intact(store, oid)


def test_an_object_in_two_datasets_names_both(store: Path, sources: dict[str, Path]) -> None:
    ok("snapshot", "freeze", "flights", *sources.values(), store=store)
    ok("snapshot", "freeze", "backup", sources["2024-03"], store=store)
    (oid,) = slice_objects(store, "flights", "2024-03")
    assert slice_objects(store, "backup", "2024-03") == [oid]  # deduplicated: one object
    ok("snapshot", "freeze", "flights", sources["2024-01"], "--slice", "2024-04", store=store)
    damage(store, oid)
    doc, _ = verify_failure(store)
    where = {(r["dataset"], r["version"], tuple(r["versions"]), r["slice"]) for r in doc["damaged"]}
    assert where == {("flights", 2, (1, 2), "2024-03"), ("backup", 1, (1,), "2024-03")}
    # a REF verify names the same object in that snapshot
    one = run("snapshot", "verify", "backup", "--json", store=store)
    assert one.code == 1
    assert [(r["dataset"], r["slice"]) for r in one.json()["damaged"]] == [("backup", "2024-03")]
    ok("snapshot", "freeze", "backup", sources["2024-03"], store=store)
    assert intact(store, oid)
    assert_clean(store)


def test_slice_by_dataset_hint_names_the_column(tmp_path: Path, store: Path) -> None:
    frame = pd.concat([csv_frame(rows=30, seed=s).assign(month=m) for s, m in ((1, 1), (2, 2))])
    path = tmp_path / "all.csv"
    frame.to_csv(path, index=False)
    ok("snapshot", "freeze", "flights", path, "--slice-by", "month", store=store)
    (oid,) = slice_objects(store, "flights", "2")
    damage(store, oid)
    doc, _ = verify_failure(store)
    (record,) = doc["damaged"]
    assert record["slice"] == 2
    assert "chanbatch snapshot freeze flights FILE --slice-by month" in record["heal"]
    frozen = ok_json("snapshot", "freeze", "flights", path, "--slice-by", "month", store=store)
    assert [s["healed"] for s in frozen["slices"]] == [False, True]
    assert_clean(store)


def test_a_damaged_slice_manifest_is_rewritten_too(store: Path, sources: dict[str, Path]) -> None:
    ok("snapshot", "freeze", "flights", *sources.values(), store=store)
    snapshot = read_manifest(store, head_of(store, "flights")["snapshot"])
    sid = snapshot["slices"][0]["id"]
    path = store / "manifests" / sid[:2] / f"{sid[2:]}.json"
    flip_byte(path)
    assert b3(path.read_bytes()) != sid
    assert run("snapshot", "verify", store=store).code == 1
    frozen = ok_json("snapshot", "freeze", "flights", sources["2024-01"], store=store)
    assert frozen["healed"] == 1
    assert b3(path.read_bytes()) == sid
    assert_clean(store)


@pytest.mark.parametrize("url", ["local", "memory"])
def test_python_freeze_heals_on_every_backend(
    tmp_path: Path, url: str, sources: dict[str, Path]
) -> None:
    import fsspec

    target = str(tmp_path / "s") if url == "local" else f"memory://repair-{tmp_path.name}"
    store = cb.Store(target)
    try:
        store.freeze("flights", list(sources.values()))
        manifest = store.resolve("flights[2024-02]").manifest
        (entry,) = [s for s in manifest.slices if s.key == "2024-02"]
        from chanbatch.snapshot.objects import get_slice

        (part,) = get_slice(store.storage, entry.id).parts
        rel = f"objects/{part.object[:2]}/{part.object[2:]}"
        data = bytearray(store.storage.read_bytes(rel))
        data[8] ^= 0xFF
        store.storage.write_atomic(rel, bytes(data))
        assert store.verify().corrupt == [part.object]
        result = store.freeze("flights", list(sources.values()))
        assert result.healed == 1 and not result.created
        assert b3(store.storage.read_bytes(rel)) == part.object
        assert store.verify().ok
    finally:
        if url == "memory":
            fs = fsspec.filesystem("memory")
            fs.rm(target.removeprefix("memory://"), recursive=True)


SPEND = """\
name: spend
inputs:
  orders: flights
stages:
  big:
    from: orders
    filter: "delay > 0"
  by_carrier:
    from: big
    group_by: [carrier]
    aggregate:
      n: count()
      total: sum(delay)
outputs:
  by_carrier: spend_by_carrier
"""


def spend(frames: list[pd.DataFrame]) -> pd.DataFrame:
    df = pd.concat(frames)
    big = df[df["delay"] > 0]
    return (
        big.groupby("carrier")
        .agg(n=("delay", "size"), total=("delay", "sum"))
        .reset_index()
        .sort_values("carrier", ignore_index=True)
    )


def test_a_run_needing_a_damaged_input_fails_then_runs_once_healed(
    tmp_path: Path, store: Path, sources: dict[str, Path]
) -> None:
    blueprint = tmp_path / "spend.yaml"
    blueprint.write_text(SPEND, encoding="utf-8")
    ok("snapshot", "freeze", "flights", *sources.values(), store=store)
    ok("run", blueprint, store=store)
    (oid,) = slice_objects(store, "flights", "2024-02")
    damage(store, oid)
    ok("cache", "evict", "--all", store=store)

    failed = run("run", blueprint, store=store)
    assert_one_error_line(failed, 1, oid[:12])
    doc, _ = verify_failure(store)
    assert [(r["object"], r["dataset"], r["slice"]) for r in doc["damaged"]] == [
        (oid, "flights", "2024-02")
    ]

    ok("snapshot", "freeze", "flights", *sources.values(), store=store)
    ran = ok_json("run", blueprint, store=store)
    assert ran["stats"]["computed"] > 0
    assert_clean(store)
    out = cb.Store(str(store)).read_pandas("spend_by_carrier")
    expected = spend([pd.read_csv(p) for p in sources.values()])
    got = out.sort_values("carrier", ignore_index=True)[["carrier", "n", "total"]]
    pd.testing.assert_frame_equal(
        got.astype({"n": "int64"}), expected.astype({"n": "int64"}), check_dtype=False
    )


def test_a_damaged_cached_result_names_its_entry_and_evict_heals_it(
    tmp_path: Path, store: Path, sources: dict[str, Path]
) -> None:
    blueprint = tmp_path / "spend.yaml"
    blueprint.write_text(SPEND, encoding="utf-8")
    ok("snapshot", "freeze", "flights", *sources.values(), store=store)
    ok("run", blueprint, store=store)
    # a per-slice result of the filter stage: in the cache, in no snapshot
    entries = [json.loads(p.read_bytes()) for p in (store / "cache").glob("*.json")]
    in_snapshots = {
        part["object"]
        for ds in ("flights", "spend_by_carrier")
        for s in read_manifest(store, head_of(store, ds)["snapshot"])["slices"]
        for part in read_manifest(store, s["id"])["parts"]
    }
    entry = next(e for e in entries if e["stage"] == "big" and e["objects"][0] not in in_snapshots)
    (oid,) = entry["objects"]
    sharing = sorted(e["key"] for e in entries if oid in e["objects"])
    damage(store, oid)

    doc, plain = verify_failure(store)
    (record,) = doc["damaged"]
    assert record["object"] == oid and record["dataset"] is None and record["slice"] is None
    assert sorted(c["key"] for c in record["cache"]) == sharing
    assert all(c["stage"] == "big" for c in record["cache"])
    assert f"chanbatch cache evict {' '.join(k[:12] for k in sharing)}" in record["heal"]
    assert "not in any snapshot" in plain and "cache evict" in plain

    assert "gc" in record["heal"]

    ok("cache", "evict", *(k[:12] for k in sharing), store=store)
    # the aggregate downstream is cached, so no run needs this result any more: the damaged
    # copy is debris now, named as such, and gc removes it
    doc, _ = verify_failure(store)
    (record,) = doc["damaged"]
    assert record["object"] == oid and record["cache"] == []
    assert "no snapshot or cache entry refers to it" in record["heal"]
    assert "chanbatch gc" in record["heal"]
    gone = ok_json("gc", "--grace", "0s", store=store)
    assert oid in gone["objects"] and not object_file(store, oid).exists()
    assert_clean(store)
    ok("run", blueprint, store=store)
    assert_clean(store)


def test_a_damaged_cached_result_a_run_needs_is_recomputed_after_evict(
    tmp_path: Path, store: Path, sources: dict[str, Path]
) -> None:
    blueprint = tmp_path / "spend.yaml"
    blueprint.write_text(SPEND, encoding="utf-8")
    ok("snapshot", "freeze", "flights", *sources.values(), store=store)
    ok("run", blueprint, store=store)
    entries = [json.loads(p.read_bytes()) for p in (store / "cache").glob("*.json")]
    entry = next(e for e in entries if e["stage"] == "big")
    (oid,) = entry["objects"]
    damage(store, oid)
    doc, _ = verify_failure(store)
    assert any(entry["key"] in {c["key"] for c in r["cache"]} for r in doc["damaged"])
    ok("cache", "evict", "--all", store=store)
    ran = ok_json("run", blueprint, store=store)
    assert ran["stats"]["computed"] > 0
    assert intact(store, oid)  # recomputed and rewritten by the run
    assert_clean(store)


def test_a_damaged_run_output_says_to_evict_its_stage_and_rerun(
    tmp_path: Path, store: Path, sources: dict[str, Path]
) -> None:
    blueprint = tmp_path / "spend.yaml"
    blueprint.write_text(SPEND, encoding="utf-8")
    ok("snapshot", "freeze", "flights", *sources.values(), store=store)
    ok("run", blueprint, store=store)
    (oid,) = slice_objects(store, "spend_by_carrier", "all")
    damage(store, oid)
    doc, _ = verify_failure(store)
    record = next(r for r in doc["damaged"] if r["dataset"] == "spend_by_carrier")
    assert record["slice"] == "all" and record["version"] == 1
    assert record["written_by"] == {"blueprint": "spend", "stage": "by_carrier"}
    assert "chanbatch cache evict --stage by_carrier" in record["heal"]
    assert "blueprint 'spend'" in record["heal"]
    ok("cache", "evict", "--stage", "by_carrier", store=store)
    ok("run", blueprint, store=store)
    assert intact(store, oid)
    assert_clean(store)
