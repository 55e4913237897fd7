"""Contract: verify finds every flipped byte and missing file; reads never return bad data."""

from __future__ import annotations

import pytest
from storekit import delete, files, flights, flip_byte, manifest_rel, object_rel, slice_objects

import chanbatch
from chanbatch.errors import IntegrityError


@pytest.fixture
def flights_store(store: chanbatch.Store) -> chanbatch.Store:
    store.freeze("flights", flights(90), slice_by="month")
    return store


def target_of(store: chanbatch.Store, kind: str) -> tuple[str, str]:
    """(id, relative path) of the 2013-02 slice's object, its manifest, or the snapshot's."""
    entry = next(e for e in store.slices("flights") if e.key == "2013-02")
    if kind == "object":
        oid = slice_objects(store.url, entry.id)[0]
        return oid, object_rel(oid)
    if kind == "slice manifest":
        return entry.id, manifest_rel(entry.id)
    sid = store.resolve("flights").snapshot
    return sid, manifest_rel(sid)


def test_clean_store_verifies(flights_store: chanbatch.Store) -> None:
    report = flights_store.verify()
    stored = files(flights_store.url)
    hashed = [p for p in stored if p.startswith(("objects/", "manifests/"))]
    assert report.ok
    assert report.checked == len(hashed)
    assert report.corrupt == [] and report.missing == []
    assert report.bytes == sum(len(stored[p]) for p in hashed)
    assert flights_store.verify("flights").ok
    assert flights_store.verify("flights[2013-02]").ok


@pytest.mark.parametrize("kind", ["object", "slice manifest", "snapshot manifest"])
def test_verify_finds_a_flipped_byte(flights_store: chanbatch.Store, kind: str) -> None:
    ident, rel = target_of(flights_store, kind)
    flip_byte(flights_store.url, rel)

    report = flights_store.verify()
    assert not report.ok
    assert ident in report.corrupt
    assert report.document()["ok"] is False
    assert ident in report.document()["corrupt"]


@pytest.mark.parametrize("position", [0, None, -1], ids=["first", "middle", "last"])
def test_reading_a_corrupt_object_raises(flights_store: chanbatch.Store, position) -> None:
    oid, rel = target_of(flights_store, "object")
    flip_byte(flights_store.url, rel, position)

    assert oid in flights_store.verify().corrupt
    assert oid in flights_store.verify("flights").corrupt
    with pytest.raises(IntegrityError, match=oid[:12]):
        flights_store.read_pandas("flights")
    with pytest.raises(IntegrityError, match=oid[:12]):
        flights_store.read_table("flights[2013-02]")
    with pytest.raises(IntegrityError, match=oid[:12]):
        flights_store.read("flights").compute()
    # the other slices are still good and still readable
    assert len(flights_store.read_pandas("flights", start="2013-03")) > 0


def test_verify_of_one_slice_checks_that_slice(flights_store: chanbatch.Store) -> None:
    """``verify DATASET[slice]`` re-hashes what that slice needs, not the whole snapshot."""
    oid, rel = target_of(flights_store, "object")  # an object of slice 2013-02
    flip_byte(flights_store.url, rel)
    assert oid in flights_store.verify("flights[2013-02]").corrupt
    report = flights_store.verify("flights[2013-01]")
    assert report.ok, report.document()


def test_reading_through_a_corrupt_slice_manifest_raises(flights_store: chanbatch.Store) -> None:
    sid, rel = target_of(flights_store, "slice manifest")
    flip_byte(flights_store.url, rel)
    with pytest.raises(IntegrityError, match=sid[:12]):
        flights_store.read_pandas("flights[2013-02]")
    assert sid in flights_store.verify("flights").corrupt


def test_resolving_a_corrupt_snapshot_raises(flights_store: chanbatch.Store) -> None:
    sid, rel = target_of(flights_store, "snapshot manifest")
    flip_byte(flights_store.url, rel)
    with pytest.raises(IntegrityError, match=sid[:12]):
        flights_store.read_pandas("flights")


@pytest.mark.parametrize("kind", ["object", "slice manifest", "snapshot manifest"])
def test_verify_reports_a_deleted_file_as_missing(
    flights_store: chanbatch.Store, kind: str
) -> None:
    ident, rel = target_of(flights_store, kind)
    delete(flights_store.url, rel)
    report = flights_store.verify()
    assert not report.ok
    assert ident in report.missing
    if kind == "object":
        with pytest.raises(IntegrityError, match=ident[:12]):
            flights_store.read_pandas("flights[2013-02]")
        assert ident in flights_store.verify("flights").missing


def test_truncated_object(flights_store: chanbatch.Store) -> None:
    oid, rel = target_of(flights_store, "object")
    data = files(flights_store.url)[rel]
    fs, root = flights_store.storage.fs, flights_store.storage.root
    fs.pipe_file(f"{root}/{rel}", data[:-10])
    assert oid in flights_store.verify().corrupt
    with pytest.raises(IntegrityError):
        flights_store.read_pandas("flights[2013-02]")


def test_verify_of_one_ref_ignores_other_datasets(flights_store: chanbatch.Store) -> None:
    df = flights(30, seed=5).assign(flight=0)
    flights_store.freeze("other", df, slice_by="month")
    _oid, rel = target_of(flights_store, "object")
    flip_byte(flights_store.url, rel)
    assert flights_store.verify("other").ok
    assert not flights_store.verify("flights").ok
    assert len(flights_store.read_pandas("other")) == 30
