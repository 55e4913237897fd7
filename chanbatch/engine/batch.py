"""Many small slices in one task: a slice's chain of row-wise stages and its partial, fused, for
many slices at once.

A plan has a load, an ``apply`` per row-wise stage and a ``partial`` for every slice of an
aggregate's input: at 2,526 daily slices, some ten thousand tasks of a millisecond each, whose
fixed costs (a task, a file read, a call into Arrow per stage) are most of a run. Here the graph
keeps the plan's tasks, keys and results but runs such chains, for consecutive slices, as one
task (:func:`run_batch`): it reads the slices, concatenates their rows, runs each stage once
over all of them (every operation here works row by row) and computes every slice's partial in
one grouped aggregate keyed by (slice, group keys), or a top-N's in one sort keyed by
(slice, sort keys). A chain may hold a co-sliced join: the batch then reads each slice's
partner too and joins them all at once, the slice one more key. Each slice's partial
is still its own result, stored under its own key, to the bit what the slice alone gives (see
:func:`chanbatch.engine.columnar.partials`), so nothing a run stores or reports depends on
batching; a chain that the Arrow path cannot run in one go is run task by task, as
:func:`chanbatch.engine.graph.run_task` runs it alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa

from chanbatch.blueprint.model import Aggregate, Join, Sort, Stage, Union
from chanbatch.cache import behind
from chanbatch.cache.index import CacheEntry, lookup
from chanbatch.cache.packs import PACK_ROWS, content_id, content_ids, stage_pack
from chanbatch.cache.runs import TaskOutcome
from chanbatch.compile.keys import task_key
from chanbatch.compile.plan import CHECKPOINT_RATIO, Plan, Task
from chanbatch.engine import columnar
from chanbatch.engine.arrow_numpy import arrow, numbers
from chanbatch.engine.graph import (
    Call,
    Part,
    Ref,
    compute_part,
    load_slice,
    load_slices,
    local_worker,
    partnered,
    report_outcomes,
    run_task,
    storable_table,
    storage_for,
    store_part,
    task_outcome,
    union_tables,
)
from chanbatch.hashing import digest
from chanbatch.snapshot.storage import Storage

# A batch closes at this many input rows or slices: enough to make a slice's fixed costs small,
# few enough to keep every worker busy and the rows in memory small.
BATCH_ROWS = 500_000
BATCH_SLICES = 1024

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Side:
    """Another input of a union by slice in a chain: the load of its slice, then its row-wise
    ``apply`` tasks, whose last one the union reads."""

    load: Ref
    tasks: tuple[Task, ...]


@dataclass(frozen=True, slots=True)
class Chain:
    """One slice's load, then its tasks: row-wise ``apply`` tasks in order, then a partial.
    One of the applies may be a co-sliced join of the slice's rows: ``right`` is then the
    load of the right side's slice it reads. One may be a union by slice: its other inputs'
    slices, each through its own row-wise stages, are ``sides``, in the union's order."""

    load: Ref
    tasks: tuple[Task, ...]
    rows: int = 0  # of the input slice
    right: Ref | None = None
    sides: tuple[Side, ...] = ()


@dataclass(frozen=True, slots=True)
class Fused:
    """A combine a batch runs once its partials are stored: its task, and its inputs in order,
    each ``("partial", chain index)`` or ``("combine", index among the batch's combines)``."""

    task: Task
    inputs: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchCall:
    """What a worker needs to run a batch; pickled into the graph."""

    url: str
    run: str
    stages: tuple[Stage, ...]  # the stage of each task of a chain, in order
    chains: tuple[Chain, ...]
    sides: tuple[tuple[Stage, ...], ...] = ()  # the stages of each side's tasks, in order
    combines: tuple[Fused, ...] = ()  # bottom up: a combine's inputs come before it
    allow: frozenset[str] = frozenset()

    def __dask_tokenize__(self) -> tuple[str, str, str]:
        return (self.url, self.chains[0].tasks[-1].key, self.run)


@dataclass(frozen=True, slots=True)
class Batch:
    """What a batch returns: every task it ran, by key, each chain's partial, and each of its
    combines' results."""

    parts: dict[str, Part]
    partials: tuple[Part, ...]
    combined: tuple[Part, ...] = ()


def member(batch: Batch, index: int) -> Part:
    """The partial of the batch's chain ``index``: the graph's task for that partial's key."""
    return batch.partials[index]


def combined(batch: Batch, index: int) -> Part:
    """The result of the batch's combine ``index``: the graph's task for that combine's key."""
    return batch.combined[index]


