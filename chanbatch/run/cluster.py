"""Running a graph on a Dask distributed cluster: slice affinity, CPU pinning, task reports.

Slice affinity (DESIGN.md section 6): every task of one input slice (its load, the stages run
on it, its partial) is sent to one worker, chosen by rendezvous hashing of the slice id over
the workers' names. A slice's data then stays in one process, in one core's caches when the
workers are pinned, and is never copied between workers. The restriction is loose: Dask's
work stealing may still move a task when its worker is busy, and a worker that dies loses
only its own slices to the others. Removing a worker moves only the slices that were on it,
and a restarted worker (same name, new address) gets the same slices back.

With many slices per worker, slices go to workers by their combine group instead: every
slice under one lowest node of the combine tree goes where the first of them hashes to
(:func:`affinity_ids`). Their combine then runs in the batch that computed its inputs (stored
in one pack with the batch's other results) instead of as a task of its own that reads from
both workers: at 2,526 day slices on two workers, 355 such tasks took 4.3 s of worker time.
With few slices per worker, whole groups would spread the work unevenly, so each slice goes
by its own id, as above.

Tasks that combine slices (combines, finishes, whole-input stages) go wherever the scheduler
likes: they carry no restriction at all. The choice never enters a key or a result: outputs are
the same on any cluster. When every worker a slice's tasks were sent to is gone at once, the
:mod:`chanbatch.run.orphans` plugin lets the next worker to join take them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from chanbatch.cache.runs import TaskOutcome
from chanbatch.errors import StoreError
from chanbatch.hashing import digest

if TYPE_CHECKING:
    from distributed import Client

    from chanbatch.compile.plan import Plan
    from chanbatch.engine.batch import Fusion

log = logging.getLogger(__name__)


def pick_worker(slice_id: str, names: dict[str, str]) -> str:
    """The address of the worker for ``slice_id``: the highest blake3 of (slice id, name).

    ``names`` maps worker address -> worker name. Hashing names rather than addresses keeps a
    restarted worker's slices where they were.
    """
    return max(sorted(names), key=lambda addr: digest(f"{slice_id}|{names[addr]}".encode()))


def slice_sources(plan: Plan) -> dict[str, str]:
    """Task key -> the id of the input slice it works on, for every per-slice task."""
    source: dict[str, str] = {}
    for key, task in plan.tasks.items():  # in creation order: inputs before their users
        if task.kind == "load":
            source[key] = task.source
        elif task.slice is not None and task.deps and task.deps[0] in source:
            source[key] = source[task.deps[0]]
    return source


#: slices go to workers by combine group once every worker gets at least this many groups
#: (spread at random, 64 groups on two workers leave them within about an eighth of even)
GROUPS_PER_WORKER = 32


def affinity_ids(plan: Plan, workers: int) -> dict[str, str]:
    """Slice id -> the id its worker is chosen by: the first slice id under its lowest combine
    node, when that makes at least ``GROUPS_PER_WORKER`` groups per worker; else nothing (each
    slice goes by its own id). The tree's groups close where slice keys hash to, so a new
    slice changes only its own group: no other group's slices move."""
    source = slice_sources(plan)
    group: dict[str, str] = {}
    for task in plan.tasks.values():
        if task.kind != "combine" or not task.deps:
            continue
        if not all(dep in source and plan.tasks[dep].kind == "partial" for dep in task.deps):
            continue  # a node over other nodes
        first = source[task.deps[0]]
        for dep in task.deps:
            group.setdefault(source[dep], first)
    if len(set(group.values())) < GROUPS_PER_WORKER * workers:
        return {}
    return group


def placement(
    plan: Plan,
    graph: dict[str, Any],
    names: dict[str, str],
    groups: dict[str, str] | None = None,
) -> dict[str, list[str]]:
    """Task key -> the worker it should run on: its slice's worker (by ``groups``, when given:
    :func:`affinity_ids`), or ``[]`` for any worker.

    With fewer than two workers nothing is restricted: there is no choice to make, and a
    restriction to the one worker would outlive it if it were restarted.
    """
    if len(names) < 2:
        return {key: [] for key in graph}
    by = groups or {}
    source = slice_sources(plan)
    chosen: dict[str, list[str]] = {}
    out: dict[str, list[str]] = {}
    for key in graph:
        slice_id = source.get(key)
        if slice_id is None:
            out[key] = []  # no restriction: distributed drops an empty one
            continue
        if slice_id not in chosen:
            chosen[slice_id] = [pick_worker(by.get(slice_id, slice_id), names)]
        out[key] = chosen[slice_id]
    return out


