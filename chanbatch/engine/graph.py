"""Plan + decisions -> a Dask graph whose keys are the cache keys (or, for a provisional task,
its placeholder key: see chanbatch.compile.plan).

Every task function runs on a worker and records its own result in the cache as soon as it is
computed, so a run that is killed keeps everything it finished. (A run in this process on an
object store hands the writes to threads, :mod:`chanbatch.cache.behind`, and waits for them
before it freezes anything: a killed one loses only the writes in flight.)

A slice's rows stay an Arrow table from its load through the stages that
:mod:`chanbatch.engine.columnar` covers (filter, derive, select, rename, partial); a task that
needs pandas converts its input once, when it asks for ``Part.data``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from chanbatch.blueprint.model import Aggregate, Join, Sort, Stage, Union
from chanbatch.cache import CacheEntry, behind, lookup, read_result
from chanbatch.cache.index import cached_table, frame_table, stage_table
from chanbatch.cache.packs import PACK_ROWS, PACKED_KINDS, stage_pack
from chanbatch.cache.runs import TaskOutcome
from chanbatch.compile.decide import Decision
from chanbatch.compile.keys import task_key
from chanbatch.compile.plan import CHECKPOINT_RATIO, Plan, Task
from chanbatch.engine import columnar
from chanbatch.engine.failures import StageFailed, describe_failure
from chanbatch.errors import ChanbatchError, UsageError
from chanbatch.snapshot.objects import get_slice, read_objects_ahead, read_slices_ahead
from chanbatch.snapshot.options import options_for, token
from chanbatch.snapshot.read import canonical, load_object, to_pandas
from chanbatch.snapshot.storage import Storage

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd

    from chanbatch.snapshot.manifest import SliceManifest

_STORAGES: dict[tuple[str, str], Storage] = {}


def storage_for(url: str) -> Storage:
    """One Storage per store URL per process (workers included), opened with the storage
    options remembered for it (:mod:`chanbatch.snapshot.options`)."""
    given = options_for(url)
    opened = (url, token(given))
    storage = _STORAGES.get(opened)
    if storage is None:
        storage = _STORAGES[opened] = Storage(url, given)
    return storage


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """Everything a worker needs to run one task; pickled into the graph."""

    url: str
    run: str
    task: Task
    stage: Stage | None
    n_broadcast: int = 0
    allow: frozenset[str] = frozenset()

    def __dask_tokenize__(self) -> tuple[str, str, str]:
        # distributed names a graph by hashing its tasks; the key already hashes the work
        return (self.url, self.task.key, self.run)


@dataclass(frozen=True, slots=True)
class Ref:
    """A key passed as data: Dask would replace a bare string equal to a key by its value."""

    url: str
    key: str
    columns: tuple[str, ...] | None = None
    slice_id: str = ""  # for a load: the slice read (its key may include the columns)
    stored: bool = True  # for a cached result: consumers hash its content, else its key
    entry: CacheEntry | None = None  # for a cached result: where planning found it


Outcome = Literal["input", "cached", "computed", "cutoff"]


@dataclass(slots=True, kw_only=True)
class Part:
    """What every task returns: its rows (or where to read them) and its identity.

    ``key`` is the task's cache key, resolved from the content of its inputs; ``ident`` is what
    the tasks that read it hash it as. A cached result is read only when a consumer asks for its
    rows, so a task cut off early (its result found in the cache) costs no read at all. Rows
    computed on the Arrow path are a ``table``, converted to pandas once, when asked.
    """

    key: str
    ident: str
    url: str
    outcome: Outcome
    frame: pd.DataFrame | None = None
    table: pa.Table | None = None
    entry: CacheEntry | None = None  # where it is stored: once looked up, or once written

    @property
    def rows(self) -> int:
        """How many rows a computed part has."""
        if self.table is not None:
            return int(self.table.num_rows)
        return len(self.data)

    @property
    def data(self) -> pd.DataFrame:
        """The rows as pandas."""
        if self.frame is None:
            if self.table is not None:
                self.frame = to_pandas(self.table)
            else:
                storage = storage_for(self.url)
                self.frame = read_result(storage, self.entry or _cached(storage, self.key))
        return self.frame

    @property
    def arrow(self) -> pa.Table | None:
        """The rows as the Arrow path takes them, or None when they are pandas' to handle."""
        if self.table is None and self.frame is None:
            storage = storage_for(self.url)
            table = cached_table(storage, self.entry or _cached(storage, self.key))
            self.table = columnar.arrow_input(table)
            if self.table is None:
                self.frame = to_pandas(table)
        return self.table


