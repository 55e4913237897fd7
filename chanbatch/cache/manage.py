"""Listing, sizing and evicting cache entries (``chanbatch cache ls|du|evict``).

Evicting removes entries only; the objects they named stay until ``gc`` finds nothing else uses
them, because the same object may hold a frozen slice or another entry's equal result. A packed
result (:mod:`chanbatch.cache.packs`) is listed and evicted like any entry: evicting it rewrites
its pack's index without it.
"""

from __future__ import annotations

from collections.abc import Iterable

from chanbatch.cache.index import CacheEntry, entry_path, lookup
from chanbatch.cache.packs import list_packs, pack_path
from chanbatch.snapshot import layout
from chanbatch.snapshot.storage import Storage


def list_entries(storage: Storage, *, stage: str | None = None) -> list[CacheEntry]:
    """Every readable cache entry, packed results included (optionally of one stage), oldest
    first."""
    entries = _own_entries(storage)
    for _rel, pack in list_packs(storage):
        if storage.exists(layout.object_path(pack.object)):
            entries.extend(pack.members)
    if stage is not None:
        entries = [e for e in entries if e.stage == stage]
    return sorted(entries, key=lambda e: (e.created_at, e.key))


def _own_entries(storage: Storage) -> list[CacheEntry]:
    """The readable entries that have a file of their own (``cache/<key>.json``)."""
    entries = []
    for rel, _mtime, _size in storage.walk(layout.CACHE):
        name = rel.rsplit("/", 1)[-1]
        if not name.endswith(".json") or rel.startswith(layout.PACKS + "/"):
            continue
        entry = lookup(storage, name.removesuffix(".json"))
        if entry is not None:
            entries.append(entry)
    return entries


def usage(storage: Storage) -> dict[str, object]:
    """Entry count and bytes, in total and per stage; shared objects are counted once."""
    entries = list_entries(storage)
    seen: dict[tuple[str, tuple[int, int] | None], int] = {}
    stages: dict[str, dict[str, int]] = {}
    for e in entries:
        seen.setdefault((e.object, e.range), e.bytes)  # a pack's members: a share each
        s = stages.setdefault(e.stage or "?", {"entries": 0, "bytes": 0})
        s["entries"] += 1
        s["bytes"] += e.bytes
    return {"entries": len(entries), "bytes": sum(seen.values()), "stages": stages}


def evict(
    storage: Storage,
    *,
    prefixes: Iterable[str] = (),
    stage: str | None = None,
    everything: bool = False,
) -> list[str]:
    """Remove the entries whose key starts with one of ``prefixes``, or of ``stage``, or all.

    Returns the evicted keys. The next run recomputes them.
    """
    wanted = [p.lower() for p in prefixes]

    def chosen(entry: CacheEntry) -> bool:
        return (
            everything
            or (stage is not None and entry.stage == stage)
            or any(entry.key.startswith(p) for p in wanted)
        )

    evicted = []
    for entry in _own_entries(storage):
        if chosen(entry):
            storage.delete(entry_path(entry.key))
            evicted.append(entry.key)
    for _rel, pack in list_packs(storage):
        gone = {m.key for m in pack.members if chosen(m)}
        if not gone:
            continue
        rest = pack.without(gone)
        if rest is None:
            storage.delete(pack_path(pack.name))
        else:
            rest.write(storage)
        evicted.extend(sorted(gone))
    return evicted
