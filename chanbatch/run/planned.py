"""A run that must be planned: lay out the plan, decide what to reuse, execute the rest,
freeze the outputs and record the run.

:func:`chanbatch.run.runner.run_blueprint` comes here once it has found that the run is not a
repeat of the last one (:mod:`chanbatch.run.repeat`), so that a run with nothing to do never
loads the planner. :func:`plan_blueprint` is what ``plan`` and ``flow`` show.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from chanbatch.blueprint.model import Blueprint, Map
from chanbatch.cache import CacheView, write_memo
from chanbatch.cache.index import (
    ChainsRead,
    read_chain_memo,
    read_chains,
    write_chain_delta,
    write_chains,
)
from chanbatch.cache.runs import (
    RUNNING,
    RunRecord,
    TaskOutcome,
    latest_record,
    record_path,
    write_record,
)
from chanbatch.compile.allow import check_allowed
from chanbatch.compile.chains import ChainMemo, StaleChains, find_chains
from chanbatch.compile.decide import Decision, decide
from chanbatch.compile.explain import describe_key, explain, load_previous
from chanbatch.compile.plan import Plan, build_plan
from chanbatch.errors import UsageError, did_you_mean
from chanbatch.run import recording
from chanbatch.run.executor import Executor, LocalExecutor, Progress
from chanbatch.run.outputs import freeze_outputs
from chanbatch.run.owners import check_outputs
from chanbatch.run.repeat import leave_outcome, outcome_record
from chanbatch.run.results import PlanReport, RunResult
from chanbatch.run.runner import resolve_inputs
from chanbatch.snapshot import SnapshotStore, layout, refs
from chanbatch.snapshot.names import encode_key
from chanbatch.snapshot.storage import Storage

__all__ = ["explain_task", "last_run", "plan_blueprint", "run_planned"]


def plan_blueprint(
    blueprint: Blueprint,
    store: SnapshotStore,
    *,
    sets: Mapping[str, str] | None = None,
    overwrite: Collection[str] | None = (),
    inputs: dict[str, refs.Resolved] | None = None,
    chains: ChainMemo | None = None,
    outcome: dict[str, Any] | None = None,
) -> PlanReport:
    """The plan of ``blueprint`` on ``store`` and what a run would compute or reuse.

    Raises UsageError when a run would write one of its inputs, or a dataset that this
    blueprint did not write and ``overwrite`` does not name (:mod:`chanbatch.run.owners`;
    ``overwrite=None`` skips that check, for pictures of the plan). ``inputs``: the inputs as
    the caller resolved and checked them already. ``chains``: plan the slices a chain memo
    knows top-down (:mod:`chanbatch.compile.chains`; ``{}`` finds the chains, to leave a memo).
    ``outcome``: the last run's outcome, when the caller read it already.
    """
    view = CacheView(store.storage, blueprint.name)
    if inputs is None:
        inputs = resolve_inputs(blueprint, store, sets)
        check_outputs(blueprint, store, inputs, overwrite)
    # the contents of the chains' partials, which the memo leaves to the chain memo
    view.remember(chains if chains is not None else read_chains(store.storage, blueprint.name))
    plan, decisions = _plan(blueprint, inputs, store, view, chains)
    report = PlanReport(
        plan=plan, decisions=decisions, memo=view.memo, hints=view.hints, listed=view.listed
    )
    if report.has_work:
        # a run planned top-down reads the last run's outcome, not its record of every task
        last = outcome_record(store, blueprint.name, outcome) if plan.remembered else None
        report.last, report.read_last = last or last_run(store, blueprint.name), True
        report.decisions = explain(
            plan, report.decisions, load_previous(store.storage, report.last)
        )
    return report


def _plan(
    blueprint: Blueprint,
    inputs: dict[str, refs.Resolved],
    store: SnapshotStore,
    view: CacheView,
    chains: ChainMemo | None,
) -> tuple[Plan, dict[str, Decision]]:
    """The plan and its decisions; planned again without the chain memo when the memo
    disagrees with the plan, or leaves out a task that must be computed after all (a reused
    result whose cache entry has gone)."""
    try:
        plan = build_plan(blueprint, inputs, view.content_of, chains)
    except StaleChains:
        plan = build_plan(blueprint, inputs, view.content_of, {})
    decisions = decide(plan, store.storage, view)
    if plan.remembered and not _complete(plan, decisions):
        plan = build_plan(blueprint, inputs, view.content_of, {})
        decisions = decide(plan, store.storage, view)
    return plan, decisions


def _complete(plan: Plan, decisions: dict[str, Decision]) -> bool:
    """Whether every input of every task to compute is planned."""
    tasks = plan.tasks
    return all(
        dep in tasks
        for key, decision in decisions.items()
        if decision.action == "compute"
        for dep in tasks[key].deps
    )


def explain_task(
    blueprint: Blueprint,
    store: SnapshotStore,
    stage: str,
    slice_text: str | None = None,
    *,
    sets: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The key components of ``stage``'s tasks (on one slice, if given), against the last run.

    Raises UsageError for an unknown stage or slice.
    """
    if stage not in blueprint.stages:
        raise UsageError(
            f"blueprint {blueprint.name!r} has no stage {stage!r}",
            hint=did_you_mean(stage, blueprint.stages) or "stages: " + ", ".join(blueprint.stages),
        )
    view = CacheView(store.storage, blueprint.name)
    chains = read_chains(store.storage, blueprint.name)
    view.remember(chains)
    plan = build_plan(blueprint, resolve_inputs(blueprint, store, sets), view.content_of)
    previous = load_previous(store.storage, last_run(store, blueprint.name))
    unchanged = _remembered_tasks(plan, chains)
    tasks = [t for t in plan.tasks.values() if t.stage == stage]
    if slice_text is not None:
        tasks = [t for t in tasks if t.slice is not None and str(encode_key(t.slice)) == slice_text]
        if not tasks:
            slices = sorted(
                {str(encode_key(t.slice)) for t in plan.stage_tasks(stage) if t.slice is not None}
            )
            raise UsageError(
                f"stage {stage!r} has no task on slice {slice_text!r}",
                hint=("its slices: " + ", ".join(slices[:12]))
                if slices
                else "it runs on its whole input",
            )
    return [describe_key(plan, t, previous, unchanged) for t in tasks]


