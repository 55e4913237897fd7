"""Garbage collection: mark from refs, pins, recent runs and their cache entries; sweep the rest.

Nothing younger than the grace period is ever deleted, whatever marking says: a concurrent
freeze writes its objects and manifests before the ref that makes them reachable, and the grace
period is what keeps gc from collecting them in between. A writer that reuses a file already in
the store (old debris with the same content) refreshes its mtime for the same reason
(``Storage.refresh``), and gc checks each file's age again right before deleting it, because
marking and listing can take long enough for a writer to reuse and commit in between. So the
grace period must exceed the longest freeze or run, from its first write to its ref.

Without ``keep_versions`` the whole ref history is a root, so every snapshot ever committed stays
readable and gc removes only debris (from crashes, failed freezes and evicted cache entries).
With it, only the newest ``keep_versions`` versions of each dataset, and pinned snapshots, stay.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from chanbatch.errors import ChanbatchError
from chanbatch.snapshot import layout, refs
from chanbatch.snapshot.manifest import SliceManifest, SnapshotManifest
from chanbatch.snapshot.objects import get_manifest
from chanbatch.snapshot.pins import list_pins
from chanbatch.snapshot.storage import TMP_DIR, Storage

RECENT_RUN_SECONDS = 7 * 24 * 3600
_CLOCK_SKEW = 5.0  # a record's mtime comes from the store's clock, which may trail ours


@dataclass(slots=True, kw_only=True)
class GcReport:
    """What gc removed (or, on a dry run, would remove)."""

    dry_run: bool
    objects: list[str] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)
    cache: list[str] = field(default_factory=list)
    tmp: list[str] = field(default_factory=list)
    bytes: int = 0
    kept_young: int = 0
    live_objects: int = 0

    def document(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "removed": {
                "objects": len(self.objects),
                "manifests": len(self.manifests),
                "refs": len(self.refs),
                "cache": len(self.cache),
                "tmp": len(self.tmp),
            },
            "bytes": self.bytes,
            "kept_young": self.kept_young,
            "live_objects": self.live_objects,
            "objects": sorted(self.objects),
        }


def gc(
    storage: Storage,
    *,
    grace_seconds: float = 3600.0,
    dry_run: bool = False,
    keep_versions: int | None = None,
    now: float | None = None,
) -> GcReport:
    """Remove what no root reaches and is older than ``grace_seconds``."""
    now = time.time() if now is None else now
    cutoff = now - grace_seconds
    report = GcReport(dry_run=dry_run)

    pinned = {p.snapshot for p in list_pins(storage)}
    snapshots: set[str] = set(pinned)
    pruning: dict[str, dict[int, str]] = {}
    for dataset in refs.list_datasets(storage):
        entries = refs.versions(storage, dataset)
        keep = entries if keep_versions is None else entries[-max(keep_versions, 1) :]
        for version in entries:
            rel = layout.ref_path(dataset, version)
            try:
                entry = refs.read_entry(storage, dataset, version)
            except ChanbatchError:
                continue  # an unreadable ref is verify's to report, never gc's to delete
            if version in keep or entry.snapshot in pinned:
                snapshots.add(entry.snapshot)
            else:
                report.refs.append(rel)
                pruning.setdefault(dataset, {})[version] = entry.snapshot

    marked = time.time()
    roots_objects, roots_manifests, live_cache = _mark_runs(storage, now)
    snapshots |= roots_manifests
    live_manifests: set[str] = set()
    live_objects: set[str] = set(roots_objects)
    for sid in snapshots:
        _mark_manifest(storage, sid, live_manifests, live_objects)
    for rel, mtime, _size in list(storage.walk(layout.CACHE)):
        key = _key_of(rel)
        if key in live_cache:
            for oid in _cache_objects(storage, rel):
                live_objects.add(oid)
            continue
        if mtime >= cutoff:
            report.kept_young += 1
            for oid in _cache_objects(storage, rel):
                live_objects.add(oid)
            continue
        report.cache.append(rel)

    report.live_objects = len(live_objects)
    sizes: dict[str, int] = {}

    sweep: list[tuple[str, list[str], str, str]] = [
        (layout.MANIFESTS, report.manifests, layout.MANIFESTS, ".json"),
        (layout.OBJECTS, report.objects, layout.OBJECTS, ""),
    ]
    for top, removed, prefix, suffix in sweep:
        live = live_manifests if top == layout.MANIFESTS else live_objects
        for rel, mtime, size in list(storage.walk(top)):
            ident = layout.id_from_path(rel, prefix, suffix)
            if ident is None or ident in live:
                continue
            if mtime >= cutoff:
                report.kept_young += 1
                continue
            removed.append(ident)
            report.bytes += size
            sizes[rel] = size
    for rel, mtime, size in list(storage.walk(TMP_DIR)):
        if mtime < cutoff:
            report.tmp.append(rel)
            report.bytes += size

    if not dry_run:
        _spare_late_roots(storage, report, since=marked)
        # refs first, objects last: a crash part-way leaves nothing that points at a gap;
        # and what is pruned is recorded first, so that verify does not take it for a ref
        # file deleted by hand
        for dataset, pruned in pruning.items():
            refs.record_pruned(storage, dataset, pruned)
        for rel in report.refs:
            storage.delete(rel)

        def still_old(rel: str) -> bool:
            if _remove_if_old(storage, rel, cutoff):
                return True
            report.kept_young += 1
            report.bytes -= sizes.get(rel, 0)
            return False

        report.cache = [rel for rel in report.cache if still_old(rel)]
        report.manifests = [m for m in report.manifests if still_old(layout.manifest_path(m))]
        report.objects = [o for o in report.objects if still_old(layout.object_path(o))]
        for rel in report.tmp:
            storage.delete(rel)
    return report


def _spare_late_roots(storage: Storage, report: GcReport, *, since: float) -> None:
    """Take out of ``report`` what run records written since ``since`` name.

    A run records what it will reuse before it reads it (chanbatch.run.runner), but it may do
    so after this gc marked: such a record is read again here, just before deleting.
    """
    objects, manifests, cache = _mark_runs(storage, since, max_age=_CLOCK_SKEW)
    if not (objects or manifests or cache):
        return
    live_manifests: set[str] = set()
    for mid in manifests:
        _mark_manifest(storage, mid, live_manifests, objects)
    kept = [rel for rel in report.cache if _key_of(rel) in cache]
    for rel in kept:
        objects.update(_cache_objects(storage, rel))
    report.cache = [rel for rel in report.cache if _key_of(rel) not in cache]
    report.manifests = [m for m in report.manifests if m not in live_manifests]
    report.objects = [o for o in report.objects if o not in objects]
    report.kept_young += len(kept)


def _key_of(rel: str) -> str:
    return rel.rsplit("/", 1)[-1].removesuffix(".json")


def _remove_if_old(storage: Storage, rel: str, cutoff: float) -> bool:
    """Delete ``rel`` unless a writer made it young again since it was listed; returns whether
    it was deleted. The check and the delete are two steps, not one: a writer refreshing the
    file between them still loses it (a window of one stat, where it was the whole sweep)."""
    mtime = storage.mtime(rel)
    if mtime is None:
        return True  # already gone (another gc)
    if mtime >= cutoff:
        return False
    storage.delete(rel)
    return True


def _mark_manifest(storage: Storage, mid: str, manifests: set[str], objects: set[str]) -> None:
    if mid in manifests:
        return
    try:
        manifest = get_manifest(storage, mid)
    except ChanbatchError:
        manifests.add(mid)  # keep what cannot be read: verify reports it, gc must not hide it
        return
    manifests.add(mid)
    if isinstance(manifest, SnapshotManifest):
        for entry in manifest.slices:
            _mark_manifest(storage, entry.id, manifests, objects)
    elif isinstance(manifest, SliceManifest):
        objects.update(part.object for part in manifest.parts)


def _mark_runs(
    storage: Storage, now: float, *, max_age: float = RECENT_RUN_SECONDS
) -> tuple[set[str], set[str], set[str]]:
    """Objects, manifests and cache keys named by run records younger than ``max_age``."""
    objects: set[str] = set()
    manifests: set[str] = set()
    cache: set[str] = set()
    for rel, mtime, _size in storage.walk(layout.RUNS):
        if mtime < now - max_age:
            continue
        try:
            roots = json.loads(storage.read_bytes(rel)).get("roots", {})
        except (ValueError, FileNotFoundError, AttributeError):
            continue
        objects.update(roots.get("objects", ()))
        manifests.update(roots.get("snapshots", ()))
        manifests.update(roots.get("slices", ()))
        cache.update(roots.get("cache", ()))
    return objects, manifests, cache


def _cache_objects(storage: Storage, rel: str) -> list[str]:
    try:
        doc = json.loads(storage.read_bytes(rel))
    except (ValueError, FileNotFoundError):
        return []
    return [str(o) for o in doc.get("objects", ())]