def inline_members(graph: dict[str, Any], targets: list[str]) -> None:
    """Put each batch member a task reads (``(member, batch, i)``: a partial or combine that
    a batch computed) inside that task's arguments, and drop it as a task of its own.

    The scheduler then handles a batch and the combines that read it, not one more task per
    slice: with slice affinity a batch holds one worker's slices, so most combines read slices
    of several batches, and at 2,526 day slices the member tasks were 2,436 of 2,806 (about 2
    ms each on the scheduler). A member is the same value either way (an item of its batch's
    result); a target stays a task."""
    from chanbatch.engine.batch import combined, member

    aliases = {
        key: spec
        for key, spec in graph.items()
        if isinstance(spec, tuple) and spec and spec[0] in (member, combined)
    }
    if not aliases:
        return
    for key, spec in graph.items():
        if key not in aliases and any(isinstance(a, str) and a in aliases for a in spec[1:]):
            graph[key] = (spec[0], *(_inlined(a, aliases) for a in spec[1:]))
    for key in aliases.keys() - set(targets):  # no task names it any more
        del graph[key]


def _inlined(arg: Any, aliases: dict[str, Any]) -> Any:
    return aliases[arg] if isinstance(arg, str) and arg in aliases else arg


def worker_names(client: Client) -> dict[str, str]:
    """Address -> name of every worker the scheduler knows now."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return {addr: str(info.get("name", addr)) for addr, info in workers.items()}


def run_graph(
    client: Client,
    plan: Plan,
    graph: dict[str, Any],
    targets: list[str],
    expected: set[str],
    on_report: Callable[[TaskOutcome], None] | None = None,
    fusion: Fusion | None = None,
) -> tuple[list[Any], list[TaskOutcome]]:
    """Run ``graph`` with slice affinity; returns the targets' results and the task reports.

    With ``fusion``, the chains of many slices run as batches (:mod:`chanbatch.engine.batch`),
    each of the slices of one worker, and sent to that worker.

    Workers send their task reports as events (see chanbatch.engine.graph), apart from the
    results. They are collected through a subscription as they come, and once the results are
    in, this waits (at most 10 s) until one has arrived for every key in ``expected``. A key
    that another run on the same scheduler was computing at the same time is computed once,
    and reported once, for both: what the subscription missed is looked for in the scheduler's
    log of recent events.
    """
    import threading

    import dask

    from chanbatch.engine.graph import LEDGER_TOPIC, reports_in

    started = time.time() - 1  # worker clocks may trail a little
    heard: dict[str, TaskOutcome] = {}
    lock = threading.Lock()
    arrived = threading.Event()

    def keep(message: Any) -> list[TaskOutcome]:
        """Note the reports of ``message`` for this run's keys (a retried task's last one);
        returns those that were new."""
        new = []
        with lock:
            for entry in reports_in(message):
                if entry.dask_key not in expected or (entry.time or 0) < started:
                    continue
                known = heard.get(entry.dask_key)
                if known is None or (entry.time or 0) >= (known.time or 0):
                    if known is None:
                        new.append(entry)
                    heard[entry.dask_key] = entry
            if len(heard) == len(expected):
                arrived.set()
        return new

    def hear(event: tuple[float, Any]) -> None:
        for entry in keep(event[1]):
            if on_report is not None:
                on_report(entry)

    client.subscribe_topic(LEDGER_TOPIC, hear)
    try:
        release_orphans(client)
        names = worker_names(client)
        groups = affinity_ids(plan, len(names)) if len(names) >= 2 else {}
        batches: dict[str, str] = {}
        if fusion is not None:

            def worker_of(slice_id: str) -> str:
                return pick_worker(groups.get(slice_id, slice_id), names)

            batches = fusion.apply(graph, plan, worker_of if len(names) >= 2 else None)
            inline_members(graph, targets)
        where = placement(plan, graph, names, groups)
        where.update({key: [worker] if worker else [] for key, worker in batches.items()})
        # a dict's __getitem__ pickles without chanbatch, so any scheduler can call it
        with dask.annotate(workers=where.__getitem__, allow_other_workers=True):
            results = client.get(graph, targets, sync=True)
        deadline = time.monotonic() + 10
        while not expected <= heard.keys() and time.monotonic() < deadline:
            # reports still on their way come through the subscription; those of keys another
            # run computed before this one subscribed are in the scheduler's log
            for _, message in client.get_events(LEDGER_TOPIC):
                keep(message)
            arrived.wait(0.1)
    finally:
        client.unsubscribe_topic(LEDGER_TOPIC)
    return results, list(heard.values())


# -- CPU pinning ----------------------------------------------------------------------------------


@contextlib.contextmanager
def pinned(client: Client) -> Iterator[None]:
    """Pin each worker of ``client``'s cluster to a core of its own host while the block runs.

    Workers are numbered per host, in name order, and worker *i* of a host gets that host's
    *i*-th usable core. A host with more workers than cores is not pinned (a warning says so),
    and neither is a platform without ``sched_setaffinity``.
    """
    from distributed.diagnostics.plugin import WorkerPlugin

    cores = client.run(_usable_cores)
    names = worker_names(client)
    by_host: dict[str, list[str]] = {}
    for addr in names:
        by_host.setdefault(_host(addr), []).append(addr)
    plan: dict[str, int] = {}
    for host, addrs in sorted(by_host.items()):
        usable = min((len(cores.get(a) or []) for a in addrs), default=0)
        if usable == 0:
            log.warning("--pin-cpus: %s cannot pin threads; not pinning its workers", host)
            continue
        if len(addrs) > usable:
            log.warning(
                "--pin-cpus: %s has %d workers but %d usable cores; not pinning its workers",
                host,
                len(addrs),
                usable,
            )
            continue
        for index, addr in enumerate(sorted(addrs, key=lambda a: names[a])):
            plan[names[addr]] = index

    class PinCPUs(WorkerPlugin):
        name = "chanbatch-pin-cpus"

        def setup(self, worker: Any) -> None:
            index = plan.get(str(worker.name))
            if index is not None:
                pin_worker(index)

    if plan:
        client.register_plugin(PinCPUs())
    try:
        yield
    finally:
        if plan:
            with contextlib.suppress(Exception):
                client.unregister_worker_plugin(PinCPUs.name)


def _usable_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else []


def _host(address: str) -> str:
    return address.split("://", 1)[-1].rsplit(":", 1)[0]


def pin_worker(index: int) -> int | None:
    """Pin every thread of this process to its ``index``-th usable core; returns the core.

    ``os.sched_setaffinity(0, ...)`` pins only the calling thread, and a worker's task thread
    already exists when a plugin runs, so each thread is pinned by its id. Threads started
    later inherit the mask.
    """
    cores = _usable_cores()
    if not cores:
        log.warning("--pin-cpus: this platform has no sched_setaffinity; not pinning")
        return None
    core = cores[index % len(cores)]
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    for tid in threads:
        try:
            os.sched_setaffinity(tid, {core})
        except OSError as exc:  # a thread that ended meanwhile, or a core we may not use
            log.debug("--pin-cpus: cannot pin thread %s to core %s: %s", tid, core, exc)
    return core


class ShareStore:
    """A worker plugin: every worker, and every worker that joins later, opens the store at
    ``url`` with ``options`` (see :func:`share_store`)."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self.url = url
        self.options = options
        self.name = f"chanbatch-store-{digest(url.encode())[:16]}"

    def setup(self, worker: Any) -> None:
        from chanbatch.snapshot.options import remember

        remember(self.url, self.options)


