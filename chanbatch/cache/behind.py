"""Storing a run's results behind it, on threads, on an object store.

On S3 every write is a round trip of 10 to 50 ms, and a result is two (its object, then its
entry or pack index). A task that waited for them would hold up the tasks that read its result,
so along a combine tree's path a new slice would wait for every level's writes in turn. Yet
everything a reader needs of a result is known before it is stored (its rows are in memory, and
its id is the hash of bytes already encoded: :class:`~chanbatch.cache.index.Staged`).

So a run in this process (the local executor) opens a :class:`Behind` for its run id; the
tasks of that run hand their encoded results to it (:func:`store`), and go on. Each result's
writes stay in order (object first), on one of a few threads. The run waits for all of them
(:meth:`Behind.wait`) before it freezes its outputs or records anything: a result its memo or
record names is stored. A write that fails fails the run, as it would have in the task; a run
that is killed loses only writes still in flight, as it would lose the tasks still running.

Small partials and combines that tasks stored alone (the combines on a new slice's path, one per
level of the tree) are held instead, and stored together when the run waits: one pack, an
object and an index, per stage and kind, where each alone was an object and an entry. A packed
result is known by its content id wherever it is stored, so no key changes; the run records
which pack each went into (:attr:`Behind.packed`), for the next plan to look there.

A task with no Behind for its run (on a cluster's worker, or on a local disk, where a write
costs less than a thread hand-off) stores its result itself, at once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from chanbatch.cache.index import Staged
from chanbatch.cache.packs import stage_pack
from chanbatch.snapshot.storage import Storage

#: writes in flight at once: each is a round trip, nearly all waiting
THREADS = 8

_OPEN: dict[str, Behind] = {}
_OPEN_LOCK = threading.Lock()


class Behind:
    """The results of one run still being stored."""

    def __init__(self, listed: frozenset[str] | None = None) -> None:
        #: the keys with an entry file when the run's plan listed the cache (None: unknown)
        self.listed = listed
        self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="chanbatch-store")
        self._pending: list[Future[None]] = []
        self._held: list[tuple[Storage, Staged]] = []
        self._objects: dict[tuple[str, str], Future[None]] = {}  # (store, object) -> its write
        self._lock = threading.Lock()
        #: key -> the pack a held result was stored in, with others
        self.packed: dict[str, str] = {}

    def submit(self, storage: Storage, staged: Staged) -> None:
        """Store ``staged`` on a thread of this run; a packed result alone is held, to be packed
        with the others when the run waits."""
        with self._lock:
            if staged.index is None and staged.table is not None:
                self._held.append((storage, staged))
                return
            self._send(storage, staged)

    def _send(self, storage: Storage, staged: Staged) -> None:
        """Store ``staged`` on a thread (the lock held). Two results of equal rows share one
        object: the second writes only its entry, once the first has written the object."""
        shared = (storage.url, staged.entries[0].object)
        first = self._objects.get(shared)
        if first is None:
            future = self._objects[shared] = self._pool.submit(staged.store, storage)
        else:  # submitted after ``first``: that one is running or done (no thread waits idle)
            future = self._pool.submit(_after, first, staged, storage)
        self._pending.append(future)

    def wait(self) -> None:
        """Return once every result handed over is stored; raises the first write's error."""
        with self._lock:
            held, self._held = self._held, []
        for storage, staged in _packed_together(held):
            if staged.index is not None:
                self.packed.update((e.key, e.pack) for e in staged.entries)
            with self._lock:
                self._send(storage, staged)
        with self._lock:
            pending, self._pending = self._pending, []
        first: BaseException | None = None
        for future in pending:
            error = future.exception()
            if error is not None and first is None:
                first = error
        if first is not None:
            raise first

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _after(first: Future[None], staged: Staged, storage: Storage) -> None:
    first.result()  # its error is the run's
    staged.store(storage, with_object=False)


def _packed_together(held: list[tuple[Storage, Staged]]) -> list[tuple[Storage, Staged]]:
    """The held results, those of one store, kind, stage and schema packed together (in the
    order they came), each alone where nothing else is like it."""
    groups: dict[tuple[str, str, str, Any], list[tuple[Storage, Staged]]] = {}
    for storage, staged in held:
        entry = staged.entries[0]
        like = (storage.url, entry.kind, entry.stage, staged.table.schema)
        groups.setdefault(like, []).append((storage, staged))
    out = []
    for group in groups.values():
        if len(group) == 1:
            out.append(group[0])
            continue
        import pyarrow as pa

        first = group[0][1].entries[0]
        whole = pa.concat_tables([staged.table for _, staged in group]).combine_chunks()
        members = [(staged.entries[0].key, staged.table.num_rows) for _, staged in group]
        contents = [staged.entries[0].content for _, staged in group]
        packed = stage_pack(whole, members, kind=first.kind, stage=first.stage, contents=contents)
        out.append((group[0][0], packed))
    return out


@contextlib.contextmanager
def behind(run: str, listed: frozenset[str] | None = None) -> Iterator[Behind]:
    """Store the results of ``run``'s tasks in this process behind them, until the block
    ends; then wait for every write (its first error is raised, unless the block raised).
    ``listed``: the keys that had an entry file when the run's plan listed the cache."""
    opened = Behind(listed)
    with _OPEN_LOCK:
        _OPEN[run] = opened
    try:
        yield opened
        opened.wait()
    finally:
        with _OPEN_LOCK:
            _OPEN.pop(run, None)
        with contextlib.suppress(BaseException):  # the block's own error is the one to see
            opened.wait()
        opened.close()


def store(storage: Storage, staged: Staged, run: str) -> None:
    """Store ``staged``: behind ``run`` when it stores behind in this process, else now."""
    opened = _OPEN.get(run) if run else None
    if opened is None:
        staged.store(storage)
    else:
        opened.submit(storage, staged)


def may_have_entry(run: str, key: str) -> bool:
    """Whether ``key`` may have an entry file of its own, for an early cutoff's look: False
    only for a run storing behind in this process whose plan listed the cache without it.
    (An entry written since, by another process, is missed: its result is computed again.)"""
    opened = _OPEN.get(run) if run else None
    return opened is None or opened.listed is None or key in opened.listed
