"""Commit: the snapshot manifest and ref that make a freeze's slices a new version.

The ref that makes a snapshot visible is written last, exclusively, and only once every
manifest it names is complete; see :func:`chanbatch.snapshot.refs.commit`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chanbatch.snapshot import refs
from chanbatch.snapshot.freeze.result import FreezeResult, FrozenSlice
from chanbatch.snapshot.freeze.schema import _raise_schema_conflict
from chanbatch.snapshot.manifest import Column, SliceEntry, SliceManifest, SnapshotManifest
from chanbatch.snapshot.names import KeyType, SliceKey, encode_key, sort_token
from chanbatch.snapshot.normalize import type_name
from chanbatch.snapshot.objects import get_snapshot, put_manifest
from chanbatch.snapshot.storage import Storage

if TYPE_CHECKING:
    import pyarrow as pa


def _columns(schema: pa.Schema) -> tuple[Column, ...]:
    """``schema`` as a snapshot manifest records it."""
    return tuple(Column(name=f.name, type=type_name(f.type)) for f in schema)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Proposal:
    """The version a freeze proposes, made against whichever head :func:`refs.commit` finds:
    another writer may commit between the freeze's start and its commit, and a merge must keep
    that writer's slices."""

    storage: Storage
    dataset: str
    written: list[SliceManifest]
    schema: tuple[Column, ...]
    keys: list[SliceKey]
    key_type: KeyType  # of a dataset this freeze starts, or replaces
    slice_by: str | None
    replace: bool
    operation: str
    lineage: dict[str, Any] | None
    read: dict[str, SnapshotManifest]  # snapshot id -> manifest, of the heads already read

    def __call__(self, current: refs.RefEntry | None) -> refs.Change | None:
        latest = None
        if current is not None:
            latest = self.read.get(current.snapshot) or get_snapshot(self.storage, current.snapshot)
        if latest is not None and latest.schema != self.schema and not self.replace:
            _raise_schema_conflict(self.dataset, latest, self.schema, self.keys)
        previous = {e.key: e for e in latest.slices} if latest else {}
        merged: dict[SliceKey, SliceEntry] = {} if self.replace else dict(previous)
        added, replaced = [], []
        for manifest in self.written:
            before = previous.get(manifest.key)
            merged[manifest.key] = SliceEntry(
                key=manifest.key, id=manifest.id, rows=manifest.rows, bytes=manifest.bytes
            )
            if before is None:
                added.append(encode_key(manifest.key))
            elif before.id != manifest.id:
                replaced.append(encode_key(manifest.key))
        removed = [encode_key(k) for k in previous if k not in merged] if self.replace else []
        unchanged = not (added or replaced or removed)
        if latest is not None and unchanged and latest.schema == self.schema:
            return None
        snapshot = SnapshotManifest(
            key_type=latest.key_type if latest and not self.replace else self.key_type,
            slice_by=self.slice_by or (latest.slice_by if latest else None),
            schema=self.schema,
            slices=tuple(merged[k] for k in sorted(merged, key=sort_token)),
        )
        put_manifest(self.storage, snapshot)
        return refs.Change(
            snapshot=snapshot.id,
            operation=self.operation,
            added=tuple(added),
            replaced=tuple(replaced),
            lineage={**(self.lineage or {}), **({"removed": removed} if removed else {})},
        )


def _result(
    proposal: _Proposal,
    head: refs.RefEntry,
    created: bool,
    base: SnapshotManifest | None,
    healed: set[SliceKey],
) -> FreezeResult:
    """The result of a committed freeze: a slice is new if ``base`` had no slice of its key,
    replaced if ``base`` had one with another id."""
    before = {e.key: e.id for e in base.slices} if base else {}
    return FreezeResult(
        dataset=proposal.dataset,
        snapshot=head.snapshot,
        version=head.version,
        created=created,
        slices=tuple(
            FrozenSlice(
                key=m.key,
                id=m.id,
                rows=m.rows,
                bytes=m.bytes,
                new=m.key not in before,
                replaced=m.key in before and before[m.key] != m.id,
                healed=m.key in healed,
            )
            for m in proposal.written
        ),
    )