def stored_table(part: Part) -> pa.Table:
    """``part``'s rows as an Arrow table in the form the store keeps them: a cached result is
    read as it was written, never through pandas, and a computed one is converted once."""
    if part.frame is None and part.table is None:
        storage = storage_for(part.url)
        return cached_table(storage, part.entry or _cached(storage, part.key))
    if part.table is not None:
        table = columnar.storable(part.table)
        if table is not None:
            return table
    return pa.Table.from_pandas(part.data, preserve_index=False)


def stored_entry(part: Part) -> CacheEntry | None:
    """Where ``part``'s rows are stored: the entry a computed part was stored under in this
    run (None if it was not stored), or a cached result's."""
    if part.frame is not None or part.table is not None:
        return part.entry
    return part.entry or _cached(storage_for(part.url), part.key)


def _cached(storage: Storage, key: str) -> CacheEntry:
    """The entry of a result the plan found cached; raises if it is gone since."""
    entry = lookup(storage, key)
    if entry is None:
        raise ChanbatchError(f"cache entry {key[:12]} vanished during the run; run again")
    return entry


# -- what each task did, for the run's statistics and record ------------------------------------

_LEDGER: dict[str, list[TaskOutcome]] = {}
_LEDGER_LOCK = threading.Lock()


# One topic for every run: two runs that share keys on one scheduler share their execution,
# and the report of each such task is sent once, for whichever run's graph it came in.
LEDGER_TOPIC = "chanbatch-tasks"


def report_outcome(run: str, outcome: TaskOutcome) -> None:
    """Record what one task did (see :func:`report_outcomes`)."""
    report_outcomes(run, [outcome])


def report_outcomes(run: str, outcomes: list[TaskOutcome]) -> None:
    """Record what tasks did: on a distributed cluster, as one event of the worker's (the
    client collects them through its subscription, as documents: :func:`reports_in`), else in
    this process."""
    if not run or not outcomes:
        return
    # A task on a distributed worker runs in a process that has imported distributed; under
    # the threads or sync scheduler nothing has, and importing it here would cost a run 0.2 s.
    distributed = sys.modules.get("distributed")
    try:
        worker = distributed.get_worker() if distributed is not None else None
    except ValueError:  # imported, but this task is not on a worker
        worker = None
    if worker is not None:
        # one event for the lot: the scheduler keeps only the last thousand events of a topic,
        # and a batch of a thousand slices reports thousands of tasks
        now = time.time()
        sent = [
            replace(o, worker=worker.address, worker_name=str(worker.name), run=run, time=now)
            for o in outcomes
        ]
        worker.log_event(LEDGER_TOPIC, {"reports": [o.document() for o in sent], "time": now})
        return
    here = local_worker()
    # a batch names the worker as it builds its reports: thousands of copies spared
    mine = [o if o.worker == here else replace(o, worker=here) for o in outcomes]
    with _LEDGER_LOCK:
        _LEDGER.setdefault(run, []).extend(mine)


def reports_in(message: Any) -> list[TaskOutcome]:
    """The task reports one ledger event carries: a worker's ``{"reports": [...]}``, or one
    report alone, as workers of earlier versions sent them (a long-lived scheduler's log of
    recent events may still hold such events when the client reads it)."""
    if isinstance(message, dict) and "reports" in message:
        return [TaskOutcome.parse(doc) for doc in message["reports"]]
    return [TaskOutcome.parse(message)]


def local_worker() -> str:
    """What a task run in this process reports as its worker: the process and thread."""
    return f"{os.getpid()}:{threading.current_thread().name}"


def take_ledger(run: str) -> list[TaskOutcome]:
    """What the tasks of ``run`` run in this process reported, removed from it."""
    with _LEDGER_LOCK:
        return _LEDGER.pop(run, [])


def task_outcome(
    task: Task,
    key: str,
    outcome: Outcome,
    start: float,
    *,
    rows: int | None = None,
    stored: str | None = None,
) -> TaskOutcome:
    seconds = time.perf_counter() - start
    return TaskOutcome(
        dask_key=task.key,
        key=key,
        stage=task.stage,
        slice=task.slice,
        kind=task.kind,
        outcome=outcome,
        start=start,
        seconds=round(seconds, 6),
        began=time.time() - seconds,
        rows=rows,
        stored=stored,
    )


# -- task functions ----------------------------------------------------------------------------


def load_slice(ref: Ref) -> Part:
    """An input slice, verified as read: an Arrow table, or pandas when its types need it."""
    storage = storage_for(ref.url)
    return _slice_part(storage, ref, get_slice(storage, ref.slice_id or ref.key))


