"""Where a run's graph executes: an :class:`Executor`, chosen once from the ``scheduler``
argument by :func:`choose_executor`.

- ``threads`` (or None) and ``sync``: a pool of threads, or this thread, in this process
  (:mod:`chanbatch.run.local`; dask is not imported);
- ``processes``: a local distributed cluster, one single-threaded worker process per core;
- an address such as ``tcp://host:8786``: the cluster whose scheduler listens there;
- a ``distributed.Client``: its cluster (any other object is refused when the run computes).

Choosing imports neither dask nor distributed, so a fully cached run stays fast.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from chanbatch.errors import UsageError
from chanbatch.run.schedulers import check_scheduler, connect

if TYPE_CHECKING:
    from chanbatch.cache.runs import TaskOutcome
    from chanbatch.compile.plan import Plan
    from chanbatch.engine.batch import Fusion
    from chanbatch.snapshot.storage import Storage

# the logger that users' filters and ``-v`` output have always named
log = logging.getLogger("chanbatch.run.runner")

Executed = tuple[dict[str, Any], list["TaskOutcome"]]


class Progress(Protocol):
    """What a run tells a progress display: the tasks each stage will run (stages in flow
    order, each after the stages it reads), then each one as it finishes (``computed``, or
    ``cutoff`` when found in the cache after all), and notes such as the dashboard's address."""

    def begin(self, totals: dict[str, int]) -> None: ...

    def advance(self, stage: str, outcome: str) -> None: ...

    def message(self, text: str) -> None: ...


class Executor(Protocol):
    """Runs a graph; returns the targets' results and what every computed task reported."""

    #: how the run record names it
    name: str

    def worker_url(self, storage: Storage) -> str: ...

    def execute(
        self,
        plan: Plan,
        graph: dict[str, Any],
        targets: list[str],
        run_id: str,
        progress: Progress | None,
        fusion: Fusion | None = None,
        *,
        listed: frozenset[str] | None = None,
    ) -> Executed:
        """Run ``graph`` for ``targets``, fusing its per-slice chains with ``fusion`` (see
        :mod:`chanbatch.engine.batch`) unless it is None. ``listed``: the keys that had an
        entry file when planning listed the cache, if it did."""
        ...


def choose_executor(
    scheduler: Any, *, workers: int | None = None, pin_cpus: bool = False
) -> Executor:
    """The executor for ``scheduler`` (see the module docstring).

    Raises UsageError for a name that is none of them, with the closest one.
    """
    check_scheduler(scheduler)
    name = scheduler if isinstance(scheduler, str) else type(scheduler).__name__
    if scheduler in ("threads", "sync", None):
        return LocalExecutor(name=name, sync=scheduler == "sync", workers=workers, pin=pin_cpus)
    if scheduler == "processes":
        return ClusterExecutor(name=name, workers=workers, pin=pin_cpus)
    return ClusterExecutor(name=name, workers=workers, pin=pin_cpus, target=scheduler)


def _computing(graph: dict[str, Any]) -> set[str]:
    from chanbatch.engine.batch import reporting

    # read from our tuples: dask hands callbacks its own Task objects, not subscriptable
    return reporting(graph)


@dataclass(slots=True, kw_only=True)
class LocalExecutor:
    """A pool of threads (or this thread alone, ``sync``), in this process."""

    name: str
    sync: bool
    workers: int | None
    pin: bool
    #: the store is not on a local disk: its results are stored behind the tasks
    #: (:mod:`chanbatch.cache.behind`), a write being a round trip there
    remote: bool = False

    def worker_url(self, storage: Storage) -> str:
        from chanbatch.snapshot.options import remember

        url = storage.root if storage.is_local else storage.url
        remember(url, storage.options)  # the tasks, in this process, open it as this run does
        self.remote = not storage.is_local
        return url

    def execute(
        self,
        plan: Plan,
        graph: dict[str, Any],
        targets: list[str],
        run_id: str,
        progress: Progress | None,
        fusion: Fusion | None = None,
        *,
        listed: frozenset[str] | None = None,
    ) -> Executed:
        from chanbatch.cache.behind import behind
        from chanbatch.engine.batch import Batch, member
        from chanbatch.engine.graph import Part, take_ledger
        from chanbatch.run.local import run_graph

        if self.pin:
            log.warning("--pin-cpus pins worker processes; with %s it does nothing", self.name)
        workers = 1 if self.sync else self.workers or os.cpu_count() or 1
        if fusion is not None:
            fusion.apply(graph, plan)
        computing = _computing(graph)

        def done(key: str, result: Any) -> None:
            if progress is None:
                return
            if isinstance(result, Batch):
                for task, part in result.parts.items():
                    progress.advance(plan.tasks[task].stage, part.outcome)
            elif isinstance(result, Part) and key in computing and graph[key][0] is not member:
                progress.advance(plan.tasks[key].stage, result.outcome)

        stored = behind(run_id, listed) if self.remote else contextlib.nullcontext()
        try:
            with stored as writes:
                results = run_graph(graph, targets, workers=workers, done=done)
        finally:
            ledger = take_ledger(run_id)
        if writes is not None and writes.packed:  # results packed together as they were stored
            packed = writes.packed
            ledger = [replace(o, pack=packed[o.key]) if o.key in packed else o for o in ledger]
        return dict(zip(targets, results, strict=True)), ledger