# -- where the graph fuses ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fusion:
    """What fusing a run's graph needs besides the plan: where workers find the store, the run,
    and the modules ``map`` stages may import."""

    url: str
    run: str
    allow: frozenset[str] = frozenset()

    def apply(
        self, graph: dict[str, Any], plan: Plan, worker_of: Callable[[str], str] | None = None
    ) -> dict[str, str]:
        """Replace, in ``graph``, the chains of consecutive slices that run the same stages by
        batches: each partial's key then reads its batch's result, and the loads and applies
        only the batch read are dropped; then the loads no batch took are read in groups of
        consecutive slices (:func:`_read_together`). With ``worker_of`` (slice id -> worker),
        a batch or group holds the slices of one worker only, so that the tasks of a slice
        still run where its id says; returns each one's worker ("" without ``worker_of``)."""
        users: dict[str, int] = {}
        for spec in graph.values():
            for arg in spec[1:]:
                if isinstance(arg, str):
                    users[arg] = users.get(arg, 0) + 1
        runs: dict[tuple[str, Any, Any, tuple[str, ...], Any], list[Chain]] = {}
        for key, task in plan.tasks.items():  # slices in key order
            chain = _chain(graph, plan, key, task, users)
            if chain is not None:
                worker = worker_of(chain.load.slice_id or chain.load.key) if worker_of else ""
                right = ("join", chain.right.columns) if chain.right is not None else None
                stages = tuple(t.stage for t in chain.tasks)
                sides = tuple(
                    (d.load.columns, tuple(t.stage for t in d.tasks)) for d in chain.sides
                )
                signature = (worker, chain.load.columns, right, stages, sides)
                runs.setdefault(signature, []).append(chain)
        combines = [
            t for t in plan.tasks.values() if t.kind == "combine" and _fusable(graph, t)
        ]  # bottom up, as the plan lays them out
        placed: dict[str, str] = {}
        for signature, chains in runs.items():
            for group in _batches(chains):
                if len(group) < 2:
                    continue
                name = self._replace(graph, plan, group, users, combines)
                placed[name] = signature[0]
        if worker_of is None:  # with placement, each slice's window runs where its id says
            placed.update(_windows(graph, plan))
        placed.update(_read_together(graph, plan, worker_of))
        return placed

    def _replace(
        self,
        graph: dict[str, Any],
        plan: Plan,
        group: tuple[Chain, ...],
        users: dict[str, int],
        combines: list[Task],
    ) -> str:
        stages = tuple(plan.blueprint.stages[t.stage] for t in group[0].tasks)
        sides = tuple(
            tuple(plan.blueprint.stages[t.stage] for t in side.tasks) for side in group[0].sides
        )
        fused = _fused(group, combines)
        call = BatchCall(
            url=self.url,
            run=self.run,
            stages=stages,
            chains=group,
            sides=sides,
            combines=fused,
            allow=self.allow,
        )
        name = "batch-" + digest("|".join(c.tasks[-1].key for c in group).encode())
        graph[name] = (run_batch, call)
        for index, chain in enumerate(group):
            graph[chain.tasks[-1].key] = (member, name, index)
            for task in (*chain.tasks[:-1], *(t for side in chain.sides for t in side.tasks)):
                del graph[task.key]
            for load in (chain.load, chain.right, *(side.load for side in chain.sides)):
                if load is not None and users.get(load.key, 0) <= 1:
                    graph.pop(load.key, None)
        for index, combine in enumerate(fused):
            graph[combine.task.key] = (combined, name, index)
        return name


def _chain(
    graph: dict[str, Any],
    plan: Plan,
    key: str,
    task: Task,
    users: dict[str, int],
) -> Chain | None:
    """The chain ending in ``key`` if it is a partial the graph computes from its slice's load
    through applies that nothing else reads; else None."""
    if task.kind != "partial" or not _computed_here(graph, task):
        return None
    if not isinstance(plan.blueprint.stages[task.stage].operation, Aggregate | Sort):
        return None
    tasks = [task]
    dep = task.deps[0]
    right = None
    sides: tuple[Side, ...] | None = None
    while plan.tasks[dep].kind == "apply":
        up = plan.tasks[dep]
        if up.stored or users.get(dep, 0) != 1:
            return None
        operation = plan.blueprint.stages[up.stage].operation
        if isinstance(operation, Join):  # its left side is the chain's, its right a partner
            if right is not None:
                return None  # one join per chain
            right = _partner(graph, plan, up)
            if right is None:
                return None
        elif isinstance(operation, Union):  # its first input's slice is the chain's
            if sides is not None:
                return None  # one union per chain
            sides = _sides(graph, plan, up, users)
            if sides is None:
                return None
        elif not _computed_here(graph, up):
            return None
        tasks.append(up)
        dep = up.deps[0]
    spec = graph.get(dep)
    if spec is None or spec[0] is not load_slice:
        return None
    rows = plan.tasks[dep].source_rows  # the load's: its slice's rows
    return Chain(
        load=spec[1], tasks=tuple(reversed(tasks)), rows=rows, right=right, sides=sides or ()
    )


def _sides(
    graph: dict[str, Any], plan: Plan, task: Task, users: dict[str, int]
) -> tuple[Side, ...] | None:
    """The other inputs of union-by-slice ``task`` (its first is the chain's), each a load
    through row-wise applies that only the union reads; None if one is anything else."""
    spec = graph.get(task.key)
    if spec is None or spec[0] is not run_task or task.provisional or task.broadcast:
        return None
    sides = []
    for tip in task.deps[1:]:
        applies, dep = [], tip
        while plan.tasks[dep].kind == "apply":
            up = plan.tasks[dep]
            operation = plan.blueprint.stages[up.stage].operation
            if up.stored or users.get(dep, 0) != 1 or not _computed_here(graph, up):
                return None
            if isinstance(operation, Join | Union):
                return None
            applies.append(up)
            dep = up.deps[0]
        load = graph.get(dep)
        if load is None or load[0] is not load_slice or users.get(dep, 0) != 1:
            return None
        sides.append(Side(load=load[1], tasks=tuple(reversed(applies))))
    return tuple(sides)


