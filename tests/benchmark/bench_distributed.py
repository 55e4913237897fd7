#!/usr/bin/env python
"""Benchmark of TPC-H Q1 on a Dask distributed cluster (issue 5).

Run it from the repository root, with the project's venv active::

    python tests/benchmark/bench_distributed.py --sf 1 --repeat 5 [--out docs/performance.md]

Data and blueprint are bench_q1.py's: TPC-H lineitem, prepared once and frozen into 84 month
slices under ``--cache`` (the same cache, reused when bench_q1.py made it), and
``tests/benchmark/q1.yaml``. Every figure is measured on a ``LocalCluster(n_workers=N,
threads_per_worker=1, processes=True, dashboard_address=None)``, started once and kept for
all rounds:

(a) the blueprint run COLD with a ``distributed.Client`` on a 2-worker cluster passed as the
    scheduler (so cluster start-up is excluded): every repeat runs in a fresh store made of
    hard links to the frozen objects, manifests and refs (no ``cache/``, no ``runs/``);
(b) bench_q1.py's hand-written ``dask.dataframe`` Q1 over the same Parquet objects, computed
    on the SAME cluster with the same Client;
(c) the start-up of such a cluster plus a Client connecting to it (and, apart, its shutdown);
(d) a whole run with ``scheduler="processes"``: chanbatch starts its own cluster, runs and
    closes it, so start-up is included;
(e) (a) and (b) again on a 1-worker cluster, to show how each scales to 2 workers on this
    machine.

Target (issue 5): (a) <= 1.10x (b). Seconds are medians over ``--repeat`` rounds; in each
round every figure runs once, in pairs ((a)/(b), the two 1-worker runs, (c)/(d)) whose order
alternates and rotates from round to round; ratios are the median of the per-round ratios.

Correctness is checked once, before the rounds: chanbatch's Q1 answer must equal dask's on the
same cluster (floats within a relative 1e-9), and every cold run, on any cluster, must give the
output snapshot id of a run on the threaded scheduler; otherwise the script exits 1.

If the target is missed (or with ``--profile``), it looks at where a cold run's time goes on
the cluster: the client-side phases of one run (plan, graph, submission, waiting, the task
reports, freeze), the task stream of one chanbatch run and one dask run (lead, task span,
tail, worker utilisation, transfers, per-kind task time against the same tasks run in one
thread in this process), and the cost of chanbatch's graph with every task a no-op.

This file is not a test: ``tests/benchmark/conftest.py`` keeps pytest from collecting it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import pickle
import shlex
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bench_q1
import benchkit
from bench_q1 import (
    BLUEPRINT,
    DOC_HEADER,
    RTOL,
    Prepared,
    Report,
    Row,
    Samples,
    ThreadTimer,
    compare,
    dask_q1,
    fmt_s,
    link_store,
    load_average,
    machine,
    object_files,
    output_frame,
    prepare,
    print_table,
    rotate,
    run_blueprint,
    settle,
    source_fingerprint,
    table_markdown,
    wait_quiet,
)
from benchkit import ensure_lineitem, fmt_samples, median, version, write_section

SECTION = "Distributed execution: TPC-H Q1 (issue 5)"
BEGIN = "<!-- bench_distributed.py: generated, begin -->"
END = "<!-- bench_distributed.py: generated, end -->"
TARGET = 1.10  # chanbatch cold on a Client <= 1.10x hand-written dask on the same cluster

# figure names in Samples
CB, DASK, CB1, DASK1 = "chanbatch", "dask", "chanbatch 1 worker", "dask 1 worker"
START, STOP, PROCESSES = "start-up", "shutdown", "processes run"
PAIRS = [(CB, DASK), (CB1, DASK1), (START, PROCESSES)]


# -- other processes ------------------------------------------------------------------------------


def _tree_seconds() -> float:
    """CPU seconds of this process and of every process under it (the clusters' workers)."""
    import psutil

    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system  # children_*: reaped ones
    for child in psutil.Process().children(recursive=True):
        try:
            c = child.cpu_times()
        except psutil.Error:
            continue
        total += c.user + c.system + c.children_user + c.children_system
    return total


class Others(bench_q1.Others):
    """How much of the machine processes other than ours used while a measurement ran (0..1).

    bench_q1.Others counts a child only once it has exited, which would count the workers of
    the clusters (child processes, alive throughout) as other processes.
    """

    own_seconds = staticmethod(_tree_seconds)

    def cores(self) -> float:
        """Cores this process and its children used on average (CPU seconds / wall)."""
        return (_tree_seconds() - self.own) / (time.perf_counter() - self.wall)


# -- the cluster ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Cluster:
    cluster: Any
    client: Any
    workers: int
    seconds: float  # start-up + connect

    def close(self) -> float:
        started = time.perf_counter()
        self.client.close()
        self.cluster.close()
        return time.perf_counter() - started


def start_cluster(workers: int) -> Cluster:
    """A LocalCluster of ``workers`` processes of one thread, and a Client connected to it.

    The Client is not made the default one, so nothing else in this process finds it.
    """
    from distributed import Client, LocalCluster

    started = time.perf_counter()
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = Client(cluster, set_as_default=False)
    client.wait_for_workers(workers)
    return Cluster(cluster, client, workers, time.perf_counter() - started)


@contextmanager
def threads_mean(client: Any) -> Iterator[None]:
    """Run bench_q1's hand-written dask Q1 on ``client``.

    ``bench_q1.dask_q1`` computes with ``scheduler="threads"``, which dask looks up in
    ``dask.base.named_schedulers``; for the duration, that name means ``client.get`` (the
    scheduler dask would pick for a default Client). Callers check with the task stream that
    the tasks really ran on the cluster.
    """
    import dask.base

    names = dask.base.named_schedulers
    saved = names["threads"]
    names["threads"] = client.get
    try:
        yield
    finally:
        names["threads"] = saved


def dask_on(client: Any, files: list[str]) -> Any:
    """bench_q1's dask Q1 computed on ``client``, with ``client`` the current one, as when a
    user has made a Client: dask then plans for a cluster (its groupby shuffles with "p2p",
    not "disk")."""
    with client.as_current(), threads_mean(client):
        return dask_q1(files, 0)  # num_workers goes to client.get, which ignores it


def quiet_distributed_logs() -> None:
    """Keep the clusters' start-up noise out of the output: every scheduler serves HTTP on
    port 8787 even with ``dashboard_address=None``, so all but the first warn that the port is
    in use (a ``UserWarning``), and ``scheduler="processes"`` starts its clusters at the
    default log level."""
    warnings.filterwarnings("ignore", message=r"Port \d+ is already in use", category=UserWarning)
    logging.getLogger("distributed").setLevel(logging.ERROR)


# -- chanbatch runs -------------------------------------------------------------------------------


def run_record(store_dir: Path) -> dict[str, Any]:
    """The run record of a store that has had exactly one run."""
    (path,) = sorted((store_dir / "runs").glob("*.json"))
    return json.loads(path.read_text())


def check_cold(
    name: str, store_dir: Path, info: Any, want: str, tasks: int, problems: list[str]
) -> Counter[str]:
    """Check a cold run's output and record; returns its reported tasks per worker."""
    if info.snapshot != want:
        problems.append(f"{name}: output {info.snapshot[:12]} != threaded run's {want[:12]}")
    if info.computed != tasks or info.reused != 0:
        problems.append(f"{name}: computed {info.computed} (want {tasks}), reused {info.reused}")
    record = run_record(store_dir)
    per_worker: Counter[str] = Counter()
    missing = 0
    for task in record["tasks"]:
        if task.get("outcome") is None or not task.get("worker"):
            missing += 1
        else:
            per_worker[str(task["worker"])] += 1
    if missing:
        problems.append(f"{name}: {missing} tasks have no report (outcome, worker) in the record")
    return per_worker


# -- measurement ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Found:
    tasks: int = 0
    snapshot: str = ""
    problems: list[str] = field(default_factory=list)
    per_worker: dict[str, list[Counter[str]]] = field(default_factory=lambda: defaultdict(list))
    disturbed: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    cores: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    dask_tasks: int = 0


def measure(
    args: argparse.Namespace,
    prep: Prepared,
    workdir: Path,
    two: Cluster,
    one: Cluster,
) -> tuple[Samples, Found]:
    from distributed import get_task_stream

    import chanbatch as cb

    bp = cb.Blueprint.from_yaml(BLUEPRINT)
    files = object_files(prep.full)
    counter = iter(range(1_000_000))
    found = Found()

    def fresh() -> Path:
        return link_store(prep.full, workdir / f"store-{next(counter):03d}")

    print("warm-up and checks (untimed)", flush=True)
    reference = run_blueprint(bp, fresh(), args.workers, "threads")
    found.snapshot, found.tasks = reference.snapshot, reference.computed
    store = fresh()
    first = run_blueprint(bp, store, args.workers, two.client)
    check_cold("warm-up, 2 workers", store, first, found.snapshot, found.tasks, found.problems)
    answer = output_frame(store, first.snapshot)
    with get_task_stream(two.client) as stream:
        other = dask_on(two.client, files)
    found.dask_tasks = len(stream.data)
    if not stream.data:
        found.problems.append("the dask baseline did not run on the cluster (empty task stream)")
    problem = compare("chanbatch on the cluster", answer, other, "dask on the cluster")
    if problem:
        found.problems.append(problem)
    store = fresh()
    info = run_blueprint(bp, store, 1, one.client)
    check_cold("warm-up, 1 worker", store, info, found.snapshot, found.tasks, found.problems)
    dask_on(one.client, files)
    store = fresh()
    info = run_blueprint(bp, store, args.workers, "processes")
    check_cold("warm-up, processes", store, info, found.snapshot, found.tasks, found.problems)
    start_cluster(args.workers).close()
    if found.problems:
        return Samples(), found

    samples = Samples()

    def cold(name: str, cluster: Cluster, scheduler: Any) -> None:
        store = fresh()
        settle()
        wait_quiet()
        probe = Others()
        info = run_blueprint(bp, store, cluster.workers, scheduler)
        found.cores[name].append(probe.cores())
        share = probe.share()
        samples.add(name, info.seconds)
        if share is not None:
            found.disturbed[name].append(share)
        found.per_worker[name].append(
            check_cold(name, store, info, found.snapshot, found.tasks, found.problems)
        )

    def timed(name: str, fn: Callable[[], Any]) -> None:
        settle()
        wait_quiet()
        probe = Others()
        started = time.perf_counter()
        fn()
        samples.add(name, time.perf_counter() - started)
        found.cores[name].append(probe.cores())
        share = probe.share()
        if share is not None:
            found.disturbed[name].append(share)

    def startup() -> None:
        settle()
        wait_quiet()
        probe = Others()
        new = start_cluster(args.workers)
        share = probe.share()
        samples.add(START, new.seconds)
        samples.add(STOP, new.close())
        if share is not None:
            found.disturbed[START].append(share)

    sides: dict[str, Callable[[], None]] = {
        CB: lambda: cold(CB, two, two.client),
        DASK: lambda: timed(DASK, lambda: dask_on(two.client, files)),
        CB1: lambda: cold(CB1, one, one.client),
        DASK1: lambda: timed(DASK1, lambda: dask_on(one.client, files)),
        START: startup,
        PROCESSES: lambda: cold(PROCESSES, two, "processes"),
    }
    for i in range(args.repeat):
        print(f"round {i + 1}/{args.repeat} (load {load_average()})", flush=True)
        for pair in rotate(PAIRS, i):
            for name in pair if i % 2 == 0 else reversed(pair):
                sides[name]()
        line = ", ".join(f"{n} {v[-1]:.3f}" for n, v in samples.by_name.items())
        print("  " + line, flush=True)
    return samples, found


# -- report ---------------------------------------------------------------------------------------


def summarise(
    args: argparse.Namespace, prep: Prepared, samples: Samples, found: Found, report: Report
) -> None:
    w = args.workers
    ratio = median(samples.paired(CB, DASK))
    report.add(
        Row(
            f"(a) chanbatch cold run, `distributed.Client` on the {w}-worker cluster",
            fmt_s(samples.med(CB)),
            f"{ratio:.2f}× dask",
            f"≤ {TARGET:.2f}× dask (issue 5)",
            ratio <= TARGET,
            x=ratio,
            goal=TARGET,
        )
    )
    report.add(
        Row(
            f"(b) hand-written dask.dataframe, same Client, {w} workers",
            fmt_s(samples.med(DASK)),
            "1.00×",
        )
    )
    report.add(
        Row(
            f"(c) LocalCluster start-up ({w} workers × 1 thread) + Client connect",
            fmt_s(samples.med(START)),
            f"{median(samples.paired(START, CB)):.2f}× (a)",
        )
    )
    report.add(Row("(c) … its shutdown (Client and cluster closed)", fmt_s(samples.med(STOP))))
    report.add(
        Row(
            f'(d) chanbatch whole cold run, `scheduler="processes"`, {w} workers (start-up '
            "and shutdown included)",
            fmt_s(samples.med(PROCESSES)),
            f"{median(samples.paired(PROCESSES, CB)):.2f}× (a)",
        )
    )
    report.add(
        Row(
            "(e) chanbatch cold run, Client on a 1-worker cluster",
            fmt_s(samples.med(CB1)),
            f"{median(samples.paired(CB1, DASK1)):.2f}× dask 1 worker",
        )
    )
    report.add(
        Row("(e) hand-written dask, same 1-worker cluster", fmt_s(samples.med(DASK1)), "1.00×")
    )
    report.add(
        Row(
            f"(e) chanbatch speed-up, 1 → {w} workers (1-worker time / {w}-worker time)",
            "",
            f"{median(samples.paired(CB1, CB)):.2f}×",
        )
    )
    report.add(
        Row(
            f"(e) dask speed-up, 1 → {w} workers",
            "",
            f"{median(samples.paired(DASK1, DASK)):.2f}×",
        )
    )

    report.details += [
        f"- Input: bench_q1.py's TPC-H lineitem SF{args.sf:g}, {prep.rows:,} rows in "
        f"{prep.slices} month slices, {prep.object_bytes / 1e6:.1f} MB of Parquet objects; "
        "dask reads the same object files (`dd.read_parquet` of the hard-linked objects).",
        f"- Blueprint: `tests/benchmark/q1.yaml`; a cold run computes {found.tasks} tasks, plus "
        f"{prep.slices} loads. bench_q1.py's hand-written dask Q1 ran {found.dask_tasks} tasks "
        "on the cluster (task stream of the warm-up).",
        "- Clusters: `LocalCluster(n_workers=N, threads_per_worker=1, processes=True, "
        "dashboard_address=None)`, one of 2 workers and one of 1 worker, started before the "
        "rounds and kept (idle when not measured); chanbatch gets the `Client` as its "
        "scheduler; dask computes on the same `Client`, made the current one while it plans "
        "and runs (so it plans for a cluster, as for a user who made a Client: its groupby "
        "shuffles with `p2p`). One untimed warm-up of every figure first (worker imports, "
        "page cache).",
        f"- {args.repeat} rounds; each round runs every figure once, in the pairs "
        "(a)/(b), (e) chanbatch/dask and (c)/(d); the pairs rotate by one each round and the "
        "order within a pair alternates. Seconds are medians; ratios are medians of the "
        "per-round ratios.",
        "- Cold: each chanbatch repeat is a new store of hard links to the frozen objects, "
        "manifests and refs, without `cache/` and `runs/`. dask's Parquet read plans are "
        "dropped before every dask run (bench_q1.py's `forget_dask_plans`).",
        "- (c) is `LocalCluster(...)` + `Client(cluster)` + `wait_for_workers`, in this "
        "process (dask and distributed already imported; the new workers import only what "
        "a worker needs, not chanbatch). (d) includes all of that, the workers' first import "
        "of chanbatch, pandas and pyarrow, and closing the cluster.",
    ]
    for name, values in samples.by_name.items():
        report.details.append(f"- {name} s: {fmt_samples(values)}")
    for name, runs in found.per_worker.items():
        splits = ["/".join(str(n) for n in sorted(c.values(), reverse=True)) for c in runs]
        report.details.append(
            f"- {name}: tasks reported per worker (run record), per round: {', '.join(splits)}"
        )
    if found.cores:
        used = ", ".join(f"{name} {median(v):.2f}" for name, v in found.cores.items())
        report.details.append(
            "- Cores used on average by this process and its children (the clusters' "
            f"scheduler, client and workers), CPU seconds / wall seconds, median: {used} "
            f"(of {os.cpu_count()} on this machine; pyarrow's decoding and compute kernels use "
            "their own threads, so even one worker can use more than one core)."
        )
    if found.disturbed:
        shares = ", ".join(
            f"{name} {100 * median(v):.0f}% (worst {100 * max(v):.0f}%)"
            for name, v in found.disturbed.items()
        )
        report.details.append(
            f"- Before each measurement the script waits (up to {bench_q1.QUIET_WAIT:g} s) for half a second in "
            "which other processes use under 10% of the machine. Their median share of all "
            f"cores during each figure: {shares}."
        )
    if not found.problems:
        report.details.append(
            "- Answers agree: chanbatch's output on the 2-worker cluster matches the dask "
            f"baseline's on the same cluster within a relative {RTOL:g} (counts and groups "
            "exactly), and every cold run, on every cluster and with `processes`, gave the "
            "output snapshot id of a run on the threaded scheduler, with every task reported."
        )


# -- where the time goes ----------------------------------------------------------------------------


@contextmanager
def phase_timer(client: Any) -> Iterator[dict[str, float]]:
    """Wall time spent, on the client side, in the steps of a run (patched in memory).

    Steps that do not exist in the code being measured are skipped.
    """
    import chanbatch.engine.graph as graph_module

    try:  # the planned run's steps (chanbatch.run.runner's before the planner had its module)
        import chanbatch.run.planned as runner
    except ImportError:
        import chanbatch.run.runner as runner

    try:
        import chanbatch.run.cluster as cluster_module
    except ImportError:
        cluster_module = None
    spent: dict[str, float] = defaultdict(float)
    patched: list[tuple[Any, str, Any]] = []

    def wrap(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name, None) if owner is not None else None
        if original is None:
            return

        def timed(*a: Any, **kw: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                spent[label] += time.perf_counter() - started

        setattr(owner, name, timed)
        patched.append((owner, name, original))

    wrap(runner, "plan_blueprint", "plan + decide")
    wrap(graph_module, "build_graph", "build graph")
    wrap(cluster_module, "worker_names", "worker list")
    wrap(cluster_module, "placement", "slice placement")
    wrap(cluster_module, "run_graph", "run_graph")
    wrap(runner, "_get", "run_graph")  # the older name of the same step
    wrap(client, "get", "Client.get")
    wrap(client, "_graph_to_futures", "submit graph")
    wrap(client, "gather", "gather")
    wrap(runner, "freeze", "freeze the output")
    wrap(runner, "write_memo", "write memo")
    wrap(runner, "_write_record", "write run record")
    try:
        yield spent
    finally:
        for owner, name, original in reversed(patched):
            if owner is client:
                delattr(client, name)  # back to the class's method
            else:
                setattr(owner, name, original)


def phase_lines(
    spent: dict[str, float], wall: float, dask_spent: dict[str, float], dask_wall: float
) -> list[str]:
    """The table of client-side phases, from two ``phase_timer`` results."""

    def get_rest(d: dict[str, float]) -> float:
        return d.get("Client.get", 0.0) - d.get("submit graph", 0.0) - d.get("gather", 0.0)

    rows: list[tuple[str, float, float | None]] = []
    for label in ("plan + decide", "build graph", "worker list", "slice placement"):
        if label in spent:
            rows.append((label, spent[label], None))
    rows += [
        (
            "`Client.get` before submitting: wrap the graph in an expression (`LLGExpr`, whose "
            "name tokenises every task)",
            get_rest(spent),
            get_rest(dask_spent),
        ),
        (
            "`Client.get`: submit the graph (`_graph_to_futures`)",
            spent.get("submit graph", 0.0),
            dask_spent.get("submit graph", 0.0),
        ),
        (
            "`Client.get`: wait for the results (`gather`): the tasks run",
            spent.get("gather", 0.0),
            dask_spent.get("gather", 0.0),
        ),
    ]
    if "run_graph" in spent:
        around = sum(spent.get(k, 0.0) for k in ("Client.get", "worker list", "slice placement"))
        rows.append(("wait for every task's report (events)", spent["run_graph"] - around, None))
    for label in ("freeze the output", "write memo", "write run record"):
        if label in spent:
            rows.append((label, spent[label], None))
    rows.append(
        (
            "rest (chanbatch: run id, stats; dask: build and optimise the expression, read the "
            "Parquet footers, sort the answer)",
            wall - sum(r[1] for r in rows),
            dask_wall - dask_spent.get("Client.get", 0.0),
        )
    )
    lines = [
        f"Client-side phases of one chanbatch cold run ({wall:.2f} s wall) and of one dask run "
        f"({dask_wall:.2f} s) on the 2-worker cluster:",
        "",
        "| phase | chanbatch s | dask s |",
        "|---|---|---|",
    ]
    lines += [f"| {label} | {s:.3f} | {'' if d is None else f'{d:.3f}'} |" for label, s, d in rows]
    return lines


def kind_of_keys(prep: Prepared, store_dir: Path) -> dict[str, Any]:
    """The plan's tasks by key, for a cold store."""
    import chanbatch as cb

    bp = cb.Blueprint.from_yaml(BLUEPRINT)
    return dict(bp.plan(cb.Store(store_dir)).plan.tasks)


def label_task(task: Any) -> str:
    """The labels bench_q1.ThreadTimer uses."""
    if task.kind == "load":
        return "load (read, check, decode)"
    return f"apply {task.stage}" if task.kind == "apply" else task.kind


@dataclass(slots=True)
class Stream:
    """A run as the scheduler's task stream saw it."""

    wall: float
    tasks: int
    lead: float  # run start -> first task start
    span: float  # first task start -> last task end
    tail: float  # last task end -> run end
    busy: float  # worker thread-seconds in task code
    transfers: int
    transfer_seconds: float
    by_label: dict[str, tuple[int, float]]
    by_worker: dict[str, tuple[int, float]]
    workers_of: dict[str, str]  # key -> worker

    def utilisation(self, workers: int) -> float:
        return self.busy / (self.span * workers) if self.span > 0 else 0.0


def read_stream(
    records: list[dict[str, Any]], started: float, ended: float, label: Callable[[Any], str]
) -> Stream:
    computes = []
    transfers: list[float] = []
    workers_of = {}
    for r in records:
        for s in r.get("startstops", ()):
            if s["action"] == "compute":
                computes.append((label(r["key"]), r["worker"], s["start"], s["stop"]))
                workers_of[str(r["key"])] = r["worker"]
            elif s["action"] == "transfer":
                transfers.append(s["stop"] - s["start"])
    first = min(c[2] for c in computes)
    last = max(c[3] for c in computes)
    by_label: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    by_worker: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for name, worker, start, stop in computes:
        for table, k in ((by_label, name), (by_worker, worker)):
            table[k][0] += 1
            table[k][1] += stop - start
    return Stream(
        wall=ended - started,
        tasks=len(computes),
        lead=first - started,
        span=last - first,
        tail=ended - last,
        busy=sum(c[3] - c[2] for c in computes),
        transfers=len(transfers),
        transfer_seconds=sum(transfers),
        by_label={k: (int(v[0]), v[1]) for k, v in by_label.items()},
        by_worker={k: (int(v[0]), v[1]) for k, v in by_worker.items()},
        workers_of=workers_of,
    )


def _noop(*_deps: Any) -> None:
    return None


def noop_graph(graph: dict[str, Any]) -> dict[str, Any]:
    """``graph`` with the same keys and edges, every task a no-op."""
    return {
        key: (_noop, *[a for a in task[1:] if isinstance(a, str) and a in graph])
        for key, task in graph.items()
    }


def time_noop_graph(client: Any, prep: Prepared, store_dir: Path, repeat: int) -> list[str]:
    """What scheduling chanbatch's graph costs on the cluster when no task does any work."""
    import chanbatch as cb
    from chanbatch.engine.graph import build_graph

    bp = cb.Blueprint.from_yaml(BLUEPRINT)
    store = cb.Store(store_dir)
    report = bp.plan(store)
    graph = build_graph(report.plan, report.decisions, store.storage.url, frozenset(), run="x")
    size = len(pickle.dumps(graph, protocol=pickle.HIGHEST_PROTOCOL))
    used = {a for task in graph.values() for a in task[1:] if isinstance(a, str) and a in graph}
    targets = [k for k in graph if k not in used]
    noop = noop_graph(graph)
    try:
        from chanbatch.run.cluster import placement, worker_names
    except ImportError:
        placement = None
    # keys of their own (64 hex digits, like chanbatch's), so no real run's keys are touched
    renamed = {k: hashlib.sha256(f"noop|{k}".encode()).hexdigest() for k in noop}
    plain = {renamed[k]: (task[0], *[renamed[d] for d in task[1:]]) for k, task in noop.items()}
    plain_targets = [renamed[k] for k in targets]

    def best(fn: Callable[[], Any]) -> float:
        times = []
        for _ in range(repeat):
            settle()
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return median(times)

    free = best(lambda: client.get(plain, plain_targets, sync=True))
    lines = [
        f"chanbatch's graph for this run ({len(graph)} tasks; {size / 1e3:.0f} kB pickled as "
        "one dict) with every task replaced by a no-op, same edges, 64-hex keys, on the "
        f"2-worker cluster (median of {repeat}): `client.get` takes {free:.3f} s, "
        f"{1e3 * free / len(graph):.2f} ms per task"
    ]
    if placement is not None:
        import dask

        where = placement(report.plan, noop, worker_names(client))
        mapped = {renamed[k]: v for k, v in where.items()}

        def annotated() -> None:
            with dask.annotate(workers=mapped.__getitem__, allow_other_workers=True):
                client.get(plain, plain_targets, sync=True)

        pinned = best(annotated)
        lines[-1] += (
            f"; with chanbatch's slice-affinity annotations (as `run_graph` submits it) "
            f"{pinned:.3f} s"
        )
    lines[-1] += "."
    return lines


def where_time_goes(
    args: argparse.Namespace, prep: Prepared, workdir: Path, two: Cluster
) -> list[str]:
    from dask.utils import key_split
    from distributed import get_task_stream

    import chanbatch as cb

    bp = cb.Blueprint.from_yaml(BLUEPRINT)
    files = object_files(prep.full)
    lines: list[str] = []

    # 1. client-side phases
    store = link_store(prep.full, workdir / "phases-chanbatch")
    settle()
    with phase_timer(two.client) as spent:
        started = time.perf_counter()
        bp.run(cb.Store(store), scheduler=two.client)
        wall = time.perf_counter() - started
    settle()
    with phase_timer(two.client) as dask_spent:
        started = time.perf_counter()
        dask_on(two.client, files)
        dask_wall = time.perf_counter() - started
    lines += phase_lines(dict(spent), wall, dict(dask_spent), dask_wall)

    # 2. task streams
    store = link_store(prep.full, workdir / "stream-chanbatch")
    tasks = kind_of_keys(prep, store)
    settle()
    with get_task_stream(two.client) as ts:
        t0 = time.time()
        bp.run(cb.Store(store), scheduler=two.client)
        t1 = time.time()
    mine = [r for r in ts.data if str(r["key"]) in tasks]
    cb_stream = read_stream(mine, t0, t1, lambda k: label_task(tasks[str(k)]))
    settle()
    with get_task_stream(two.client) as ts:
        t0 = time.time()
        dask_on(two.client, files)
        t1 = time.time()
    dask_stream = read_stream(list(ts.data), t0, t1, lambda k: key_split(k))
    n = two.workers
    split = 0
    chains: dict[Any, set[str]] = defaultdict(set)
    for key, task in tasks.items():
        if task.slice is not None and key in cb_stream.workers_of:
            chains[task.slice].add(cb_stream.workers_of[key])
    split = sum(1 for ws in chains.values() if len(ws) > 1)
    lines += [
        "",
        f"Task stream of one cold run of each on the {n}-worker cluster (times from the "
        "workers' clocks; lead is from the call to the first task's start, tail from the last "
        "task's end to the return):",
        "",
        "| | chanbatch | dask |",
        "|---|---|---|",
        f"| wall, s | {cb_stream.wall:.3f} | {dask_stream.wall:.3f} |",
        f"| tasks | {cb_stream.tasks} | {dask_stream.tasks} |",
        f"| lead, s | {cb_stream.lead:.3f} | {dask_stream.lead:.3f} |",
        f"| span of the tasks, s | {cb_stream.span:.3f} | {dask_stream.span:.3f} |",
        f"| tail, s | {cb_stream.tail:.3f} | {dask_stream.tail:.3f} |",
        f"| thread-seconds in task code | {cb_stream.busy:.3f} | {dask_stream.busy:.3f} |",
        f"| … per task, ms | {1e3 * cb_stream.busy / cb_stream.tasks:.2f} | "
        f"{1e3 * dask_stream.busy / dask_stream.tasks:.2f} |",
        f"| workers busy during the span | {100 * cb_stream.utilisation(n):.0f}% | "
        f"{100 * dask_stream.utilisation(n):.0f}% |",
        f"| transfers between workers (count, s) | {cb_stream.transfers}, "
        f"{cb_stream.transfer_seconds:.3f} | {dask_stream.transfers}, "
        f"{dask_stream.transfer_seconds:.3f} |",
        "| tasks, thread-seconds per worker | "
        + "; ".join(f"{c}, {s:.2f}" for c, s in cb_stream.by_worker.values())
        + " | "
        + "; ".join(f"{c}, {s:.2f}" for c, s in dask_stream.by_worker.values())
        + " |",
        "",
        f"Per-slice chains (load → shipped → priced → partial) split across workers: {split} "
        f"of {len(chains)}.",
    ]

    # 3. per kind: on the cluster, against the same tasks in one thread here
    store = link_store(prep.full, workdir / "sync-timer")
    settle()
    timer = ThreadTimer()
    with timer.patched():
        started = time.perf_counter()
        bp.run(cb.Store(store), scheduler="sync")
        sync_wall = time.perf_counter() - started
    lines += [
        "",
        f"chanbatch task time by kind: on the cluster (task stream above) and the same tasks "
        f'with `scheduler="sync"`, in one thread of this process ({sync_wall:.2f} s wall):',
        "",
        "| task | calls | cluster thread-s | sync thread-s |",
        "|---|---|---|---|",
    ]
    for label, (calls, seconds) in sorted(cb_stream.by_label.items(), key=lambda kv: -kv[1][1]):
        lines.append(f"| {label} | {calls} | {seconds:.2f} | {timer.seconds.get(label, 0.0):.2f} |")
    lines += [
        "",
        "dask task time by prefix on the cluster: "
        + ", ".join(
            f"`{k}` {c} tasks {s:.2f} s"
            for k, (c, s) in sorted(dask_stream.by_label.items(), key=lambda kv: -kv[1][1])
        )
        + ".",
    ]

    # 4. scheduling alone
    lines += ["", *time_noop_graph(two.client, prep, link_store(prep.full, workdir / "noop"), 3)]
    return lines


# -- output ---------------------------------------------------------------------------------------


def section_markdown(command: str, facts: list[tuple[str, str]], report: Report) -> str:
    return benchkit.section_markdown(
        command,
        facts,
        table_markdown(report.rows),
        report,
        profile_title="Where a cold run's time goes on the cluster",
    )


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--sf", type=float, default=1.0, help="TPC-H scale factor (default 1)")
    p.add_argument("--repeat", type=int, default=5, help="measurement rounds (default 5)")
    p.add_argument(
        "--workers", type=int, default=2, help="worker processes of the main cluster (default 2)"
    )
    p.add_argument("--out", type=Path, help="write the results into this markdown file")
    p.add_argument(
        "--cache",
        type=Path,
        default=Path(__file__).resolve().parents[2] / ".bench",
        help="data + scratch folder (bench_q1.py's)",
    )
    p.add_argument(
        "--profile", action="store_true", help="look at the time even if the target is met"
    )
    p.add_argument("--no-profile", action="store_true", help="never look at the time")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    p.add_argument("--check", action="store_true", help="exit 1 if the target is missed")
    args = p.parse_args(argv)
    args.repeat = max(1, args.repeat)
    args.workers = max(2, args.workers)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return bench(argv)[0]


def bench(argv: Sequence[str] | None = None) -> tuple[int, Report]:
    """Run the benchmark; its exit code and its report (tests/benchmark/report.py reads it)."""
    args = parse_args(argv)
    given = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["python", "tests/benchmark/bench_distributed.py", *given])
    quiet_distributed_logs()
    args.cache.mkdir(parents=True, exist_ok=True)
    source = ensure_lineitem(args.sf, args.cache)
    facts = machine()
    facts.insert(-1, ("distributed", version("distributed")))
    fingerprint = source_fingerprint()
    prep = prepare(source, args.sf, args.cache)
    print(
        f"lineitem SF{args.sf:g}: {prep.rows:,} rows in {prep.slices} slices, "
        f"{prep.object_bytes / 1e6:.1f} MB of objects"
        + (f" (prepared in {prep.seconds:.1f} s)" if prep.seconds else " (prepared stores reused)"),
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="dist-run-", dir=args.cache))
    report = Report()
    found = Found()
    clusters: list[Cluster] = []
    try:
        two = start_cluster(args.workers)
        clusters.append(two)
        one = start_cluster(1)
        clusters.append(one)
        samples, found = measure(args, prep, workdir, two, one)
        if found.problems:
            report.notes += [f"MISMATCH: {p}" for p in found.problems]
        else:
            print("\nresults", flush=True)
            summarise(args, prep, samples, found, report)
            report.notes += [f"MISMATCH: {p}" for p in found.problems]  # found during rounds
            missed = any(r.passed is False for r in report.rows)
            if not args.no_profile and (args.profile or missed):
                print("\nwhere the time goes", flush=True)
                report.profile += where_time_goes(args, prep, workdir, two)
                print("\n".join(report.profile), flush=True)
    finally:
        for cluster in reversed(clusters):
            cluster.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    facts.append(("load average at end", load_average()))
    facts.append(("chanbatch sources (sha256 of chanbatch/**/*.py)", fingerprint))
    if source_fingerprint() != fingerprint:
        report.notes.append(
            "chanbatch's source files changed during this run: the figures mix code versions "
            "(workers import chanbatch when they start). Run it again."
        )
    if report.rows:
        print_table(report.rows)
    for note in report.notes:
        print("note:", note)
    if report.rows:
        body = section_markdown(command, facts, report)
        if args.out is not None:
            write_section(args.out, body, section=SECTION, begin=BEGIN, end=END, header=DOC_HEADER)
            print(f"\nwrote section '{SECTION}' of {args.out}")
        else:
            print(f"\n## {SECTION}\n\n{BEGIN}\n{body}{END}", flush=True)
    if found.problems:
        return 1, report
    return (1 if args.check and any(r.passed is False for r in report.rows) else 0), report


if __name__ == "__main__":
    sys.exit(main())