def _remembered_tasks(plan: Plan, chains: ChainMemo) -> set[str]:
    """The keys of the tasks of slice chains whose slice the chain memo knows with the same
    partial key: a run planned top-down did not record them, and they are as they were."""
    known = {record[0] for records in chains.values() for record in records.values()}
    out: set[str] = set()
    for chain in find_chains(plan.blueprint, plan.inputs):
        stages = {*chain.stages, chain.merge}
        partial_of = {t.slice: t.key for t in plan.stage_tasks(chain.merge) if t.kind == "partial"}
        out.update(
            task.key
            for task in plan.tasks.values()
            if task.stage in stages
            and task.slice is not None
            and partial_of.get(task.slice) in known
        )
    return out


def last_run(store: SnapshotStore, blueprint_name: str, *, scan: int = 200) -> RunRecord | None:
    """The newest run record of ``blueprint_name`` that is not of a live (or killed) run, among
    the last ``scan`` (run ids sort by start time); damaged records are passed over."""
    return latest_record(
        store.storage,
        blueprint=blueprint_name,
        scan=scan,
        # a repeat has no tasks: what it repeats is the run to explain against
        usable=lambda record: record.status != RUNNING and record.repeats is None,
    )


@dataclass(slots=True, kw_only=True)
class _Run:
    """One run as it goes: what it was asked, and what each step found."""

    store: SnapshotStore
    blueprint: Blueprint
    report: PlanReport
    executor: Executor
    allow: frozenset[str]
    intent: RunRecord
    clock: float  # perf_counter at the start
    started_at: dt.datetime
    computed: list[str]
    chains: ChainsRead  # the chain memo the plan read
    done: dict[str, TaskOutcome] | None = None


def run_planned(
    blueprint: Blueprint,
    store: SnapshotStore,
    inputs: dict[str, refs.Resolved],
    outcome: dict[str, Any] | None,
    *,
    allow_modules: tuple[str, ...] | frozenset[str],
    executor: Callable[[], Executor],
    progress: Progress | None,
    clock: float,
) -> RunResult:
    """Plan, execute, freeze and record ``blueprint``'s run on the resolved and checked
    ``inputs`` (as :func:`~chanbatch.run.runner.run_blueprint` describes). ``outcome``: the
    last run's, as read already; ``clock``: perf_counter when the run began."""
    run = _prepare(blueprint, store, inputs, allow_modules, executor, clock, outcome)
    # refused runs have stopped by now, before writing anything
    _read_slices_ahead(run)
    write_record(store.storage, run.intent)
    try:
        parts = _execute(run, progress)
        output_keys, snapshots, versions = _freeze(run, parts)
    except BaseException:
        _forget(run)
        raise
    return _finish(run, output_keys, snapshots, versions)


