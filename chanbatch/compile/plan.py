"""Blueprint + store -> plan: every task, its key, and what it depends on. No dask, no pandas.

How each stage runs (DESIGN.md section 6; each operation's own rules, such as whether it runs
per slice, are in :mod:`chanbatch.compile.operations`):

- Row-wise stages (filter, derive, select, rename, map) and joins against a broadcast right side
  run once per slice of their input: one ``apply`` task per slice.
- An aggregate over a sliced input runs as a ``partial`` per slice, merged by ``combine`` tasks
  in a tree, then ``finish``. The tree's boundaries are content-defined, by slice *key* (never
  by position, nor by a slice's content): on pass ``p`` (level 1 first), a group closes after a
  child whose last slice key ``k`` has ``blake3(canonical JSON [p, 0, k]) % FANOUT == 0``, so
  groups average :data:`FANOUT` children and each level closes at other children than the one
  below. A run longer than :data:`MAX_GROUP` is cut again the same way with ``[p, 1, k]`` (then
  ``[p, 2, k]``, ...), so that the cap too depends on keys, not on where the run starts.
  Children stay in slice-key order, a group of one is passed up unchanged, and the same slice
  keys give the same tree on any machine. A node's key is the hash of its children's contents,
  so a slice appended or inserted anywhere (a backfill) changes only the nodes on its path to
  the root, plus, at a level where its own key is a boundary, the rest of the group it closes;
  a replaced slice moves no boundary.
- An aggregate that does not decompose (``median``), sort, limit and union need their
  whole input: one ``whole`` task that reads every slice in key order.
- ``per_slice: true`` keeps any stage per slice: an aggregate, sort or limit then runs on each
  slice alone, and the output dataset is sliced like the input.

Keys and early cutoff: a task's key hashes its spec and the *identity* of each input. An input
slice is identified by its slice id (with the columns read, when a load is projected); a task
whose result is always stored (partials, combines, finishes, whole-input stages, per-slice and
output stages) by the object id of its stored result, its content hash; any other task by its
own key. When a stored result is not in the cache yet, its content is unknown until it is
computed, so the keys of the tasks that read it are *provisional*: the plan gives them a
placeholder key, and the worker resolves the real one from the content it receives. If a
recomputed result comes out with the same content as before, the tasks above it find their
results in the cache and are not recomputed (early cutoff).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import blake3

from chanbatch.blueprint.functions import DECOMPOSABLE_AGGREGATES
from chanbatch.blueprint.model import (
    Aggregate,
    Blueprint,
    Derive,
    Filter,
    Join,
    Limit,
    Rename,
    Select,
    Sort,
    Stage,
    Union,
    Window,
)
from chanbatch.compile.chains import Chain, ChainMemo, StaleChains, chain_digest, find_chains
from chanbatch.compile.columns import check_schemas, needed_columns
from chanbatch.compile.keys import task_key
from chanbatch.compile.operations import rules_of, runs_per_slice
from chanbatch.compile.windows import Halo, window_halos
from chanbatch.hashing import canonical_json
from chanbatch.snapshot.manifest import SliceEntry
from chanbatch.snapshot.names import SliceKey, encode_key
from chanbatch.snapshot.refs import Resolved

FANOUT = 8  # the mean number of children of a combine node
MAX_GROUP = 4 * FANOUT  # a run of keys that are no boundary still closes here
CHECKPOINT_RATIO = 0.5

TaskKind = Literal["load", "apply", "partial", "combine", "finish", "whole", "gather"]
PENDING = "pending:"  # prefix of a placeholder identity: content not known until computed

# The identity of a cached result (its object id), or None when it is not cached; with
# ``every_pack=False``, None also when finding out would read every pack index.
ContentOf = Callable[..., str | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """One unit of work. ``key`` is both its cache key and its Dask key, except when the task
    is ``provisional``: then it is a placeholder, and the cache key is resolved at run time
    from the content of its inputs (see the module docstring)."""

    key: str
    kind: TaskKind
    stage: str
    slice: SliceKey | None = None
    deps: tuple[str, ...] = ()
    broadcast: tuple[str, ...] = ()
    level: int = 0
    stored: bool = False  # its result is always kept in the cache
    # A per-slice result that feeds an aggregate or a whole-input stage: kept in the cache
    # when it is selective (see CHECKPOINT_RATIO), so editing what comes after it reuses it.
    checkpoint: bool = False
    source_rows: int = 0  # rows of the input slice this task descends from
    # What consumers hash this task as: the object id of its stored result when it is always
    # stored, else its key. "" while unknown: a stored result not cached yet, or a task whose
    # own key is provisional.
    ident: str = ""
    columns: tuple[str, ...] | None = None  # a load's projection; None reads every column
    source: str = ""  # a load's slice id
    # the spec hashed into the key, so a worker can compute the key again from its inputs
    key_spec: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    provisional: bool = False

    @property
    def label(self) -> str:
        where = f"@{self.slice}" if self.slice is not None else ""
        level = f"[{self.level}]" if self.kind == "combine" else ""
        return f"{self.stage}{where} {self.kind}{level}"


@dataclass(frozen=True, slots=True, kw_only=True)
class StageResult:
    """A stage's result: per slice (``sliced``) or one whole frame (``whole``)."""

    name: str
    sliced: tuple[tuple[SliceKey, str], ...] | None = None
    whole: str | None = None
    columns: tuple[str, ...] | None = None  # None when unknown (after a map)
    incremental: bool = True
    rows: tuple[int, ...] = ()  # per slice: rows of the input slice it descends from

    @property
    def keys(self) -> list[str]:
        return [k for _, k in self.sliced] if self.sliced is not None else [self.whole or ""]


