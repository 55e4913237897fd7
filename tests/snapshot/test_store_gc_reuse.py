"""gc against a writer that reuses an old file instead of writing it.

A freeze whose data is already in the store (debris of a failed freeze, or an object whose cache
entry gc removed) finds its objects and manifests present and does not write them. Their mtime
was old, so a gc between that check and the freeze's ref commit deleted them, and the new ref
named files that were gone. A reused file is now refreshed (``Storage.refresh``), and gc checks a
file's age again right before deleting it. Every backend: a local directory (mtime set with
``os.utime``), ``memory://`` and ``s3://`` (no mtime to set: an old file is written again).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator

import pandas as pd
import pytest
from s3kit import age_s3
from storekit import assert_same_rows, files, fs_root, in_slice_order, manifest_rel, object_rel

import chanbatch
from chanbatch.snapshot import refs
from chanbatch.snapshot.objects import put_manifest, put_object
from chanbatch.snapshot.storage import Storage

DAY = 86400.0
GRACE = 5.0


def frame() -> pd.DataFrame:
    return pd.DataFrame({"k": [1] * 4 + [2] * 3 + [3] * 5, "v": [float(i) for i in range(12)]})


def age(url: str, seconds: float) -> None:
    """Make every file of the store ``seconds`` old, behind chanbatch's back."""
    if url.startswith("s3://"):  # S3 cannot set LastModified: the test server can
        age_s3(url, seconds)
        return
    fs, root = fs_root(url)
    then = time.time() - seconds
    for path in fs.find(root):
        if url.startswith("memory://"):
            stamp = dt.datetime.fromtimestamp(then, dt.UTC)
            fs.store[path].created = fs.store[path].modified = stamp
        else:
            os.utime(path, (then, then))


def failed_freeze(store: chanbatch.Store, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Freeze ``frame()`` into ``d`` but crash before the ref: what it leaves behind."""

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed before the ref was written")

    with monkeypatch.context() as patch:
        patch.setattr(refs, "commit", crash)
        with pytest.raises(RuntimeError):
            store.freeze("d", frame(), slice_by="k")
    debris = set(files(store.url))
    assert debris and not any(rel.startswith("refs/") for rel in debris)
    return debris


def test_a_freeze_reusing_old_debris_survives_a_gc_before_its_commit(
    store: chanbatch.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    debris = failed_freeze(store, monkeypatch)
    age(store.url, DAY)
    commit = refs.commit
    swept: list[dict[str, int]] = []

    def gc_then_commit(*args: object, **kwargs: object) -> object:
        # the freeze has checked (and reused) its files; a gc lands before its ref
        swept.append(store.gc(grace_seconds=GRACE).document()["removed"])
        return commit(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(refs, "commit", gc_then_commit)
    info = store.freeze("d", frame(), slice_by="k")
    monkeypatch.undo()

    assert swept == [{"objects": 0, "manifests": 0, "refs": 0, "cache": 0, "tmp": 0}]
    assert debris <= set(files(store.url))  # the freeze named exactly the debris
    report = store.verify()
    assert report.ok, report.document()
    assert_same_rows(store.read_pandas(f"d@{info.snapshot}"), in_slice_order(frame(), "k"))


def test_reused_objects_and_manifests_are_refreshed(store: chanbatch.Store) -> None:
    storage = store.storage
    data = b"PAR1 not really, but content-addressed all the same"
    oid, _ = put_object(storage, data)
    store.freeze("d", frame(), slice_by="k")
    snapshot = store.resolve("d").manifest
    age(store.url, DAY)
    start = time.time() - 1

    assert put_object(storage, data) == (oid, False)
    assert put_object(storage, data, repair=True) == (oid, False)
    assert put_manifest(storage, snapshot) == snapshot.id
    for rel in (object_rel(oid), manifest_rel(snapshot.id)):
        mtime = storage.mtime(rel)
        assert mtime is not None and mtime >= start, rel
    assert storage.read_bytes(object_rel(oid)) == data


def test_a_local_freeze_refreshes_the_objects_it_finds(
    local_store: chanbatch.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Locally a freeze writes objects through a temp file it adopts: the same refresh."""
    debris = failed_freeze(local_store, monkeypatch)
    age(local_store.url, DAY)
    start = time.time() - 1
    local_store.freeze("d", frame(), slice_by="k")
    for rel in debris:
        assert os.stat(os.path.join(local_store.url, rel)).st_mtime >= start, rel
    assert not os.listdir(os.path.join(local_store.url, "tmp"))


def test_gc_keeps_a_file_made_young_after_it_was_listed(
    store: chanbatch.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Marking and listing take time on a big store; a writer may reuse a file meanwhile."""
    debris = failed_freeze(store, monkeypatch)
    age(store.url, DAY)
    reused = sorted(rel for rel in debris if rel.startswith("objects/"))[0]
    storage: Storage = store.storage
    walk = storage.walk

    def walk_then_reuse(rel: str) -> Iterator[tuple[str, float, int]]:
        yield from walk(rel)
        if rel == "objects":  # gc has listed the objects as old; now a writer reuses one
            assert storage.refresh(reused, storage.read_bytes(reused))

    monkeypatch.setattr(storage, "walk", walk_then_reuse)
    report = store.gc(grace_seconds=GRACE)
    left = set(files(store.url))
    assert left == {reused}
    assert report.kept_young == 1
    assert reused.removeprefix("objects/").replace("/", "") not in report.objects
    assert len(report.objects) == sum(rel.startswith("objects/") for rel in debris) - 1
