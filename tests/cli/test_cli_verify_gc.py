"""verify finds a flipped byte anywhere; gc removes debris and nothing that is referenced."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from clikit import (
    age,
    b3,
    csv_frame,
    files,
    flip_byte,
    manifest_file,
    object_file,
    ok,
    ok_json,
    read_manifest,
    run,
    stored_ids,
)

HOUR = 3600


def two_versions(store: Path, monthly_csv: dict) -> tuple[dict, dict]:
    """Dataset ``m`` at version 1 (three slices) and version 2 (February replaced)."""
    paths = [p for _, p in monthly_csv.values()]
    v1 = ok_json("snapshot", "freeze", "m", *paths, store=store)
    csv_frame(rows=4, seed=42).to_csv(monthly_csv["2024-02"][1], index=False)
    v2 = ok_json("snapshot", "freeze", "m", *paths, store=store)
    return v1, v2


@pytest.mark.parametrize("target", ["object", "slice-manifest", "snapshot-manifest"])
def test_verify_finds_a_flipped_byte(store: Path, monthly_csv: dict, target: str) -> None:
    doc = ok_json("snapshot", "freeze", "m", *(p for _, p in monthly_csv.values()), store=store)
    feb = doc["slices"][1]["id"]
    if target == "object":
        bad = read_manifest(store, feb)["parts"][0]["object"]
        flip_byte(object_file(store, bad))
    elif target == "slice-manifest":
        bad = feb
        flip_byte(manifest_file(store, bad), offset=0)
    else:
        bad = doc["snapshot"]
        flip_byte(manifest_file(store, bad))

    result = run("snapshot", "verify", "--json", store=store)
    assert result.code == 1, str(result)
    report = result.json()
    assert report["ok"] is False
    assert report["corrupt"] == [bad]
    assert report["checked"] == len(stored_ids(store, "objects")) + len(
        stored_ids(store, "manifests")
    )

    human = run("snapshot", "verify", store=store)
    assert human.code == 1
    assert "Traceback" not in human.stderr
    assert bad in human.stderr  # named in full

    # verifying just the REF that needs the damaged file finds it too, and reports it as a
    # JSON document even when the damage is in the REF's own snapshot manifest
    one = run("snapshot", "verify", "m", "--json", store=store)
    assert one.code == 1, str(one)
    assert one.stdout.strip(), f"no JSON report for a damaged {target}: {one.stderr!r}"
    assert one.json()["corrupt"] == [bad]


def write_debris(store: Path, *, old: bool) -> dict[str, Path]:
    """What a crashed freeze leaves: an object, a slice manifest naming it, a temporary file."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"orphan": [1, 2, 3], "old": [old] * 3}), sink)
    data = sink.getvalue().to_pybytes()
    oid = b3(data)
    obj = object_file(store, oid)
    obj.parent.mkdir(parents=True, exist_ok=True)
    obj.write_bytes(data)
    manifest = (
        '{"format":1,"key":"crash","key_type":"str","kind":"slice","parts":'
        f'[{{"bytes":{len(data)},"object":"{oid}","rows":3}}]}}'
    ).encode()
    mid = b3(manifest)
    man = manifest_file(store, mid)
    man.parent.mkdir(parents=True, exist_ok=True)
    man.write_bytes(manifest)
    tmp = store / "tmp" / f"{'a' if old else 'b'}0123456789abcdef.tmp"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(data[:100])
    debris = {"object": obj, "manifest": man, "tmp": tmp}
    if old:
        for path in debris.values():
            age(path, 2 * HOUR)
    return debris | {"oid": Path(oid), "mid": Path(mid)}


def test_gc_removes_only_debris(store: Path, monthly_csv: dict) -> None:
    v1, v2 = two_versions(store, monthly_csv)
    live = files(store)
    old = write_debris(store, old=True)
    young = write_debris(store, old=False)
    with_debris = files(store)

    dry = ok_json("gc", "--dry-run", "--grace", "1h", store=store)
    assert files(store) == with_debris  # a dry run removes nothing
    assert dry["dry_run"] is True
    assert dry["objects"] == [str(old["oid"])]
    assert dry["removed"] == {"objects": 1, "manifests": 1, "refs": 0, "cache": 0, "tmp": 1}
    assert dry["kept_young"] == 2  # the young object and manifest (tmp files are not counted)
    assert dry["live_objects"] == 4  # three slices of v1, plus the new February of v2

    done = ok_json("gc", "--grace", "1h", store=store)
    assert done["dry_run"] is False and done["removed"] == dry["removed"]
    after = files(store)
    gone = {str(p.relative_to(store)) for k, p in old.items() if k in ("object", "manifest", "tmp")}
    assert set(with_debris) - set(after) == gone
    assert all(after[k] == v for k, v in with_debris.items() if k not in gone)

    swept = ok_json("gc", "--grace", "0s", store=store)
    assert swept["removed"]["objects"] == 1 and swept["objects"] == [str(young["oid"])]
    assert files(store) == live  # exactly the store before the debris, byte for byte
    assert ok_json("snapshot", "verify", store=store)["ok"] is True
    for ref in (f"m@{v1['snapshot'][:8]}", "m"):  # the whole history stays readable
        ok("snapshot", "inspect", ref, store=store)
    assert ok_json("snapshot", "inspect", "m", store=store)["snapshot"] == v2["snapshot"]


def test_gc_keep_versions_honours_pins(store: Path, monthly_csv: dict) -> None:
    v1, v2 = two_versions(store, monthly_csv)
    old_feb = read_manifest(store, v1["slices"][1]["id"])["parts"][0]["object"]
    ok("snapshot", "pin", f"m@{v1['snapshot'][:8]}", store=store)

    kept = ok_json("gc", "--grace", "0s", "--keep-versions", "1", store=store)
    assert kept["removed"]["objects"] == 0 and kept["removed"]["refs"] == 0
    assert ok_json("snapshot", "inspect", f"m@{v1['snapshot'][:8]}", store=store)["pinned"]

    ok("snapshot", "unpin", f"m@{v1['snapshot'][:8]}", store=store)
    swept = ok_json("gc", "--grace", "0s", "--keep-versions", "1", store=store)
    assert swept["removed"]["refs"] == 1
    assert swept["objects"] == [old_feb]  # January and March are shared with version 2
    assert not object_file(store, old_feb).exists()
    gone = run("snapshot", "inspect", f"m@{v1['snapshot'][:8]}", store=store)
    assert gone.code == 2 and gone.err_lines[0].startswith("Error: no snapshot of 'm'")
    assert sorted(p.name for p in (store / "refs" / "m").iterdir()) == ["000000000002.json"]
    assert ok_json("snapshot", "verify", store=store)["ok"] is True
    head = ok_json("snapshot", "list", "m", store=store)["versions"]
    assert [(v["version"], v["snapshot"]) for v in head] == [(2, v2["snapshot"])]


def test_gc_human_output(store: Path, monthly_csv: dict) -> None:
    two_versions(store, monthly_csv)
    write_debris(store, old=True)
    out = ok("gc", "--dry-run", store=store).stdout
    assert "would remove 1 object, 1 manifest, 0 old versions" in out