def load_slices(refs: Sequence[Ref]) -> list[Part]:
    """The input slices ``refs`` of one store, each as :func:`load_slice` gives it, for a task
    that reads many (:mod:`chanbatch.engine.batch`): their manifests are asked for together,
    then their objects, and read in order as they come. A cold run over a local disk waits on
    the disk for all of a batch's files at once, not file by file (0.85 s -> 0.5 s for the 280 MB
    of 2,526 day slices, measured with the page cache emptied); on an object store they cost
    about a round trip together, where they were a round trip each."""
    if not refs:
        return []
    storage = storage_for(refs[0].url)
    ahead = read_slices_ahead(storage, [ref.slice_id or ref.key for ref in refs])
    try:
        manifests = [get_slice(storage, ref.slice_id or ref.key) for ref in refs]
        ahead += read_objects_ahead(storage, [p for m in manifests for p in m.parts])
        return [_slice_part(storage, ref, m) for ref, m in zip(refs, manifests, strict=True)]
    finally:
        storage.forget_ahead(ahead)  # what an error left unread


def _slice_part(storage: Storage, ref: Ref, manifest: SliceManifest) -> Part:
    tables = [load_object(storage, p.object, ref.columns, p.bytes) for p in manifest.parts]
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    arrow = columnar.arrow_input(table)
    frame = to_pandas(table) if arrow is None else None
    return Part(key=ref.key, ident=ref.key, url=ref.url, outcome="input", frame=frame, table=arrow)


def load_cached(ref: Ref) -> Part:
    """A cached result, read when a consumer needs it."""
    entry = ref.entry or _cached(storage_for(ref.url), ref.key)
    ident = entry.ident if ref.stored else ref.key
    return Part(key=ref.key, ident=ident, url=ref.url, outcome="cached", entry=entry)


def run_task(call: Call, *deps: Part, result: pd.DataFrame | None = None) -> Part:
    """Run one task on its inputs, and record it in the cache if it is stored.

    The cache key is computed here from the identities of the inputs that arrived. For a
    provisional task whose inputs came out as in an earlier run, that key is already cached:
    the task is cut off and returns the cached result unread. ``result``: what the task
    computes on ``deps``, computed already (together with other tasks, by a caller that
    proves it the same), to be keyed, stored and reported as if computed here.
    """
    start = time.perf_counter()
    task = call.task
    split = len(deps) - call.n_broadcast
    main, broadcast = deps[:split], deps[split:]
    key = task_key(task.kind, task.key_spec, [p.ident for p in main], [p.ident for p in broadcast])
    stored = task.stored or task.checkpoint
    if task.provisional and stored and behind.may_have_entry(call.run, key):
        entry = lookup(storage_for(call.url), key, verify=True)
        if entry is not None:
            ident = entry.ident if task.stored else key
            report_outcome(call.run, task_outcome(task, key, "cutoff", start, stored=entry.ident))
            return Part(key=key, ident=ident, url=call.url, outcome="cutoff", entry=entry)
    part = _computed(call, key, main, broadcast, result)
    rows = part.rows
    written = None
    if task.stored or (task.checkpoint and rows <= CHECKPOINT_RATIO * max(task.source_rows, 1)):
        entry = store_part(
            storage_for(call.url), key, part, kind=task.kind, stage=task.stage, run=call.run
        )
        written = entry.ident
        part.entry = entry  # where an output freeze finds the object that holds these rows
        if task.stored:
            part.ident = entry.ident
    report_outcome(call.run, task_outcome(task, key, "computed", start, rows=rows, stored=written))
    return part


def compute_part(call: Call, *deps: Part, key: str | None = None) -> Part:
    """Compute a task on its inputs, neither storing nor reporting it, as the result of ``key``
    (by default the task's key, known before the run): for a caller that stores many results
    at once (:mod:`chanbatch.engine.batch`)."""
    split = len(deps) - call.n_broadcast
    return _computed(call, key or call.task.key, deps[:split], deps[split:])


def _computed(
    call: Call,
    key: str,
    main: tuple[Part, ...],
    broadcast: tuple[Part, ...],
    done: pd.DataFrame | None = None,
) -> Part:
    result = _compute(call.task, call.stage, main, broadcast, call) if done is None else done
    if isinstance(result, pa.Table):
        return Part(key=key, ident=key, url=call.url, outcome="computed", table=result)
    # as a consumer reading it back from the cache would see it: a result's types must not
    # depend on whether it was computed in this run (see snapshot.read.canonical)
    return Part(key=key, ident=key, url=call.url, outcome="computed", frame=canonical(result))


