"""Blueprint + store -> plan: every task, its key, and what it depends on. No dask, no pandas.

How each stage runs (DESIGN.md section 6):

- Row-wise stages (filter, derive, select, rename, map) and joins against a broadcast right side
  run once per slice of their input: one ``apply`` task per slice.
- An aggregate over a sliced input runs as a ``partial`` per slice, merged by ``combine`` tasks
  in a tree with fixed, aligned boundaries (:data:`FANOUT` children per node), then ``finish``.
  Appending a slice changes only the nodes on its path to the root; every other node keeps its
  key, because a node's key is the hash of its children's contents.
- An aggregate that does not decompose (``count_distinct``), sort, limit and union need their
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
import gc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from chanbatch.blueprint.model import (
    Aggregate,
    Blueprint,
    Derive,
    Filter,
    Join,
    Limit,
    Map,
    Rename,
    Select,
    Sort,
    Stage,
    Union,
)
from chanbatch.blueprint.problems import BlueprintError, Problem
from chanbatch.compile.keys import task_key
from chanbatch.compile.types import Kind, TypeProblem, check_aggregate, infer, kind_of_arrow
from chanbatch.errors import did_you_mean
from chanbatch.snapshot.names import SliceKey
from chanbatch.snapshot.refs import Resolved

FANOUT = 8
CHECKPOINT_RATIO = 0.5

TaskKind = Literal["load", "apply", "partial", "combine", "finish", "whole", "gather"]
PENDING = "pending:"  # prefix of a placeholder identity: content not known until computed

# The identity of a cached result (its object id), or None when it is not cached.
ContentOf = Callable[[str], str | None]


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

    @property
    def outputs(self) -> dict[str, str]:
        return dict(self.blueprint.outputs)

    def stage_tasks(self, stage: str) -> list[Task]:
        return [t for t in self.tasks.values() if t.stage == stage]


def build_plan(
    blueprint: Blueprint, inputs: dict[str, Resolved], content_of: ContentOf | None = None
) -> Plan:
    """Lay out every task of ``blueprint`` over the resolved ``inputs``.

    ``content_of`` looks a key up in the cache and returns the object id of its result; the
    keys of tasks that read a stored result depend on it. Without it (or on a miss) those keys
    are provisional.

    Raises BlueprintError when a stage names a column its input does not have.
    """
    plan = Plan(blueprint=blueprint, inputs=inputs, content_of=content_of)
    problems: list[Problem] = []
    entries_of = {}
    for name, resolved in inputs.items():
        entries = resolved.manifest.slices
        if resolved.slice_key is not None:  # an input bound to DATASET[slice]
            entries = tuple(e for e in entries if e.key == resolved.slice_key)
        entries_of[name] = entries
        plan.results[name] = StageResult(
            name=name, columns=tuple(c.name for c in resolved.manifest.schema)
        )
    kinds: dict[str, dict[str, Kind] | None] = {
        name: {c.name: kind_of_arrow(c.type) for c in r.manifest.schema}
        for name, r in inputs.items()
    }
    order = blueprint.topological_order()
    # pass 1: columns and types, stage by stage, collecting every problem. A stage with a
    # problem still has the columns it means to produce, so that the stages after it are
    # checked too and every mistake is reported at once; an unknown column has no type, so
    # it causes no type problem of its own.
    for name in order:
        stage = blueprint.stages[name]
        _check_columns(blueprint, stage, plan, problems)
        kinds[name] = _check_types(blueprint, stage, kinds, problems)
        plan.results[name] = StageResult(name=name, whole="", columns=_output_columns(stage, plan))
    if problems:
        raise BlueprintError(problems, source=blueprint.source)
    # pass 2: which input columns anything downstream reads
    needed = _needed_columns(blueprint, plan, order)
    # pass 3: tasks
    for name, entries in entries_of.items():
        all_columns = plan.results[name].columns or ()
        wanted = needed.get(name)
        projection = (
            tuple(c for c in all_columns if c in wanted)
            if wanted is not None and set(wanted) != set(all_columns)
            else None
        )
        keys = []
        load_spec = {"columns": list(projection or ())}
        for entry in entries:
            # A projected slice is another input than the whole slice: a checkpoint of a
            # filter over it lacks the other columns, so its key must say which were read.
            key = entry.id if projection is None else task_key("load", load_spec, [entry.id])
            plan.tasks.setdefault(
                key,
                Task(
                    key=key,
                    kind="load",
                    stage=name,
                    slice=entry.key,
                    ident=key,
                    columns=projection,
                    source=entry.id,
                ),
            )
            keys.append(key)
        plan.results[name] = StageResult(
            name=name,
            sliced=tuple((e.key, k) for e, k in zip(entries, keys, strict=True)),
            columns=plan.results[name].columns,
            rows=tuple(e.rows for e in entries),
        )
    # stages whose per-slice results feed a stage that merges slices: their results are kept
    # when selective (see CHECKPOINT_RATIO)
    checkpoints = {stage.from_ for stage in blueprint.stages.values() if not _runs_per_slice(stage)}
    with _gc_paused():  # tens of thousands of small objects, none of them garbage
        for name in order:
            plan.results[name] = _lay_out(blueprint.stages[name], plan, name in checkpoints)
    return plan


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _runs_per_slice(stage: Stage) -> bool:
    """Whether ``stage`` runs on each slice of a sliced input alone.

    A right or outer join must see every slice at once: a right row that matches nothing in
    one slice may match in another, and must come out once, not once per slice.
    """
    op = stage.operation
    if isinstance(op, Union):
        return False
    rowwise = isinstance(op, Filter | Derive | Select | Rename | Map) or (
        isinstance(op, Join) and op.how in ("inner", "left")
    )
    return rowwise or stage.per_slice


def _task(
    plan: Plan,
    kind: TaskKind,
    spec: dict[str, Any],
    deps: Sequence[str],
    broadcast: Sequence[str] = (),
    **fields: Any,
) -> str:
    """Add the task computing ``spec`` over ``deps`` (and ``broadcast``); returns its key.

    Its key hashes the identities of its inputs. When one is not known before the run, the key
    is a placeholder built from that input's key instead, and the task is provisional.
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
    else:
        ident = (plan.content_of(key) if plan.content_of is not None else None) or ""
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
    return plan.tasks[key].ident or PENDING + key


