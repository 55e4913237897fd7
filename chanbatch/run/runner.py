"""Plan and run a blueprint against a store.

``run_blueprint`` resolves the inputs, lays out the plan, decides what to reuse, executes the
rest on a Dask scheduler (each stored task records its result as it finishes), freezes each
output as a snapshot with its lineage, and writes a run record to ``runs/<run id>.json``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from chanbatch.blueprint.model import Blueprint, Map
from chanbatch.cache import CacheView, write_memo
from chanbatch.compile.allow import check_allowed
from chanbatch.compile.decide import Decision, decide
from chanbatch.compile.explain import describe_key, explain, load_previous
from chanbatch.compile.keys import blueprint_digest, engine_salt
from chanbatch.compile.plan import Plan, build_plan
from chanbatch.errors import UsageError, did_you_mean
from chanbatch.hashing import seal
from chanbatch.run import display
from chanbatch.run.owners import check_outputs
from chanbatch.run.schedulers import check_scheduler, connect
from chanbatch.snapshot import SnapshotStore, layout, refs
from chanbatch.snapshot.freeze import freeze
from chanbatch.snapshot.names import encode_key

log = logging.getLogger(__name__)


class Progress(Protocol):
    """What a run tells a progress display: the tasks each stage will run, then each one as it
    finishes (``computed``, or ``cutoff`` when found in the cache after all), and notes such as
    the dashboard's address."""

    def begin(self, totals: dict[str, int]) -> None: ...

    def advance(self, stage: str, outcome: str) -> None: ...

    def message(self, text: str) -> None: ...


REPORTED_KINDS = ("apply", "partial", "combine", "finish", "whole")


@dataclass(slots=True, kw_only=True)
class PlanReport:
    """A plan with its reuse decisions, as ``plan`` shows it."""

    plan: Plan
    decisions: dict[str, Decision]
    memo: dict[str, str] = field(default_factory=dict)  # the memo as planning read it

    @property
    def has_work(self) -> bool:
        """Whether a run would compute anything (else everything comes from the cache)."""
        return any(d.action == "compute" for d in self.decisions.values())

    def tasks(self) -> list[dict[str, Any]]:
        out = []
        for task in self.plan.tasks.values():
            if task.kind not in REPORTED_KINDS:
                continue
            decision = self.decisions[task.key]
            out.append(
                {
                    "stage": task.stage,
                    "slice": encode_key(task.slice) if task.slice is not None else None,
                    "action": decision.action,
                    "reason": decision.reason,
                    "provisional": decision.provisional,
                    "kind": task.kind,
                    "key": task.key,
                    "deps": list(task.deps),
                    "broadcast": list(task.broadcast),
                }
            )
        return out

    def summary(self) -> dict[str, int]:
        tasks = self.tasks()
        return {
            "compute": sum(1 for t in tasks if t["action"] == "compute"),
            "reuse": sum(1 for t in tasks if t["action"] == "reuse"),
            # of the computed: reused after all if their recomputed inputs come out unchanged
            "provisional": sum(1 for t in tasks if t["provisional"]),
        }

    def document(self) -> dict[str, Any]:
        tasks = [
            {k: v for k, v in t.items() if k not in ("deps", "broadcast")} for t in self.tasks()
        ]
        return {
            "blueprint": self.plan.blueprint.name,
            "inputs": {
                name: {"dataset": r.dataset, "snapshot": r.snapshot}
                for name, r in self.plan.inputs.items()
            },
            "tasks": tasks,
            "summary": self.summary(),
            "notes": list(self.plan.notes),
        }

    def __repr__(self) -> str:
        return display.plan_repr(self)

    def _repr_html_(self) -> str:
        return display.plan_html(self)