def _compute(
    task: Task,
    stage: Stage | None,
    main: tuple[Part, ...],
    broadcast: tuple[Part, ...],
    call: Call,
) -> pd.DataFrame | pa.Table:
    if task.kind == "gather":
        return _pandas().concat([p.data for p in main])
    assert stage is not None
    try:
        if task.kind == "apply" and isinstance(stage.operation, Union):
            return _union_slice(task, main)
        if task.kind == "apply" and "halo" in task.key_spec:  # a window, slice by slice
            own = task.key_spec["halo"][0]
            return _pandas().window_slice(stage, [p.data for p in main], own)
        if task.kind in ("partial", "combine") and isinstance(stage.operation, Sort):
            return _top(stage, task.key_spec["top"], main)
        if task.kind == "apply" and isinstance(stage.operation, Join) and len(broadcast) == 1:
            joined = _join(stage.operation, main[0], broadcast[0], task.key_spec.get("missing"))
            if joined is not None:
                return joined
        if task.kind in ("apply", "partial") and not broadcast:
            table = main[0].arrow
            if table is not None:
                try:
                    if task.kind == "partial":
                        assert isinstance(stage.operation, Aggregate)
                        return columnar.partial(stage.operation, table)
                    if isinstance(stage.operation, Aggregate):  # per slice: finished here
                        return columnar.aggregated(stage.operation, table)
                    return columnar.apply_rowwise(stage, table)
                except columnar.Unsupported:
                    pass  # the pandas path below computes it, or raises its error
        if task.kind == "whole" and isinstance(stage.operation, Sort) and main and not broadcast:
            tables = [t for t in (p.arrow for p in main) if t is not None]
            if len(tables) == len(main):
                try:
                    return columnar.sort(stage.operation, tables)
                except columnar.Unsupported:
                    pass  # the pandas path below computes it, or raises its error
        if task.kind in ("combine", "finish") and main:
            tables = [t for t in (p.arrow for p in main) if t is not None]
            if len(tables) == len(main):
                from chanbatch.engine import arrow_combine

                assert isinstance(stage.operation, Aggregate)
                try:
                    if task.kind == "finish":
                        return arrow_combine.finish(stage.operation, tables[0])
                    return arrow_combine.combine(stage.operation, tables)
                except arrow_combine.Unsupported:
                    pass  # the pandas path below computes it, or raises its error
        execute = _pandas()
        missing = task.key_spec.get("missing")  # a co-sliced join's side with no slice here
        frames = [_no_rows(p) if missing == "left" else p.data for p in main]
        others = [_no_rows(p) if missing == "right" else p.data for p in broadcast]
        if task.kind == "apply":
            return execute.apply_rowwise(stage, frames[0], others, call.allow)
        if task.kind == "partial":
            return execute.partial(stage, frames[0])
        if task.kind == "combine":
            return execute.combine(stage, frames)
        if task.kind == "finish":
            return execute.finish(stage, frames)
        return execute.apply_whole(stage, frames, others, call.allow)
    except (StageFailed, UsageError):
        raise
    except Exception as exc:
        raise describe_failure(stage, task.slice, exc) from exc


def _join(op: Join, left: Part, right: Part, missing: str | None) -> pa.Table | None:
    """``left`` joined to ``right`` on Arrow, or None where the pandas path must do it. A side
    a co-sliced join has no slice for (``missing``) has no rows."""
    first, second = left.arrow, right.arrow
    if first is None or second is None:
        return None
    try:
        return columnar.join(op, *partnered(first, second, missing))
    except columnar.Unsupported:
        return None


def partnered(left: pa.Table, right: pa.Table, missing: str | None) -> tuple[pa.Table, pa.Table]:
    """A co-sliced join's two sides as it reads them: the side it has no slice for
    (``missing``, see :class:`chanbatch.compile.plan.Partners`) with no rows."""
    if missing == "left":
        return left.slice(0, 0), right
    if missing == "right":
        return left, right.slice(0, 0)
    return left, right


def _no_rows(part: Part) -> pd.DataFrame:
    """Zero rows of ``part``, with its columns and their types: what a co-sliced join reads for
    a side that has no slice of the task's key (see :class:`chanbatch.compile.plan.Partners`)."""
    table = part.arrow
    if table is not None:
        return to_pandas(table.slice(0, 0))
    return part.data.iloc[:0]


