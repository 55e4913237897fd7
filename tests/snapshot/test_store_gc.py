"""gc: removes unreferenced old files only; never what a ref, a pin or the grace period protects."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from storekit import (
    assert_same_rows,
    b3,
    canonical,
    files,
    flights,
    fs_root,
    in_slice_order,
    manifest_rel,
    object_rel,
    put,
    slice_objects,
)

import chanbatch
from chanbatch.errors import RefNotFoundError

HOUR = 3600.0


@dataclass
class History:
    """Two versions of ``flights``; v2 replaced slice 2013-02. Plus debris nothing refers to."""

    v1: str
    v2: str
    frames: dict[str, pd.DataFrame]  # snapshot id -> its rows, in slice order
    old_slice: str  # the 2013-02 slice only v1 has
    debris_object: str
    debris_manifest: str

    @property
    def debris(self) -> set[str]:
        return {object_rel(self.debris_object), manifest_rel(self.debris_manifest)}

    def only_v1(self, url: str) -> set[str]:
        return {
            "refs/flights/000000000001.json",
            manifest_rel(self.v1),
            manifest_rel(self.old_slice),
            *(object_rel(o) for o in slice_objects(url, self.old_slice)),
        }


def write_debris(url: str) -> tuple[str, str]:
    """What a crashed freeze leaves: an object and a slice manifest that no snapshot names."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"orphan": [1, 2, 3]}), sink)
    data = sink.getvalue().to_pybytes()
    oid = b3(data)
    put(url, object_rel(oid), data)
    doc = {
        "format": 1,
        "kind": "slice",
        "key": "lost",
        "key_type": "str",
        "parts": [{"object": oid, "rows": 3, "bytes": len(data)}],
    }
    manifest = canonical(doc)
    mid = b3(manifest)
    put(url, manifest_rel(mid), manifest)
    return oid, mid


def make_history(store: chanbatch.Store) -> History:
    old = flights(90)
    first = store.freeze("flights", old, slice_by="month")
    changed = old[old["month"] == "2013-02"].assign(day=lambda d: d["day"] + 100)
    second = store.freeze("flights", changed, slice_by="month")
    new = pd.concat([old[old["month"] != "2013-02"], changed])
    old_slice = next(s.id for s in first.slices if s.key == "2013-02")
    oid, mid = write_debris(store.url)
    return History(
        v1=first.snapshot,
        v2=second.snapshot,
        frames={
            first.snapshot: in_slice_order(old, "month"),
            second.snapshot: in_slice_order(new, "month"),
        },
        old_slice=old_slice,
        debris_object=oid,
        debris_manifest=mid,
    )


def assert_healthy(store: chanbatch.Store, history: History) -> None:
    """The store verifies, and every version still in the ref log reads back exactly."""
    report = store.verify()
    assert report.ok, report.document()
    for entry in store.history("flights"):
        assert_same_rows(
            store.read_pandas(f"flights@{entry.snapshot}"), history.frames[entry.snapshot]
        )


def age_everything(url: str, seconds: float) -> None:
    fs, root = fs_root(url)
    then = time.time() - seconds
    for path in fs.find(root):
        os.utime(path, (then, then))


# -- contract: both backends ----------------------------------------------------------------


def test_gc_removes_debris_and_keeps_every_version(store: chanbatch.Store) -> None:
    history = make_history(store)
    before = files(store.url)

    dry = store.gc(grace_seconds=0, dry_run=True)
    assert files(store.url) == before, "a dry run deleted something"
    assert dry.dry_run
    assert dry.objects == [history.debris_object]
    assert dry.manifests == [history.debris_manifest]
    assert dry.refs == []

    real = store.gc(grace_seconds=0)
    assert (real.objects, real.manifests, real.refs) == (dry.objects, dry.manifests, dry.refs)
    assert real.bytes == dry.bytes > 0
    after = files(store.url)
    assert set(before) - set(after) == history.debris
    assert all(after[rel] == before[rel] for rel in after)
    assert_healthy(store, history)


def test_grace_period_protects_young_debris(store: chanbatch.Store) -> None:
    history = make_history(store)
    before = files(store.url)
    report = store.gc()  # default grace: one hour
    assert report.objects == [] and report.manifests == []
    assert report.kept_young >= 2
    assert files(store.url) == before
    assert_healthy(store, history)


