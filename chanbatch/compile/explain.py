"""Why a task must be computed, found by comparing the plan with the blueprint's last run.

The causes are checked in the order a user thinks of them: the stage itself (or a stage above
it) was edited; a broadcast input has a new snapshot; a slice is new or changed; and only then
"not in the cache" (evicted, corrupt, or never stored).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from chanbatch.blueprint.model import Blueprint, Join
from chanbatch.compile.decide import Decision
from chanbatch.compile.plan import Plan, Task
from chanbatch.snapshot.names import encode_key
from chanbatch.snapshot.objects import get_snapshot
from chanbatch.snapshot.storage import Storage

NOT_CACHED = "not in the cache (evicted, corrupt, or not kept)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Previous:
    """What the last run of a blueprint saw: its stage specs and its inputs' slices."""

    run: str
    specs: dict[str, Any]
    inputs: dict[str, str]  # input name -> snapshot id
    slices: dict[str, dict[Any, str]]  # input name -> {encoded slice key: slice id}
    tasks: dict[tuple[str, Any, str], dict[str, Any]]  # (stage, slice, kind) -> task record


def load_previous(storage: Storage, record: dict[str, Any] | None) -> Previous | None:
    """The parts of a run record that explanations need; None without a usable record."""
    if not record or "specs" not in record:
        return None
    inputs = {name: info["snapshot"] for name, info in record.get("inputs", {}).items()}
    slices: dict[str, dict[Any, str]] = {}
    for name, sid in inputs.items():
        try:
            manifest = get_snapshot(storage, sid)
        except Exception:  # an old snapshot that gc removed: explain without it
            continue
        slices[name] = {encode_key(e.key): e.id for e in manifest.slices}
    tasks = {(t["stage"], t.get("slice"), t.get("kind", "")): t for t in record.get("tasks", [])}
    return Previous(
        run=record["run"], specs=record["specs"], inputs=inputs, slices=slices, tasks=tasks
    )


def explain(
    plan: Plan, decisions: dict[str, Decision], previous: Previous | None
) -> dict[str, Decision]:
    """``decisions`` with the reason of every computed task made specific."""
    bp = plan.blueprint
    ancestry = {name: _ancestors(bp, name) for name in bp.stages}
    driving = {name: _driving_input(bp, name) for name in bp.stages}
    consumers: dict[str, Task] = {}
    for key, decision in decisions.items():
        if decision.action == "compute":
            for dep in plan.tasks[key].deps:
                consumers.setdefault(dep, plan.tasks[key])
    out = dict(decisions)
    for key, decision in decisions.items():
        if decision.action != "compute":
            continue
        task = plan.tasks[key]
        if task.stage not in bp.stages:
            continue
        reason = _reason(plan, task, previous, ancestry[task.stage], driving[task.stage])
        if reason == NOT_CACHED and key in consumers:
            reason = f"input to {consumers[key].label}, which is recomputed"
        if decision.provisional:
            reason += "; reused if its inputs come out unchanged"
        out[key] = replace(decision, reason=reason)
    return out


def _reason(
    plan: Plan,
    task: Task,
    previous: Previous | None,
    ancestors: list[str],
    driving: str | None,
) -> str:
    if previous is None:
        return "not cached: no earlier run of this blueprint"
    bp = plan.blueprint
    for name in [task.stage, *ancestors]:
        spec = bp.stages[name].canonical()
        before = previous.specs.get(name)
        if before is None:
            return f"new stage {name}" if name == task.stage else f"upstream stage {name} is new"
        if before != spec:
            field = f"{name}.{spec.get('op', '?')}"
            if before.get("op") == spec.get("op") and before.get("per_slice") != spec.get(
                "per_slice"
            ):
                field = f"{name}.per_slice"
            if name == task.stage:
                return f"stage spec changed: {field}"
            return f"upstream stage changed: {field}"
    for name in [task.stage, *ancestors]:
        op = bp.stages[name].operation
        if isinstance(op, Join) and op.right in plan.inputs:
            now = plan.inputs[op.right].snapshot
            if previous.inputs.get(op.right) not in (None, now):
                return f"broadcast input {op.right} changed"
    if driving is not None and driving in plan.inputs:
        before_slices = previous.slices.get(driving)
        if before_slices is not None:
            keys = _slices_below(plan, task)
            now = {encode_key(e.key): e.id for e in plan.inputs[driving].manifest.slices}
            new = [k for k in keys if encode_key(k) not in before_slices]
            changed = [
                k
                for k in keys
                if encode_key(k) in before_slices
                and before_slices[encode_key(k)] != now.get(encode_key(k))
            ]
            removed = sorted(set(before_slices) - set(now), key=str)
            if new:
                return _listing("new slice", new)
            if changed:
                return _listing("changed slice", changed)
            if removed and task.slice is None:
                return _listing("removed slice", removed)
    return NOT_CACHED