def _partner(graph: dict[str, Any], plan: Plan, task: Task) -> Ref | None:
    """The load of the right slice that co-sliced join ``task`` reads, if the graph computes
    the join from two loads; None otherwise (a join against a whole right side: batched, its
    rows would be read once per slice)."""
    spec = graph.get(task.key)
    if spec is None or spec[0] is not run_task or task.provisional:
        return None
    if len(task.broadcast) != 1 or task.deps[1:] != task.broadcast:  # (left, right)
        return None
    load = plan.tasks.get(task.broadcast[0])
    right = graph.get(task.broadcast[0])
    if load is None or right is None or right[0] is not load_slice:
        return None
    own = load.slice == task.slice or task.key_spec.get("missing") == "right"
    return right[1] if own and load.slice is not None else None


def _computed_here(graph: dict[str, Any], task: Task) -> bool:
    """Whether the graph computes ``task`` (not reads it), with a key known before the run,
    on its one input alone."""
    spec = graph.get(task.key)
    return (
        spec is not None
        and spec[0] is run_task
        and not task.provisional
        and not task.broadcast
        and len(task.deps) == 1
    )


def _fusable(graph: dict[str, Any], task: Task) -> bool:
    """Whether the graph computes combine ``task`` alone, and stores it."""
    spec = graph.get(task.key)
    return spec is not None and spec[0] is run_task and task.stored and not task.broadcast


def _fused(group: tuple[Chain, ...], combines: list[Task]) -> tuple[Fused, ...]:
    """The combines whose every input is a partial of ``group`` or a combine fused before:
    the nodes of the combine tree below the batch's slices, bottom up."""
    inputs: dict[str, tuple[str, int]] = {
        chain.tasks[-1].key: ("partial", index) for index, chain in enumerate(group)
    }
    stage = group[0].tasks[-1].stage
    fused: list[Fused] = []
    for task in combines:
        if task.stage == stage and all(dep in inputs for dep in task.deps):
            inputs[task.key] = ("combine", len(fused))
            fused.append(Fused(task=task, inputs=tuple(inputs[dep] for dep in task.deps)))
    return tuple(fused)


def _batches(chains: list[Chain]) -> Iterator[tuple[Chain, ...]]:
    """Consecutive chains, cut at BATCH_ROWS input rows or BATCH_SLICES slices. The cuts depend
    only on the chains' own rows, from the first: the same slices computed again (a damaged pack
    recomputed) form the same batch, and so the same pack."""
    return _cut(chains, lambda chain: chain.rows)


def _cut(items: list[_T], rows: Callable[[_T], int]) -> Iterator[tuple[_T, ...]]:
    """``items`` in consecutive groups, cut at BATCH_ROWS rows or BATCH_SLICES items."""
    group: list[_T] = []
    total = 0
    for item in items:
        group.append(item)
        total += rows(item)
        if total >= BATCH_ROWS or len(group) >= BATCH_SLICES:
            yield tuple(group)
            group, total = [], 0
    if group:
        yield tuple(group)


# -- windows run slice by slice, many at once ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowsCall:
    """Consecutive slices of a window run by halo (:mod:`chanbatch.compile.windows`), run as
    one task: each slice's own call, and its halo among the task's inputs, ``(first, end,
    own)``; pickled into the graph."""

    stage: Stage
    calls: tuple[Call, ...]
    halos: tuple[tuple[int, int, int], ...]

    def __dask_tokenize__(self) -> tuple[str, str, str]:
        first = self.calls[0]
        return (first.url, first.task.key, first.run)


def _windows(graph: dict[str, Any], plan: Plan) -> dict[str, str]:
    """Replace, in ``graph``, the tasks of consecutive slices of a window run by halo by tasks
    that run many at once (:func:`run_windows`): a slice alone costs a task and a pandas
    window over a few rows, at 2,525 day slices most of a cold run. Each slice's key then
    reads its batch's result. Returns each batch's worker ("": any)."""
    runs: dict[str, list[tuple[Task, tuple[str, ...]]]] = {}
    for key, task in plan.tasks.items():  # slices in key order
        spec = graph.get(key)
        if task.kind != "apply" or "halo" not in task.key_spec or spec is None:
            continue
        if spec[0] is not run_task or task.broadcast:
            continue
        deps = spec[2:]
        if len(deps) == len(task.deps) and all(isinstance(d, str) for d in deps):
            runs.setdefault(task.stage, []).append((task, deps))
    placed: dict[str, str] = {}
    for stage, tasks in runs.items():
        # a slice's halo rows are read once per slice that reads them
        for group in _cut(tasks, lambda item: item[0].source_rows * len(item[1])):
            if len(group) < 2:
                continue
            inputs = list(dict.fromkeys(d for _, deps in group for d in deps))
            where = {d: i for i, d in enumerate(inputs)}
            halos = tuple(
                (where[deps[0]], where[deps[0]] + len(deps), task.key_spec["halo"][0])
                for task, deps in group
            )
            spans = zip(halos, group, strict=True)
            if any(tuple(inputs[a:b]) != deps for (a, b, _), (_, deps) in spans):
                continue  # halos run in key order, so each is a run of the inputs: else alone
            call = WindowsCall(
                stage=plan.blueprint.stages[stage],
                calls=tuple(graph[task.key][1] for task, _ in group),
                halos=halos,
            )
            name = "windows-" + digest("|".join(task.key for task, _ in group).encode())
            graph[name] = (run_windows, call, *inputs)
            for index, (task, _) in enumerate(group):
                graph[task.key] = (member, name, index)
            placed[name] = ""
    return placed


