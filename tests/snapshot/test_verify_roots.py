"""The roots format verify reads (chanbatch.snapshot.roots): what a document states, and the one
fallback that reads documents of earlier versions, which stated no name, stage or refs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chanbatch.hashing import digest, seal
from chanbatch.snapshot.roots import Ref, Roots, read_document, read_roots
from chanbatch.snapshot.storage import Storage

SID = "a" * 64
KEY = "b" * 64
OID = "c" * 64


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(str(tmp_path))


def stated(storage: Storage, rel: str) -> Roots:
    found = read_document(storage, rel)
    assert found is not None
    return found


def put(storage: Storage, rel: str, data: bytes) -> str:
    storage.write_atomic(rel, data)
    return rel


def test_the_stated_members_read_back_as_written(storage: Storage) -> None:
    refs = [
        Ref(dataset="flights", snapshot=SID, version=3, what="input 'flights'"),
        Ref(dataset="late", snapshot=SID, version=None, what="output 'late'"),
    ]
    roots = Roots.of(snapshots=[SID], cache=[KEY]).stating(name="r1", refs=refs)
    assert Roots.parse(json.loads(json.dumps(roots.document()))) == roots
    rel = put(storage, "runs/r1.json", seal({"run": "r1", "roots": roots.document()}))
    assert read_document(storage, rel) == roots
    assert read_roots(storage, rel) == roots  # gc reads the same member
    # what is not stated is not written, so documents of earlier versions read back unchanged
    assert Roots.of(cache=[KEY]).document() == {"snapshots": [], "cache": [KEY]}
    assert Roots.of(objects=[OID]).stating(name=KEY, stage="").document() == {
        "snapshots": [],
        "cache": [],
        "objects": [OID],
        "name": KEY,
    }


@pytest.mark.parametrize(
    "roots",
    [
        {"name": 3},
        {"name": "r1", "stage": ["x"]},
        {"name": "r1", "refs": {"dataset": "d"}},
        {"name": "r1", "refs": [{"dataset": "d", "snapshot": SID}]},
        {"name": "r1", "refs": [{"dataset": "d", "snapshot": SID, "what": "pin", "version": "2"}]},
    ],
)
def test_malformed_stated_members_are_damage(storage: Storage, roots: dict) -> None:
    rel = put(storage, "runs/r1.json", seal({"run": "r1", "roots": roots}))
    with pytest.raises(ValueError):
        read_document(storage, rel)


# -- the fallback: documents of earlier versions ---------------------------------------------------


def old_record(**members: object) -> dict:
    return {
        "run": "r1",
        "status": "finished",
        "inputs": {"z_in": {"dataset": "flights", "snapshot": SID, "version": 2}},
        "outputs": {"late": {"dataset": "late", "snapshot": SID}, "a": {"dataset": "x"}},
        "output_versions": {"late": 4},
        "roots": {"snapshots": [SID], "cache": [KEY]},
        **members,
    }


def test_an_earlier_run_record_names_its_run_and_its_inputs_and_outputs(storage: Storage) -> None:
    rel = put(storage, "runs/r1.json", seal(old_record()))
    found = stated(storage, rel)
    assert found.name == "r1" and found.snapshots == (SID,) and found.cache == (KEY,)
    assert found.refs == (
        Ref(dataset="flights", snapshot=SID, version=2, what="input 'z_in'"),
        Ref(dataset="late", snapshot=SID, version=4, what="output 'late'"),
    )  # an output without a snapshot names nothing
    # a record of a run still running (or one that died) names no versions
    put(storage, rel, seal(old_record(status="running")))
    assert stated(storage, rel).refs == ()
    # one written before records were sealed is taken as it is; one naming no run belongs nowhere
    put(storage, rel, json.dumps(old_record()).encode())
    assert stated(storage, rel).name == "r1"
    put(storage, rel, seal({k: v for k, v in old_record().items() if k != "run"}))
    assert stated(storage, rel).name is None


def test_an_earlier_cache_entry_names_its_key_stage_and_objects(storage: Storage) -> None:
    entry = {"key": KEY, "objects": [OID], "stage": "by_carrier", "rows": 1}
    rel = put(storage, f"cache/{KEY}.json", seal(entry))
    assert read_document(storage, rel) == Roots(objects=(OID,), name=KEY, stage="by_carrier")
    # entries with a roots member that stated no name yet
    put(storage, rel, seal({**entry, "roots": {"snapshots": [], "cache": [], "objects": [OID]}}))
    assert read_document(storage, rel) == Roots(objects=(OID,), name=KEY, stage="by_carrier")
    for damaged in (
        json.dumps(entry).encode(),  # cache entries were always sealed
        seal({k: v for k, v in entry.items() if k != "objects"}),
        seal({**entry, "objects": OID}),
    ):
        put(storage, rel, damaged)
        with pytest.raises(ValueError):
            read_document(storage, rel)


def test_an_earlier_memo_is_named_by_the_digest_of_its_blueprint(storage: Storage) -> None:
    name = digest(b"late")[:32]
    memo = {"blueprint": "late", "contents": {KEY: OID}}
    for data in (seal(memo), json.dumps(memo).encode()):  # sealed, and from before that
        assert read_document(storage, put(storage, f"memo/{name}.json", data)) == Roots(name=name)
    put(storage, f"memo/{name}.json", json.dumps({**memo, "more": 1}).encode())
    with pytest.raises(ValueError, match="checksum"):
        read_document(storage, f"memo/{name}.json")


def test_a_document_that_is_gone_reads_as_none(storage: Storage) -> None:
    assert read_document(storage, "runs/gone.json") is None
