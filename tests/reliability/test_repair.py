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
        assert "1 healed" in repr(result) and "healed" in result._repr_html_()
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


# -- item 12: a deleted ref file is found: a gap, or a reference to a version that is gone ---------


def freeze_versions(store: Path, sources: dict[str, Path]) -> None:
    """``flights`` in three versions, one slice more in each."""
    for path in sources.values():
        ok("snapshot", "freeze", "flights", path, store=store)
    assert sorted(ref_log(store, "flights")) == [1, 2, 3]


def ref_file(store: Path, dataset: str, version: int) -> Path:
    return store / "refs" / dataset / f"{version:012d}.json"


def test_a_gap_in_the_ref_log_fails_verify(store: Path, sources: dict[str, Path]) -> None:
    freeze_versions(store, sources)
    assert_clean(store)
    ref_file(store, "flights", 2).unlink()
    doc, plain = verify_failure(store)
    (problem,) = doc["ref_log"]
    assert problem["problem"] == "gap" and problem["dataset"] == "flights"
    assert problem["version"] == 2 and problem["path"] == "refs/flights/000000000002.json"
    message = (
        "the ref log of 'flights' is missing version 2 (between versions 1 and 3): "
        "refs/flights/000000000002.json was deleted"
    )
    assert problem["message"] == message and doc["problems"] == [message]
    assert message in " ".join(plain.split())
    # a REF verify checks its own log too
    one = run("snapshot", "verify", "flights", "--json", store=store)
    assert one.code == 1 and [p["version"] for p in one.json()["ref_log"]] == [2]


def test_a_deleted_first_version_and_a_run_of_them_are_gaps(
    store: Path, sources: dict[str, Path]
) -> None:
    freeze_versions(store, sources)
    ok("snapshot", "freeze", "flights", sources["2024-01"], "--slice", "2024-09", store=store)
    ref_file(store, "flights", 1).unlink()
    ref_file(store, "flights", 2).unlink()
    ref_file(store, "flights", 3).unlink()
    doc, _ = verify_failure(store)
    assert [(p["problem"], p["version"]) for p in doc["ref_log"]] == [
        ("gap", 1),
        ("gap", 2),
        ("gap", 3),
    ]
    assert doc["problems"] == [
        "the ref log of 'flights' is missing versions 1-3 (before version 4): "
        "refs/flights/000000000001.json to refs/flights/000000000003.json was deleted"
    ]


RUN_LATE = """\
name: late
inputs:
  flights: flights
stages:
  late:
    from: flights
    filter: "delay > 0"
outputs:
  late: late_flights
"""


def test_a_deleted_head_is_found_through_run_records_and_pins(
    tmp_path: Path, store: Path, sources: dict[str, Path]
) -> None:
    freeze_versions(store, sources)
    blueprint = tmp_path / "late.yaml"
    blueprint.write_text(RUN_LATE, encoding="utf-8")
    ran = ok_json("run", blueprint, store=store)
    ok("snapshot", "pin", "flights", store=store)
    assert_clean(store)
    head = head_of(store, "flights")["snapshot"]

    # the head of flights goes: the log looks whole, one version shorter (a silent rollback)
    ref_file(store, "flights", 3).unlink()
    assert sorted(ref_log(store, "flights")) == [1, 2]
    doc, plain = verify_failure(store)
    found = {(p["problem"], p["dataset"], p["version"], p["named_by"]) for p in doc["ref_log"]}
    record = f"runs/{ran['run']}.json"
    assert found == {
        ("dangling", "flights", 3, record),
        ("dangling", "flights", 3, f"pins/{head}.json"),
    }
    assert all(p["snapshot"] == head for p in doc["ref_log"])
    for message in doc["problems"]:
        assert f"flights@{head[:12]} (version 3)" in message
        assert "refs/flights/000000000003.json was deleted" in message
        assert "the head is now version 2" in message
    assert "silently rolled back" in " ".join(plain.split())
    # verify of the one dataset finds it too; of another dataset, not
    scoped = run("snapshot", "verify", "flights", "--json", store=store)
    assert scoped.code == 1, str(scoped)
    assert {(p["problem"], p["version"]) for p in scoped.json()["ref_log"]} == {("dangling", 3)}
    assert ok_json("snapshot", "verify", "late_flights", store=store)["ref_log"] == []

    # the output's head goes too: its run record names it
    ref_file(store, "late_flights", 1).unlink()
    doc, _ = verify_failure(store)
    late = [p for p in doc["ref_log"] if p["dataset"] == "late_flights"]
    assert [(p["version"], p["named_by"]) for p in late] == [(1, record)]
    assert "has no ref log any more" not in late[0]["message"]
    assert "output 'late'" in late[0]["message"]

    # freezing the same data again writes the same snapshot as version 3: all resolves again
    ok("snapshot", "freeze", "flights", sources["2024-03"], store=store)
    assert head_of(store, "flights")["snapshot"] == head
    ok("run", blueprint, store=store)
    assert_clean(store)


def test_a_version_written_again_with_other_data_is_dangling(
    tmp_path: Path, store: Path, sources: dict[str, Path]
) -> None:
    freeze_versions(store, sources)
    ok("snapshot", "pin", "flights", store=store)
    head = head_of(store, "flights")["snapshot"]
    ref_file(store, "flights", 3).unlink()
    ok("snapshot", "freeze", "flights", sources["2024-01"], "--slice", "2024-07", store=store)
    other = head_of(store, "flights")["snapshot"]
    assert other != head
    doc, _ = verify_failure(store)
    (problem,) = doc["ref_log"]
    assert problem["version"] == 3 and problem["snapshot"] == head
    assert f"version 3 of 'flights' now names {other[:12]}" in problem["message"]


def test_gc_pruning_is_not_a_gap(tmp_path: Path, store: Path, sources: dict[str, Path]) -> None:
    freeze_versions(store, sources)
    blueprint = tmp_path / "late.yaml"
    blueprint.write_text(RUN_LATE, encoding="utf-8")
    ran = ok_json("run", blueprint, store=store)  # its record names version 3 of flights
    ok("snapshot", "freeze", "flights", sources["2024-01"], "--slice", "2024-04", store=store)
    # pin version 1: gc keeps it and the newest, and prunes 2 and 3 between them
    first = ref_log(store, "flights")[1]["snapshot"]
    ok("snapshot", "pin", f"flights@{first[:12]}", store=store)
    done = ok_json("gc", "--keep-versions", "1", "--grace", "0s", store=store)
    assert done["removed"]["refs"] == 2
    assert sorted(ref_log(store, "flights")) == [1, 4]
    # gc records what it pruned, in pruned/<dataset>/
    (marker,) = (store / "pruned" / "flights").glob("*.json")
    assert sorted(json.loads(marker.read_bytes())["versions"]) == ["2", "3"]
    # so neither the gap nor the run record naming version 3 is a problem
    record = json.loads((store / "runs" / f"{ran['run']}.json").read_bytes())
    assert record["inputs"]["flights"]["version"] == 3
    assert_clean(store)
    # but a version deleted by hand still is
    ref_file(store, "flights", 1).unlink()
    doc, _ = verify_failure(store)
    assert [(p["problem"], p["version"]) for p in doc["ref_log"]] == [
        ("gap", 1),
        ("dangling", 1),
    ]