def run_windows(call: WindowsCall, *parts: Part) -> Batch:
    """Run the window slices of ``call``, computed at once where that gives each slice's own
    result to the bit (:func:`~chanbatch.engine.execute.window_slices`), each then keyed,
    stored and reported as :func:`~chanbatch.engine.graph.run_task` does alone, or run
    alone."""
    from chanbatch.engine import execute

    try:
        frames = [part.data for part in parts]
        results = execute.window_slices(call.stage, frames, call.halos)
    except Exception:  # each slice alone raises its own error, naming its slice
        results = [None] * len(call.calls)
    done: dict[str, Part] = {}
    failure: BaseException | None = None
    for one, (first, end, _own), result in zip(call.calls, call.halos, results, strict=True):
        try:
            done[one.task.key] = run_task(one, *parts[first:end], result=result)
        except Exception as exc:  # the others still finish and are stored, as on a pool
            failure = failure or exc
    if failure is not None:
        raise failure
    return Batch(parts=done, partials=tuple(done.values()))


# -- slices read together -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Loads:
    """Slices one task reads together (:func:`read_together`); pickled into the graph."""

    refs: tuple[Ref, ...]

    def __dask_tokenize__(self) -> tuple[str, str]:
        return (self.refs[0].url, self.refs[0].key)


def read_together(loads: Loads) -> list[Part]:
    """Every slice of ``loads``, their files asked for together (see
    :func:`~chanbatch.engine.graph.load_slices`)."""
    return load_slices(loads.refs)


def loaded(parts: list[Part], index: int) -> Part:
    """Slice ``index`` of a :func:`read_together` task: the graph's task for that load's key."""
    return parts[index]


def _read_together(
    graph: dict[str, Any], plan: Plan, worker_of: Callable[[str], str] | None
) -> dict[str, str]:
    """Replace the loads no batch took (a slice read by a sort's top rows, a window, a union,
    a join, each alone) by tasks that read consecutive slices together: on an object store a
    slice read alone costs two round trips one after the other, a manifest and then an object,
    and a group of them about two together. Each load's key then reads its group's result,
    so the tasks that read it are unchanged. Returns each group's worker, as ``apply``."""
    loose: dict[str, list[tuple[Ref, int]]] = {}
    for key, task in plan.tasks.items():  # slices in key order
        spec = graph.get(key)
        if task.kind == "load" and spec is not None and spec[0] is load_slice:
            ref: Ref = spec[1]
            worker = worker_of(ref.slice_id or ref.key) if worker_of else ""
            loose.setdefault(worker, []).append((ref, task.source_rows))
    placed: dict[str, str] = {}
    for worker, refs in loose.items():
        for group in _cut(refs, lambda item: item[1]):
            if len(group) < 2:
                continue
            name = "loads-" + digest("|".join(ref.key for ref, _ in group).encode())
            graph[name] = (read_together, Loads(tuple(ref for ref, _ in group)))
            for index, (ref, _) in enumerate(group):
                graph[ref.key] = (loaded, name, index)
            placed[name] = worker
    return placed


# -- on a worker ----------------------------------------------------------------------------------


def run_batch(call: BatchCall) -> Batch:
    """Run every chain of ``call``: all at once on the Arrow path when it covers them, else
    task by task."""
    count = len(call.chains)
    rights = [chain.right for chain in call.chains if chain.right is not None]
    sides = [chain.sides[j].load for j in range(len(call.sides)) for chain in call.chains]
    loads = load_slices([chain.load for chain in call.chains] + rights + sides)
    others = [loads[-len(sides) :][j * count : (j + 1) * count] for j in range(len(call.sides))]
    loads = loads[: len(loads) - len(sides)]
    loads, partners = loads[:count], loads[count:] or None
    tables = [part.table for part in loads]
    batch = None
    alike = _arrow_alike(tables) and all(_arrow_alike([p.table for p in o]) for o in others)
    if alike and (partners is None or _arrow_alike([p.table for p in partners])):
        with contextlib.suppress(columnar.Unsupported):  # then task by task
            batch = _together(call, tables, partners, [[p.table for p in o] for o in others])
    if batch is None:
        batch = _one_by_one(call, loads, partners, others)
    if not call.combines:
        return batch
    return Batch(parts=batch.parts, partials=batch.partials, combined=_combines(call, batch))