def _union_slice(task: Task, main: tuple[Part, ...]) -> pd.DataFrame | pa.Table:
    """One slice of a union of inputs sliced alike: the parts present, in the order of the
    union's inputs, their columns in ``from``'s order. On Arrow when the parts' types agree,
    else as the whole-input union concatenates them."""
    tables = [p.arrow for p in main]
    if all(t is not None for t in tables):
        selected = union_tables(task, [t for t in tables if t is not None])
        if selected is not None:
            return pa.concat_tables(selected).combine_chunks()
    present = [
        t.column_names if t is not None else list(p.data.columns)
        for t, p in zip(tables, main, strict=True)
    ]
    order = union_columns(task, present)
    return _pandas().concat([p.data[order] for p in main])


def union_columns(task: Task, present: Sequence[Sequence[str]]) -> list[str]:
    """The columns of union-by-slice ``task``'s slice, whose parts have the columns
    ``present``: in ``from``'s order, those a later stage reads (the plan loads only those)."""
    names = [set(p) for p in present]
    return [c for c in task.key_spec["columns"] if all(c in n for n in names)]


def union_tables(task: Task, tables: Sequence[pa.Table]) -> list[pa.Table] | None:
    """The parts ``tables`` of union-by-slice ``task``, each with :func:`union_columns` in
    order, ready to be stacked; None where their types differ (pandas' concatenation decides
    those)."""
    order = union_columns(task, [t.column_names for t in tables])
    selected = [t.select(order) for t in tables]
    if all(t.schema.equals(selected[0].schema) for t in selected):
        return selected
    return None


def _top(stage: Stage, n: int, main: tuple[Part, ...]) -> pd.DataFrame | pa.Table:
    """The first ``n`` rows of ``main`` (parts in slice order) in the sort's order: a slice's
    top rows, or the merge of its children's in the tree below a ``limit``."""
    assert isinstance(stage.operation, Sort)
    tables = [p.arrow for p in main]
    if all(t is not None for t in tables):
        with contextlib.suppress(columnar.Unsupported):
            return columnar.sort(stage.operation, [t for t in tables if t is not None]).slice(0, n)
    frame = _pandas().apply_whole(stage, [p.data for p in main], [], frozenset())
    return frame.head(n).reset_index(drop=True)


def _pandas() -> Any:
    """The pandas kernels, imported when a task first needs them: a run whose tasks all run on
    the Arrow path never imports pandas."""
    from chanbatch.engine import execute

    return execute


def store_part(
    storage: Storage, key: str, part: Part, *, kind: str, stage: str, run: str = ""
) -> CacheEntry:
    """Keep ``part``'s rows as the result of ``key``: a small partial or combine packed (a pack
    of one here; :mod:`chanbatch.engine.batch` packs many), anything else as an object of its
    own. With ``run``, stored behind that run when it stores behind (:mod:`chanbatch.cache.behind`):
    ``part`` must then keep its rows, for they may not be readable from the store yet."""
    table = storable_table(part)
    if kind in PACKED_KINDS and table.num_rows <= PACK_ROWS:
        staged = stage_pack(table, [(key, table.num_rows)], kind=kind, stage=stage)
    else:
        staged = stage_table(key, table, kind=kind, stage=stage)
    behind.store(storage, staged, run)
    return staged.entries[0]


def storable_table(part: Part) -> pa.Table:
    """``part``'s computed rows as the cache stores them. An Arrow table is taken as it is when
    that gives the bytes its pandas form would (:func:`columnar.storable`), which spares a
    partial of a few rows two conversions."""
    table = columnar.storable(part.table) if part.table is not None else None
    return table if table is not None else frame_table(part.data)


def build_graph(
    plan: Plan,
    decisions: dict[str, Decision],
    url: str,
    allow: frozenset[str],
    run: str = "",
) -> dict[str, Any]:
    """The Dask graph of every task a run must execute or read."""
    graph: dict[str, Any] = {}
    wanted: set[str] = set()
    for key, decision in decisions.items():
        if decision.action == "compute":
            wanted.add(key)
            wanted.update(plan.tasks[key].deps)
    # (an output found cached is not in the graph: it is read when it is frozen, if at all)
    for key in wanted:
        task = plan.tasks[key]
        decision = decisions[key]
        if task.kind == "load":
            graph[key] = (load_slice, Ref(url, key, task.columns, task.source))
        elif decision.action == "compute":
            stage_def = plan.blueprint.stages.get(task.stage)
            call = Call(
                url=url,
                run=run,
                task=task,
                stage=stage_def,
                n_broadcast=len(task.broadcast),
                allow=allow,
            )
            graph[key] = (run_task, call, *task.deps)
        else:
            graph[key] = (load_cached, Ref(url, key, stored=task.stored, entry=decision.entry))
    return graph
