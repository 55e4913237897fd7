"""Runs a run's graph in this process, on a pool of threads or on this thread alone.

The graph is the one every executor gets (:func:`chanbatch.engine.graph.build_graph`): a dict
of key -> ``(function, argument, *dependency keys)``. Scheduling it needs none of dask's
machinery, and importing dask costs a run that computes a single new slice more than the
slice itself, so the local executor walks it here: each task runs once all of its
dependencies have; a result is dropped as soon as nothing else needs it (targets are kept);
the first task that raises stops the run, and its exception is raised as it was, as dask's
local schedulers do.

Results cannot depend on the order tasks finish in: the plan fixes every combine's inputs
and their order, so an output is the same on one thread, on many, and on a cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

Graph = dict[str, tuple[Any, ...]]
#: called on this thread after each task, with its key and result
Done = Callable[[str, Any], None]


def dependencies(graph: Graph, key: str) -> list[str]:
    """The keys a task reads: those of its arguments that name another task of the graph (a
    key is a string; anything else is passed as it is)."""
    _function, *args = graph[key]
    return [arg for arg in args if isinstance(arg, str) and arg in graph]


def run_graph(
    graph: Graph, targets: list[str], *, workers: int = 1, done: Done | None = None
) -> list[Any]:
    """The results of ``targets``, computing every task they need once.

    ``workers`` threads run tasks at once (1: this thread runs them, in dependency order).
    Raises whatever the first failing task raised.
    """
    needed = _needed(graph, targets)
    deps = {key: dependencies(graph, key) for key in needed}
    users: dict[str, list[str]] = {key: [] for key in needed}
    for key, own in deps.items():
        for dep in set(own):  # a task may read one result twice: it waits for it once
            users[dep].append(key)
    waiting = {key: len(set(own)) for key, own in deps.items()}
    ready = sorted(key for key, count in waiting.items() if count == 0)
    # how many tasks still read each result; a target is also read by the caller
    readers = {key: len(users[key]) + (key in targets) for key in needed}
    results: dict[str, Any] = {}

    def finished(key: str, value: Any) -> None:
        results[key] = value
        if done is not None:
            done(key, value)
        for dep in set(deps[key]):
            readers[dep] -= 1
            if readers[dep] == 0:
                del results[dep]
        for user in users[key]:
            waiting[user] -= 1
            if waiting[user] == 0:
                ready.append(user)

    def call(key: str) -> Any:
        function, *args = graph[key]
        return function(*(results[a] if isinstance(a, str) and a in graph else a for a in args))

    if workers <= 1:
        while ready:
            key = ready.pop()
            finished(key, call(key))
    else:
        _run_pool(ready, call, finished, workers)
    if any(waiting.values()):  # a plan is a DAG; this is a bug, not a user's mistake
        stuck = sorted(key for key, count in waiting.items() if count)
        raise RuntimeError(f"the graph has a cycle through {stuck[:5]}")
    return [results[key] for key in targets]


def _run_pool(
    ready: list[str], call: Callable[[str], Any], finished: Callable[[str, Any], None], workers: int
) -> None:
    running: dict[Future[Any], str] = {}
    with ThreadPoolExecutor(workers, thread_name_prefix="chanbatch") as pool:
        try:
            while ready or running:
                while ready and len(running) < workers:
                    key = ready.pop()
                    running[pool.submit(call, key)] = key
                finishing, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finishing:
                    key = running.pop(future)
                    finished(key, future.result())  # raises the task's own exception
        finally:
            for future in running:
                future.cancel()


def _needed(graph: Graph, targets: list[str]) -> set[str]:
    needed: set[str] = set()
    stack = list(targets)
    while stack:
        key = stack.pop()
        if key not in needed:
            needed.add(key)
            stack.extend(dependencies(graph, key))
    return needed