def _combines(call: BatchCall, batch: Batch) -> tuple[Part, ...]:
    """Run the batch's combines bottom up, as :func:`~chanbatch.engine.graph.run_task` runs
    each alone (a combine whose inputs came out as before is cut off), and store the small
    results in one pack. A packed result is identified by its content id, which is known
    before the pack is written, so a combine's key above another is computed as it goes.

    The combines run in waves: those whose inputs are all partials first, then those over
    them, and so on; the combines of a wave are merged in one pass on Arrow
    (:func:`~chanbatch.engine.arrow_combine.combine_many`), each still to the bit what it
    gives alone, or one by one where that pass declines."""
    storage = storage_for(call.url)
    stage = call.stages[-1]
    done: list[Part | None] = [None] * len(call.combines)
    small: list[tuple[Task, Part, pa.Table]] = []
    contents: list[str] = []  # of each small result
    outcomes: dict[int, TaskOutcome] = {}
    for wave in _waves(call.combines):
        start = time.perf_counter()
        pending: list[tuple[int, str, list[Part]]] = []  # (combine, key, inputs)
        for index in wave:
            task = call.combines[index].task
            main = [_input(batch, done, kind, i) for kind, i in call.combines[index].inputs]
            key: str = task_key(task.kind, task.key_spec, [p.ident for p in main], [])
            maybe = task.provisional and behind.may_have_entry(call.run, key)
            entry = lookup(storage, key, verify=True) if maybe else None
            if entry is not None:
                done[index] = Part(
                    key=key, ident=entry.ident, url=call.url, outcome="cutoff", entry=entry
                )
                outcomes[index] = task_outcome(task, key, "cutoff", start, stored=entry.ident)
                continue
            pending.append((index, key, main))
        parts = _merged(call, stage, pending)
        tables = [storable_table(part) for part in parts]
        sizes = [t.num_rows for t in tables]
        spans = _spans([n for n in sizes if n <= PACK_ROWS])
        ids = iter(_content_ids(tables, sizes, spans))
        share = (time.perf_counter() - start) / max(len(pending), 1)
        for (index, key, _main), part, table in zip(pending, parts, tables, strict=True):
            task = call.combines[index].task
            if table.num_rows <= PACK_ROWS:
                part.ident = next(ids)
                small.append((task, part, table))
                contents.append(part.ident)
            else:
                part.entry = store_part(
                    storage, key, part, kind=task.kind, stage=stage.name, run=call.run
                )
                part.ident = part.entry.ident
            done[index] = part
            outcomes[index] = _outcome(
                task, time.time() - share, share, rows=part.rows, stored=part.ident, key=key
            )
    _store_small(storage, small, stage.name, contents, call.run)
    packs = {part.key: part.entry.pack for _, part, _ in small if part.entry and part.entry.pack}
    reported = [outcomes[index] for index in sorted(outcomes)]
    if packs:  # where each went: the memo's hints for the next plan
        reported = [
            dataclasses.replace(o, pack=packs[o.key]) if o.key in packs else o for o in reported
        ]
    report_outcomes(call.run, reported)
    return tuple(part for part in done if part is not None)


def _input(batch: Batch, done: list[Part | None], kind: str, index: int) -> Part:
    """A combine's input: a partial of the batch, or a combine of an earlier wave."""
    part = batch.partials[index] if kind == "partial" else done[index]
    assert part is not None
    return part


def _waves(combines: tuple[Fused, ...]) -> list[list[int]]:
    """The batch's combines (bottom up) in waves: a combine's wave comes after those of the
    combines it reads."""
    wave_of: list[int] = []
    for fused in combines:
        below = [wave_of[i] for kind, i in fused.inputs if kind == "combine"]
        wave_of.append(1 + max(below, default=-1))
    waves: list[list[int]] = [[] for _ in range(max(wave_of, default=-1) + 1)]
    for index, wave in enumerate(wave_of):
        waves[wave].append(index)
    return waves


def _merged(
    call: BatchCall, stage: Stage, pending: list[tuple[int, str, list[Part]]]
) -> list[Part]:
    """The results of the combines ``pending`` (of one wave): merged at once on Arrow where
    every input is an Arrow table and the merge takes them all, else one by one."""
    from chanbatch.engine import arrow_combine

    spec = stage.operation
    inputs = [[p.table for p in main if p.table is not None] for _, _, main in pending]
    whole = all(len(t) == len(m) for t, (_, _, m) in zip(inputs, pending, strict=True))
    if len(pending) > 1 and isinstance(spec, Aggregate) and whole:
        with contextlib.suppress(arrow_combine.Unsupported):
            merged = arrow_combine.combine_many(spec, inputs)
            return [
                Part(key=key, ident=key, url=call.url, outcome="computed", table=table)
                for (_, key, _), table in zip(pending, merged, strict=True)
            ]
    return [
        compute_part(
            Call(
                url=call.url,
                run=call.run,
                task=call.combines[index].task,
                stage=stage,
                allow=call.allow,
            ),
            *main,
            key=key,
        )
        for index, key, main in pending
    ]


