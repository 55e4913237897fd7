"""Running a graph on a Dask distributed cluster: slice affinity, CPU pinning, task reports.

Slice affinity (DESIGN.md section 6): every task of one input slice (its load, the stages run
on it, its partial) is sent to one worker, chosen by rendezvous hashing of the slice id over
the workers' names. A slice's data then stays in one process, in one core's caches when the
workers are pinned, and is never copied between workers. The restriction is loose: Dask's
work stealing may still move a task when its worker is busy, and a worker that dies loses
only its own slices to the others. Removing a worker moves only the slices that were on it,
and a restarted worker (same name, new address) gets the same slices back.

Tasks that combine slices (combines, finishes, whole-input stages) go wherever the scheduler
likes. The choice never enters a key or a result: outputs are the same on any cluster.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from chanbatch.hashing import digest

if TYPE_CHECKING:
    from distributed import Client

    from chanbatch.compile.plan import Plan

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


def placement(plan: Plan, graph: dict[str, Any], names: dict[str, str]) -> dict[str, list[str]]:
    """Task key -> the workers it may run on: its slice's worker, or any worker."""
    everyone = sorted(names)
    if len(everyone) < 2:
        return dict.fromkeys(graph, everyone)
    source = slice_sources(plan)
    chosen: dict[str, list[str]] = {}
    out = {}
    for key in graph:
        slice_id = source.get(key)
        if slice_id is None:
            out[key] = everyone
            continue
        if slice_id not in chosen:
            chosen[slice_id] = [pick_worker(slice_id, names)]
        out[key] = chosen[slice_id]
    return out


def worker_names(client: Client) -> dict[str, str]:
    """Address -> name of every worker the scheduler knows now."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return {addr: str(info.get("name", addr)) for addr, info in workers.items()}


def run_graph(
    client: Client,
    plan: Plan,
    graph: dict[str, Any],
    targets: list[str],
    topic: str,
    expected: Iterable[str],
    on_report: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Run ``graph`` with slice affinity; returns the targets' results and the task reports.

    Reports travel from the workers as events on ``topic``, apart from the results, so this
    waits (at most 10 s) until one has arrived for every key in ``expected``.
    """
    import dask

    if on_report is not None:
        client.subscribe_topic(topic, lambda event: on_report(event[1]))
    try:
        where = placement(plan, graph, worker_names(client))
        # a dict's __getitem__ pickles without chanbatch, so any scheduler can call it
        with dask.annotate(workers=where.__getitem__, allow_other_workers=True):
            results = client.get(graph, targets, sync=True)
        wanted = set(expected)
        deadline = time.monotonic() + 10
        while True:
            ledger = [msg for _, msg in client.get_events(topic)]
            if wanted <= {entry["dask_key"] for entry in ledger} or time.monotonic() > deadline:
                break
            time.sleep(0.01)
    finally:
        if on_report is not None:
            client.unsubscribe_topic(topic)
    return results, ledger


# -- CPU pinning ----------------------------------------------------------------------------------


def pin_problem(n_workers: int) -> str | None:
    """Why ``n_workers`` workers cannot each have a core of their own here, or None."""
    if not hasattr(os, "sched_setaffinity"):
        return "this platform has no sched_setaffinity"
    cores = len(os.sched_getaffinity(0))
    if n_workers > cores:
        return f"{n_workers} workers but only {cores} usable cores"
    return None


def pinning_plugin() -> Any:
    """A worker plugin that pins worker *i* (by its name, 0..n-1) to the i-th usable core."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class PinCPUs(WorkerPlugin):
        name = "chanbatch-pin-cpus"

        def setup(self, worker: Any) -> None:
            pin_worker(worker.name)

    return PinCPUs()


def pin_worker(name: Any) -> int | None:
    """Pin every thread of this process to one core, chosen by the worker's name; returns it.

    ``os.sched_setaffinity(0, ...)`` pins only the calling thread, and a worker's task thread
    already exists when a plugin runs, so each thread is pinned by its id. Returns None, with
    a warning, where that is impossible.
    """
    if not hasattr(os, "sched_setaffinity"):
        log.warning("--pin-cpus: this platform has no sched_setaffinity; not pinning")
        return None
    cores = sorted(os.sched_getaffinity(0))
    text = str(name)
    index = int(text) if text.isdigit() else int(digest(text.encode())[:8], 16)
    core = cores[index % len(cores)]
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    for tid in threads:
        try:
            os.sched_setaffinity(tid, {core})
        except (ProcessLookupError, OSError) as exc:
            log.warning("--pin-cpus: cannot pin thread %s to core %s: %s", tid, core, exc)
    return core
