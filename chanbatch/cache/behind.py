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

A task with no Behind for its run (on a cluster's worker, or on a local disk, where a write
costs less than a thread hand-off) stores its result itself, at once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from chanbatch.cache.index import Staged
from chanbatch.snapshot.storage import Storage

#: writes in flight at once: each is a round trip, nearly all waiting
THREADS = 8

_OPEN: dict[str, Behind] = {}
_OPEN_LOCK = threading.Lock()


class Behind:
    """The results of one run still being stored."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="chanbatch-store")
        self._pending: list[Future[None]] = []
        self._lock = threading.Lock()

    def submit(self, storage: Storage, staged: Staged) -> None:
        """Store ``staged`` on a thread of this run."""
        future = self._pool.submit(staged.store, storage)
        with self._lock:
            self._pending.append(future)

    def wait(self) -> None:
        """Return once every result handed over is stored; raises the first write's error."""
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


@contextlib.contextmanager
def behind(run: str) -> Iterator[Behind]:
    """Store the results of ``run``'s tasks in this process behind them, until the block
    ends; then wait for every write (its first error is raised, unless the block raised)."""
    opened = Behind()
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