def _spans(sizes: list[int]) -> list[tuple[int, int]]:
    """(first row, rows) of tables of ``sizes`` rows, one under the other."""
    spans, first = [], 0
    for rows in sizes:
        spans.append((first, rows))
        first += rows
    return spans


def _content_ids(
    tables: list[pa.Table], sizes: list[int], spans: list[tuple[int, int]]
) -> list[str]:
    """The content ids of the small ``tables`` (those of at most PACK_ROWS rows), in order:
    of their rows stacked when they share a schema (their columns converted once), else one
    by one."""
    mine = [t for t, n in zip(tables, sizes, strict=True) if n <= PACK_ROWS]
    if not mine:
        return []
    if len(mine) > 1 and all(t.schema.equals(mine[0].schema) for t in mine):
        return content_ids(pa.concat_tables(mine), spans)
    return [content_id(t) for t in mine]


def _store_small(
    storage: Storage,
    small: list[tuple[Task, Part, pa.Table]],
    stage: str,
    contents: list[str],
    run: str,
) -> None:
    """Small combine results in one pack (each alone where their types differ), stored behind
    ``run`` (their parts keep their rows); ``contents``: their content ids, known already."""
    if len(small) > 1 and all(t.schema.equals(small[0][2].schema) for _, _, t in small):
        whole = pa.concat_tables([t for _, _, t in small]).combine_chunks()
        members = [(part.key, t.num_rows) for _, part, t in small]
        staged = stage_pack(whole, members, kind="combine", stage=stage, contents=contents)
        behind.store(storage, staged, run)
        for (_, part, _t), entry in zip(small, staged.entries, strict=True):
            part.entry = entry
        return
    for (task, part, table), content in zip(small, contents, strict=True):
        staged = stage_pack(
            table, [(part.key, table.num_rows)], kind=task.kind, stage=stage, contents=[content]
        )
        behind.store(storage, staged, run)
        part.entry = staged.entries[0]


def _arrow_alike(tables: list[pa.Table | None]) -> bool:
    """Whether every one of ``tables`` is on Arrow, all of one schema."""
    first = tables[0]
    return first is not None and all(
        t is not None and t.schema.equals(first.schema) for t in tables
    )


def _one_by_one(
    call: BatchCall,
    loads: list[Part],
    partners: list[Part] | None,
    others: list[list[Part]] | None = None,
) -> Batch:
    """Each chain task by task, as the graph would run them alone, the partials then stored
    together. A chain that fails does not stop the others: they finish and are stored, as on
    a pool of workers, and then the first failure is raised. ``others``: per side of a
    union, each chain's load of it."""
    parts: dict[str, Part] = {}
    ready: list[tuple[Task, Part]] = []
    failure: BaseException | None = None
    computing = 0.0  # the partials' own time
    for index, (chain, part) in enumerate(zip(call.chains, loads, strict=True)):
        try:
            for task, stage in zip(chain.tasks[:-1], call.stages[:-1], strict=True):
                right: tuple[Part, ...] = ()
                if partners is not None and task.broadcast:
                    right = (partners[index],)
                if isinstance(stage.operation, Union):  # its other inputs' slices, each alone
                    right = tuple(
                        _side_alone(call, chain.sides[j], stages, (others or [])[j][index], parts)
                        for j, stages in enumerate(call.sides)
                    )
                part = run_task(_call(call, task, stage), part, *right)
                parts[task.key] = part
            start = time.perf_counter()
            state = compute_part(_call(call, chain.tasks[-1], call.stages[-1]), part)
            computing += time.perf_counter() - start
            ready.append((chain.tasks[-1], state))
        except Exception as exc:
            failure = failure or exc
    _store_partials(call, ready, parts, time.time(), computing)
    if failure is not None:
        raise failure
    partials = tuple(parts[chain.tasks[-1].key] for chain in call.chains)
    return Batch(parts=parts, partials=partials)


def _side_alone(
    call: BatchCall, side: Side, stages: tuple[Stage, ...], part: Part, parts: dict[str, Part]
) -> Part:
    """One slice of a union's other input, through its row-wise tasks one by one."""
    for task, stage in zip(side.tasks, stages, strict=True):
        part = run_task(_call(call, task, stage), part)
        parts[task.key] = part
    return part


def _call(call: BatchCall, task: Task, stage: Stage) -> Call:
    return Call(
        url=call.url,
        run=call.run,
        task=task,
        stage=stage,
        n_broadcast=len(task.broadcast),
        allow=call.allow,
    )