@dataclass(slots=True, kw_only=True)
class RunResult:
    """What a run produced: output snapshots (and dask views of them) and its statistics."""

    run_id: str
    snapshots: dict[str, dict[str, Any]]
    stats: dict[str, Any]
    store: SnapshotStore
    _frames: dict[str, Any] = field(default_factory=dict)

    @property
    def outputs(self) -> dict[str, Any]:
        """Each output stage's frozen result as a dask DataFrame."""
        if not self._frames:
            from chanbatch.run.frames import to_dask

            for name, info in self.snapshots.items():
                resolved = self.store.resolve(f"{info['dataset']}@{info['snapshot']}")
                self._frames[name] = to_dask(self.store.storage, list(resolved.manifest.slices))
        return self._frames

    def document(self) -> dict[str, Any]:
        return {"run": self.run_id, "outputs": self.snapshots, "stats": self.stats}

    def __repr__(self) -> str:
        # never .outputs: building dask frames (or reading anything) to print a line is wrong
        return display.run_repr(self)

    def _repr_html_(self) -> str:
        return display.run_html(self)


def resolve_inputs(
    blueprint: Blueprint, store: SnapshotStore, sets: Mapping[str, str] | None = None
) -> dict[str, refs.Resolved]:
    """Resolve every input REF, with ``sets`` rebinding some (``--set input=REF``).

    Raises UsageError for a rebinding of an unknown input, and RefError for a REF that does not
    resolve.
    """
    bindings = dict(blueprint.inputs)
    for name, ref in (sets or {}).items():
        if name not in bindings:
            close = did_you_mean(name, bindings)
            raise UsageError(
                f"--set {name}=...: blueprint {blueprint.name!r} has no input {name!r}",
                hint=close or "inputs: " + ", ".join(bindings),
            )
        bindings[name] = ref
    resolved = {}
    for name, ref in bindings.items():
        try:
            resolved[name] = store.resolve(ref)
        except UsageError as exc:
            raise type(exc)(f"input {name!r}: {exc.message}", hint=exc.hint) from exc
    return resolved


def plan_blueprint(
    blueprint: Blueprint,
    store: SnapshotStore,
    *,
    sets: Mapping[str, str] | None = None,
    overwrite: Collection[str] | None = (),
) -> PlanReport:
    """The plan of ``blueprint`` on ``store`` and what a run would compute or reuse.

    Raises UsageError when a run would write one of its inputs, or a dataset that this
    blueprint did not write and ``overwrite`` does not name (:mod:`chanbatch.run.owners`;
    ``overwrite=None`` skips that check, for pictures of the plan).
    """
    view = CacheView(store.storage, blueprint.name)
    inputs = resolve_inputs(blueprint, store, sets)
    check_outputs(blueprint, store, inputs, overwrite)
    plan = build_plan(blueprint, inputs, view.content_of)
    report = PlanReport(plan=plan, decisions=decide(plan, store.storage, view), memo=view.memo)
    if report.has_work:
        record = last_run(store, blueprint.name)
        report.decisions = explain(plan, report.decisions, load_previous(store.storage, record))
    return report


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
    plan = build_plan(blueprint, resolve_inputs(blueprint, store, sets), view.content_of)
    previous = load_previous(store.storage, last_run(store, blueprint.name))
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
    return [describe_key(plan, t, previous) for t in tasks]


def last_run(
    store: SnapshotStore, blueprint_name: str, *, scan: int = 200
) -> dict[str, Any] | None:
    """The newest run record of ``blueprint_name`` (run ids sort by start time)."""
    names = [n for n in store.storage.listdir(layout.RUNS) if n.endswith(".json")]
    for name in reversed(names[-scan:]):
        try:
            record = json.loads(store.storage.read_bytes(f"{layout.RUNS}/{name}"))
        except (ValueError, FileNotFoundError):
            continue
        if record.get("blueprint") == blueprint_name and record.get("status") != "running":
            return record
    return None