def share_store(client: Client, url: str, options: dict[str, Any]) -> None:
    """Give the workers of ``client`` the storage options of the store at ``url``.

    The options travel in a worker plugin, never in a task or a key: a graph (and what the
    scheduler shows of it) holds the URL alone. Installing it again, with the options of a later
    run, replaces it. Raises StoreError when the workers cannot take it and the store needs
    options; without options a refusal only logs (the workers open the URL as it is).
    """
    from distributed.diagnostics.plugin import WorkerPlugin

    class _Plugin(ShareStore, WorkerPlugin):
        pass

    try:
        client.register_plugin(_Plugin(url, options))
    except Exception as exc:
        if options:
            raise StoreError(
                f"cannot give the workers the storage options of {url}: {exc}",
                hint="check that the workers run this version of chanbatch",
            ) from exc
        log.warning("could not install the store's options on the workers: %s", exc)


def release_orphans(client: Client) -> None:
    """Install :class:`~chanbatch.run.orphans.ReleaseOrphans` on the client's scheduler (once;
    installing it again replaces it). A scheduler that refuses it only loses that rescue."""
    import cloudpickle

    from chanbatch.run import orphans

    # by value: the scheduler may not have chanbatch installed
    cloudpickle.register_pickle_by_value(orphans)
    try:
        client.register_plugin(orphans.ReleaseOrphans())
    except Exception as exc:  # an old or locked-down scheduler: run without the rescue
        log.warning("could not install the orphaned-task rescue on the scheduler: %s", exc)