def _listing(what: str, keys: list[Any]) -> str:
    shown = ", ".join(str(k) for k in keys[:5]) + (", ..." if len(keys) > 5 else "")
    return f"{what}{'s' if len(keys) > 1 else ''} {shown}"


def _slices_below(plan: Plan, task: Task) -> list[Any]:
    if task.slice is not None:
        return [task.slice]
    found: list[Any] = []
    stack = list(task.deps)
    seen: set[str] = set()
    while stack:
        key = stack.pop()
        if key in seen:
            continue
        seen.add(key)
        dep = plan.tasks.get(key)
        if dep is None or dep.stage != task.stage:
            continue
        if dep.slice is not None:
            found.append(dep.slice)
        else:
            stack.extend(dep.deps)
    return found


def _ancestors(bp: Blueprint, name: str) -> list[str]:
    """Stages above ``name``, nearest first."""
    out: list[str] = []
    frontier = [name]
    while frontier:
        nxt = []
        for stage in frontier:
            for up in bp.stages[stage].upstream:
                if up in bp.stages and up not in out:
                    out.append(up)
                    nxt.append(up)
        frontier = nxt
    return out


def _driving_input(bp: Blueprint, name: str) -> str | None:
    """The input whose slices ``name``'s tasks follow: down the ``from`` chain."""
    current = name
    while current in bp.stages:
        current = bp.stages[current].from_
    return current if current in bp.inputs else None


def describe_key(plan: Plan, task: Task, previous: Previous | None) -> dict[str, Any]:
    """A task's key, its components, and which of them differ from the last run's same task."""
    from chanbatch.compile.keys import engine_salt

    stage = plan.blueprint.stages.get(task.stage)
    spec = stage.canonical() if stage is not None else {}
    main = [d for d in task.deps if d not in task.broadcast]
    components: dict[str, Any] = {
        "salt": engine_salt(),
        "kind": task.kind,
        "spec": spec,
        "upstream": [_dep_label(plan, d) for d in main],
        "broadcast": [_dep_label(plan, d) for d in task.broadcast],
    }
    doc: dict[str, Any] = {
        "stage": task.stage,
        "slice": encode_key(task.slice) if task.slice is not None else None,
        "kind": task.kind,
        "level": task.level,
        "key": task.key,
        "components": components,
        "previous_run": previous.run if previous else None,
        "changed": [],
    }
    if previous is None:
        doc["changed"] = ["no earlier run of this blueprint"]
        return doc
    before = previous.tasks.get((task.stage, doc["slice"], task.kind))
    if before is None:
        doc["changed"] = ["this task did not exist in the last run"]
        return doc
    if before.get("key") == task.key:
        return doc
    changed = []
    if previous.specs.get(task.stage) != spec:
        changed.append("spec")
    if before.get("salt") not in (None, engine_salt()):
        changed.append("salt")
    old_deps = before.get("deps")
    if old_deps is not None:
        old_main = [d for d in old_deps if d not in before.get("broadcast", [])]
        if old_main != main:
            diff = [_dep_label(plan, d)["what"] for d in main if d not in old_main]
            changed.append("upstream: " + (", ".join(diff[:5]) or "different inputs"))
        if list(before.get("broadcast", [])) != list(task.broadcast):
            changed.append("broadcast")
    doc["changed"] = changed or ["key differs"]
    return doc


def _dep_label(plan: Plan, key: str) -> dict[str, str]:
    dep = plan.tasks.get(key)
    if dep is None:
        return {"key": key, "what": "?"}
    if dep.kind == "load":
        what = f"input {dep.stage} slice {dep.slice} (slice id)"
    elif dep.kind == "gather":
        what = f"all slices of {dep.stage}"
    else:
        what = dep.label
    return {"key": key, "what": what}