def _prepare(
    blueprint: Blueprint,
    store: SnapshotStore,
    inputs: dict[str, refs.Resolved],
    allow_modules: tuple[str, ...] | frozenset[str],
    executor: Callable[[], Executor],
    clock: float,
    outcome: dict[str, Any] | None,
) -> _Run:
    """Ids, the plan with its decisions, the allow-list and the executor: every check a run
    makes before it writes anything. ``outcome``: the last run's, as read already."""
    started_at = dt.datetime.now(dt.UTC)
    run_id = recording.new_run_id(started_at)
    chains = read_chain_memo(store.storage, blueprint.name)
    report = plan_blueprint(blueprint, store, inputs=inputs, chains=chains.memo, outcome=outcome)
    allow = frozenset(allow_modules)
    computed = [k for k, d in report.decisions.items() if d.action == "compute"]
    for key in computed:
        stage_model = blueprint.stages.get(report.plan.tasks[key].stage)
        if stage_model is not None and isinstance(stage_model.operation, Map):
            check_allowed(stage_model.operation, allow)
    return _Run(
        store=store,
        blueprint=blueprint,
        report=report,
        executor=executor(),
        allow=allow,
        intent=recording.intent_record(run_id, started_at, report.plan),
        clock=clock,
        started_at=started_at,
        computed=computed,
        chains=chains,
    )


#: At most this many slice manifests are read ahead (a thread each): a run that loads more is
#: busy for long enough that round trips one after another hardly count.
_READ_AHEAD = 32


def _read_slices_ahead(run: _Run) -> None:
    """On an object store, start reading the manifests of the slices the run will load, if
    few (a new slice's: a round trip before its object can be asked for), while the intent
    record is written: for the threads of this process that load them (a cluster's workers
    read their own)."""
    storage = run.store.storage
    if storage.is_local or not isinstance(run.executor, LocalExecutor):
        return
    tasks = run.report.plan.tasks
    loads = list(
        dict.fromkeys(
            tasks[dep].source
            for key in run.computed
            for dep in tasks[key].deps
            if dep in tasks and tasks[dep].kind == "load"
        )
    )
    if 0 < len(loads) <= _READ_AHEAD:
        from chanbatch.engine.graph import storage_for  # the workers' Storage of this store

        url = run.executor.worker_url(storage)
        storage_for(url).read_ahead([layout.manifest_path(sid) for sid in loads if sid])


def _execute(run: _Run, progress: Progress | None) -> dict[str, Any]:
    """Execute the tasks the plan marked ``compute``: the targets' parts that came back. What
    each task did is kept in ``run.done`` (a retried task: its last run)."""
    plan = run.report.plan
    run.done = {}
    if not run.computed:
        return {}
    from chanbatch.engine.batch import Fusion
    from chanbatch.engine.graph import build_graph  # imports pyarrow: only when computing

    url = run.executor.worker_url(run.store.storage)
    graph = build_graph(plan, run.report.decisions, url, run.allow, run=run.intent.run)
    if progress is not None:
        counts: dict[str, int] = {}
        for key in run.computed:
            stage = plan.tasks[key].stage
            counts[stage] = counts.get(stage, 0) + 1
        # in flow order, first stage first, as a display lists them
        order = plan.blueprint.topological_order()
        progress.begin({stage: counts[stage] for stage in order if stage in counts})
    # the outputs' results computed in this run; a cached one is read when it is frozen, and
    # only if it must be (see chanbatch.run.outputs): none is loaded just to be handed back
    decisions = run.report.decisions
    targets = [
        k
        for stage in run.blueprint.outputs
        for k in plan.results[stage].keys
        if k and decisions[k].action == "compute"
    ]
    unique = list(dict.fromkeys(targets))
    fusion = Fusion(url, run.intent.run, run.allow)
    parts, ledger = run.executor.execute(
        plan, graph, unique, run.intent.run, progress, fusion, listed=run.report.listed
    )
    run.done = {entry.dask_key: entry for entry in ledger}
    return parts