def _lay_out(stage: Stage, plan: Plan, checkpoint: bool) -> StageResult:
    op = stage.operation
    spec = stage.canonical()
    up = plan.results[stage.from_]
    columns = plan.results[stage.name].columns
    incremental = up.incremental

    broadcast: tuple[str, ...] = ()
    if isinstance(op, Join):
        broadcast = (_whole_key(plan, plan.results[op.right], f"{op.right}"),)
    output = stage.name in plan.blueprint.outputs
    if up.sliced is not None and _runs_per_slice(stage):
        sliced = []
        rows = up.rows or (0,) * len(up.sliced)
        for (slice_key, up_key), source_rows in zip(up.sliced, rows, strict=True):
            key = _task(
                plan,
                "apply",
                spec,
                [up_key],
                broadcast,
                stage=stage.name,
                slice=slice_key,
                stored=stage.per_slice or output,
                checkpoint=checkpoint,
                source_rows=source_rows,
            )
            sliced.append((slice_key, key))
        return StageResult(
            name=stage.name,
            sliced=tuple(sliced),
            columns=columns,
            incremental=incremental,
            rows=rows,
        )

    if isinstance(op, Aggregate) and up.sliced is not None and op.decomposable:
        partials = [
            _task(plan, "partial", spec, [up_key], stage=stage.name, slice=slice_key, stored=True)
            for slice_key, up_key in up.sliced
        ]
        root = _combine_tree(plan, stage, spec, partials)
        finish = _task(plan, "finish", spec, [root] if root else [], stage=stage.name, stored=True)
        return StageResult(name=stage.name, whole=finish, columns=columns, incremental=True)

    # everything else needs its whole input at once
    if isinstance(op, Aggregate) and not op.decomposable:
        funcs = sorted(
            {a.func for a in op.aggregates.values()}
            - {"count", "sum", "mean", "min", "max", "var", "std"}
        )
        plan.notes.append(
            f"stage {stage.name!r}: {', '.join(funcs)} does not decompose into per-slice "
            "partials; it runs on the whole input and is not incremental"
        )
        incremental = False
    elif up.sliced is not None:
        incremental = False
    ups = [stage.from_, *op.references()] if isinstance(op, Union) else [stage.from_]
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