def run_blueprint(
    blueprint: Blueprint,
    store: SnapshotStore,
    *,
    scheduler: Any = "threads",
    workers: int | None = None,
    sets: Mapping[str, str] | None = None,
    allow_modules: tuple[str, ...] | frozenset[str] = (),
    progress: Progress | None = None,
    pin_cpus: bool = False,
    overwrite: Collection[str] = (),
) -> RunResult:
    """Run ``blueprint`` and freeze its outputs; see the module docstring.

    Raises BlueprintError, RefError and UsageError before anything runs (UsageError also
    for an output that is an input, or a dataset not written by this blueprint and not named
    in ``overwrite``), and StageFailed (naming the stage and slice) when a stage raises.
    """
    started = time.perf_counter()
    started_at = dt.datetime.now(dt.UTC)
    run_id = started_at.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    report = plan_blueprint(blueprint, store, sets=sets, overwrite=overwrite)
    plan, decisions = report.plan, report.decisions
    storage = store.storage
    allow = frozenset(allow_modules)

    targets: list[str] = []
    for stage in blueprint.outputs:
        targets.extend(k for k in plan.results[stage].keys if k)
    computed = [k for k, d in decisions.items() if d.action == "compute"]
    for key in computed:
        stage_model = blueprint.stages.get(plan.tasks[key].stage)
        if stage_model is not None and isinstance(stage_model.operation, Map):
            check_allowed(stage_model.operation, allow)
    check_scheduler(scheduler)
    # refused runs have stopped by now, before writing anything
    _write_intent(store, run_id, started_at, plan)
    try:
        parts, ledger = _compute(
            plan,
            decisions,
            computed,
            targets,
            storage,
            allow,
            run_id,
            scheduler,
            workers,
            progress,
            pin_cpus,
        )
        done = {entry["dask_key"]: entry for entry in ledger}  # a retried task: its last run
        output_keys, snapshots = _freeze_outputs(store, blueprint, plan, parts, done, run_id)
    except BaseException:
        # A run that fails leaves no "running" record for later commands to take for a live
        # run (only a killed one does); what it cached stays, young, for the next run.
        with contextlib.suppress(Exception):  # never hide why the run failed
            storage.delete(f"{layout.RUNS}/{run_id}.json")
        raise
    contents = _contents(plan, done)
    if computed or contents != report.memo:  # also replaces a memo that was damaged or stale
        write_memo(storage, blueprint.name, contents)
    stats = _stats(report, done, time.perf_counter() - started)
    _write_record(store, run_id, started_at, report, done, output_keys, snapshots, stats, scheduler)
    return RunResult(run_id=run_id, snapshots=snapshots, stats=stats, store=store)


