"""Ids: 64 hex characters, content hashes of canonical bytes, equal in every process."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from storekit import HEX64, b3, canonical, files, flights, popen

import chanbatch

HERE = str(Path(__file__).parent)
UNHASHED = {"created_at", "author", "lineage", "parent", "timestamp", "version", "dataset"}

FREEZE_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[2])
from test_store_ids import freeze_for_ids
print(json.dumps(freeze_for_ids(sys.argv[1])))
"""


def freeze_for_ids(url: str) -> dict[str, Any]:
    """Freeze fixed data three ways into a fresh store; return every id it made."""
    import chanbatch

    store = chanbatch.Store(url)
    df = flights(300, seed=7)
    df["carrier"] = df["carrier"].fillna("--")
    out: dict[str, Any] = {}
    for dataset, column in (("m", "month"), ("d", "day"), ("t", "date"), ("c", "carrier")):
        info = store.freeze(dataset, df, slice_by=column)
        out[dataset] = {
            "snapshot": info.snapshot,
            "slices": [[str(s.key), s.id] for s in info.slices],
        }
    out["objects"] = sorted(p for p in files(url) if p.startswith("objects/"))
    out["manifests"] = sorted(p for p in files(url) if p.startswith("manifests/"))
    return out


def test_ids_are_stable_across_processes(tmp_path: Path) -> None:
    """Two fresh interpreters with different PYTHONHASHSEEDs and this one agree on every id."""
    procs = []
    for seed in ("1", "4242"):
        env = {"PYTHONHASHSEED": seed}
        procs.append(popen(FREEZE_SCRIPT, str(tmp_path / f"store-{seed}"), HERE, env=env))
    here = freeze_for_ids(str(tmp_path / "store-here"))
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))

    assert results[0] == here
    assert results[1] == here
    for dataset in ("m", "d", "t", "c"):
        assert re.match(HEX64, here[dataset]["snapshot"])
        assert all(re.match(HEX64, sid) for _key, sid in here[dataset]["slices"])


def test_ids_are_64_hex_and_name_their_files(store: chanbatch.Store, store_url: str) -> None:
    info = store.freeze("flights", flights(60), slice_by="month")
    stored = files(store_url)

    assert re.match(HEX64, info.snapshot)
    assert f"manifests/{info.snapshot[:2]}/{info.snapshot[2:]}.json" in stored
    for s in info.slices:
        assert re.match(HEX64, s.id)
        assert f"manifests/{s.id[:2]}/{s.id[2:]}.json" in stored

    objects = {p: data for p, data in stored.items() if p.startswith("objects/")}
    assert objects
    for rel, data in objects.items():
        _, fanout, rest = rel.split("/")
        assert re.match(HEX64, fanout + rest)
        assert b3(data) == fanout + rest, f"{rel} is not named by the blake3 of its bytes"
        assert data[:4] == b"PAR1" and data[-4:] == b"PAR1"


def _keys(document: Any) -> set[str]:
    if isinstance(document, dict):
        return set(document) | {k for v in document.values() for k in _keys(v)}
    if isinstance(document, list):
        return {k for v in document for k in _keys(v)}
    return set()


def test_manifests_are_canonical_json_named_by_their_hash(
    store: chanbatch.Store, store_url: str
) -> None:
    df = flights(60)
    store.freeze("flights", df, slice_by="month", lineage={"source": "test"})
    store.freeze("flights", df.assign(flight=df["flight"] + 1), slice_by="month")
    manifests = {p: d for p, d in files(store_url).items() if p.startswith("manifests/")}
    assert len(manifests) == 3 + 3 + 2

    for rel, data in manifests.items():
        _, fanout, name = rel.split("/")
        mid = fanout + name.removesuffix(".json")
        assert b3(data) == mid, f"{rel} is not named by the blake3 of its bytes"
        document = json.loads(data)
        assert canonical(document) == data, f"{rel} is not canonical JSON"
        assert not (_keys(document) & UNHASHED), f"{rel} hashes metadata"


def test_snapshot_manifest_lists_slices_in_order(store: chanbatch.Store, store_url: str) -> None:
    info = store.freeze("flights", flights(60), slice_by="month")
    snap = json.loads(files(store_url)[f"manifests/{info.snapshot[:2]}/{info.snapshot[2:]}.json"])
    assert [(s["key"], s["id"], s["rows"]) for s in snap["slices"]] == [
        (s.key, s.id, s.rows) for s in info.slices
    ]
    assert snap["rows"] == 60
    for s in info.slices:
        sl = json.loads(files(store_url)[f"manifests/{s.id[:2]}/{s.id[2:]}.json"])
        assert sl["key"] == s.key
        assert sum(p["rows"] for p in sl["parts"]) == s.rows


