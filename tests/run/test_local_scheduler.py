"""The local executor's scheduler (chanbatch.run.local) against dask's own schedulers, on
graphs of the shape a run builds: (function, argument, *dependency keys)."""

from __future__ import annotations

import threading
import time
from typing import Any

import dask
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chanbatch.run.local import run_graph


def _add(label: str, *values: int) -> int:
    return sum(values) + len(label)


def _chain_graph(width: int, depth: int) -> dict[str, tuple[Any, ...]]:
    """``width`` loads, ``depth`` levels of pairwise combines: the shape of a combine tree."""
    graph: dict[str, tuple[Any, ...]] = {f"load-{i}": (_add, f"l{i}") for i in range(width)}
    level = [f"load-{i}" for i in range(width)]
    for d in range(depth):
        nxt = []
        for i in range(0, len(level), 2):
            key = f"combine-{d}-{i}"
            graph[key] = (_add, f"c{d}.{i}", *level[i : i + 2])
            nxt.append(key)
        level = nxt
    return graph


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_results_equal_dasks_on_a_combine_tree(workers: int) -> None:
    graph = _chain_graph(width=37, depth=6)
    targets = ["combine-5-0", "load-3", "combine-2-4"]
    want = dask.get(graph, targets)
    assert run_graph(graph, targets, workers=workers) == list(want)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_dag_gives_dasks_results(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 25))
    graph: dict[str, tuple[Any, ...]] = {}
    for i in range(n):
        deps = data.draw(st.lists(st.integers(0, i - 1), max_size=3)) if i else []
        graph[f"k{i}"] = (_add, f"t{i}", *(f"k{j}" for j in deps))
    targets = data.draw(st.lists(st.sampled_from(sorted(graph)), min_size=1, max_size=4))
    workers = data.draw(st.sampled_from([1, 3]))
    assert run_graph(graph, targets, workers=workers) == list(dask.get(graph, targets))


def test_only_what_the_targets_need_runs_and_each_task_once() -> None:
    calls: list[str] = []
    lock = threading.Lock()

    def record(label: str, *values: int) -> int:
        with lock:
            calls.append(label)
        return len(values)

    # (a label that equals a key would be read as that key, as dask reads it)
    graph: dict[str, tuple[Any, ...]] = {
        "a": (record, "A"),
        "b": (record, "B", "a"),
        "c": (record, "C", "a", "b"),
        "unused": (record, "U", "a"),
    }
    assert run_graph(graph, ["c", "b"], workers=2) == [2, 1]
    assert sorted(calls) == ["A", "B", "C"]


def test_the_first_failure_is_raised_as_it_was_and_later_tasks_do_not_start() -> None:
    started: list[str] = []

    class Boom(Exception):
        pass

    def fail(label: str) -> None:
        raise Boom(label)

    def after(label: str, *values: Any) -> str:
        started.append(label)
        return label

    graph: dict[str, tuple[Any, ...]] = {"bad": (fail, "BAD"), "next": (after, "NEXT", "bad")}
    for workers in (1, 2):
        with pytest.raises(Boom, match="BAD"):
            run_graph(graph, ["next"], workers=workers)
    assert started == []


def test_a_cycle_is_refused() -> None:
    graph: dict[str, tuple[Any, ...]] = {"a": (_add, "x", "b"), "b": (_add, "y", "a")}
    with pytest.raises(RuntimeError, match="cycle"):
        run_graph(graph, ["a"])


def test_tasks_run_at_once_on_several_threads() -> None:
    """Two independent slow tasks on two workers overlap (the pool is used)."""
    active = 0
    most = 0
    lock = threading.Lock()

    def slow(label: str) -> str:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        time.sleep(0.2)
        with lock:
            active -= 1
        return label

    graph: dict[str, tuple[Any, ...]] = {"x": (slow, "X"), "y": (slow, "Y")}
    assert run_graph(graph, ["x", "y"], workers=2) == ["X", "Y"]
    assert most == 2


def test_a_result_is_dropped_once_its_readers_have_run() -> None:
    """Memory stays bounded by the frontier: a load's table is released after its last reader,
    not kept until the end of the run."""
    alive: set[str] = set()

    class Tracked:
        def __init__(self, label: str) -> None:
            self.label = label
            alive.add(label)

        def __del__(self) -> None:
            alive.discard(self.label)

    seen_alive: list[int] = []

    def load(label: str) -> Tracked:
        return Tracked(label)

    def reduce_(label: str, *parts: Any) -> int:
        seen_alive.append(len(alive))
        return len(parts)

    graph: dict[str, tuple[Any, ...]] = {}
    for i in range(20):
        graph[f"l{i}"] = (load, f"L{i}")
        graph[f"r{i}"] = (reduce_, f"R{i}", f"l{i}")
    run_graph(graph, [f"r{i}" for i in range(20)], workers=1)
    assert max(seen_alive) == 1  # on one thread, one load is alive at a time
    assert alive == set()