def _compute(
    plan: Plan,
    decisions: dict[str, Decision],
    computed: list[str],
    targets: list[str],
    storage: Any,
    allow: frozenset[str],
    run_id: str,
    scheduler: Any,
    workers: int | None,
    progress: Progress | None,
    pin_cpus: bool,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Execute the tasks the plan marked ``compute``: the parts that came back, and the ledger
    of what each task did."""
    if not computed:
        return {}, []
    from chanbatch.engine.graph import build_graph  # imports pandas: only when computing

    graph = build_graph(plan, decisions, _worker_url(storage, scheduler), allow, run=run_id)
    if progress is not None:
        totals: dict[str, int] = {}
        for key in computed:
            stage = plan.tasks[key].stage
            if stage in plan.blueprint.stages:
                totals[stage] = totals.get(stage, 0) + 1
        progress.begin(totals)
    return _execute(plan, graph, targets, run_id, scheduler, workers, progress, pin_cpus)


def _freeze_outputs(
    store: SnapshotStore,
    blueprint: Blueprint,
    plan: Plan,
    parts: dict[str, Any],
    done: dict[str, dict[str, Any]],
    run_id: str,
) -> tuple[dict[str, list[str]], dict[str, dict[str, Any]]]:
    """Freeze each output stage's result as its dataset (unless the last run's snapshot, made
    from the same keys, is still the head): the keys of each output, and its snapshot."""
    storage = store.storage
    previous = last_run(store, blueprint.name)
    resolved = {dask_key: entry["key"] for dask_key, entry in done.items()}
    lineage_base = {
        "blueprint": blueprint.name,
        "blueprint_hash": blueprint_digest(blueprint),
        "run": run_id,
        "inputs": {name: r.snapshot for name, r in plan.inputs.items()},
    }
    snapshots: dict[str, dict[str, Any]] = {}
    output_keys: dict[str, list[str]] = {}
    for stage, dataset in blueprint.outputs.items():
        result = plan.results[stage]
        keys = output_keys[stage] = [resolved.get(k, k) for k in result.keys]
        unchanged = _unchanged_output(store, previous, stage, dataset, keys)
        if unchanged is not None:  # same keys as the last run, whose snapshot is still the head
            snapshots[stage] = unchanged
            continue
        from chanbatch.engine.graph import Part, stored_table

        def table_of(key: str) -> Any:
            part = parts.get(key)
            if part is None:
                part = Part(key=key, ident="", url=storage.url, outcome="cached")
            return stored_table(part)

        if result.sliced is not None:
            data = unify_types({slice_key: table_of(k) for slice_key, k in result.sliced})
        else:
            data = {"all": table_of(result.whole or "")}
        if not data:
            raise UsageError(f"output {stage!r} has no slices to freeze: its input is empty")
        info = freeze(
            storage,
            dataset,
            data,
            lineage={**lineage_base, "stage": stage},
            operation="run",
            replace=True,
        )
        snapshots[stage] = {
            "dataset": dataset,
            "snapshot": info.snapshot,
            "rows": sum(s.rows for s in info.slices),
        }
    return output_keys, snapshots


def unify_types(tables: dict[Any, Any]) -> dict[Any, Any]:
    """Per-slice Arrow tables of one output with one type per column.

    A slice's column can differ in type only because of its data: a column that is all null in
    one slice has no type there (it takes the type the other slices agree on), and a function
    whose result type follows its values (``coalesce`` of an int column with a float) can give
    int64 in one slice and double in another: then every slice gets double. The rule looks at
    the set of slices only, never at which of them were computed in this run, so an
    incremental run gives the types a cold run gives.
    """
    import pyarrow as pa

    from chanbatch.snapshot.normalize import normalize_table

    if len(tables) < 2:
        return tables
    tables = {key: normalize_table(table) for key, table in tables.items()}
    names = next(iter(tables.values())).column_names
    casts: dict[str, Any] = {}
    for name in names:
        types = {
            t.schema.field(name).type
            for t in tables.values()
            if name in t.column_names and not pa.types.is_null(t.schema.field(name).type)
        }
        if len(types) == 1:
            (target,) = types
        elif types and all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in types):
            target = pa.float64()
        else:
            continue  # freeze names the conflict
        casts[name] = target
    out = {}
    for key, table in tables.items():
        for name, target in casts.items():
            if name in table.column_names:
                index = table.column_names.index(name)
                if table.schema.field(index).type != target:
                    table = table.set_column(index, name, table.column(index).cast(target))
        out[key] = table
    return out


def _unchanged_output(
    store: SnapshotStore,
    previous: dict[str, Any] | None,
    stage: str,
    dataset: str,
    keys: list[str],
) -> dict[str, Any] | None:
    """The last run's output, if it came from the same keys and is still the dataset's head.

    This is what lets a fully cached run finish without reading (or importing pandas for) a
    single result.
    """
    if previous is None:
        return None
    before = previous.get("outputs", {}).get(stage)
    if not before or before.get("dataset") != dataset:
        return None
    if previous.get("output_keys", {}).get(stage) != keys:
        return None
    head = refs.head(store.storage, dataset)
    if head is None or head.snapshot != before.get("snapshot"):
        return None
    return dict(before)


def _contents(plan: Plan, done: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Key -> object id of every stored result this run used or made, for the next plan."""
    out = {}
    for task in plan.tasks.values():
        if not task.stored:
            continue
        entry = done.get(task.key)
        if entry is not None:
            if entry.get("stored"):
                out[entry["key"]] = entry["stored"]
        elif task.ident:
            out[task.key] = task.ident
    return out