def _combine_tree(plan: Plan, stage: Stage, spec: dict, keys: list[str]) -> str | None:
    """Combine ``keys`` in aligned groups of FANOUT, level by level; returns the root key."""
    if not keys:
        return None
    level = 1
    while len(keys) > 1:
        nxt = []
        for start in range(0, len(keys), FANOUT):
            group = keys[start : start + FANOUT]
            if len(group) == 1:
                nxt.append(group[0])
                continue
            nxt.append(
                _task(plan, "combine", spec, group, stage=stage.name, level=level, stored=True)
            )
        keys = nxt
        level += 1
    return keys[0]


# -- column checks ---------------------------------------------------------------------------


def _output_columns(stage: Stage, plan: Plan) -> tuple[str, ...] | None:
    op = stage.operation
    cols = plan.results[stage.from_].columns
    if cols is None or isinstance(op, Map):
        return None
    if isinstance(op, Filter | Sort | Limit | Union):
        return cols
    if isinstance(op, Derive):
        out = list(cols)
        out.extend(n for n in op.columns if n not in out)
        return tuple(out)
    if isinstance(op, Select):
        return tuple(op.columns)
    if isinstance(op, Rename):
        # a new name whose old one is missing (a problem, reported) still counts as an output
        missing = [new for old, new in op.mapping.items() if old not in cols]
        return (*(op.mapping.get(c, c) for c in cols), *missing)
    if isinstance(op, Join):
        right = plan.results[op.right].columns
        if right is None:
            return None
        left_suffix, right_suffix = op.suffixes
        shared = (set(cols) & set(right)) - set(op.on)
        out = [c + left_suffix if c in shared else c for c in cols]
        out += [c + right_suffix if c in shared else c for c in right if c not in op.on]
        return tuple(out)
    if isinstance(op, Aggregate):
        return (*op.group_by, *op.aggregates)
    return None


def _check_columns(blueprint: Blueprint, stage: Stage, plan: Plan, problems: list[Problem]) -> None:
    op = stage.operation
    available = plan.results[stage.from_].columns
    if available is None:
        return

    def need(
        names: set[str] | frozenset[str] | tuple[str, ...],
        field: str,
        have: tuple[str, ...] | list[str],
        side: str = "",
    ) -> None:
        for name in sorted(set(names) - set(have)):
            close = did_you_mean(name, have)
            listing = ", ".join(have)
            where = f" of {side}" if side else ""
            problems.append(
                Problem(
                    file=blueprint.source,
                    line=stage.line_of(f"{field}.{name}"),
                    stage=stage.name,
                    field=field,
                    message=f"unknown column {name!r}{where}",
                    hint=(f"{close} " if close else "") + f"available: {listing}",
                )
            )

    if isinstance(op, Filter):
        need(op.expr.columns(), "filter", available)
    elif isinstance(op, Derive):
        have = list(available)
        for name, expr in op.columns.items():
            need(expr.columns(), f"derive.{name}", have)
            if name not in have:
                have.append(name)
    elif isinstance(op, Select):
        need(op.columns, "select", available)
    elif isinstance(op, Rename):
        need(tuple(op.mapping), "rename", available)
    elif isinstance(op, Join):
        need(op.on, "join.on", available)
        right = plan.results[op.right].columns
        if right is not None:
            need(op.on, "join.on", right, side=f"right side {op.right!r}")
    elif isinstance(op, Aggregate):
        need(op.group_by, "group_by", available)
        for name, agg in op.aggregates.items():
            need(agg.columns(), f"aggregate.{name}", available)
    elif isinstance(op, Sort):
        need(tuple(k.column for k in op.by), "sort", available)
    elif isinstance(op, Union):
        for other in op.others:
            cols = plan.results[other].columns
            if cols is not None and set(cols) != set(available):
                missing = sorted(set(available) ^ set(cols))
                problems.append(
                    Problem(
                        file=blueprint.source,
                        line=stage.line_of(f"union.{other}"),
                        stage=stage.name,
                        field="union",
                        message=f"{other!r} does not have the same columns as {stage.from_!r}",
                        hint="columns that differ: " + ", ".join(missing),
                    )
                )


