"""Slice and snapshot manifests: the canonical documents whose digests are their ids.

A manifest holds only what defines the data. Row and byte counts are derived from the data, so
they may appear; timestamps, authors and lineage never do (they live in the ref log).
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chanbatch.errors import IntegrityError
from chanbatch.hashing import canonical_json, digest, loads
from chanbatch.ids import (
    ObjectId,
    SliceId,
    SnapshotId,
    object_id,
    slice_id,
    slice_ids,
    snapshot_id,
)
from chanbatch.snapshot.names import KeyType, SliceKey, decode_key, encode_key, key_type
from chanbatch.version import FORMAT_VERSION


@dataclass(frozen=True, slots=True, kw_only=True)
class Part:
    """One Parquet object of a slice."""

    object: ObjectId
    rows: int
    bytes: int

    def document(self) -> dict[str, Any]:
        return {"object": self.object, "rows": self.rows, "bytes": self.bytes}


@dataclass(frozen=True, slots=True, kw_only=True)
class Column:
    """A column of a snapshot's schema; ``type`` is the Arrow type's string form."""

    name: str
    type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SliceManifest:
    """A slice: its key and its objects in order. Its id is the digest of :meth:`to_bytes`."""

    key: SliceKey
    parts: tuple[Part, ...]

    @property
    def rows(self) -> int:
        return sum(part.rows for part in self.parts)

    @property
    def bytes(self) -> int:
        return sum(part.bytes for part in self.parts)

    def document(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "kind": "slice",
            "key": encode_key(self.key),
            "key_type": key_type(self.key),
            "parts": [part.document() for part in self.parts],
        }

    def to_bytes(self) -> builtins.bytes:  # ``bytes`` here is the property
        return canonical_json(self.document())

    @property
    def id(self) -> SliceId:
        return slice_id(digest(self.to_bytes()))


@dataclass(frozen=True, slots=True, kw_only=True)
class SliceEntry:
    """A slice as a snapshot lists it."""

    key: SliceKey
    id: SliceId
    rows: int
    bytes: int

    def document(self) -> dict[str, Any]:
        return {"key": encode_key(self.key), "id": self.id, "rows": self.rows, "bytes": self.bytes}


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotManifest:
    """One version of a dataset: its slices in key order, its schema and its counts."""

    key_type: KeyType
    slice_by: str | None
    schema: tuple[Column, ...]
    slices: tuple[SliceEntry, ...]

    @property
    def rows(self) -> int:
        return sum(entry.rows for entry in self.slices)

    @property
    def bytes(self) -> int:
        return sum(entry.bytes for entry in self.slices)

    def document(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "kind": "snapshot",
            "key_type": self.key_type,
            "slice_by": self.slice_by,
            "schema": [{"name": c.name, "type": c.type} for c in self.schema],
            "slices": [entry.document() for entry in self.slices],
            "rows": self.rows,
            "bytes": self.bytes,
        }

    def to_bytes(self) -> builtins.bytes:  # ``bytes`` here is the property
        return canonical_json(self.document())

    @property
    def id(self) -> SnapshotId:
        return snapshot_id(digest(self.to_bytes()))

    def slice(self, key: SliceKey) -> SliceEntry | None:
        for entry in self.slices:
            if entry.key == key:
                return entry
        return None


def parse_manifest(data: bytes, expected_id: str) -> SliceManifest | SnapshotManifest:
    """Check ``data`` against its id and parse it; raises IntegrityError on any mismatch."""
    if digest(data) != expected_id:
        raise IntegrityError(
            f"manifest {expected_id[:12]} is corrupt: its bytes do not match its id",
            hint="run `chanbatch snapshot verify` to list every damaged file",
        )
    try:
        try:
            return _parse(loads(data), _int)
        except _Inexact:
            # orjson read an integer beyond 64 bits as a float; json reads it exactly (and a
            # float there is then a float written, read as an int as it always was)
            return _parse(json.loads(data), int)
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"manifest {expected_id[:12]} is malformed: {exc}") from exc


class _Inexact(ValueError):
    """A float where a manifest holds an integer: one beyond 64 bits, as orjson reads it."""


def _int(value: Any) -> int:
    """``value`` as an int; raises _Inexact for a float."""
    if type(value) is float:
        raise _Inexact(f"{value!r} is not an integer")
    return int(value)


def _parse(doc: Any, as_int: Callable[[Any], int]) -> SliceManifest | SnapshotManifest:
    """The manifest ``doc``, its integers read by ``as_int``."""
    if doc.get("kind") == "slice":
        kind: KeyType = doc["key_type"]
        return SliceManifest(
            key=_keys([doc["key"]], kind, as_int)[0],
            parts=tuple(
                Part(
                    object=object_id(p["object"]), rows=as_int(p["rows"]), bytes=as_int(p["bytes"])
                )
                for p in doc["parts"]
            ),
        )
    if doc.get("kind") == "snapshot":
        kind = doc["key_type"]
        slices = doc["slices"]
        # column by column, each checked at once: a snapshot may list 100,000 slices
        ids = slice_ids([s["id"] for s in slices])
        keys = _keys([s["key"] for s in slices], kind, as_int)
        rows = _counts([s["rows"] for s in slices], as_int)
        sizes = _counts([s["bytes"] for s in slices], as_int)
        return SnapshotManifest(
            key_type=kind,
            slice_by=doc.get("slice_by"),
            schema=tuple(Column(name=c["name"], type=c["type"]) for c in doc["schema"]),
            slices=tuple(map(_entry, keys, ids, rows, sizes)),
        )
    raise ValueError("its kind is unknown")


def _keys(values: list[Any], kind: KeyType, as_int: Callable[[Any], int]) -> list[SliceKey]:
    """The slice keys ``values`` (as a manifest writes them) decoded as ``kind``."""
    if kind == "int" and all(type(v) is int for v in values):
        return values
    return [decode_key(as_int(v) if kind == "int" else v, kind) for v in values]


def _counts(values: list[Any], as_int: Callable[[Any], int]) -> list[int]:
    """``values`` as ints: as they are when each is one (the common case, checked at once)."""
    if all(type(v) is int for v in values):
        return values
    return [as_int(v) for v in values]


_new = object.__new__
_set = object.__setattr__


def _entry(key: SliceKey, sid: SliceId, rows: int, size: int) -> SliceEntry:
    """``SliceEntry(key=key, id=sid, rows=rows, bytes=size)``, made for checked values without
    the keyword parsing of the frozen class's ``__init__``: a fifth of the cost of reading a
    manifest of 100,000 slices."""
    entry = _new(SliceEntry)
    _set(entry, "key", key)
    _set(entry, "id", sid)
    _set(entry, "rows", rows)
    _set(entry, "bytes", size)
    return entry