def test_keep_versions_prunes_old_history(store: chanbatch.Store) -> None:
    history = make_history(store)
    before = files(store.url)
    doomed = history.only_v1(store.url) | history.debris

    dry = store.gc(grace_seconds=0, keep_versions=1, dry_run=True)
    assert files(store.url) == before
    real = store.gc(grace_seconds=0, keep_versions=1)
    assert sorted(real.objects) == sorted(dry.objects)
    assert sorted(real.manifests) == sorted(dry.manifests)

    after = files(store.url)
    assert set(before) - set(after) == doomed
    assert [e.snapshot for e in store.history("flights")] == [history.v2]
    with pytest.raises(RefNotFoundError):
        store.resolve(f"flights@{history.v1[:12]}")
    assert_healthy(store, history)


def test_a_pin_keeps_pruned_history(store: chanbatch.Store) -> None:
    history = make_history(store)
    pin, new = store.pin(f"flights@{history.v1[:8]}")
    assert new and pin.snapshot == history.v1
    assert store.pin(f"flights@{history.v1[:8]}")[1] is False
    assert [p.snapshot for p in store.pins()] == [history.v1]
    before = files(store.url)
    only_v1 = history.only_v1(store.url)

    store.gc(grace_seconds=0, keep_versions=1)
    after = files(store.url)
    assert set(before) - set(after) == history.debris
    assert_same_rows(store.read_pandas(f"flights@{history.v1[:8]}"), history.frames[history.v1])
    assert_healthy(store, history)

    assert store.unpin(f"flights@{history.v1[:8]}") is True
    store.gc(grace_seconds=0, keep_versions=1)
    assert not set(files(store.url)) & only_v1
    assert_healthy(store, history)


# -- local: real modification times ---------------------------------------------------------


def test_old_referenced_files_are_never_deleted(local_store: chanbatch.Store) -> None:
    history = make_history(local_store)
    age_everything(local_store.url, 30 * 24 * HOUR)
    before = files(local_store.url)

    report = local_store.gc()  # default grace, everything far older than it
    assert set(before) - set(files(local_store.url)) == history.debris
    assert report.kept_young == 0
    assert_healthy(local_store, history)


def test_grace_period_uses_file_age(local_store: chanbatch.Store) -> None:
    history = make_history(local_store)
    age_everything(local_store.url, 30 * 24 * HOUR)
    young_oid, young_mid = write_debris_variant(local_store.url, 7)
    now = time.time()
    for rel in (object_rel(young_oid), manifest_rel(young_mid)):
        path = os.path.join(local_store.url, rel)
        os.utime(path, (now - 0.5 * HOUR, now - 0.5 * HOUR))

    report = local_store.gc(grace_seconds=HOUR)
    remaining = files(local_store.url)
    assert object_rel(young_oid) in remaining and manifest_rel(young_mid) in remaining
    assert not history.debris & set(remaining)
    assert report.kept_young == 2

    report = local_store.gc(grace_seconds=0.25 * HOUR)
    remaining = files(local_store.url)
    assert object_rel(young_oid) not in remaining and manifest_rel(young_mid) not in remaining
    assert_healthy(local_store, history)


def test_stale_temporary_files_are_removed(local_store: chanbatch.Store) -> None:
    history = make_history(local_store)
    tmp = os.path.join(local_store.url, "tmp")
    os.makedirs(tmp, exist_ok=True)
    stale, fresh = os.path.join(tmp, "stale.tmp"), os.path.join(tmp, "fresh.tmp")
    for path in (stale, fresh):
        with open(path, "wb") as handle:
            handle.write(b"half a parquet file")
    then = time.time() - 2 * HOUR
    os.utime(stale, (then, then))

    local_store.gc(grace_seconds=HOUR)
    assert not os.path.exists(stale)
    assert os.path.exists(fresh)
    assert_healthy(local_store, history)


def write_debris_variant(url: str, n: int) -> tuple[str, str]:
    """Debris different from :func:`write_debris`'s (another object, another manifest)."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"orphan": list(range(n))}), sink)
    data = sink.getvalue().to_pybytes()
    oid = b3(data)
    put(url, object_rel(oid), data)
    manifest = canonical(
        {
            "format": 1,
            "kind": "slice",
            "key": f"lost-{n}",
            "key_type": "str",
            "parts": [{"object": oid, "rows": n, "bytes": len(data)}],
        }
    )
    mid = b3(manifest)
    put(url, manifest_rel(mid), manifest)
    return oid, mid