def _check_types(
    blueprint: Blueprint,
    stage: Stage,
    kinds: dict[str, dict[str, Kind] | None],
    problems: list[Problem],
) -> dict[str, Kind] | None:
    """Check ``stage``'s expressions against its input's column kinds; return its output's."""
    op = stage.operation
    have = kinds.get(stage.from_)
    if have is None or isinstance(op, Map):
        return None

    def problem(field: str, exc: TypeProblem) -> None:
        problems.append(
            Problem(
                file=blueprint.source,
                line=stage.line_of(field),
                stage=stage.name,
                field=field,
                message=str(exc),
                hint="cast() converts between types",
            )
        )

    if isinstance(op, Filter):
        try:
            result = infer(op.expr, have)
            if result in ("number", "string", "date", "timestamp"):
                raise TypeProblem(f"a filter needs a condition, not a {result} value")
        except TypeProblem as exc:
            problem("filter", exc)
        return dict(have)
    if isinstance(op, Derive):
        out = dict(have)
        for name, expr in op.columns.items():
            try:
                out[name] = infer(expr, out)
            except TypeProblem as exc:
                problem(f"derive.{name}", exc)
                out[name] = None
        return out
    if isinstance(op, Select):
        return {c: have.get(c) for c in op.columns}
    if isinstance(op, Rename):
        return {op.mapping.get(c, c): k for c, k in have.items()}
    if isinstance(op, Join):
        right = kinds.get(op.right)
        if right is None:
            return None
        for key in op.on:
            a, b = have.get(key), right.get(key)
            if a is not None and b is not None and a != b and "other" not in (a, b):
                problem(
                    "join.on",
                    TypeProblem(f"join key {key!r} is {a} on the left but {b} on the right"),
                )
        shared = (set(have) & set(right)) - set(op.on)
        out = {(c + op.suffixes[0] if c in shared else c): k for c, k in have.items()}
        out.update(
            {
                (c + op.suffixes[1] if c in shared else c): k
                for c, k in right.items()
                if c not in op.on
            }
        )
        return out
    if isinstance(op, Aggregate):
        out = {c: have.get(c) for c in op.group_by}
        for name, agg in op.aggregates.items():
            try:
                check_aggregate(agg.func, agg.arg, have)
            except TypeProblem as exc:
                problem(f"aggregate.{name}", exc)
            if agg.func in ("min", "max") and agg.arg is not None:
                try:
                    out[name] = infer(agg.arg, have)
                except TypeProblem:
                    out[name] = None
            else:
                out[name] = "number"
        return out
    return dict(have)


def _needed_columns(
    blueprint: Blueprint, plan: Plan, order: list[str]
) -> dict[str, set[str] | None]:
    """For every input and stage, the columns something downstream reads (None: all of them).

    Outputs keep all their columns; a ``map`` may read anything, so it needs all of its input.
    """
    needed: dict[str, set[str] | None] = {}

    def want(name: str, columns: set[str] | None) -> None:
        if name in needed and needed[name] is None:
            return
        if columns is None:
            needed[name] = None
            return
        have = plan.results[name].columns
        if have is not None:
            columns = columns & set(have)
        needed[name] = needed.get(name, set()) | columns  # type: ignore[operator]

    for name in blueprint.outputs:
        needed[name] = None
    for name in reversed(order):
        stage = blueprint.stages[name]
        op = stage.operation
        out = needed.get(name, set())
        if out is None:
            out_columns = plan.results[name].columns
            out = set(out_columns) if out_columns is not None else None
        if out is None or isinstance(op, Map):
            for up in stage.upstream:
                want(up, None)
            continue
        if isinstance(op, Filter):
            want(stage.from_, out | set(op.expr.columns()))
        elif isinstance(op, Derive):
            used = set().union(*(e.columns() for e in op.columns.values())) if op.columns else set()
            want(stage.from_, (out - set(op.columns)) | used)
        elif isinstance(op, Select):
            want(stage.from_, set(op.columns) & out)
        elif isinstance(op, Rename):
            back = {new: old for old, new in op.mapping.items()}
            want(stage.from_, {back.get(c, c) for c in out})
        elif isinstance(op, Join):
            left = plan.results[stage.from_].columns or ()
            right = plan.results[op.right].columns or ()
            shared = (set(left) & set(right)) - set(op.on)
            sl, sr = op.suffixes
            want(
                stage.from_, {c for c in left if (c + sl if c in shared else c) in out} | set(op.on)
            )
            want(op.right, {c for c in right if (c + sr if c in shared else c) in out} | set(op.on))
        elif isinstance(op, Aggregate):
            used = set(op.group_by)
            for agg in op.aggregates.values():
                used |= set(agg.columns())
            want(stage.from_, used)
        elif isinstance(op, Sort):
            want(stage.from_, out | {k.column for k in op.by})
        elif isinstance(op, Union):
            for up in stage.upstream:
                want(up, set(out))
        else:  # limit, and anything that passes rows through
            want(stage.from_, set(out))
    return needed