@dataclass(slots=True, kw_only=True)
class Plan:
    """Everything a run needs, as plain data."""

    blueprint: Blueprint
    inputs: dict[str, Resolved]
    tasks: dict[str, Task] = field(default_factory=dict)
    results: dict[str, StageResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    content_of: ContentOf | None = field(default=None, repr=False)
    # stages whose per-slice results feed a stage that merges slices (see CHECKPOINT_RATIO)
    checkpoints: frozenset[str] = frozenset()
    # planned top-down (chanbatch.compile.chains): the chains, with their digests, and per
    # merging stage the slices the chain memo answered
    chains: dict[str, Collapsed] = field(default_factory=dict, repr=False)
    # partial key -> content id, of the partials a chain memo answers for (none is a task)
    remembered: dict[str, str] = field(default_factory=dict, repr=False)
    _kept: tuple[str, ...] | None = field(default=None, repr=False, compare=False)

    def kept_keys(self) -> tuple[str, ...]:
        """The cache keys a run keeps alive: every stored or checkpoint task's, and those of
        the partials (and their checkpoints) that a chain memo answered for. Listed once (a
        run's intent and final records both root them: 113,000 at 100,000 slices); a plan
        is not changed once laid out."""
        if self._kept is None:
            keys = [k for k, t in self.tasks.items() if t.stored or t.checkpoint]
            for collapsed in self.chains.values():
                for entry in collapsed.waiting.values():
                    record = collapsed.known[entry.id]
                    keys.append(record[0])
                    keys.extend(record[3:])
            self._kept = tuple(keys)
        return self._kept

    def collapsed_counts(self) -> dict[str, int]:
        """Per stage, the tasks a chain memo answered for (each reused, none planned)."""
        counts: dict[str, int] = {}
        for collapsed in self.chains.values():
            n = len(collapsed.waiting)
            if n:
                for stage in (*collapsed.chain.stages, collapsed.chain.merge):
                    counts[stage] = counts.get(stage, 0) + n
        return counts

    def chain_memo(
        self,
        contents: Callable[[str], str | None],
        packs: Callable[[str], str],
        *,
        changed_only: bool = False,
    ) -> ChainMemo:
        """The chain memo this plan leaves (see :mod:`chanbatch.compile.chains`): per chain,
        per slice id of its input, the partial's key, its content id (``contents`` of the
        key, for a partial this plan laid out), the pack it is in ("" if none known) and the
        keys of its kept checkpoints. With ``changed_only``, only the records that are not
        as the memo it was planned with says (what a delta to that memo holds)."""
        memo: ChainMemo = {}
        for collapsed in self.chains.values():
            records: dict[str, list[str]] = {}
            for sid, (partial, *kept) in collapsed.laid.items():
                ident = contents(partial)
                if ident:
                    record = [partial, ident, packs(partial), *kept]
                    if not changed_only or collapsed.known.get(sid) != record:
                        records[sid] = record
            if not changed_only:
                for entry in collapsed.waiting.values():
                    records[entry.id] = collapsed.known[entry.id]
            memo[collapsed.digest] = records
        return memo

    @property
    def outputs(self) -> dict[str, str]:
        return dict(self.blueprint.outputs)

    def stage_tasks(self, stage: str) -> list[Task]:
        return [t for t in self.tasks.values() if t.stage == stage]


def build_plan(
    blueprint: Blueprint,
    inputs: dict[str, Resolved],
    content_of: ContentOf | None = None,
    memo: ChainMemo | None = None,
) -> Plan:
    """Lay out every task of ``blueprint`` over the resolved ``inputs``.

    ``content_of`` looks a key up in the cache and returns the object id of its result; the
    keys of tasks that read a stored result depend on it. Without it (or on a miss) those keys
    are provisional. With a chain ``memo``, the slices it knows of each slice chain are planned
    top-down (:mod:`chanbatch.compile.chains`): their tasks are laid out only where a combine
    above them must be computed. Raises StaleChains when the memo disagrees with the plan.

    Raises BlueprintError when a stage names a column its input does not have, or uses a
    column where its kind cannot go (see :func:`chanbatch.compile.columns.check_schemas`).
    """
    plan = Plan(blueprint=blueprint, inputs=inputs, content_of=content_of)
    order = blueprint.topological_order()
    # pass 1: every stage's columns and their kinds, checked (raises on any problem)
    schemas = check_schemas(blueprint, inputs, order)
    for name, schema in schemas.items():
        columns = schema.names if schema is not None else None
        plan.results[name] = StageResult(name=name, whole="", columns=columns)
    # pass 2: which input columns anything downstream reads
    needed = needed_columns(blueprint, schemas, order)
    # stages whose per-slice results feed a stage that merges slices: their results are kept
    # when selective (see CHECKPOINT_RATIO)
    plan.checkpoints = frozenset(
        stage.from_ for stage in blueprint.stages.values() if not runs_per_slice(stage)
    )
    # pass 3: tasks
    entries_of = {}
    for name, resolved in inputs.items():
        entries = resolved.manifest.slices
        if resolved.slice_key is not None:  # an input bound to DATASET[slice]
            entries = tuple(e for e in entries if e.key == resolved.slice_key)
        entries_of[name] = entries
    if memo is not None:
        _collapse(plan, entries_of, needed, memo)
    skips = {c.chain.input: c.known for c in plan.chains.values()}
    for name, entries in entries_of.items():
        plan.results[name] = _lay_out_loads(plan, name, entries, needed.get(name), skips.get(name))
    with _gc_paused():  # tens of thousands of small objects, none of them garbage
        for name in order:
            plan.results[name] = _lay_out(blueprint.stages[name], plan, name in plan.checkpoints)
    if any(c.known for c in plan.chains.values()):
        _in_flow_order(plan)
    return plan


def _projection(plan: Plan, name: str, wanted: set[str] | None) -> tuple[str, ...] | None:
    """The columns of input ``name`` that a load reads: None for all of them."""
    all_columns = plan.results[name].columns or ()
    if wanted is None or set(wanted) == set(all_columns):
        return None
    return tuple(c for c in all_columns if c in wanted)


def _lay_out_loads(
    plan: Plan,
    name: str,
    entries: tuple[SliceEntry, ...],
    wanted: set[str] | None,
    skip: dict[str, list[str]] | None = None,
) -> StageResult:
    """One load task per slice of input ``name``, reading only the ``wanted`` columns; none
    for a slice whose id is in ``skip`` (a slice chain's memo answers for it)."""
    projection = _projection(plan, name, wanted)
    if skip:
        entries = tuple(e for e in entries if e.id not in skip)
    spec = {"columns": list(projection or ())}
    keys = [_load(plan, name, entry, projection, spec) for entry in entries]
    return StageResult(
        name=name,
        sliced=tuple((e.key, k) for e, k in zip(entries, keys, strict=True)),
        columns=plan.results[name].columns or (),
        rows=tuple(e.rows for e in entries),
    )


def _load(
    plan: Plan,
    name: str,
    entry: SliceEntry,
    projection: tuple[str, ...] | None,
    spec: dict[str, Any],
) -> str:
    """The load task of one slice of input ``name`` (``spec``: its projection, as hashed);
    returns its key."""
    # A projected slice is another input than the whole slice: a checkpoint of a filter over
    # it lacks the other columns, so its key must say which were read.
    key = entry.id if projection is None else task_key("load", spec, [entry.id])
    if key not in plan.tasks:
        plan.tasks[key] = Task(
            key=key,
            kind="load",
            stage=name,
            slice=entry.key,
            ident=key,
            columns=projection,
            source=entry.id,
            source_rows=entry.rows,
        )
    return key


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _task(
    plan: Plan,
    kind: TaskKind,
    spec: dict[str, Any],
    deps: Sequence[str],
    broadcast: Sequence[str] = (),
    thorough: bool = True,
    **fields: Any,
) -> str:
    """Add the task computing ``spec`` over ``deps`` (and ``broadcast``); returns its key.

    Its key hashes the identities of its inputs. When one is not known before the run, the key
    is a placeholder built from that input's key instead, and the task is provisional. A
    stored task is looked up in the cache, without reading every pack index unless
    ``thorough``.
    """
    upstream = [_ident(plan, d) for d in deps]
    broadcast_ids = [_ident(plan, d) for d in broadcast]
    # a placeholder key hashes ``pending:<key>`` for each unknown input: never a real key
    key = task_key(kind, spec, upstream, broadcast_ids)
    provisional = any(i.startswith(PENDING) for i in (*upstream, *broadcast_ids))
    task = plan.tasks.get(key)
    if task is not None:
        return key
    stored = bool(fields.get("stored"))
    if provisional:
        ident = ""
    elif not stored:
        ident = key
    elif plan.content_of is None:
        ident = ""
    elif not thorough:
        ident = plan.content_of(key, every_pack=False) or ""
    else:
        ident = plan.content_of(key) or ""
    plan.tasks[key] = Task(
        key=key,
        kind=kind,
        stage=fields.pop("stage"),
        deps=(*deps, *broadcast),
        broadcast=tuple(broadcast),
        ident=ident,
        key_spec=spec,
        provisional=provisional,
        **fields,
    )
    return key


def _whole_key(plan: Plan, result: StageResult, stage: str) -> str:
    """A single key holding all of ``result``: itself if whole, else a gather of its slices."""
    if result.whole is not None:
        return result.whole
    keys = [k for _, k in result.sliced or ()]
    return _task(plan, "gather", {}, keys, stage=stage)


def _ident(plan: Plan, key: str) -> str:
    """What a consumer hashes ``key``'s result as; a placeholder when it is not known yet."""
    task = plan.tasks.get(key)
    if task is None:  # a partial that a chain memo answers for (see _partials)
        return plan.remembered[key]
    return task.ident or PENDING + key


def _lay_out(stage: Stage, plan: Plan, checkpoint: bool) -> StageResult:
    op = stage.operation
    spec = stage.canonical()
    up = plan.results[stage.from_]
    columns = plan.results[stage.name].columns
    incremental = up.incremental

    rules = rules_of(op)
    whole_refs = rules.broadcast(op)
    output = stage.name in plan.blueprint.outputs
    partners = partner_slices(plan, stage)
    if partners is not None:  # a co-sliced join: each slice reads its partner slice only
        return _join_by_slice(plan, stage, partners, checkpoint=checkpoint, output=output)
    broadcast = tuple(_whole_key(plan, plan.results[ref], ref) for ref in whole_refs)
    if up.sliced is not None and rules.runs_per_slice(op, stage.per_slice):
        sliced = []
        rows = up.rows or (0,) * len(up.sliced)
        for (slice_key, up_key), source_rows in zip(up.sliced, rows, strict=True):
            key = _apply(plan, stage, spec, up_key, broadcast, slice_key, source_rows)
            sliced.append((slice_key, key))
        return StageResult(
            name=stage.name,
            sliced=tuple(sliced),
            columns=columns,
            incremental=incremental,
            rows=rows,
        )

    if isinstance(op, Union) and not stage.per_slice:
        by_slice = _union_by_slice(plan, stage, spec, output)
        if by_slice is not None:
            return by_slice

    if isinstance(op, Window) and up.sliced is not None and not stage.per_slice:
        halos = window_halos(op, [k for k, _ in up.sliced], slicing_of(plan, stage.from_))
        if not isinstance(halos, str):
            return _window_by_halo(plan, stage, spec, halos, checkpoint, output)
        plan.notes.append(
            f"stage {stage.name!r}: the window runs on the whole input and is not "
            f"incremental: {halos}"
        )

    top = _top_n(plan, stage) if isinstance(op, Sort) and up.sliced is not None else None
    if top is not None:  # only a limit reads this sort: each slice's first rows, merged
        top_spec = {**spec, "top": top}
        root = _combine_tree(plan, stage, top_spec, *_partials(plan, stage, top_spec))
        if root is not None:
            return StageResult(name=stage.name, whole=root, columns=columns, incremental=True)

    if isinstance(op, Aggregate) and up.sliced is not None and op.decomposable:
        root = _combine_tree(plan, stage, spec, *_partials(plan, stage, spec))
        finish = _task(plan, "finish", spec, [root] if root else [], stage=stage.name, stored=True)
        if root is not None and not plan.tasks[finish].ident:
            _expand(plan, stage.name, [root])
        return StageResult(name=stage.name, whole=finish, columns=columns, incremental=True)

    first = _first_slices(plan, stage.from_, op.n) if isinstance(op, Limit) else None
    if first is not None and not stage.per_slice:  # a limit reads only the slices it needs
        key = _task(
            plan, "whole", {**spec, "parts": [len(first)]}, first, stage=stage.name, stored=True
        )
        return StageResult(name=stage.name, whole=key, columns=columns, incremental=True)

    # everything else needs its whole input at once
    if isinstance(op, Aggregate) and not op.decomposable:
        funcs = sorted({a.func for a in op.aggregates.values()} - DECOMPOSABLE_AGGREGATES)
        plan.notes.append(
            f"stage {stage.name!r}: {', '.join(funcs)} does not decompose into per-slice "
            "partials; it runs on the whole input and is not incremental"
        )
        incremental = False
    elif up.sliced is not None:
        incremental = False
    # the references not broadcast (a union's others) are read slice by slice, after ``from``
    ups = [stage.from_, *(ref for ref in op.references() if ref not in whole_refs)]
    deps: list[str] = []
    for name in ups:
        result = plan.results[name]
        deps.extend(result.keys)
    key = _task(
        plan,
        "whole",
        {**spec, "parts": [len(plan.results[n].keys) for n in ups]},
        deps,
        broadcast,
        stage=stage.name,
        stored=True,
    )
    return StageResult(name=stage.name, whole=key, columns=columns, incremental=incremental)


def _first_slices(plan: Plan, name: str, n: int) -> list[str] | None:
    """The keys of the first slices of ``name``, in key order, that hold at least ``n`` rows
    (at least one slice), when their row counts are known before the run: an input's, or a
    derive, select or rename of one. None otherwise (a filter's rows are known only after it)."""
    result = plan.results.get(name)
    if result is None or result.sliced is None or not result.sliced:
        return None
    source = name
    while source in plan.blueprint.stages:
        stage = plan.blueprint.stages[source]
        if stage.per_slice or not isinstance(stage.operation, Derive | Select | Rename):
            return None
        source = stage.from_
    resolved = plan.inputs.get(source)
    if resolved is None:
        return None
    rows = {e.key: e.rows for e in resolved.manifest.slices}
    keys: list[str] = []
    total = 0
    for slice_key, key in result.sliced:
        if slice_key not in rows:
            return None
        keys.append(key)
        total += rows[slice_key]
        if total >= n:
            break
    return keys


def _sliced_source(plan: Plan, name: str) -> tuple[Stage | None, str | None]:
    """(the stage ``name``, None) when it is a sliced stage; (None, its ``slice_by``) when it
    is an input; (None, None) when it is not sliced."""
    result = plan.results.get(name)
    if result is None or result.sliced is None:
        return None, None
    stage = plan.blueprint.stages.get(name)
    if stage is not None:
        return stage, None
    resolved = plan.inputs.get(name)
    return None, (resolved.manifest.slice_by if resolved is not None else None)


def sliced_by(plan: Plan, name: str) -> str | None:
    """The ``slice_by`` column of the input whose slices input or stage ``name`` keeps (its
    slices descend from that input's, one for one); None when ``name`` is not sliced."""
    stage, column = _sliced_source(plan, name)
    if stage is None:
        return column
    column = sliced_by(plan, stage.from_)
    if isinstance(stage.operation, Union):
        same = all(sliced_by(plan, other) == column for other in stage.operation.others)
        return column if same else None
    return column


def slicing_of(plan: Plan, name: str) -> str | None:
    """The column whose value every row of a slice of input or stage ``name`` has, equal to
    the slice's key: the input's ``slice_by``, followed through the stages (renamed with it,
    kept by filters and joins on it). None when the result is not sliced, or a stage may have
    changed or dropped that column (a derive of it, a map, a select without it, ...)."""
    stage, column = _sliced_source(plan, name)
    if stage is None:
        return column
    column = slicing_of(plan, stage.from_)
    op = stage.operation
    if column is None:
        return None
    match op:
        case Filter() | Sort() | Limit():
            return column
        case Derive():
            return None if column in op.columns else column
        case Select():
            return column if column in op.columns else None
        case Rename():
            if column in op.mapping:
                return op.mapping[column]
            return None if column in op.mapping.values() else column
        case Join():
            right = plan.results[op.right].columns
            kept = column in op.on or (right is not None and column not in right)
            return column if kept else None
        case Aggregate():
            return column if column in op.group_by else None
        case Union():
            same = all(slicing_of(plan, other) == column for other in op.others)
            return column if same else None
        case Window():
            return None if column in op.columns else column
        case _:  # a map: anything may have happened to the column
            return None


def partner_slices(plan: Plan, stage: Stage) -> Partners | None:
    """How a join whose two sides are sliced by one column that is also a join key runs slice
    by slice: the slice keys of its result, each with its slice of either side (see
    :class:`Partners`). None for any other join, a ``per_slice`` one, or sides whose keys are
    not of one type (then the whole right side is read, as for any join)."""
    op = stage.operation
    if not isinstance(op, Join) or stage.per_slice:
        return None
    left, right = plan.results[stage.from_], plan.results[op.right]
    if not left.sliced or not right.sliced:  # unsliced, or no slice to stand in for a side
        return None
    column = slicing_of(plan, stage.from_)
    if column is None or column not in op.on or slicing_of(plan, op.right) != column:
        return None
    lefts, rights = dict(left.sliced), dict(right.sliced)
    if len({type(k) for k in (*lefts, *rights)}) > 1:
        return None
    # The sides whose slice keys the result has: the side whose unmatched rows the join keeps,
    # and the left of an inner join too (a slice without a partner then joins to no rows), so
    # that it is sliced like ``from``, as a join against a broadcast right side is.
    keeps = {"inner": "l", "left": "l", "right": "r", "outer": "lr"}[op.how]
    pairs = tuple(
        (slice_key, lefts.get(slice_key), rights.get(slice_key))
        for slice_key in sorted(lefts.keys() | rights.keys())
        if ("l" in keeps and slice_key in lefts) or ("r" in keeps and slice_key in rights)
    )
    return Partners(
        pairs=pairs,
        stand_in=(left.sliced[0][0], right.sliced[0][0]),
        stand_in_keys=(left.sliced[0][1], right.sliced[0][1]),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Partners:
    """The slices of a co-sliced join: each slice key of its result, in key order, with the
    task key of that slice of the left and of the right side (None where a side has none).

    Where a side has no slice of a key, the task reads zero rows of that side's first slice
    in its place (``stand_in``: the first slice key of each side; ``stand_in_keys``: their
    task keys), which gives the other side's unmatched rows that side's columns and types.
    Its key hashes that slice like any input, so it stays content-derived: a slice appended,
    or inserted after the first, leaves the stand-in as it is; a replaced first slice, or one
    inserted before it, recomputes the keys whose missing partner it stands in for."""

    pairs: tuple[tuple[SliceKey, str | None, str | None], ...]
    stand_in: tuple[SliceKey, SliceKey]
    stand_in_keys: tuple[str, str]


def _join_by_slice(
    plan: Plan, stage: Stage, partners: Partners, *, checkpoint: bool, output: bool
) -> StageResult:
    """A co-sliced join, one ``apply`` task per slice key: that key's left slice joined to its
    partner right slice. Where one side has no slice, the task's spec says which
    (``missing``), and it reads the zero rows of that side's stand-in slice."""
    op = stage.operation
    assert isinstance(op, Join)
    spec = stage.canonical()
    left, right = plan.results[stage.from_], plan.results[op.right]
    left_rows = dict(zip((k for k, _ in left.sliced or ()), left.rows, strict=False))
    right_rows = dict(zip((k for k, _ in right.sliced or ()), right.rows, strict=False))
    sliced, rows = [], []
    for slice_key, left_key, right_key in partners.pairs:
        missing = "left" if left_key is None else "right" if right_key is None else None
        # rows of the slice it descends from: the left one's, where there is one
        source_rows = left_rows.get(slice_key, right_rows.get(slice_key, 0))
        key = _task(
            plan,
            "apply",
            {**spec, "missing": missing} if missing is not None else spec,
            [left_key or partners.stand_in_keys[0]],
            (right_key or partners.stand_in_keys[1],),
            stage=stage.name,
            slice=slice_key,
            stored=output,
            checkpoint=checkpoint,
            source_rows=source_rows,
        )
        sliced.append((slice_key, key))
        rows.append(source_rows)
    return StageResult(
        name=stage.name,
        sliced=tuple(sliced),
        columns=plan.results[stage.name].columns,
        incremental=left.incremental and right.incremental,
        rows=tuple(rows),
    )


def _top_n(plan: Plan, stage: Stage) -> int | None:
    """``n`` when the only reader of sort ``stage`` is one ``limit: n`` (and the sort is not an
    output): then the sort keeps only each slice's first ``n`` rows, merged up a tree (a stable
    sort of the first ``n`` of each part, in slice order, has the same first ``n`` rows as the
    whole sort). None otherwise."""
    if stage.per_slice or stage.name in plan.blueprint.outputs:
        return None
    readers = [
        s
        for s in plan.blueprint.stages.values()
        if s.from_ == stage.name or stage.name in s.operation.references()
    ]
    if len(readers) != 1 or readers[0].per_slice or readers[0].from_ != stage.name:
        return None
    limit = readers[0].operation
    return limit.n if isinstance(limit, Limit) else None


def _union_by_slice(
    plan: Plan, stage: Stage, spec: dict[str, Any], output: bool
) -> StageResult | None:
    """A union of inputs sliced the same way (by one column, with keys of one type), run slice
    by slice: each slice's rows of ``from``, then of each other input in the order listed. None
    when the inputs are not sliced alike, or ``from``'s columns are not known (after a map)."""
    assert isinstance(stage.operation, Union)
    names = [stage.from_, *stage.operation.others]
    results = [plan.results[n] for n in names]
    columns = results[0].columns
    slicings = {sliced_by(plan, n) for n in names}
    if columns is None or any(r.sliced is None for r in results) or len(slicings) != 1:
        return None
    if None in slicings:
        return None
    by_key: dict[SliceKey, list[tuple[int, str]]] = {}
    for index, result in enumerate(results):
        assert result.sliced is not None
        for slice_key, key in result.sliced:
            by_key.setdefault(slice_key, []).append((index, key))
    if len({type(k) for k in by_key}) > 1:
        return None
    sliced = []
    for slice_key in sorted(by_key):
        parts = by_key[slice_key]
        key = _task(
            plan,
            "apply",
            {**spec, "parts": [index for index, _ in parts], "columns": list(columns)},
            [key for _, key in parts],
            stage=stage.name,
            slice=slice_key,
            stored=stage.per_slice or output,
        )
        sliced.append((slice_key, key))
    return StageResult(
        name=stage.name,
        sliced=tuple(sliced),
        columns=columns,
        incremental=all(r.incremental for r in results),
    )


def _window_by_halo(
    plan: Plan,
    stage: Stage,
    spec: dict[str, Any],
    halos: list[Halo],
    checkpoint: bool,
    output: bool,
) -> StageResult:
    """A window run slice by slice: each slice's task reads the slices its rows' frames reach
    (its halo, in key order, see :mod:`chanbatch.compile.windows`) and keeps its own rows."""
    up = plan.results[stage.from_]
    assert up.sliced is not None
    rows = up.rows or (0,) * len(up.sliced)
    sliced = []
    for index, ((slice_key, _), (first, end)) in enumerate(zip(up.sliced, halos, strict=True)):
        key = _task(
            plan,
            "apply",
            {**spec, "halo": [index - first, end - first]},
            [k for _, k in up.sliced[first:end]],
            stage=stage.name,
            slice=slice_key,
            stored=output,
            checkpoint=checkpoint,
            source_rows=rows[index],
        )
        sliced.append((slice_key, key))
    return StageResult(
        name=stage.name,
        sliced=tuple(sliced),
        columns=plan.results[stage.name].columns,
        incremental=up.incremental,
        rows=rows,
    )


@dataclass(slots=True, kw_only=True)
class Collapsed:
    """A slice chain as one plan sees it (see :mod:`chanbatch.compile.chains`)."""

    chain: Chain
    digest: str
    projection: tuple[str, ...] | None
    load_spec: dict[str, Any]
    specs: tuple[dict[str, Any], ...]  # each row-wise stage's, as hashed
    merge_spec: dict[str, Any]  # the partials'
    kept: bool  # its last row-wise stage is a checkpoint: its per-slice keys are kept too
    entries: tuple[SliceEntry, ...]  # every slice of the input, in key order
    known: dict[str, list[str]]  # slice id -> memo record (a slice not in ``entries`` unasked)
    waiting: dict[str, SliceEntry] = field(default_factory=dict)  # partial key -> its slice
    laid: dict[str, list[str]] = field(default_factory=dict)  # slice id -> partial, kept keys


def _collapse(
    plan: Plan,
    entries_of: dict[str, tuple[SliceEntry, ...]],
    needed: dict[str, set[str] | None],
    memo: ChainMemo,
) -> None:
    """Find the slice chains, each with what ``memo`` knows of its input's slices."""
    bp = plan.blueprint
    for chain in find_chains(bp, entries_of):
        merge = bp.stages[chain.merge]
        spec = merge.canonical()
        if isinstance(merge.operation, Sort):
            top = _top_n(plan, merge)
            if top is None:
                continue
            spec = {**spec, "top": top}
        elif not (isinstance(merge.operation, Aggregate) and merge.operation.decomposable):
            continue
        projection = _projection(plan, chain.input, needed.get(chain.input))
        digest = chain_digest(bp, chain, projection, spec)
        records = memo.get(digest) or {}
        entries = entries_of[chain.input]
        plan.chains[chain.merge] = Collapsed(
            chain=chain,
            digest=digest,
            projection=projection,
            load_spec={"columns": list(projection or ())},
            specs=tuple(bp.stages[name].canonical() for name in chain.stages),
            merge_spec=spec,
            kept=bool(chain.stages) and chain.stages[-1] in plan.checkpoints,
            entries=entries,
            # the memo's records as they are (a slice no longer in the input is never asked
            # for), or none when it knows none of the input's slices
            known=records if any(e.id in records for e in entries) else {},
        )


def _apply(
    plan: Plan,
    stage: Stage,
    spec: dict[str, Any],
    up_key: str,
    broadcast: tuple[str, ...],
    slice_key: SliceKey,
    source_rows: int,
) -> str:
    """The task of row-wise ``stage`` on one slice (its input ``up_key``); returns its key."""
    return _task(
        plan,
        "apply",
        spec,
        [up_key],
        broadcast,
        stage=stage.name,
        slice=slice_key,
        stored=stage.per_slice or stage.name in plan.blueprint.outputs,
        checkpoint=stage.name in plan.checkpoints,
        source_rows=source_rows,
    )


def _partials(plan: Plan, stage: Stage, spec: dict[str, Any]) -> tuple[list[str], list[SliceKey]]:
    """The keys of ``stage``'s per-slice partials (``spec``), with their slice keys, in slice
    order. Of a slice chain's slices, those the chain memo knows are not laid out: their keys
    and contents are the memo's, until a combine above them must be computed (_expand)."""
    up = plan.results[stage.from_]
    assert up.sliced is not None
    collapsed = plan.chains.get(stage.name)
    if collapsed is None:
        keys = [
            _task(plan, "partial", spec, [k], stage=stage.name, slice=s, stored=True)
            for s, k in up.sliced
        ]
        return keys, [s for s, _ in up.sliced]
    laid_out = iter(up.sliced)
    keys, slice_keys = [], []
    for entry in collapsed.entries:
        record = collapsed.known.get(entry.id)
        if record is None:
            # a slice the memo does not know is new to this chain, or changed: its partial is
            # looked for only where that costs no read of every pack index
            slice_key, up_key = next(laid_out)
            key = _task(
                plan,
                "partial",
                spec,
                [up_key],
                stage=stage.name,
                slice=slice_key,
                stored=True,
                thorough=not collapsed.known,
            )
            collapsed.laid[entry.id] = [key, up_key] if collapsed.kept else [key]
        else:
            key = record[0]
            plan.remembered[key] = record[1]
            collapsed.waiting[key] = entry
        keys.append(key)
        slice_keys.append(entry.key)
    return keys, slice_keys


def _expand(plan: Plan, stage: str, keys: Sequence[str]) -> None:
    """Lay out the tasks of the slices below ``keys`` (children of a combine, or the root
    under a finish, of merging ``stage``) that a chain memo answered for: they are needed."""
    collapsed = plan.chains.get(stage)
    if collapsed is None or not collapsed.waiting:
        return
    chain = collapsed.chain
    for key in keys:
        entry = collapsed.waiting.pop(key, None)
        if entry is None:
            continue
        up_key = _load(plan, chain.input, entry, collapsed.projection, collapsed.load_spec)
        for name, spec in zip(chain.stages, collapsed.specs, strict=True):
            stage_model = plan.blueprint.stages[name]
            up_key = _apply(plan, stage_model, spec, up_key, (), entry.key, entry.rows)
        partial = _task(
            plan,
            "partial",
            collapsed.merge_spec,
            [up_key],
            stage=chain.merge,
            slice=entry.key,
            stored=True,
        )
        # the key must be the memo's, and the content the cache knows the memo's too: a
        # combine above was keyed with the memo's content
        if partial != key or plan.tasks[partial].ident != plan.remembered[key]:
            raise StaleChains(f"slice {entry.id[:12]} of {chain.input!r}: not as remembered")
        collapsed.laid[entry.id] = [key, up_key] if collapsed.kept else [key]


_KIND_RANK = {"load": 0, "apply": 0, "partial": 0, "combine": 0}


def _in_flow_order(plan: Plan) -> None:
    """Order the tasks so that each comes after its inputs, as ``decide`` walks them: the
    tasks _expand lays out come after the combines that need them. Inputs first, then the
    stages in topological order; within one, per-slice tasks, combines by level, the rest."""
    index = {name: i for i, name in enumerate(plan.blueprint.topological_order())}

    def rank(task: Task) -> tuple[int, int]:
        within = task.level if task.kind == "combine" else _KIND_RANK.get(task.kind, 1 << 20)
        return index.get(task.stage, -1), within

    plan.tasks = {t.key: t for t in sorted(plan.tasks.values(), key=rank)}


def _combine_tree(
    plan: Plan, stage: Stage, spec: dict, keys: list[str], slice_keys: list[SliceKey]
) -> str | None:
    """Combine ``keys`` (the partials, in the order of their ``slice_keys``) in
    content-defined groups, level by level (see the module docstring); returns the root key,
    or None when there are no keys. A child is labelled by the last slice key under it (two
    slices with equal content share one partial task, but not their labels)."""
    if not keys:
        return None
    # each label's canonical JSON, made once and hashed on every pass it is a label on
    labels = [_label(k) for k in slice_keys]
    level = 1
    salt = 1
    while len(keys) > 1:
        next_keys: list[str] = []
        next_labels: list[bytes] = []
        start = 0
        for end in _group_ends(labels, salt):
            group = keys[start:end]
            if len(group) == 1:
                next_keys.append(group[0])
            else:
                key = _task(
                    plan, "combine", spec, group, stage=stage.name, level=level, stored=True
                )
                if not plan.tasks[key].ident:  # computed: its children must be planned
                    _expand(plan, stage.name, group)
                next_keys.append(key)
            next_labels.append(labels[end - 1])
            start = end
        if len(next_keys) < len(keys):
            level += 1
        keys, labels = next_keys, next_labels
        salt += 1
    return keys[0]


_PLAIN = frozenset("0123456789-")


def _label(key: SliceKey) -> bytes:
    """The canonical JSON of slice key ``key``, without a JSON encoder for the keys most
    slices have: ints and dates (whose ISO text needs no escaping)."""
    if type(key) is int:
        return b"%d" % key
    if isinstance(key, dt.date) and not isinstance(key, dt.datetime):
        text = key.isoformat()
        if _PLAIN.issuperset(text):
            return b'"%s"' % text.encode()
    return canonical_json(encode_key(key))


# Passes that combined nothing (every child a boundary: 1 in 8**children) move on to the next
# salt; after this many, groups are cut by position, so that the tree always ends in a root.
_SALTED_PASSES = 64


def _group_ends(labels: Sequence[bytes], salt: int, depth: int = 0) -> list[int]:
    """Where the groups of children labelled ``labels`` end (exclusive indices), on pass
    ``salt``: after each label that hashes to a boundary, and at the end. A run longer than
    MAX_GROUP is cut again the same way with another salt (``depth``), so that its groups too
    depend on its keys alone, not on where it starts."""
    if salt > _SALTED_PASSES or depth > _SALTED_PASSES:
        return [*range(MAX_GROUP, len(labels), MAX_GROUP), len(labels)]
    ends = [i + 1 for i in _closing(labels, salt, depth)]
    if not ends or ends[-1] != len(labels):
        ends.append(len(labels))
    out: list[int] = []
    start = 0
    for end in ends:
        if end - start <= MAX_GROUP:
            out.append(end)
        else:
            out.extend(start + e for e in _group_ends(labels[start:end], salt, depth + 1))
        start = end
    return out


def _closes(salt: int, depth: int, label: bytes) -> bool:
    """Whether a group closes after a child whose last slice key has the canonical JSON
    ``label``: the bytes hashed are the canonical JSON of ``[salt, depth, key]``, so that every
    machine builds the same tree."""
    return _closing([label], salt, depth) == [0]


def _closing(labels: Sequence[bytes], salt: int, depth: int) -> list[int]:
    """The indices of ``labels`` after which a group closes (:func:`_closes` of each), for a
    whole pass at once: 100,000 labels on the first pass at 100,000 slices. The rule is on
    the digest's first 8 bytes as a big-endian int; FANOUT divides 256, so the last of them
    decides its remainder."""
    head = b"[%d,%d," % (salt, depth)
    hasher = blake3.blake3
    return [
        i
        for i, label in enumerate(labels)
        if hasher(head + label + b"]").digest(8)[7] % FANOUT == 0
    ]


assert 256 % FANOUT == 0, "_closing reads one byte of the digest"