def test_ref_log_is_one_file_per_version(store: chanbatch.Store, store_url: str) -> None:
    df = flights(30)
    first = store.freeze("flights", df, slice_by="month")
    second = store.freeze("flights", df.assign(day=df["day"] + 1), slice_by="month")
    refs = {p: d for p, d in files(store_url).items() if p.startswith("refs/")}
    assert sorted(refs) == ["refs/flights/000000000001.json", "refs/flights/000000000002.json"]
    assert json.loads(refs["refs/flights/000000000001.json"])["snapshot"] == first.snapshot
    assert json.loads(refs["refs/flights/000000000002.json"])["snapshot"] == second.snapshot
    assert [e.version for e in store.history("flights")] == [1, 2]
    assert store.history("flights")[1].parent == first.snapshot


def test_lineage_and_time_stay_out_of_ids(store: chanbatch.Store) -> None:
    df = flights(30)
    a = store.freeze("a", df, slice_by="month", lineage={"who": "x"})
    b = store.freeze("b", df, slice_by="month", lineage={"who": "y", "when": os.getpid()})
    assert a.snapshot == b.snapshot
    assert [s.id for s in a.slices] == [s.id for s in b.slices]


def test_a_manifest_with_a_bad_slice_id_or_count_is_refused_whole(tmp_path: Path) -> None:
    """A snapshot manifest is checked column by column (100,000 slices at once); a slice id
    that is not 64 lowercase hex characters, or a count that is no number, is still refused,
    naming the damage, wherever it is among good ones; ints given as other numbers are read
    as ints, as before."""
    from chanbatch.errors import IntegrityError
    from chanbatch.hashing import canonical_json, digest
    from chanbatch.ids import slice_ids
    from chanbatch.snapshot.manifest import parse_manifest

    good = [digest(str(i).encode()) for i in range(5)]
    assert slice_ids(good) == good
    for bad in ("A" * 64, "g" * 64, "a" * 63, "a" * 65, "é" + "a" * 63, 7, None, b"a" * 64):
        for at in (0, 2, 5):
            values = [*good[:at], bad, *good[at:]]
            with pytest.raises(ValueError, match="not a valid slice id"):
                slice_ids(values)

    def manifest(slices: list[dict[str, Any]]) -> tuple[bytes, str]:
        doc = {
            "format": 1,
            "kind": "snapshot",
            "key_type": "int",
            "slice_by": "k",
            "schema": [{"name": "k", "type": "int64"}],
            "slices": slices,
            "rows": 0,
            "bytes": 0,
        }
        data = canonical_json(doc)
        return data, digest(data)

    rows = [{"key": i, "id": good[i], "rows": 10 + i, "bytes": 100.0} for i in range(5)]
    parsed = parse_manifest(*manifest(rows))
    assert [(e.key, e.id, e.rows, e.bytes) for e in parsed.slices] == [
        (i, good[i], 10 + i, 100) for i in range(5)
    ]
    assert all(type(e.bytes) is int for e in parsed.slices)
    for field, value in (("id", "Z" * 64), ("rows", "many"), ("key", "x")):
        damaged = [dict(r) for r in rows]
        damaged[3][field] = value
        with pytest.raises(IntegrityError, match="malformed"):
            parse_manifest(*manifest(damaged))


def test_int_slice_keys_beyond_64_bits_read_back_exactly(tmp_path: Path) -> None:
    """A slice key is any integer a user types. Keys beyond 64 bits (which orjson, the fast
    parser, reads as floats) come back exact and distinct, in numeric order, from a fresh
    store and from another process, and an explanation's slice index names them exactly."""
    from chanbatch.snapshot.objects import get_slice_index

    keys = [2**70 + 1, -(2**63) - 1, 2**64 - 1, 2**70, -(2**63), 5]
    store = chanbatch.Store(str(tmp_path / "store"))
    frame = pd.DataFrame({"x": [1, 2]})
    for key in keys:
        store.freeze("d", frame, slice=key)
    again = chanbatch.Store(str(tmp_path / "store"))
    got = [entry.key for entry in again.slices("d")]
    assert got == sorted(keys)
    assert all(type(k) is int for k in got)
    sid = again.resolve("d").manifest.id
    index = get_slice_index(again.storage, sid)
    assert sorted(index) == sorted(keys)
    # one slice, by its key, read back with its rows
    one = again.read(f"d[{2**70 + 1}]").compute()
    assert list(one["x"]) == [1, 2]
