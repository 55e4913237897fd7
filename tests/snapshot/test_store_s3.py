"""What only an object store can get wrong, on a real S3 API (moto's server, through s3fs).

The store contract suite runs on ``s3://`` too (the ``store_url`` fixture); these tests check the
primitives it stands on, against S3's own answers rather than chanbatch's:

- the ref log's exclusive create is a conditional PUT (``If-None-Match: *``): of 16 racing
  creators exactly one wins, both through fsspec's ``pipe_file(mode="create")`` and through
  ``Storage.create_exclusive``, and the file holds the winner's bytes;
- a listing that s3fs cached must never hide a version another process wrote (the ref log's
  retry after a lost race would read the same stale head again and again);
- gc's grace period counts from S3's ``LastModified``; ``Storage.refresh`` makes an old file
  young again by writing it anew (S3 cannot set a time), and gc keeps what was refreshed.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
from s3kit import age_s3

import chanbatch
from chanbatch.snapshot import refs
from chanbatch.snapshot.storage import REFRESH_AFTER, Storage

pytest.importorskip("s3fs")

RACERS = 16
DAY = 86400.0


def other_client():  # type: ignore[no-untyped-def]
    """An s3fs client of its own (another process, as far as caches go)."""
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)


def race(create) -> list[bool]:  # type: ignore[no-untyped-def]
    """Run ``create(i)`` for 16 racers released at once; whether each won."""
    barrier = threading.Barrier(RACERS)

    def one(i: int) -> bool:
        barrier.wait()
        return bool(create(i))

    with ThreadPoolExecutor(RACERS) as pool:
        return list(pool.map(one, range(RACERS)))


def test_conditional_put_has_exactly_one_winner(s3_store_url: str) -> None:
    client = other_client()  # one client: its requests still run at once on its event loop
    path = s3_store_url.removeprefix("s3://") + "/refs/d/000000000001.json"

    def create(i: int) -> bool:
        try:
            client.pipe_file(path, f"racer {i}".encode(), mode="create")
        except FileExistsError:
            return False
        return True

    won = race(create)
    assert won.count(True) == 1, won
    assert other_client().cat_file(path) == f"racer {won.index(True)}".encode()


def test_create_exclusive_has_exactly_one_winner(s3_store_url: str) -> None:
    storage = Storage(s3_store_url)
    rel = "refs/d/000000000001.json"
    won = race(lambda i: storage.create_exclusive(rel, f"racer {i}".encode()))
    assert won.count(True) == 1, won
    path = s3_store_url.removeprefix("s3://") + "/" + rel
    assert other_client().cat_file(path) == f"racer {won.index(True)}".encode()
    assert storage.create_exclusive(rel, b"late") is False


def frame(key: int) -> pd.DataFrame:
    return pd.DataFrame({"k": [key] * 3, "v": [float(key * 10 + i) for i in range(3)]})


def test_a_version_written_elsewhere_is_seen_at_once(s3_store_url: str) -> None:
    store = chanbatch.Store(s3_store_url)
    store.freeze("d", frame(1), slice="1")
    assert [e.version for e in store.history("d")] == [1]  # the listing is now cached, if ever
    # another client puts a version 2 in place, as another writer's commit would appear
    fs, root = other_client(), s3_store_url.removeprefix("s3://")
    fs.pipe_file(f"{root}/refs/d/000000000002.json", b"{}")
    assert refs.versions(store.storage, "d") == [1, 2]
    # and a commit after it takes version 3 rather than losing 200 races to a stale head
    fs.rm_file(f"{root}/refs/d/000000000002.json")
    other = chanbatch.Store(s3_store_url)
    other.freeze("d", frame(2), slice="2")
    store.freeze("d", frame(3), slice="3")
    assert [e.version for e in store.history("d")] == [1, 2, 3]
    assert sorted(store.read_pandas("d")["k"].unique().tolist()) == [1, 2, 3]


def test_mtime_is_last_modified_and_refresh_renews_it(s3_store_url: str) -> None:
    storage = Storage(s3_store_url)
    before = time.time()
    storage.write_atomic("objects/ab/cd", b"payload")
    after = time.time()
    mtime = storage.mtime("objects/ab/cd")
    assert mtime is not None
    # S3 keeps whole seconds; moto's clock is this machine's
    assert before - 1.0 <= mtime <= after + 1.0
    info = other_client().info(s3_store_url.removeprefix("s3://") + "/objects/ab/cd")
    assert mtime == info["LastModified"].timestamp()
    assert [(rel, size) for rel, _m, size in storage.walk("objects")] == [("objects/ab/cd", 7)]

    assert age_s3(s3_store_url, DAY) == 1
    old = storage.mtime("objects/ab/cd")
    assert old is not None and abs(old - (time.time() - DAY)) < 5
    assert storage.refresh("objects/ab/cd", b"payload") is True
    young = storage.mtime("objects/ab/cd")
    assert young is not None and young >= before - 1.0
    assert storage.read_bytes("objects/ab/cd") == b"payload"
    # a file younger than REFRESH_AFTER is left alone (no write for every reuse)
    assert storage.refresh("objects/ab/cd", b"payload") is True
    assert storage.mtime("objects/ab/cd") == young and young > time.time() - REFRESH_AFTER
    assert storage.refresh("objects/ab/ef", b"missing") is False


def test_a_content_addressed_write_is_one_conditional_put(s3_store_url: str, tmp_path) -> None:
    """``Storage.create_new`` writes a file S3 lacks and refuses (412) one it has, leaving its
    bytes; ``put_object`` then renews an old object for gc instead of writing it again. A local
    store does not try (a stat costs less than a write)."""
    from chanbatch.hashing import digest
    from chanbatch.snapshot.objects import put_object

    storage = Storage(s3_store_url)
    assert storage.create_new("objects/ab/cd", b"payload") is True
    assert storage.create_new("objects/ab/cd", b"impostor") is False
    assert other_client().cat_file(s3_store_url.removeprefix("s3://") + "/objects/ab/cd") == (
        b"payload"
    )
    assert Storage(str(tmp_path)).create_new("objects/ab/cd", b"payload") is None

    # another process wrote this object a day ago: reusing it renews it for gc
    data = b"an object's bytes"
    oid = digest(data)
    rel = f"objects/{oid[:2]}/{oid[2:]}"
    other_client().pipe_file(f"{s3_store_url.removeprefix('s3://')}/{rel}", data)
    assert age_s3(s3_store_url, DAY) == 2
    assert put_object(storage, data) == (oid, False)
    mtime = storage.mtime(rel)
    assert mtime is not None and mtime > time.time() - REFRESH_AFTER
    assert storage.read_bytes(rel) == data


def test_a_file_this_process_wrote_is_trusted_until_a_read_finds_it_damaged(
    s3_store_url: str,
) -> None:
    """A run writes one result as a cache entry and again in its output: while it runs
    (``remembering``), the second write of an object this process made moments ago is neither
    sent nor checked. Once a read finds it damaged, the next write checks it and heals it.
    After the run, nothing is trusted: a store deleted and made again is written in full."""
    from chanbatch.hashing import digest
    from chanbatch.snapshot.objects import get_object, put_object
    from chanbatch.snapshot.storage import remembering

    storage = Storage(s3_store_url)
    data = b"a result's bytes"
    with remembering():
        made_in_a_run(storage, data, s3_store_url)
    oid = digest(data)
    rel = f"objects/{oid[:2]}/{oid[2:]}"
    assert not storage.made_here(rel)
    other_client().rm_file(f"{s3_store_url.removeprefix('s3://')}/{rel}")  # the store is gone
    assert put_object(storage, data) == (oid, True)  # and written again in full
    assert get_object(storage, oid) == data


def made_in_a_run(storage: Storage, data: bytes, s3_store_url: str) -> None:
    from chanbatch.errors import IntegrityError
    from chanbatch.hashing import digest
    from chanbatch.snapshot.objects import get_object, heal_object, put_object

    oid, written = put_object(storage, data)
    assert (oid, written) == (digest(data), True)
    rel = f"objects/{oid[:2]}/{oid[2:]}"
    assert storage.made_here(rel)
    assert Storage(s3_store_url).made_here(rel)  # every Storage of the store knows it
    path = f"{s3_store_url.removeprefix('s3://')}/{rel}"
    other_client().pipe_file(path, b"flipped bits")  # damaged behind this process's back
    assert put_object(storage, data) == (oid, False)  # trusted: nothing looked at
    assert other_client().cat_file(path) == b"flipped bits"
    with pytest.raises(IntegrityError, match="corrupt"):
        get_object(storage, oid)
    assert not storage.made_here(rel)
    assert heal_object(storage, data) == (oid, "healed")
    assert other_client().cat_file(path) == data
    assert get_object(storage, oid) == data


def test_gc_grace_counts_from_last_modified(s3_store_url: str) -> None:
    store = chanbatch.Store(s3_store_url)
    store.freeze("d", frame(1), slice="1")
    store.freeze("d", frame(1).assign(v=0.5), slice="1")  # version 2 replaces slice 1
    pruned_object = {rel for rel, _m, _s in store.storage.walk("objects")}
    # nothing is old yet: gc with a grace period keeps even what no version needs
    assert store.gc(grace_seconds=3600, keep_versions=1).document()["removed"]["objects"] == 0
    age_s3(s3_store_url, DAY)
    report = store.gc(grace_seconds=3600, keep_versions=1).document()
    assert report["removed"]["objects"] == 1
    left = {rel for rel, _m, _s in store.storage.walk("objects")}
    assert len(left) == 1 and left < pruned_object
    pd.testing.assert_frame_equal(
        store.read_pandas("d").reset_index(drop=True), frame(1).assign(v=0.5)
    )
    assert store.verify().ok