def _together(
    call: BatchCall,
    tables: list[pa.Table],
    partners: list[Part] | None,
    others: list[list[pa.Table]] | None = None,
) -> Batch:
    """Every chain of ``call`` on the concatenated rows of its slices (a co-sliced join's
    first, each slice's right rows tagged alike; a union's other inputs' slices likewise);
    raises Unsupported where the Arrow path does not cover a stage, before anything is
    stored."""
    import numpy as np

    rows = [t.num_rows for t in tables]
    table = pa.concat_tables(tables)
    tags = arrow(np.repeat(np.arange(len(tables), dtype=np.int32), rows))
    steps: list[tuple[float, float, list[int], pa.Table]] = []  # began, ended, rows, table
    side_steps: list[tuple[list[Task], Stage, tuple[float, float, list[int], pa.Table]]] = []
    for position, stage in enumerate(call.stages[:-1]):
        began = time.time()
        if isinstance(stage.operation, Join):
            assert partners is not None
            table, tags = _joined(call, position, stage.operation, table, tags, partners)
        elif isinstance(stage.operation, Union):
            table, tags = _unioned(call, position, table, tags, others or [], side_steps)
        else:
            table, tags = columnar.apply_tagged(stage, table, tags)
        assert tags is not None
        rows = np.bincount(numbers(tags), minlength=len(tables)).tolist()
        steps.append((began, time.time(), rows, table))
    spec = call.stages[-1].operation
    began = time.time()
    states: list[pa.Table | None]
    if isinstance(spec, Sort):  # each slice's top rows under a limit
        top = call.chains[0].tasks[-1].key_spec["top"]
        states = list(columnar.tops(spec, table, tags, rows, top))
    else:
        assert isinstance(spec, Aggregate)
        states = columnar.partials(spec, table, tags, rows)
    # nothing was stored until here: an Unsupported above leaves the batch to _one_by_one
    parts: dict[str, Part] = {}
    for tasks, stage, step in side_steps:
        _applied(call, tasks, stage, step, parts)
    for position, stage in enumerate(call.stages[:-1]):
        _applied(call, [c.tasks[position] for c in call.chains], stage, steps[position], parts)
    ready: list[tuple[Task, Part]] = []
    offsets = np.concatenate([[0], np.cumsum(rows)]).tolist()
    for index, chain in enumerate(call.chains):
        task, state = chain.tasks[-1], states[index]
        if state is None:  # the pandas path computes this one (see columnar.partials)
            ident = chain.tasks[-2].key if len(chain.tasks) > 1 else chain.load.key
            upstream = Part(
                key=ident,
                ident=ident,
                url=call.url,
                outcome="computed",
                table=table.slice(offsets[index], rows[index]),
            )
            part = compute_part(_call(call, task, call.stages[-1]), upstream)
        else:
            part = Part(key=task.key, ident=task.key, url=call.url, outcome="computed", table=state)
        ready.append((task, part))
    _store_partials(call, ready, parts, began)
    partials = tuple(parts[chain.tasks[-1].key] for chain in call.chains)
    return Batch(parts=parts, partials=partials)


def _joined(
    call: BatchCall, position: int, spec: Join, table: pa.Table, tags: Any, partners: list[Part]
) -> tuple[pa.Table, Any]:
    """The co-sliced joins of the chains of ``call`` (their task ``position``), at once: each
    slice's left rows (``table``, tagged) with its partner's right rows. A side a join has no
    slice for (``missing``) has no rows, as when it runs alone."""
    import numpy as np

    lefts, rights, counts = [], [], []
    offsets = np.concatenate([[0], np.cumsum(np.bincount(numbers(tags), minlength=len(partners)))])
    for index, (chain, partner) in enumerate(zip(call.chains, partners, strict=True)):
        assert partner.table is not None
        left, right = partnered(
            table.slice(int(offsets[index]), int(offsets[index + 1] - offsets[index])),
            partner.table,
            chain.tasks[position].key_spec.get("missing"),
        )
        lefts.append(left)
        rights.append(right)
        counts.append((left.num_rows, right.num_rows))
    left_tags = np.repeat(np.arange(len(partners), dtype=np.int32), [n for n, _ in counts])
    right_tags = np.repeat(np.arange(len(partners), dtype=np.int32), [n for _, n in counts])
    return columnar.join_tagged(
        spec, pa.concat_tables(lefts), arrow(left_tags), pa.concat_tables(rights), arrow(right_tags)
    )


def _unioned(
    call: BatchCall,
    position: int,
    table: pa.Table,
    tags: Any,
    others: list[list[pa.Table]],
    steps: list[tuple[list[Task], Stage, tuple[float, float, list[int], pa.Table]]],
) -> tuple[pa.Table, Any]:
    """The unions by slice of the chains of ``call`` (their task ``position``), at once: each
    slice's rows (``table``, tagged), then its rows of each other input (``others``, per side
    each chain's slice) through that side's own stages, whose steps are added to ``steps``.
    A slice's rows come out as its union alone gives them: its first input's, then each other
    one's in order, their columns in the first input's order. Raises Unsupported where the
    inputs' types differ (the union alone then takes pandas' way)."""
    import numpy as np

    count = len(call.chains)
    pieces, marks = [table], [numbers(tags)]
    for j, stages in enumerate(call.sides):
        side = pa.concat_tables(others[j])
        side_tags = arrow(
            np.repeat(np.arange(count, dtype=np.int32), [t.num_rows for t in others[j]])
        )
        for k, stage in enumerate(stages):
            began = time.time()
            side, side_tags = columnar.apply_tagged(stage, side, side_tags)
            assert side_tags is not None
            counts = np.bincount(numbers(side_tags), minlength=count).tolist()
            tasks = [chain.sides[j].tasks[k] for chain in call.chains]
            steps.append((tasks, stage, (began, time.time(), counts, side)))
        pieces.append(side)
        marks.append(numbers(side_tags))
    selected = union_tables(call.chains[0].tasks[position], pieces)
    if selected is None:
        raise columnar.Unsupported("a union's inputs of different types")
    marked = np.concatenate(marks)
    at = np.argsort(marked, kind="stable")  # each slice's rows together, in input order
    return pa.concat_tables(selected).take(arrow(at)), arrow(marked[at])


