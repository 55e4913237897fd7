"""Verify: re-hash objects and manifests, check every sealed file, and that every reference
resolves.

Objects and manifests are named by their hash. Ref-log entries, cache entries, memos and run
records carry a checksum of their contents (:func:`chanbatch.hashing.seal`); pins are checked to
parse. Each of those must also hold what its file name says, so a file copied over another is
found too. Every bad file is reported by its path in the store: nothing damaged goes unnamed.

Cache entries, memos and run records are written by the floors above; verify reads of them
only their ``roots`` member, in this layer's format (:mod:`chanbatch.snapshot.roots`): the name
each belongs at, the objects a cache entry holds and its stage, the dataset versions a run
record names. Documents written before they stated those are read through the one fallback in
that module.

Objects are hashed in parallel (blake3 releases the GIL, and local files are memory-mapped), so
verification runs at disk speed rather than at one core's hashing speed.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from chanbatch.errors import ChanbatchError
from chanbatch.hashing import digest, digest_file
from chanbatch.snapshot import continuity, layout, refs, roots
from chanbatch.snapshot.manifest import SliceManifest, SnapshotManifest, parse_manifest
from chanbatch.snapshot.storage import Storage
from chanbatch.snapshot.trace import trace

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
    paths: dict[str, str] = field(default_factory=dict)  # id -> path, for what is named by id
    # each damaged object with the dataset, version and slice that hold it (chanbatch.snapshot
    # .trace), and how to heal it
    damaged: list[dict[str, Any]] = field(default_factory=list)
    # ref files found missing: gaps in a log, and versions run records or pins still name
    # (chanbatch.snapshot.continuity)
    ref_log: list[dict[str, Any]] = field(default_factory=list)

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
            "damaged": self.damaged,
            "ref_log": self.ref_log,
            "files": self.files(),
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
        }

    def files(self) -> list[dict[str, str]]:
        """Every corrupt or missing file: its path in the store, what is wrong with it, and its
        id (objects and manifests) or path again (files not named by their hash)."""
        found = [
            {"path": self.paths.get(ident, ident), "problem": problem, "id": ident}
            for problem, idents in (("corrupt", self.corrupt), ("missing", self.missing))
            for ident in idents
        ]
        return sorted(found, key=lambda f: f["path"])

    def continuity(self, found: list[dict[str, Any]]) -> None:
        """Record ref-log problems (:func:`chanbatch.snapshot.continuity.check`)."""
        self.ref_log = found
        for message in dict.fromkeys(p["message"] for p in found):
            self.problems.append(message)

    def bad_objects(self) -> dict[str, str]:
        """Object id -> "corrupt" or "missing", for every damaged object (not other files)."""
        return {
            ident: problem
            for problem, idents in (("corrupt", self.corrupt), ("missing", self.missing))
            for ident in idents
            if self.paths.get(ident, "").startswith(layout.OBJECTS + "/")
        }

    def bad(self, kind: str, ident: str, path: str) -> None:
        """Record ``ident`` (stored at ``path``) as ``kind``: "corrupt" or "missing"."""
        listed = self.corrupt if kind == "corrupt" else self.missing
        if ident not in listed:
            listed.append(ident)
        self.paths[ident] = path


def verify(storage: Storage, resolved: refs.Resolved | None = None) -> VerifyReport:
    """Re-hash everything in the store, or only what one resolved REF needs."""
    started = time.perf_counter()
    report = VerifyReport()
    if resolved is None:
        _verify_all(storage, report)
    else:
        manifests: dict[str, SliceManifest | SnapshotManifest | None] = {}
        _verify_snapshot(
            storage,
            resolved.entry.snapshot,
            report,
            checked_ids=set(),
            key=resolved.slice_key,
            manifests=manifests,
        )
        report.damaged = trace(report.bad_objects(), [resolved.entry], manifests)
        # the REF's own log for gaps, and the run records and pins that name its dataset (a
        # deleted head shows only there)
        entries = []
        for version in refs.versions(storage, resolved.dataset):
            try:
                entries.append(refs.read_entry(storage, resolved.dataset, version))
            except ChanbatchError:
                continue  # the whole-store verify reports it
        report.continuity(
            continuity.check(
                storage,
                entries,
                {resolved.dataset: refs.versions(storage, resolved.dataset)},
                only=resolved.dataset,
            )
        )
    report.seconds = time.perf_counter() - started
    _distrust_damaged(storage, report)
    return report


def verify_snapshot(storage: Storage, sid: str) -> VerifyReport:
    """Re-hash one snapshot (by id) and everything it names."""
    started = time.perf_counter()
    report = VerifyReport()
    _verify_snapshot(storage, sid, report, checked_ids=set())
    report.seconds = time.perf_counter() - started
    _distrust_damaged(storage, report)
    return report


def _distrust_damaged(storage: Storage, report: VerifyReport) -> None:
    """What was found damaged is checked by this process's next write of it, even if this
    process made it (:meth:`Storage.made_here`)."""
    for ident in (*report.corrupt, *report.missing):
        path = report.paths.get(ident)
        if path:
            storage.distrust(path)


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
            report.bad("corrupt", mid, rel)
    present = {oid for oid, _ in objects}
    corrupt = set(report.corrupt)
    entries: list[refs.RefEntry] = []
    versions: dict[str, list[int]] = {}
    for dataset in refs.list_datasets(storage):
        versions[dataset] = refs.versions(storage, dataset)
        for version in versions[dataset]:
            try:
                entry = refs.read_entry(storage, dataset, version)
            except ChanbatchError:
                rel = layout.ref_path(dataset, version)
                report.bad("corrupt", rel, rel)
                continue
            entries.append(entry)
            _check_reachable(entry.snapshot, manifests, present, corrupt, report)
    users = _check_cache(storage, present, report)
    for top in (layout.MEMO, layout.RUNS, layout.PINS):
        _check_documents(storage, top, report)
    report.damaged = trace(report.bad_objects(), entries, manifests, users)
    report.continuity(continuity.check(storage, entries, versions))


def _check_cache(
    storage: Storage, present: set[str], report: VerifyReport
) -> dict[str, list[dict[str, str]]]:
    """Each cache entry is sealed, is stored under its own name (its key), and its objects
    exist; returns the entries (``{"key", "stage"}``) by the object they name. What an entry
    names is read from its roots (:mod:`chanbatch.snapshot.roots`).

    A bad entry costs only a recomputation (the run takes it for a miss), but verify still
    names it, so that damage to the store's disk does not go unseen.
    """
    users: dict[str, list[dict[str, str]]] = {}
    for rel, _mtime, size in storage.walk(layout.CACHE):
        key = rel.rsplit("/", 1)[-1].removesuffix(".json")
        report.checked += 1
        report.bytes += size
        try:
            stated = roots.read_document(storage, rel)
            if stated is None:  # evicted while we looked
                continue
            if stated.name != key:
                raise ValueError("it holds another key's entry")
        except ValueError:
            report.bad("corrupt", rel, rel)
            continue
        for oid in stated.objects:
            # a pack's index points at its object for every key it answers for
            users.setdefault(oid, []).extend(
                {"key": answer, "stage": stated.stage or ""} for answer in stated.answers or (key,)
            )
            if oid not in present:
                report.bad("missing", oid, layout.object_path(oid))
    return users


def _check_documents(storage: Storage, top: str, report: VerifyReport) -> None:
    """Each memo, run record and pin reads back whole, sealed ones match their checksum, and
    each is stored under the name it states (so a file copied over another is found too):
    memos and run records state it in their roots (:mod:`chanbatch.snapshot.roots`), a pin is
    named by its snapshot."""
    for rel, _mtime, size in storage.walk(top):
        report.checked += 1
        report.bytes += size
        stem = rel.rsplit("/", 1)[-1].removesuffix(".json")
        try:
            if top == layout.PINS:
                doc = json.loads(storage.read_bytes(rel))
                named = doc.get("snapshot", stem) if isinstance(doc, dict) else None
            else:
                stated = roots.read_document(storage, rel)
                if stated is None:
                    continue
                named = stated.name
            if named != stem:
                raise ValueError(f"it belongs at {named}")
        except FileNotFoundError:
            continue
        except (ValueError, KeyError, TypeError):
            report.bad("corrupt", rel, rel)


def _check_reachable(
    sid: str,
    manifests: dict[str, SliceManifest | SnapshotManifest],
    present: set[str],
    corrupt: set[str],
    report: VerifyReport,
) -> None:
    snap = manifests.get(sid)
    if snap is None:
        if sid not in corrupt:
            report.bad("missing", sid, layout.manifest_path(sid))
        return
    if not isinstance(snap, SnapshotManifest):
        report.problems.append(f"ref points at {sid[:12]}, which is not a snapshot")
        return
    for entry in snap.slices:
        manifest = manifests.get(entry.id)
        if manifest is None:
            if entry.id not in corrupt:
                report.bad("missing", entry.id, layout.manifest_path(entry.id))
            continue
        if isinstance(manifest, SliceManifest):
            for part in manifest.parts:
                if part.object not in present:
                    report.bad("missing", part.object, layout.object_path(part.object))


def _verify_snapshot(
    storage: Storage,
    sid: str,
    report: VerifyReport,
    checked_ids: set[str],
    key: object = None,
    manifests: dict[str, SliceManifest | SnapshotManifest | None] | None = None,
) -> None:
    """Re-hash snapshot ``sid`` (or its slice ``key``): its manifests and objects. The
    manifests read are added to ``manifests``."""
    manifests = {} if manifests is None else manifests
    snap = manifests[sid] = _load_manifest(storage, sid, report)
    if not isinstance(snap, SnapshotManifest):
        return
    objects: list[tuple[str, str]] = []
    for entry in snap.slices:
        if key is not None and entry.key != key:
            continue
        manifest = manifests[entry.id] = _load_manifest(storage, entry.id, report)
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
    rel = layout.manifest_path(mid)
    try:
        data = storage.read_bytes(rel)
    except FileNotFoundError:
        report.bad("missing", mid, rel)
        return None
    report.checked += 1
    report.bytes += len(data)
    try:
        return parse_manifest(data, mid)
    except ChanbatchError:
        report.bad("corrupt", mid, rel)
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
                report.bad("missing", oid, layout.object_path(oid))
                continue
            report.checked += 1
            report.bytes += size
            if found != oid:
                report.bad("corrupt", oid, layout.object_path(oid))