def _stats(report: PlanReport, done: dict[str, dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Counts of what the run did, in total and per stage: ``computed`` tasks ran, ``reused``
    ones came from the cache, and ``cutoff`` ones (counted in ``reused``) were found in the cache
    once their recomputed inputs turned out unchanged."""
    stages: dict[str, dict[str, Any]] = {}
    for task in report.plan.tasks.values():
        if task.kind not in REPORTED_KINDS:
            continue
        counts = stages.setdefault(
            task.stage, {"computed": 0, "reused": 0, "cutoff": 0, "seconds": 0.0}
        )
        entry = done.get(task.key)
        outcome = entry["outcome"] if entry is not None else "reused"
        counts["computed" if outcome == "computed" else "reused"] += 1
        if outcome == "cutoff":
            counts["cutoff"] += 1
        if entry is not None:
            counts["seconds"] += entry["seconds"]
    for counts in stages.values():
        counts["seconds"] = round(counts["seconds"], 3)
    return {
        "computed": sum(c["computed"] for c in stages.values()),
        "reused": sum(c["reused"] for c in stages.values()),
        "cutoff": sum(c["cutoff"] for c in stages.values()),
        "seconds": round(seconds, 3),
        "stages": stages,
    }


def _execute(
    plan: Plan,
    graph: dict[str, Any],
    targets: list[str],
    run_id: str,
    scheduler: Any,
    workers: int | None,
    progress: Progress | None,
    pin_cpus: bool,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run ``graph``; returns the targets' results and what every task reported."""
    from chanbatch.engine.graph import Part, run_task, take_ledger

    unique = list(dict.fromkeys(targets))
    if scheduler in ("threads", "sync", None):
        import dask
        from dask.callbacks import Callback

        if pin_cpus:
            log.warning("--pin-cpus pins worker processes; with %s it does nothing", scheduler)

        # Read from our tuples: dask hands callbacks its own Task objects, not subscriptable.
        computing = {key for key, spec in graph.items() if spec[0] is run_task}

        def posttask(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            if progress is not None and isinstance(result, Part) and key in computing:
                progress.advance(plan.tasks[key].stage, result.outcome)

        get = dask.get if scheduler == "sync" else dask.threaded.get
        kwargs = {} if scheduler == "sync" else {"num_workers": workers or os.cpu_count() or 1}
        try:
            with Callback(posttask=posttask):
                results = get(graph, unique, **kwargs)
        finally:
            ledger = take_ledger(run_id)
        return dict(zip(unique, results, strict=True)), ledger
    return _execute_distributed(plan, graph, unique, run_id, scheduler, workers, progress, pin_cpus)


def _execute_distributed(
    plan: Plan,
    graph: dict[str, Any],
    targets: list[str],
    run_id: str,
    scheduler: Any,
    workers: int | None,
    progress: Progress | None,
    pin_cpus: bool,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from distributed import Client, LocalCluster

    from chanbatch.run import cluster as clusters

    def run_on(client: Client) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        if progress is not None:
            link = _dashboard(client)
            if link:
                progress.message(f"dashboard: {link}")
        expected = {key for key, value in graph.items() if value[0] is run_task}

        def on_report(entry: dict[str, Any]) -> None:
            if progress is not None and entry.get("dask_key") in expected:
                progress.advance(entry["stage"], entry["outcome"])

        with clusters.pinned(client) if pin_cpus else contextlib.nullcontext():
            results, ledger = clusters.run_graph(
                client, plan, graph, targets, expected, on_report=on_report
            )
        return dict(zip(targets, results, strict=True)), ledger

    from chanbatch.engine.graph import run_task

    if isinstance(scheduler, Client):
        return run_on(scheduler)
    if scheduler == "processes":
        n = workers or os.cpu_count() or 1
        with (
            LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                # a free port: the default (8787) warns when another cluster holds it
                dashboard_address=":0",
                # workers log a task's failure with its traceback; the run reports it instead
                silence_logs=logging.CRITICAL if not log.isEnabledFor(logging.DEBUG) else False,
            ) as local,
            Client(local) as client,
        ):
            return run_on(client)
    if isinstance(scheduler, str) and "://" in scheduler:
        with connect(scheduler) as client:
            return run_on(client)
    raise UsageError(
        f"unknown scheduler {scheduler!r}",
        hint="use threads, sync, processes, a tcp://host:port address, or a distributed.Client",
    )


def _worker_url(storage: Any, scheduler: Any) -> str:
    """The store's URL as workers must see it: a local path made absolute (a worker may run
    in another directory); a ``memory://`` store only where it exists, in this process."""
    if storage.is_local:
        return storage.root
    if storage.url.startswith("memory:") and scheduler not in ("threads", "sync", None):
        raise UsageError(
            f"store {storage.url} lives in this process's memory; workers in other processes "
            "cannot read it",
            hint="use --scheduler threads, or a store on disk",
        )
    return storage.url


def _has_dashboard() -> bool:
    """Whether Dask's dashboard can be served (it needs bokeh)."""
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def _dashboard(client: Any) -> str | None:
    """The dashboard link, when there is a dashboard to see."""
    if not _has_dashboard():
        return None
    try:
        return str(client.dashboard_link)
    except Exception:  # no HTTP server on this scheduler
        return None


def _write_intent(store: SnapshotStore, run_id: str, started_at: dt.datetime, plan: Plan) -> None:
    """``runs/<run id>.json`` before the run reads anything: what it is about to use.

    gc roots every young run record, so the stored results this run reuses and the input
    snapshots it reads cannot be collected under it, however old they are; gc reads records
    written while it swept once more before it deletes (see chanbatch.snapshot.gc). The full
    record replaces this one at the end; a run that dies leaves it, with status "running".
    """
    intent = {
        "run": run_id,
        "started_at": started_at.isoformat(timespec="milliseconds"),
        "blueprint": plan.blueprint.name,
        "status": "running",
        "roots": {
            "snapshots": sorted({r.snapshot for r in plan.inputs.values()}),
            "cache": sorted(k for k, t in plan.tasks.items() if t.stored or t.checkpoint),
        },
    }
    store.storage.write_atomic(f"{layout.RUNS}/{run_id}.json", seal(intent))


def _output_versions(store: SnapshotStore, snapshots: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Each output's version in its dataset's ref log: with it, verify names the version when
    that ref file is deleted (a silent rollback of the dataset)."""
    out = {}
    for stage, info in snapshots.items():
        head = refs.head(store.storage, info["dataset"])
        if head is not None and head.snapshot == info["snapshot"]:
            out[stage] = head.version
    return out


def _write_record(
    store: SnapshotStore,
    run_id: str,
    started_at: dt.datetime,
    report: PlanReport,
    done: dict[str, dict[str, Any]],
    output_keys: dict[str, list[str]],
    snapshots: dict[str, dict[str, Any]],
    stats: dict[str, Any],
    scheduler: Any,
) -> None:
    """``runs/<run id>.json``: what ran, with the cache keys each task resolved to."""
    plan = report.plan
    tasks = report.tasks()
    epoch = started_at.timestamp()
    for task in tasks:
        entry = done.get(task["key"])
        if entry is not None:
            task["key"] = entry["key"]
            task["outcome"] = entry["outcome"]
            task["seconds"] = entry["seconds"]
            task["worker"] = entry.get("worker")
            if "worker_name" in entry:
                task["worker_name"] = entry["worker_name"]
            if "began" in entry:  # wall clock, as seconds after started_at: the report's timeline
                task["began"] = round(entry["began"] - epoch, 3)
                task["ended"] = round(entry["began"] + entry["seconds"] - epoch, 3)
        task["deps"] = [done[d]["key"] if d in done else d for d in task["deps"]]
    stored = [
        done[t.key]["key"] if t.key in done else t.key
        for t in plan.tasks.values()
        if t.stored or t.checkpoint
    ]
    record = {
        "run": run_id,
        "status": "finished",
        "started_at": started_at.isoformat(timespec="milliseconds"),
        "blueprint": plan.blueprint.name,
        "blueprint_hash": blueprint_digest(plan.blueprint),
        "source": plan.blueprint.source,
        "text": plan.blueprint.text,
        "salt": engine_salt(),
        "specs": {name: stage.canonical() for name, stage in plan.blueprint.stages.items()},
        "scheduler": scheduler if isinstance(scheduler, str) else type(scheduler).__name__,
        "inputs": {
            name: {
                "dataset": r.dataset,
                "snapshot": r.snapshot,
                "version": r.entry.version,  # verify finds a ref file deleted under it
                # the rows the run read: the whole snapshot, or its one slice (DATASET[slice])
                "rows": sum(e.rows for e in r.manifest.slices if r.slice_key in (None, e.key)),
            }
            for name, r in plan.inputs.items()
        },
        "tasks": tasks,
        "outputs": snapshots,
        "output_versions": _output_versions(store, snapshots),
        "output_keys": output_keys,
        "stats": stats,
        "roots": {
            "snapshots": sorted({o["snapshot"] for o in snapshots.values()}),
            "cache": stored,
        },
    }
    # a value JSON has no type for (a scheduler object, a path) is recorded as its text
    store.storage.write_atomic(f"{layout.RUNS}/{run_id}.json", seal(record, default=str))