def _freeze(
    run: _Run, parts: dict[str, Any]
) -> tuple[dict[str, list[str]], dict[str, dict[str, Any]], dict[str, int]]:
    report = run.report
    previous = report.last if report.read_last else last_run(run.store, run.blueprint.name)
    return freeze_outputs(
        run.store, run.blueprint, run.report.plan, parts, run.done or {}, run.intent.run, previous
    )


def _forget(run: _Run) -> None:
    """Remove the intent record of a run that failed.

    A run that fails leaves no "running" record for later commands to take for a live run
    (only a killed one does); what it cached stays, young, for the next run.
    """
    with contextlib.suppress(Exception):  # never hide why the run failed
        run.store.storage.delete(record_path(run.intent.run))


def _finish(
    run: _Run,
    output_keys: dict[str, list[str]],
    snapshots: dict[str, dict[str, Any]],
    versions: dict[str, int],
) -> RunResult:
    """The memo, the statistics and the full record; the result. ``versions``: each output's
    version in its dataset's ref log."""
    storage, plan, done = run.store.storage, run.report.plan, run.done or {}
    contents = recording.memo_contents(plan, done)
    packs = recording.pack_of(done, run.report.decisions, run.report.hints)
    with _Writes(storage) as writes:
        memo_digest: Callable[[], str | None] = lambda: None  # noqa: E731
        if run.computed or contents != run.report.memo:  # also replaces a damaged or stale memo
            memo_packs = recording.memo_packs(contents, packs)
            memo_digest = writes.add(write_memo, storage, run.blueprint.name, contents, memo_packs)
        if plan.chains:
            content = recording.content_of(plan, done)
            read = run.chains
            delta = read.delta_with(plan.chain_memo(content, packs, changed_only=True))
            if delta is not None:  # a few records changed: those, beside the memo as it is
                writes.add(write_chain_delta, storage, run.blueprint.name, read.base, delta)
            else:
                memo = plan.chain_memo(content, packs)
                write = functools.partial(write_chains, drop_delta=read.delta_file)
                writes.add(write, storage, run.blueprint.name, memo)
        record, stats = _record(run, output_keys, snapshots, versions)
        writes.add(write_record, storage, record)
    # last: the outcome names the memo and the record, written by now
    leave_outcome(run.store, plan, run.intent.run, output_keys, snapshots, stats, memo_digest())
    return RunResult(run_id=run.intent.run, snapshots=snapshots, stats=stats, store=run.store)


def _record(
    run: _Run,
    output_keys: dict[str, list[str]],
    snapshots: dict[str, dict[str, Any]],
    versions: dict[str, int],
) -> tuple[RunRecord, dict[str, Any]]:
    """The run's full record, and its statistics."""
    plan, done = run.report.plan, run.done or {}
    tasks = recording.recorded_tasks(run.report, done, run.started_at)
    seconds = time.perf_counter() - run.clock
    stats = recording.run_stats(recording.stage_stats(tasks, plan.collapsed_counts()), seconds)
    record = recording.finished_record(
        intent=run.intent,
        plan=plan,
        scheduler=run.executor.name,
        tasks=tasks,
        done=done,
        output_keys=output_keys,
        snapshots=snapshots,
        versions=versions,
        stats=stats,
    )
    return record, stats


class _Writes:
    """Writes that do not depend on each other: on an object store sent together, on threads
    (each is a round trip there), on a local disk made at once, in turn. :meth:`add` returns
    what gives the write's result; leaving the block waits for every write, and raises the
    first one's error."""

    def __init__(self, storage: Storage) -> None:
        self._pool: ThreadPoolExecutor | None = None
        if not storage.is_local:
            self._pool = ThreadPoolExecutor(4, thread_name_prefix="chanbatch-write")
        self._futures: list[Future[Any]] = []

    def add(self, write: Callable[..., Any], *args: Any) -> Callable[[], Any]:
        if self._pool is None:
            value = write(*args)
            return lambda: value
        future = self._pool.submit(write, *args)
        self._futures.append(future)
        return future.result

    def __enter__(self) -> _Writes:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is None:
            return
        try:
            for future in self._futures:
                future.result()
        finally:
            self._pool.shutdown(wait=True)
