"""Verify: re-hash objects and manifests and check that every reference resolves.

Objects are hashed in parallel (blake3 releases the GIL, and local files are memory-mapped), so
verification runs at disk speed rather than at one core's hashing speed.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from chanbatch.errors import ChanbatchError
from chanbatch.hashing import digest, digest_file
from chanbatch.snapshot import layout, refs
from chanbatch.snapshot.manifest import SliceManifest, SnapshotManifest, parse_manifest
from chanbatch.snapshot.storage import Storage

_WORKERS = 4


@dataclass(slots=True, kw_only=True)
class VerifyReport:
    """What verify found. ``ok`` is False if anything is corrupt, missing or unreadable."""

    checked: int = 0
    bytes: int = 0
    seconds: float = 0.0
    corrupt: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.corrupt or self.missing or self.problems)

    def document(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "corrupt": sorted(self.corrupt),
            "missing": sorted(self.missing),
            "problems": self.problems,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
        }


def verify(storage: Storage, resolved: refs.Resolved | None = None) -> VerifyReport:
    """Re-hash everything in the store, or only what one resolved REF needs."""
    started = time.perf_counter()
    report = VerifyReport()
    if resolved is None:
        _verify_all(storage, report)
    else:
        _verify_snapshot(
            storage, resolved.entry.snapshot, report, checked_ids=set(), key=resolved.slice_key
        )
    report.seconds = time.perf_counter() - started
    return report


def verify_snapshot(storage: Storage, sid: str) -> VerifyReport:
    """Re-hash one snapshot (by id) and everything it names."""
    started = time.perf_counter()
    report = VerifyReport()
    _verify_snapshot(storage, sid, report, checked_ids=set())
    report.seconds = time.perf_counter() - started
    return report


def _verify_all(storage: Storage, report: VerifyReport) -> None:
    objects = [
        (oid, rel)
        for rel, _mtime, _size in storage.walk(layout.OBJECTS)
        if (oid := layout.id_from_path(rel, layout.OBJECTS)) is not None
    ]
    _hash_objects(storage, objects, report)
    manifests: dict[str, SliceManifest | SnapshotManifest] = {}
    for rel, _mtime, _size in storage.walk(layout.MANIFESTS):
        mid = layout.id_from_path(rel, layout.MANIFESTS, ".json")
        if mid is None:
            continue
        data = storage.read_bytes(rel)
        report.checked += 1
        report.bytes += len(data)
        try:
            manifests[mid] = parse_manifest(data, mid)
        except ChanbatchError:
            report.corrupt.append(mid)
    present = {oid for oid, _ in objects}
    corrupt = set(report.corrupt)
    for dataset in refs.list_datasets(storage):
        for version in refs.versions(storage, dataset):
            try:
                entry = refs.read_entry(storage, dataset, version)
            except ChanbatchError:
                report.corrupt.append(layout.ref_path(dataset, version))
                continue
            _check_reachable(entry.snapshot, manifests, present, corrupt, report)


def _check_reachable(
    sid: str,
    manifests: dict[str, SliceManifest | SnapshotManifest],
    present: set[str],
    corrupt: set[str],
    report: VerifyReport,
) -> None:
    snap = manifests.get(sid)
    if snap is None:
        if sid not in corrupt and sid not in report.missing:
            report.missing.append(sid)
        return
    if not isinstance(snap, SnapshotManifest):
        report.problems.append(f"ref points at {sid[:12]}, which is not a snapshot")
        return
    for entry in snap.slices:
        manifest = manifests.get(entry.id)
        if manifest is None:
            if entry.id not in corrupt and entry.id not in report.missing:
                report.missing.append(entry.id)
            continue
        if isinstance(manifest, SliceManifest):
            for part in manifest.parts:
                if part.object not in present and part.object not in report.missing:
                    report.missing.append(part.object)


def _verify_snapshot(
    storage: Storage, sid: str, report: VerifyReport, checked_ids: set[str], key: object = None
) -> None:
    snap = _load_manifest(storage, sid, report)
    if not isinstance(snap, SnapshotManifest):
        return
    objects: list[tuple[str, str]] = []
    for entry in snap.slices:
        if key is not None and entry.key != key:
            continue
        manifest = _load_manifest(storage, entry.id, report)
        if isinstance(manifest, SliceManifest):
            objects.extend(
                (p.object, layout.object_path(p.object))
                for p in manifest.parts
                if p.object not in checked_ids
            )
            checked_ids.update(p.object for p in manifest.parts)
    _hash_objects(storage, objects, report)


def _load_manifest(
    storage: Storage, mid: str, report: VerifyReport
) -> SliceManifest | SnapshotManifest | None:
    try:
        data = storage.read_bytes(layout.manifest_path(mid))
    except FileNotFoundError:
        report.missing.append(mid)
        return None
    report.checked += 1
    report.bytes += len(data)
    try:
        return parse_manifest(data, mid)
    except ChanbatchError:
        report.corrupt.append(mid)
        return None


def _hash_objects(storage: Storage, objects: list[tuple[str, str]], report: VerifyReport) -> None:
    def check(item: tuple[str, str]) -> tuple[str, str | None, int]:
        oid, rel = item
        try:
            local = storage.local_path(rel)
            if local is not None:
                found, size = digest_file(local)
            else:
                data = storage.read_bytes(rel)
                found, size = digest(data), len(data)
        except FileNotFoundError:
            return oid, None, 0
        return oid, found, size

    with ThreadPoolExecutor(_WORKERS) as pool:
        for oid, found, size in pool.map(check, objects):
            if found is None:
                report.missing.append(oid)
                continue
            report.checked += 1
            report.bytes += size
            if found != oid:
                report.corrupt.append(oid)
