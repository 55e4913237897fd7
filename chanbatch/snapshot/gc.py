"""Garbage collection: mark from refs, pins, recent runs and their cache entries; sweep the rest.

Run records and cache entries are written by layers above this one; gc reads only what they
keep alive, in the format of :mod:`chanbatch.snapshot.roots`. A recent run record that is
damaged stops gc before it deletes anything (RootsDamaged names the file): what it keeps alive
cannot be known, and guessing would collect a running run's inputs.

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

import time
from dataclasses import dataclass, field
from typing import Any

from chanbatch.errors import ChanbatchError
from chanbatch.snapshot import layout, refs
from chanbatch.snapshot.manifest import SliceManifest, SnapshotManifest
from chanbatch.snapshot.objects import get_manifest
from chanbatch.snapshot.pins import list_pins
from chanbatch.snapshot.roots import Roots, RootsDamaged, read_roots
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
    """Remove what no root reaches and is older than ``grace_seconds``.

    Raises RootsDamaged, before deleting anything, when a recent run record is damaged: what
    it keeps alive cannot be known.
    """
    now = time.time() if now is None else now
    cutoff = now - grace_seconds
    report = GcReport(dry_run=dry_run)
    snapshots, pruning = _mark_refs(storage, report, keep_versions)
    marked = time.time()
    run_roots = _mark_runs(storage, now)
    live_manifests: set[str] = set()
    live_objects: set[str] = set(run_roots.objects)
    for sid in snapshots | set(run_roots.snapshots) | set(run_roots.slices):
        _mark_manifest(storage, sid, live_manifests, live_objects)
    _mark_cache(storage, report, set(run_roots.cache), cutoff, live_objects)
    report.live_objects = len(live_objects)
    sizes = _list_unreached(storage, report, live_manifests, live_objects, cutoff)
    if not dry_run:
        _spare_late_roots(storage, report, since=marked)
        _delete(storage, report, pruning, sizes, cutoff)
    return report


def _mark_refs(
    storage: Storage, report: GcReport, keep_versions: int | None
) -> tuple[set[str], dict[str, dict[int, str]]]:
    """The snapshots the ref logs and pins keep, and (into ``report``) the ref files that
    ``keep_versions`` prunes, with the snapshot of each pruned version per dataset."""
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
    return snapshots, pruning


def _mark_cache(
    storage: Storage, report: GcReport, live_cache: set[str], cutoff: float, live: set[str]
) -> None:
    """Mark the objects of live and young cache entries; list the other entries to sweep. A
    pack's index (``cache/packs/``) is live while one of the keys it answers for is."""
    for rel, mtime, _size in list(storage.walk(layout.CACHE)):
        if not any(key in live_cache for key in _answers(storage, rel)):
            if mtime < cutoff:
                report.cache.append(rel)
                continue
            report.kept_young += 1
        live.update(_cache_roots(storage, rel).objects)


def _list_unreached(
    storage: Storage,
    report: GcReport,
    live_manifests: set[str],
    live_objects: set[str],
    cutoff: float,
) -> dict[str, int]:
    """List into ``report`` the old manifests, objects and temporary files nothing reaches;
    returns the size of each listed manifest and object, by path."""
    sizes: dict[str, int] = {}
    sweep: list[tuple[str, list[str], set[str], str]] = [
        (layout.MANIFESTS, report.manifests, live_manifests, ".json"),
        (layout.OBJECTS, report.objects, live_objects, ""),
    ]
    for top, removed, live, suffix in sweep:
        for rel, mtime, size in list(storage.walk(top)):
            ident = layout.id_from_path(rel, top, suffix)
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
    return sizes


def _delete(
    storage: Storage,
    report: GcReport,
    pruning: dict[str, dict[int, str]],
    sizes: dict[str, int],
    cutoff: float,
) -> None:
    """Delete what ``report`` lists, in an order that never leaves a pointer to a gap."""
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


def _spare_late_roots(storage: Storage, report: GcReport, *, since: float) -> None:
    """Take out of ``report`` what run records written since ``since`` name.

    A run records what it will reuse before it reads it (chanbatch.run), but it may do so
    after this gc marked: such a record is read again here, just before deleting.
    """
    late = _mark_runs(storage, since, max_age=_CLOCK_SKEW)
    if not late:
        return
    objects = set(late.objects)
    live_manifests: set[str] = set()
    for mid in (*late.snapshots, *late.slices):
        _mark_manifest(storage, mid, live_manifests, objects)
    late_cache = set(late.cache)
    kept = [rel for rel in report.cache if any(k in late_cache for k in _answers(storage, rel))]
    for rel in kept:
        objects.update(_cache_roots(storage, rel).objects)
    report.cache = [rel for rel in report.cache if rel not in kept]
    report.manifests = [m for m in report.manifests if m not in live_manifests]
    report.objects = [o for o in report.objects if o not in objects]
    report.kept_young += len(kept)


def _answers(storage: Storage, rel: str) -> tuple[str, ...]:
    """The cache keys whose results the file ``rel`` under ``cache/`` holds: an entry's own
    key (its name), a pack index's members (stated in its roots)."""
    if rel.startswith(layout.PACKS + "/"):
        return _cache_roots(storage, rel).answers
    return (rel.rsplit("/", 1)[-1].removesuffix(".json"),)


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


def _mark_runs(storage: Storage, now: float, *, max_age: float = RECENT_RUN_SECONDS) -> Roots:
    """Everything the run records younger than ``max_age`` keep alive (their ``roots``, in
    the format of :mod:`chanbatch.snapshot.roots`).

    Raises RootsDamaged for a damaged record: skipping it would collect what it keeps alive.
    """
    found: dict[str, set[str]] = {
        "snapshots": set(),
        "slices": set(),
        "objects": set(),
        "cache": set(),
    }
    young = [
        rel
        for rel, mtime, _size in storage.walk(layout.RUNS)
        if mtime >= now - max_age and rel.endswith(".json")
    ]
    read: set[str] = set()
    while young:  # and the records they repeat (roots.records), however old
        rel = young.pop()
        if rel in read:
            continue
        read.add(rel)
        roots = read_roots(storage, rel)
        if roots is None:
            continue  # removed since it was listed: a run that failed, or another gc
        found["snapshots"].update(roots.snapshots)
        found["slices"].update(roots.slices)
        found["objects"].update(roots.objects)
        found["cache"].update(roots.cache)
        young.extend(f"{layout.RUNS}/{run}.json" for run in roots.records)
    return Roots.of(**{name: sorted(ids) for name, ids in found.items()})


def _cache_roots(storage: Storage, rel: str) -> Roots:
    """What a cache entry or pack index keeps alive and answers for. A damaged one keeps none:
    it is a miss to every reader (chanbatch.cache), so its objects are not used through it."""
    try:
        roots = read_roots(storage, rel)
    except RootsDamaged:
        return Roots()
    return roots if roots is not None else Roots()