def _store_partials(
    call: BatchCall,
    ready: list[tuple[Task, Part]],
    parts: dict[str, Part],
    began: float,
    computing: float = 0.0,
) -> None:
    """Store the partials computed together: the small ones in one pack, converted to the form
    the cache keeps once for all of them; report each, the time since ``began`` (wall clock)
    shared out in slice order, plus a share of ``computing`` seconds spent before it."""
    storage = storage_for(call.url)
    stage = call.stages[-1].name
    entries: dict[str, CacheEntry] = {}
    small = [(task, part) for task, part in ready if part.rows <= PACK_ROWS]
    if len(small) > 1:
        tables = [
            part.table if part.table is not None else storable_table(part) for _, part in small
        ]
        if all(t.schema.equals(tables[0].schema) for t in tables):
            whole = columnar.storable(pa.concat_tables(tables).combine_chunks())
            if whole is not None:
                members = [
                    (task.key, t.num_rows) for (task, _), t in zip(small, tables, strict=True)
                ]
                staged = stage_pack(whole, members, kind="partial", stage=stage)
                behind.store(storage, staged, call.run)
                entries = {e.key: e for e in staged.entries}
    for task, part in ready:
        entry = entries.get(task.key) or store_part(
            storage, task.key, part, kind=task.kind, stage=stage, run=call.run
        )
        part.ident, part.entry = entry.ident, entry
        parts[task.key] = part
    share = (time.time() - began) / max(len(ready), 1)
    extra = computing / max(len(ready), 1)
    outcomes = [
        _outcome(
            task,
            began + i * share,
            share + extra,
            rows=part.rows,
            stored=part.ident,
            pack=part.entry.pack if part.entry is not None else "",
        )
        for i, (task, part) in enumerate(ready)
    ]
    report_outcomes(call.run, outcomes)


def _applied(
    call: BatchCall,
    tasks: list[Task],
    stage: Stage,
    step: tuple[float, float, list[int], pa.Table],
    parts: dict[str, Part],
) -> None:
    """Report each slice's apply of ``stage`` (``tasks``, one per chain; the step's wall time
    shared out in slice order), and keep those results a checkpoint keeps."""
    import numpy as np

    began, ended, counts, table = step
    offsets = np.concatenate([[0], np.cumsum(counts)]).tolist()
    share = (ended - began) / max(len(call.chains), 1)
    outcomes = []
    for index, task in enumerate(tasks):
        rows = counts[index]
        keep = task.checkpoint and rows <= CHECKPOINT_RATIO * max(task.source_rows, 1)
        part = Part(
            key=task.key,
            ident=task.key,
            url=call.url,
            outcome="computed",
            table=table.slice(offsets[index], rows) if keep else None,
        )
        stored = None
        if keep:
            entry = store_part(
                storage_for(call.url), task.key, part, kind=task.kind, stage=stage.name
            )
            stored = entry.ident
            part.table = None  # read again from the cache only if someone asks
            part.entry = entry
        outcomes.append(_outcome(task, began + index * share, share, rows=rows, stored=stored))
        parts[task.key] = part
    report_outcomes(call.run, outcomes)


def _outcome(
    task: Task,
    began: float,
    seconds: float,
    *,
    rows: int,
    stored: str | None,
    pack: str = "",
    key: str = "",
) -> TaskOutcome:
    """What a task of a batch did: ``seconds`` from ``began`` (wall clock); ``key``: the key
    it resolved to, if not the plan's. Reported from this thread: it names it as its worker."""
    start = began + (time.perf_counter() - time.time())
    return TaskOutcome(
        dask_key=task.key,
        key=key or task.key,
        stage=task.stage,
        slice=task.slice,
        kind=task.kind,
        outcome="computed",
        start=start,
        seconds=round(seconds, 6),
        began=began,
        rows=rows,
        stored=stored,
        pack=pack or None,
        worker=local_worker(),
    )


def reporting(graph: dict[str, Any]) -> set[str]:
    """The keys of the plan's tasks that ``graph`` runs and that report what they did: those
    it runs alone, and those its batches run."""
    keys = set()
    for key, spec in graph.items():
        if spec[0] is run_task:
            keys.add(key)
        elif spec[0] is run_windows:
            keys.update(one.task.key for one in spec[1].calls)
        elif spec[0] is run_batch:
            keys.update(task.key for chain in spec[1].chains for task in chain.tasks)
            keys.update(
                t.key for chain in spec[1].chains for side in chain.sides for t in side.tasks
            )
            keys.update(fused.task.key for fused in spec[1].combines)
    return keys