@dataclass(slots=True, kw_only=True)
class ClusterExecutor:
    """A distributed cluster: a local one of worker processes (no ``target``), the one whose
    scheduler listens at an address, or a Client's."""

    name: str
    workers: int | None
    pin: bool
    target: Any = None
    #: the store's URL for workers and its storage options, once worker_url has been asked
    store: tuple[str, dict[str, Any]] | None = None

    def worker_url(self, storage: Storage) -> str:
        """The store's URL as workers must see it: a local path made absolute (a worker may run
        in another directory); a ``memory://`` store is refused, workers cannot see it. Its
        storage options go to every worker when the run starts."""
        if storage.is_local:
            return storage.root
        if storage.url.startswith("memory:"):
            raise UsageError(
                f"store {storage.url} lives in this process's memory; workers in other "
                "processes cannot read it",
                hint="use --scheduler threads, or a store on disk",
            )
        self.store = (storage.url, dict(storage.options))
        return storage.url

    def execute(
        self,
        plan: Plan,
        graph: dict[str, Any],
        targets: list[str],
        run_id: str,
        progress: Progress | None,
        fusion: Fusion | None = None,
        *,
        listed: frozenset[str] | None = None,
    ) -> Executed:
        from chanbatch.run import cluster as clusters

        expected = _computing(graph)

        def on_report(entry: TaskOutcome) -> None:
            if progress is not None and entry.dask_key in expected:
                progress.advance(entry.stage, entry.outcome)

        with self._client() as client:
            if self.store is not None:
                clusters.share_store(client, *self.store)
            if progress is not None:
                link = _dashboard(client)
                if link:
                    progress.message(f"dashboard: {link}")
            with clusters.pinned(client) if self.pin else contextlib.nullcontext():
                results, ledger = clusters.run_graph(
                    client, plan, graph, targets, expected, on_report=on_report, fusion=fusion
                )
        return dict(zip(targets, results, strict=True)), ledger

    @contextlib.contextmanager
    def _client(self) -> Iterator[Any]:
        from distributed import Client, LocalCluster

        if isinstance(self.target, Client):
            yield self.target
        elif self.target is None:
            nanny = logging.getLogger("distributed.nanny")
            with contextlib.ExitStack() as stack:
                stack.callback(nanny.setLevel, nanny.level)  # restored last
                local = stack.enter_context(
                    LocalCluster(
                        n_workers=self.workers or os.cpu_count() or 1,
                        threads_per_worker=1,
                        processes=True,
                        # a free port: the default (8787) warns when another cluster holds it
                        dashboard_address=":0",
                        # workers log a task's failure with its traceback; the run reports it
                        silence_logs=logging.CRITICAL
                        if not log.isEnabledFor(logging.DEBUG)
                        else False,
                    )
                )
                client = stack.enter_context(Client(local))
                # done first on the way out: the results are in this process by then, so a
                # worker slow to exit (a loaded machine, a big heap to collect: s3fs's botocore)
                # is killed without a warning on the user's terminal (kept with -v)
                stack.callback(_quiet_close, nanny)
                yield client
        elif isinstance(self.target, str) and "://" in self.target:
            with connect(self.target) as client:
                yield client
        else:
            raise UsageError(
                f"unknown scheduler {self.target!r}",
                hint="use threads, sync, processes, a tcp://host:port address, or a "
                "distributed.Client",
            )


def _quiet_close(nanny: logging.Logger) -> None:
    if not log.isEnabledFor(logging.DEBUG):
        nanny.setLevel(logging.ERROR)


def _dashboard(client: Any) -> str | None:
    """The dashboard link, when there is a dashboard to see (it needs bokeh)."""
    import importlib.util

    if importlib.util.find_spec("bokeh") is None:
        return None
    try:
        return str(client.dashboard_link)
    except Exception:  # no HTTP server on this scheduler
        return None
