"""Content-addressed reads and writes of objects and manifests.

Every read re-hashes what it read and raises IntegrityError on a mismatch, so corrupt bytes
never reach a caller as data.
"""

from __future__ import annotations

import json

from chanbatch.errors import IntegrityError, StoreError
from chanbatch.hashing import digest, digest_file, loads
from chanbatch.ids import ObjectId, object_id
from chanbatch.snapshot.layout import manifest_path, object_path
from chanbatch.snapshot.manifest import Part, SliceManifest, SnapshotManifest, parse_manifest
from chanbatch.snapshot.storage import Storage


def put_object(
    storage: Storage,
    data: bytes | memoryview,
    known_id: str | None = None,
    *,
    repair: bool = False,
) -> tuple[ObjectId, bool]:
    """Store ``data`` under its digest; returns (id, whether it was written).

    An object already present is trusted, unless ``repair``: then its bytes are hashed, and
    rewritten when they do not match (the caller recomputed ``data`` because of that). Either
    way a present object is refreshed (:meth:`Storage.refresh`), so that gc's grace period
    covers it until the caller's ref or cache entry names it.
    """
    if repair:
        oid, state = heal_object(storage, data, known_id)
        return oid, state != PRESENT
    oid = object_id(known_id or digest(data))
    rel = object_path(oid)
    if storage.create_new(rel, data):
        return oid, True
    if storage.refresh(rel, data):
        return oid, False
    storage.write_atomic(rel, data)  # gone since it was found (gc): write it
    return oid, True


#: An object of at most this many bytes (by its manifest or cache entry) is read from an object
#: store in one request; a bigger one, or one of unknown size, in parallel ranges after a HEAD.
ONE_REQUEST_BYTES = 32 * 2**20


def _small(size: int | None) -> bool:
    return size is not None and size <= ONE_REQUEST_BYTES


#: What :func:`heal_object` (and a freeze) found where an object belongs.
NEW, PRESENT, HEALED = "new", "present", "healed"


def object_state(storage: Storage, oid: str, size: int | None = None) -> str | None:
    """PRESENT if object ``oid`` is in the store and its bytes hash to its id, HEALED if it is
    there but damaged (it needs healing), None if it is absent. ``size``: its size, if known
    (see :func:`get_object`)."""
    rel = object_path(oid)
    try:
        local = storage.local_path(rel)
        if local is not None:
            found = digest_file(local)[0]
        else:
            found = digest(storage.read_bytes(rel, small=_small(size)))
    except FileNotFoundError:
        return None
    return PRESENT if found == oid else HEALED


def heal_object(
    storage: Storage, data: bytes | memoryview, known_id: str | None = None
) -> tuple[ObjectId, str]:
    """Store ``data`` under its digest, rewriting a damaged copy already there; returns (id,
    NEW, PRESENT or HEALED).

    A freeze of data whose object a flipped bit or a short write damaged is what brings it back
    (`snapshot verify` says which source to freeze again), so a present object is hashed
    before it is trusted. An intact one is refreshed for gc, as by :func:`put_object`.
    """
    oid = object_id(known_id or digest(data))
    rel = object_path(oid)
    if storage.create_new(rel, data):
        return oid, NEW
    if storage.made_here(rel):  # written by this process moments ago: nothing to check
        return oid, PRESENT
    state = object_state(storage, oid, len(data))
    if state == PRESENT and storage.refresh(rel, data):
        return oid, PRESENT
    storage.write_atomic(rel, data)
    return oid, HEALED if state == HEALED else NEW


def get_object(storage: Storage, oid: str, size: int | None = None) -> bytes:
    """The verified bytes of object ``oid``; raises IntegrityError if missing or corrupt.
    ``size``, when the caller knows it, lets a small object be read in one request."""
    rel = object_path(oid)
    try:
        data = storage.read_bytes(rel, small=_small(size))
    except FileNotFoundError:
        storage.distrust(rel)
        raise IntegrityError(
            f"object {oid[:12]} is missing from the store",
            hint="run `chanbatch snapshot verify` to see what else is damaged",
        ) from None
    if digest(data) != oid:
        storage.distrust(rel)
        raise IntegrityError(
            f"object {oid[:12]} is corrupt: its bytes do not match its id",
            hint="run `chanbatch snapshot verify` to list every damaged file",
        )
    return data


