"""What planning asks the cache, answered with as few reads as possible."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from chanbatch.cache.index import CacheEntry, lookup, read_memo
from chanbatch.cache.packs import read_packs
from chanbatch.errors import IntegrityError
from chanbatch.snapshot import layout
from chanbatch.snapshot.objects import get_object
from chanbatch.snapshot.storage import Storage

log = logging.getLogger(__name__)


class CacheView:
    """The cache as one plan sees it.

    A plan asks about every stored task: tens of thousands for a big input. The cache folder is
    listed once, so a key without an entry costs no read; the blueprint's memo (see
    :func:`~chanbatch.cache.index.read_memo`) answers most of the rest without opening their
    entries; the pack indexes are read once, when a key has no entry file of its own; and an
    object that many packed results share is verified once.
    """

    def __init__(self, storage: Storage, blueprint: str) -> None:
        self.storage = storage
        self.memo = read_memo(storage, blueprint)
        self._present: set[str] | None = None
        self._packed: Mapping[str, CacheEntry] | None = None
        self._verified: dict[str, bool] = {}
        self._chained: dict[str, str] = {}  # see remember

    def remember(self, chains: Mapping[str, Mapping[str, list[str]]]) -> None:
        """Take the contents of the partials a chain memo names (its records are [partial
        key, content id, ...]) as the memo would: the memo leaves them to it."""
        self._chained = {
            r[0]: r[1] for records in chains.values() for r in records.values() if len(r) > 1
        }

    @property
    def packed(self) -> Mapping[str, CacheEntry]:
        """Key -> entry of every packed result, as the pack indexes were when first asked."""
        if self._packed is None:
            self._packed = read_packs(self.storage)
        return self._packed

    def has_entry(self, key: str) -> bool:
        """Whether ``key`` had an entry when the cache was listed (first call)."""
        if self._present is None:
            self._present = {
                name[:-5] for name in self.storage.listdir(layout.CACHE) if name.endswith(".json")
            }
        return key in self._present or key in self.packed

    def lookup(self, key: str, *, verify: bool = False) -> CacheEntry | None:
        """:func:`~chanbatch.cache.index.lookup`, packed results included, each object verified
        once however many results it holds. The pack indexes are read only for a key without
        an entry file of its own."""
        entry = self._entry(key)
        if entry is None:
            return None
        good = self._verified.get(entry.object)
        if good is None:
            if not verify:
                return entry if self.storage.exists(layout.object_path(entry.object)) else None
            try:
                get_object(self.storage, entry.object)
                good = True
            except IntegrityError:
                log.warning("cache entry %s has a missing or corrupt object; recomputing", key[:12])
                good = False
            self._verified[entry.object] = good
        return entry if good else None

    def content_of(self, key: str) -> str | None:
        """What the tasks that read ``key``'s result hash it as (its object id, or a packed
        result's content id), or None when it has no entry."""
        known = self.memo.get(key) or self._chained.get(key)
        if known is not None:
            return known
        if not self.has_entry(key):
            return None
        entry = self._entry(key)
        return entry.ident if entry is not None else None

    def _entry(self, key: str) -> CacheEntry | None:
        """``key``'s entry, its object unchecked: its own file, else a pack's index."""
        entry = lookup(self.storage, key, check_object=False)
        return entry if entry is not None else self.packed.get(key)
