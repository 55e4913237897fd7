"""What planning asks the cache, answered with as few reads as possible."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence

from chanbatch.cache.index import CacheEntry, keep_verified, lookup, read_memo_hints
from chanbatch.cache.packs import PACKED_KINDS, pack_path, read_pack, read_packs
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
    entries; a key without an entry file of its own is looked for in the pack the memo says
    holds it (its *hint*), and only then in every pack index, read once; and an object that
    many packed results share is verified once.
    """

    def __init__(self, storage: Storage, blueprint: str) -> None:
        self.storage = storage
        self.memo, self.hints = read_memo_hints(storage, blueprint)
        self._present: set[str] | None = None
        self._packed: Mapping[str, CacheEntry] | None = None
        self._hinted: dict[str, dict[str, CacheEntry]] = {}  # pack name -> its members
        self._verified: dict[str, bool] = {}
        self._chained: dict[str, str] = {}  # see remember
        self._fetched: dict[str, CacheEntry | None] = {}  # see prefetch
        self._packs_lock = threading.Lock()

    def remember(self, chains: Mapping[str, Mapping[str, list[str]]]) -> None:
        """Take the contents of the partials a chain memo names (its records are [partial
        key, content id, pack, ...]) as the memo would: the memo leaves them to it."""
        chained, hints = {}, {}
        for records in chains.values():
            for record in records.values():
                if len(record) > 2:
                    chained[record[0]] = record[1]
                    if record[2]:
                        hints[record[0]] = record[2]
        self._chained = chained
        self.hints = {**hints, **self.hints}

    @property
    def packed(self) -> Mapping[str, CacheEntry]:
        """Key -> entry of every packed result, as the pack indexes were when first asked."""
        if self._packed is None:
            with self._packs_lock:  # prefetch's threads would each read every index
                if self._packed is None:
                    self._packed = read_packs(self.storage)
        return self._packed

    def has_entry(self, key: str, kind: str = "") -> bool:
        """Whether ``key`` had an entry when the cache was listed (first call). A task of a
        ``kind`` that is never packed (a kept checkpoint of an apply) is not looked for in
        the packs."""
        if key in self._listed():
            return True
        if kind and kind not in PACKED_KINDS:
            return False
        return self._in_hinted_pack(key) is not None or key in self.packed

    def may_have(self, key: str) -> bool:
        """Whether ``key`` had an entry file when the cache was listed, or the memo names the
        pack that holds it: what :meth:`has_entry` would read a pack index to confirm."""
        if key in self._listed() or key in self.hints:
            return True
        return self._packed is not None and key in self._packed

    @property
    def listed(self) -> frozenset[str] | None:
        """The keys that had an entry file of their own when planning listed the cache; None
        when it did not."""
        return frozenset(self._present) if self._present is not None else None

    def _listed(self) -> set[str]:
        """The keys of the entry files in ``cache/``, listed once."""
        if self._present is None:
            self._present = {
                name[:-5] for name in self.storage.listdir(layout.CACHE) if name.endswith(".json")
            }
        return self._present

    def _in_hinted_pack(self, key: str) -> CacheEntry | None:
        """``key``'s entry in the pack its hint names, that one index read (once) alone; None
        without a hint, or when that pack is gone or does not hold it (then every pack index
        is read)."""
        name = self.hints.get(key)
        if name is None or self._packed is not None:
            return None
        members = self._hinted.get(name)
        if members is None:
            members = self._hinted[name] = self._members(name)
        return members.get(key)

    def _members(self, name: str) -> dict[str, CacheEntry]:
        """Key -> entry of pack ``name``'s members (none when it is gone or damaged)."""
        pack = read_pack(self.storage, pack_path(name))
        return {m.key: m for m in pack.members} if pack is not None else {}

    def prefetch(self, keys: Sequence[str]) -> None:
        """Look up and verify ``keys`` (a computed task's cached inputs, each asked for next)
        on threads, for :meth:`lookup` with ``verify`` to answer. On an object store each is
        a request or two (its entry or pack index, its object), which a plan would otherwise
        send one after another: on the path of a new slice, a combine's siblings at every
        level. Each pack index and each object is still read once. A local store is read one
        key at a time, as before (a read there costs less than a thread)."""
        todo = [k for k in dict.fromkeys(keys) if k not in self._fetched and self.may_have(k)]
        if self.storage.is_local or len(todo) < 2:
            return
        from concurrent.futures import ThreadPoolExecutor

        listed = self._listed()  # listed once, here, not by each thread
        packs = list(
            {self.hints[k] for k in todo if k not in listed and k in self.hints}
            - self._hinted.keys()
        )
        with ThreadPoolExecutor(min(8, len(todo))) as pool:
            if self._packed is None:
                self._hinted.update(zip(packs, pool.map(self._members, packs), strict=True))
            entries = dict(zip(todo, pool.map(self._entry, todo), strict=True))
            objects = {
                e.object: e.object_bytes
                for e in entries.values()
                if e is not None and e.object not in self._verified
            }
            checked = pool.map(self._verify, objects, objects.values())
            self._verified.update(zip(objects, checked, strict=True))
        for key, entry in entries.items():
            self._fetched[key] = (
                entry if entry is not None and self._verified[entry.object] else None
            )

    def lookup(self, key: str, *, verify: bool = False) -> CacheEntry | None:
        """:func:`~chanbatch.cache.index.lookup`, packed results included, each object verified
        once however many results it holds. The pack indexes are read only for a key without
        an entry file of its own."""
        if verify and key in self._fetched:
            return self._fetched.pop(key)
        entry = self._entry(key)
        if entry is None:
            return None
        good = self._verified.get(entry.object)
        if good is None:
            if not verify:
                return entry if self.storage.exists(layout.object_path(entry.object)) else None
            good = self._verified[entry.object] = self._verify(entry.object, entry.object_bytes)
        return entry if good else None

    def _verify(self, oid: str, size: int | None) -> bool:
        """Whether object ``oid`` is there and hashes to its id."""
        try:
            data = get_object(self.storage, oid, size)
        except IntegrityError:
            log.warning("cached object %s is missing or corrupt; recomputing", oid[:12])
            return False
        keep_verified(self.storage, oid, data)  # for the task that reads it next
        return True

    def content_of(self, key: str, *, every_pack: bool = True) -> str | None:
        """What the tasks that read ``key``'s result hash it as (its object id, or a packed
        result's content id), or None when it has no entry; without ``every_pack``, None also
        when only reading every pack index would find it."""
        known = self.memo.get(key) or self._chained.get(key)
        if known is not None:
            return known
        if not every_pack:
            if key not in self._listed() and self._in_hinted_pack(key) is None:
                return None
        elif not self.has_entry(key):
            return None
        entry = self._entry(key)
        return entry.ident if entry is not None else None

    def _entry(self, key: str) -> CacheEntry | None:
        """``key``'s entry, its object unchecked: its own file, else a pack's index."""
        if self._present is None or key in self._present:
            entry = lookup(self.storage, key, check_object=False)
            if entry is not None:
                return entry
        hinted = self._in_hinted_pack(key)
        return hinted if hinted is not None else self.packed.get(key)
