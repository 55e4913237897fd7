"""Trace a damaged object to what it harms, and say how to heal it.

An object is named by its hash alone, so a verify that lists only ``objects/9d/363f...`` leaves
the user to find out which data that was. This module answers from the manifests and the ref
log: each dataset, version and slice that holds the object, the cache entries that point at
it, and the one command that brings it back:

- a slice frozen from a file: freeze that file again (a freeze hashes an object it finds
  already present, and rewrites a damaged one);
- a slice of a run's output: evict the stage's cache entries and run the blueprint again (the
  run recomputes the result and freezes it anew, which rewrites the object);
- a cached result: evict its entry (a run that needs it recomputes it, rewriting the object),
  after which nothing refers to the damaged copy;
- an object nothing refers to: gc removes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chanbatch.snapshot import layout
from chanbatch.snapshot.manifest import SliceManifest, SnapshotManifest
from chanbatch.snapshot.names import SliceKey, encode_key
from chanbatch.snapshot.refs import RefEntry

_GC = "`chanbatch gc` removes the damaged copy once it is older than gc's grace period"


@dataclass(slots=True)
class _Holding:
    """One slice of one dataset that holds an object, over every version that has it."""

    dataset: str
    key: SliceKey
    slice_id: str
    slice_by: str | None
    versions: list[RefEntry] = field(default_factory=list)


def trace(
    bad: Mapping[str, str],
    entries: Iterable[RefEntry],
    manifests: Mapping[str, SliceManifest | SnapshotManifest | None],
    cache: Mapping[str, list[dict[str, str]]] | None = None,
) -> list[dict[str, Any]]:
    """One record per damaged object and slice that holds it (or one per object that no slice
    holds), sorted by dataset, slice and object.

    ``bad`` maps an object id to its problem ("corrupt" or "missing"), ``entries`` are the
    ref-log entries to look in, ``manifests`` the parsed manifests by id (None or absent for
    one that cannot be read), and ``cache`` the cache entries (``{"key", "stage"}``) by the
    object they name.
    """
    cache = cache or {}
    holdings: dict[tuple[str, str, str], _Holding] = {}
    heads: dict[str, int] = {}
    for entry in sorted(entries, key=lambda e: (e.dataset, e.version)):
        heads[entry.dataset] = entry.version
        snap = manifests.get(entry.snapshot)
        if not isinstance(snap, SnapshotManifest):
            continue
        for item in snap.slices:
            piece = manifests.get(item.id)
            if not isinstance(piece, SliceManifest):
                continue
            for part in piece.parts:
                if part.object not in bad:
                    continue
                holding = holdings.setdefault(
                    (part.object, entry.dataset, item.id),
                    _Holding(entry.dataset, item.key, item.id, snap.slice_by),
                )
                if entry not in holding.versions:
                    holding.versions.append(entry)
    held = {oid for oid, _, _ in holdings}
    found = [
        _record(oid, bad[oid], h, heads[h.dataset], cache.get(oid, []))
        for (oid, _, _), h in holdings.items()
    ]
    found += [_unheld(oid, problem, cache.get(oid, [])) for oid, problem in bad.items()]
    found = [f for f in found if f["dataset"] is not None or f["object"] not in held]
    return sorted(found, key=lambda f: (f["dataset"] or "", str(f["slice"]), f["object"]))


def _record(
    oid: str, problem: str, holding: _Holding, head: int, cache: list[dict[str, str]]
) -> dict[str, Any]:
    newest = holding.versions[-1]
    origin = holding.versions[0]  # the version that brought the slice in wrote the object
    blueprint = origin.lineage.get("blueprint")
    stage = origin.lineage.get("stage")
    key = encode_key(holding.key)
    users = cache
    if blueprint and stage:
        heal = (
            f"run `chanbatch cache evict --stage {stage}`, then run blueprint {blueprint!r} "
            "again (the slice is that stage's output)"
        )
        cache = [c for c in cache if c.get("stage") != stage]  # evicted by that already
    elif holding.slice_by:
        heal = (
            f"freeze the source file that held slice {key} again: `chanbatch snapshot freeze "
            f"{holding.dataset} FILE --slice-by {holding.slice_by}`"
        )
    else:
        heal = (
            f"freeze the source file of slice {key} again: `chanbatch snapshot freeze "
            f"{holding.dataset} FILE --slice {key}`"
        )
    if cache:
        heal += "; and " + _evict_hint(cache)
    return {
        "object": oid,
        "problem": problem,
        "path": layout.object_path(oid),
        "dataset": holding.dataset,
        "version": newest.version,
        "versions": [e.version for e in holding.versions],
        "head": newest.version == head,
        "snapshot": newest.snapshot,
        "slice": key,
        "slice_id": holding.slice_id,
        "written_by": {"blueprint": blueprint, "stage": stage} if blueprint else origin.operation,
        "cache": users,
        "heal": heal,
    }


def _unheld(oid: str, problem: str, cache: list[dict[str, str]]) -> dict[str, Any]:
    if cache:
        heal = _evict_hint(cache)
    else:
        heal = (
            f"no snapshot or cache entry refers to it: {_GC}"
            if problem == "corrupt"
            else "nothing needs it any more"
        )
    return {
        "object": oid,
        "problem": problem,
        "path": layout.object_path(oid),
        "dataset": None,
        "version": None,
        "versions": [],
        "head": False,
        "snapshot": None,
        "slice": None,
        "slice_id": None,
        "written_by": None,
        "cache": cache,
        "heal": heal,
    }


def _evict_hint(cache: list[dict[str, str]]) -> str:
    stages = {c.get("stage") or "" for c in cache}
    if len(cache) > 8 and len(stages) == 1 and "" not in stages:  # a pack of one stage's results
        (stage,) = stages
        return (
            f"evict the {len(cache)} cache entries of stage {stage!r} that point at it: "
            f"`chanbatch cache evict --stage {stage}` (a run that needs them recomputes them); "
            f"then {_GC}"
        )
    keys = " ".join(c["key"][:12] for c in cache)
    if len(cache) == 1:
        what, it = "the cache entry that points at it", "it"
    else:
        what, it = f"the {len(cache)} cache entries that point at it", "them"
    return (
        f"evict {what}: `chanbatch cache evict {keys}` (a run that needs {it} recomputes {it}); "
        f"then {_GC}"
    )