def put_manifest(storage: Storage, manifest: SliceManifest | SnapshotManifest) -> str:
    """Store a manifest under its id (idempotent, refreshing one already there for gc, as
    :func:`put_object` does, and rewriting one whose bytes were damaged); returns the id."""
    return write_manifest(storage, manifest)[0]


def write_manifest(
    storage: Storage, manifest: SliceManifest | SnapshotManifest
) -> tuple[str, bool]:
    """As :func:`put_manifest`; returns (id, whether a damaged copy was rewritten)."""
    data = manifest.to_bytes()
    mid = digest(data)
    rel = manifest_path(mid)
    if storage.create_new(rel, data):
        return mid, False
    if storage.made_here(rel):
        return mid, False
    if not storage.refresh(rel, data):
        storage.write_atomic(rel, data)
        return mid, False
    try:
        damaged = storage.read_bytes(rel) != data  # a manifest is small: compare it whole
    except FileNotFoundError:  # removed since (gc): write it again
        damaged = False
    else:
        if not damaged:
            return mid, False
    storage.write_atomic(rel, data)
    return mid, damaged


def get_manifest(storage: Storage, mid: str) -> SliceManifest | SnapshotManifest:
    """The verified, parsed manifest ``mid``; raises IntegrityError if missing or corrupt."""
    try:
        return parse_manifest(_manifest_bytes(storage, mid), mid)
    except IntegrityError:
        storage.distrust(manifest_path(mid))
        raise


def _manifest_bytes(storage: Storage, mid: str) -> bytes:
    try:
        return storage.read_bytes(manifest_path(mid))
    except FileNotFoundError:
        raise IntegrityError(
            f"manifest {mid[:12]} is missing from the store",
            hint="the store was damaged or garbage-collected; run `chanbatch snapshot verify`",
        ) from None


def get_slice_index(storage: Storage, sid: str) -> dict[int | str, str]:
    """Slice key (in its JSON form) -> slice id, of snapshot ``sid``: verified as
    :func:`get_snapshot` verifies it, without building its entries (an explanation compares an
    earlier snapshot's slices, 100,000 of them perhaps, with a plan's). Raises IntegrityError
    if missing or corrupt, StoreError if it is not a snapshot."""
    data = _manifest_bytes(storage, sid)
    if digest(data) != sid:
        parse_manifest(data, sid)  # raises, naming the damage
    try:
        doc = loads(data)
        if doc.get("kind") != "snapshot":
            raise StoreError(f"{sid[:12]} is a slice, not a snapshot")
        index = {s["key"]: s["id"] for s in doc["slices"]}
        if doc["key_type"] == "int" and any(type(key) is float for key in index):
            # orjson reads an integer beyond 64 bits as a float; json reads it exactly
            index = {s["key"]: s["id"] for s in json.loads(data)["slices"]}
        return index
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise IntegrityError(f"manifest {sid[:12]} is malformed: {exc}") from exc


def get_snapshot(storage: Storage, sid: str) -> SnapshotManifest:
    """The snapshot manifest ``sid``; raises IntegrityError if it is not a snapshot."""
    manifest = get_manifest(storage, sid)
    if not isinstance(manifest, SnapshotManifest):
        raise StoreError(f"{sid[:12]} is a slice, not a snapshot")
    return manifest


def read_slices_ahead(storage: Storage, sids: list[str]) -> list[str]:
    """Start reading the manifests of slices ``sids`` at once (see
    :meth:`~chanbatch.snapshot.storage.Storage.read_ahead`), for :func:`get_slice` to take;
    returns their paths, for :meth:`~chanbatch.snapshot.storage.Storage.forget_ahead`."""
    rels = [manifest_path(sid) for sid in sids]
    storage.read_ahead(rels)
    return rels


def read_objects_ahead(storage: Storage, parts: list[Part]) -> list[str]:
    """Start reading the objects of ``parts`` at once (see :func:`read_slices_ahead`), for
    :func:`get_object` to take; each small one in one request, as :func:`get_object` reads
    it. Returns their paths."""
    small = [object_path(p.object) for p in parts if _small(p.bytes)]
    large = [object_path(p.object) for p in parts if not _small(p.bytes)]
    storage.read_ahead(small, small=True)
    storage.read_ahead(large)
    return small + large


def get_slice(storage: Storage, sid: str) -> SliceManifest:
    """The slice manifest ``sid``; raises IntegrityError if it is not a slice."""
    manifest = get_manifest(storage, sid)
    if not isinstance(manifest, SliceManifest):
        raise StoreError(f"{sid[:12]} is a snapshot, not a slice")
    return manifest
