"""Why a task must be computed, found by comparing the plan with the blueprint's last run.

The causes are checked in the order a user thinks of them: the stage itself (or a stage above
it) was edited; a broadcast input has a new snapshot; a slice is new or changed; and only then
"not in the cache" (evicted, corrupt, or never stored).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

from chanbatch.blueprint.model import Join, Window
from chanbatch.cache.runs import RunRecord
from chanbatch.compile.decide import Decision
from chanbatch.compile.plan import Partners, Plan, Task, partner_slices
from chanbatch.compile.windows import reach_text, reaches
from chanbatch.snapshot.names import decode_key, encode_key, key_type, sort_token
from chanbatch.snapshot.objects import get_slice_index
from chanbatch.snapshot.storage import Storage

NOT_CACHED = "not in the cache (evicted, corrupt, or not kept)"
#: The end of a provisional task's reason (``plan``'s tables shorten it to "may reuse").
MAY_REUSE = "reused if its inputs come out unchanged"
_SHOWN = 6  # slices a reason names at most (it lists five, then "...")


@dataclass(frozen=True, slots=True, kw_only=True)
class Previous:
    """What the last run of a blueprint saw: its stage specs and its inputs' slices."""

    run: str
    specs: dict[str, Any]
    inputs: dict[str, str]  # input name -> snapshot id
    slices: dict[str, dict[Any, str]]  # input name -> {encoded slice key: slice id}
    tasks: dict[tuple[str, Any, str], dict[str, Any]]  # (stage, slice, kind) -> task record


def load_previous(storage: Storage, record: RunRecord | None) -> Previous | None:
    """The parts of a run record that explanations need; None without a usable record (none,
    or one older than the stage specs it keeps)."""
    if record is None or record.specs is None:
        return None
    inputs = {name: info["snapshot"] for name, info in (record.inputs or {}).items()}
    slices: dict[str, dict[Any, str]] = {}
    for name, sid in inputs.items():
        try:
            slices[name] = dict(get_slice_index(storage, sid))
        except Exception:  # an old snapshot that gc removed: explain without it
            continue
    tasks = {(t["stage"], t.get("slice"), t.get("kind", "")): t for t in record.tasks or []}
    return Previous(run=record.run, specs=record.specs, inputs=inputs, slices=slices, tasks=tasks)


def explain(
    plan: Plan, decisions: dict[str, Decision], previous: Previous | None
) -> dict[str, Decision]:
    """``decisions`` with the reason of every computed task made specific.

    What a stage's tasks are blamed on (an edited stage above it, a changed broadcast input,
    its slices) is worked out once per stage, in topological order, each stage from the
    stages it reads: a chain of thousands of stages costs no more per stage than a short one.
    """
    bp = plan.blueprint
    causes, partners = _stage_causes(plan, previous)
    slices = _SliceChanges(plan, previous)
    # a new or changed slice lies below computed tasks only: a cached result's key says its
    # slices are as they were, so the walk down to them stays on computed tasks
    slices.computing = {k for k, d in decisions.items() if d.action == "compute"}
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
        if previous is None:
            reason = "not cached: no earlier run of this blueprint"
        else:
            join = partners.get(task.stage)
            reason = (
                causes.get(task.stage)
                or (slices.reason(task) if join is None else slices.joined_reason(task, join))
                or slices.inputs_reason(task)
                or NOT_CACHED
            )
        if reason == NOT_CACHED and key in consumers:
            reason = f"input to {consumers[key].label}, which is recomputed"
        if decision.provisional:
            reason += f"; {MAY_REUSE}"
        out[key] = replace(decision, reason=reason)
    return out


def _stage_causes(
    plan: Plan, previous: Previous | None
) -> tuple[dict[str, str], dict[str, str | None]]:
    """Per stage, the reason its tasks are recomputed that does not depend on the slice; and
    per stage, the nearest co-sliced join (itself or above), whose two sides' changed slices
    are blamed slice by slice (:meth:`_SliceChanges.joined_reason`).

    Checked in order: the stage itself or the nearest stage above it was edited or is new;
    then the nearest join (itself or above) whose broadcast input has a new snapshot. Each
    stage's nearest edited ancestor is derived from those of the stages it reads, so this is
    linear in the number of stages.
    """
    if previous is None:
        return {}, {}
    cosliced: dict[str, tuple[int, str] | None] = {}
    bp = plan.blueprint
    # (distance, stage) of the nearest edited stage, and of the nearest changed broadcast
    edited: dict[str, tuple[int, str] | None] = {}
    broadcast: dict[str, tuple[int, str] | None] = {}
    own: dict[str, str] = {}  # stage -> how it changed, phrased for itself
    upstream_text: dict[str, str] = {}  # stage -> how it changed, phrased for stages below
    causes: dict[str, str] = {}
    for name in bp.topological_order():
        stage = bp.stages[name]
        spec = stage.canonical()
        before = previous.specs.get(name)
        if before is None:
            own[name] = f"new stage {name}"
            upstream_text[name] = f"upstream stage {name} is new"
        elif before != spec:
            field = f"{name}.{spec.get('op', '?')}"
            if before.get("op") == spec.get("op") and before.get("per_slice") != spec.get(
                "per_slice"
            ):
                field = f"{name}.per_slice"
            own[name] = f"stage spec changed: {field}"
            upstream_text[name] = f"upstream stage changed: {field}"
        parents = [up for up in stage.upstream if up in bp.stages]
        edited[name] = (0, name) if name in own else _nearest(edited, parents)
        op = stage.operation
        paired = isinstance(op, Join) and partner_slices(plan, stage) is not None
        cosliced[name] = (0, name) if paired else _nearest(cosliced, parents)
        if (
            isinstance(op, Join)
            and not paired
            and op.right in plan.inputs
            and previous.inputs.get(op.right) not in (None, plan.inputs[op.right].snapshot)
        ):
            broadcast[name] = (0, op.right)
        else:
            broadcast[name] = _nearest(broadcast, parents)
        hit = edited[name]
        if hit is not None:
            causes[name] = own[name] if hit[0] == 0 else upstream_text[hit[1]]
        elif broadcast[name] is not None:
            causes[name] = f"broadcast input {broadcast[name][1]} changed"  # type: ignore[index]
    partners = {name: (hit[1] if hit is not None else None) for name, hit in cosliced.items()}
    return causes, partners


def _nearest(
    found: dict[str, tuple[int, str] | None], parents: list[str]
) -> tuple[int, str] | None:
    """The nearest of the parents' findings, one step further; ties go to the first parent."""
    best: tuple[int, str] | None = None
    for parent in parents:
        hit = found.get(parent)
        if hit is not None and (best is None or hit[0] + 1 < best[0]):
            best = (hit[0] + 1, hit[1])
    return best


class _SliceChanges:
    """New, changed and removed slices of each stage's driving input since the last run,
    worked out once per input rather than once per task."""

    def __init__(self, plan: Plan, previous: Previous | None) -> None:
        self.plan = plan
        self.previous = previous
        self.driving: dict[str, str | None] = {}
        bp = plan.blueprint
        for name in bp.topological_order():
            up = bp.stages[name].from_
            self.driving[name] = (
                self.driving.get(up) if up in bp.stages else (up if up in bp.inputs else None)
            )
        self._now: dict[str, dict[Any, str]] = {}
        self._removed: dict[str, list[Any]] = {}
        self._joins: dict[str, Partners | None] = {}
        self._below: dict[str, tuple[tuple[str, Any, str], ...]] | None = None
        self.computing: set[str] | None = None  # the keys to compute, when known

    def inputs_reason(self, task: Task) -> str | None:
        """The new or changed slices of any input below ``task``, as a reason: for what reads
        more than its driving input's slice (a union's other parts, a limit's first slices, a
        top-N's merges). The driving input's are named as :meth:`reason` names them
        ("changed slice 1"), another input's with its name ("b's new slice 4")."""
        found = self._changes_below().get(task.key, ())
        if not found:
            return None
        driving = self.driving.get(task.stage)
        parts = []
        for what in ("new", "changed"):
            inputs = [driving, *sorted({i for i, _, w in found if w == what and i != driving})]
            for name in inputs:
                keys = [k for i, k, w in found if w == what and i == name]
                if keys:
                    owner = "" if name == driving else f"{name}'s "
                    parts.append(_listing(f"{owner}{what} slice", keys))
        return "; ".join(parts)

    def _changes_below(self) -> dict[str, tuple[tuple[str, Any, str], ...]]:
        """Per task key, the input slices below it that are new or changed since the last run,
        as (input, slice key, "new" | "changed"), the first few; one pass over the plan's
        tasks, which are laid out each after its inputs."""
        if self._below is not None:
            return self._below
        below: dict[str, tuple[tuple[str, Any, str], ...]] = {}
        previous = self.previous.slices if self.previous is not None else {}
        for key, task in self.plan.tasks.items():
            if task.kind == "load":
                before = previous.get(task.stage)
                was = (
                    before.get(encode_key(task.slice)) if before and task.slice is not None else ""
                )
                if before is None or was == task.source:
                    below[key] = ()
                else:
                    below[key] = ((task.stage, task.slice, "new" if was is None else "changed"),)
                continue
            merged: list[tuple[str, Any, str]] = []
            for dep in task.deps:
                for change in below.get(dep, ()):
                    if change not in merged and len(merged) < _SHOWN:
                        merged.append(change)
            below[key] = tuple(merged)
        self._below = below
        return below

    def reason(self, task: Task) -> str | None:
        """The new, changed or removed slices below ``task``, as a reason; None if none."""
        driving = self.driving.get(task.stage)
        if self.previous is None or driving is None or driving not in self.plan.inputs:
            return None
        before_slices = self.previous.slices.get(driving)
        if before_slices is None:
            return None
        now = self._slice_ids(driving)
        if driving not in self._removed:
            self._removed[driving] = sorted(set(before_slices) - set(now), key=sort_token)
        keys = _slices_below(self.plan, task, self.computing)
        new = [k for k in keys if encode_key(k) not in before_slices]
        if new:
            return _listing("new slice", new)
        changed = [
            k
            for k in keys
            if encode_key(k) in before_slices
            and before_slices[encode_key(k)] != now.get(encode_key(k))
        ]
        if changed:
            return _listing("changed slice", changed)
        removed = self._removed[driving]
        if removed and task.slice is None:
            return _listing("removed slice", removed)
        if "halo" in task.key_spec:
            return self._halo_reason(task, before_slices, now, removed)
        return None

    def _halo_reason(
        self, task: Task, before: dict[Any, str], now: dict[Any, str], removed: list[Any]
    ) -> str | None:
        """For one slice of a window run by halo (see :mod:`chanbatch.compile.windows`): the
        new, changed or removed slice its frames reach, as "window halo: slice 5 is within
        6 days of new slice 6"."""
        op = self.plan.blueprint.stages[task.stage].operation
        assert isinstance(op, Window) and task.slice is not None
        own = task.slice
        halo = [k for d in task.deps if (k := self.plan.tasks[d].slice) is not None]
        new = [k for k in halo if encode_key(k) not in before]
        changed = [
            k
            for k in halo
            if encode_key(k) in before and before[encode_key(k)] != now.get(encode_key(k))
        ]
        gone = [decode_key(k, key_type(own)) for k in removed]
        gone = [k for k in gone if k is not None and reaches(op, own, k)]
        for what, found, verb in (
            ("new", new, "is"),
            ("changed", changed, "is"),
            ("removed", gone, "was"),
        ):
            if found:
                other = found[0]
                later = bool(other > own)  # type: ignore[operator]  # keys of one type
                distance = reach_text(op, later=later, like=own)
                return f"window halo: slice {own} {verb} within {distance} of {what} slice {other}"
        return None

    def _slice_ids(self, name: str) -> dict[Any, str]:
        """Input ``name``'s slice ids now, by encoded slice key (worked out once)."""
        if name not in self._now:
            manifest = self.plan.inputs[name].manifest
            if manifest.key_type == "date":
                self._now[name] = {encode_key(e.key): e.id for e in manifest.slices}
            else:  # an int or text key is its own JSON form
                self._now[name] = {e.key: e.id for e in manifest.slices}
        return self._now[name]

    def joined_reason(self, task: Task, join: str) -> str | None:
        """For a task at or below the co-sliced join ``join``: the slices under it of either
        side that are new, changed or removed since the last run, as a reason; None if none.

        The left side's read as any stage's ("new slice 3"), the right side's name their
        input ("weather's partner slice 3 changed"); a slice whose key the other side lacks
        says so ("; no partner in flights"). Such a key's task reads zero rows of the other
        side's first slice in the partner's place (:class:`chanbatch.compile.plan.Partners`),
        so it is also blamed on that slice.
        """
        op = self.plan.blueprint.stages[join].operation
        assert isinstance(op, Join)
        left_name, right_name = self.driving.get(join), self._input_of(op.right)
        if self.previous is None or left_name is None or right_name is None:
            return self.reason(task)
        left, right = self._side(left_name), self._side(right_name)
        if left is None or right is None:
            return self.reason(task)
        keys = _slices_below(self.plan, task, self.computing)

        def alone(found: list[Any], other: _Side) -> str:
            lone = all(encode_key(k) not in other.now for k in found)
            return f"; no partner in {other.name}" if lone else ""

        def plural(found: list[Any], one: str, many: str) -> str:
            return many if len(found) > 1 else one

        if found := left.new(keys):
            return _listing("new slice", found) + alone(found, right)
        if found := left.changed(keys):
            return _listing("changed slice", found) + alone(found, right)
        if found := right.new(keys):
            what, lone = f"{right.name}'s partner slice", alone(found, left)
            if lone:
                what = f"{right.name}'s slice"
            return _listing(what, found) + plural(found, " is new", " are new") + lone
        if found := right.changed(keys):
            what, lone = f"{right.name}'s partner slice", alone(found, left)
            if lone:
                what = f"{right.name}'s slice"
            return _listing(what, found) + " changed" + lone
        if found := left.removed(keys):
            has = plural(found, "slice has", "slices have")
            return _listing("removed slice", found) + f"; {right.name}'s {has} no partner now"
        if found := right.removed(keys):
            gone = plural(found, " was removed", " were removed")
            return _listing(f"{right.name}'s partner slice", found) + gone
        partners = self._partners(join)
        stand_ins = zip((left, right), partners.stand_in, strict=True) if partners else ()
        for side, first in stand_ins:
            if all(encode_key(k) in side.now for k in keys):
                continue  # no key lacks this side: nothing stands in for it
            where = f"no partner in {side.name}; its first slice"
            if side.changed([first]):
                return f"{where} {first}, read in its place, changed"
            if side.first_before(first) != first:
                return f"{where}, read in its place, is now {first}"
        # a slice removed from the whole input, or a window's halo: as for any stage
        return self.reason(task) if task.slice is None or "halo" in task.key_spec else None

    def _side(self, name: str) -> _Side | None:
        """Input ``name``'s slice ids now and at the last run; None if the last are unknown."""
        before = self.previous.slices.get(name) if self.previous is not None else None
        if before is None:
            return None
        return _Side(name=name, now=self._slice_ids(name), before=before)

    def _partners(self, join: str) -> Partners | None:
        """The co-sliced join ``join``'s slices (worked out once)."""
        if join not in self._joins:
            self._joins[join] = partner_slices(self.plan, self.plan.blueprint.stages[join])
        return self._joins[join]

    def _input_of(self, name: str) -> str | None:
        """The input whose slices input or stage ``name`` keeps."""
        return name if name in self.plan.inputs else self.driving.get(name)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Side:
    """One side of a co-sliced join: its input's slice ids now and at the last run, by
    encoded slice key."""

    name: str
    now: dict[Any, str]
    before: dict[Any, str]

    def new(self, keys: list[Any]) -> list[Any]:
        return [k for k in keys if encode_key(k) in self.now and encode_key(k) not in self.before]

    def changed(self, keys: list[Any]) -> list[Any]:
        return [
            k
            for k in keys
            if encode_key(k) in self.now
            and encode_key(k) in self.before
            and self.now[encode_key(k)] != self.before[encode_key(k)]
        ]

    def removed(self, keys: list[Any]) -> list[Any]:
        return [k for k in keys if encode_key(k) in self.before and encode_key(k) not in self.now]

    def first_before(self, like: Any) -> Any:
        """The first slice key at the last run, of the type of key ``like`` (None if none)."""
        kind = key_type(like)
        return min((decode_key(k, kind) for k in self.before), default=None)


def _listing(what: str, keys: list[Any]) -> str:
    keys = sorted(keys, key=sort_token)  # 1, 2, 10: not in the order tasks were walked, nor as text
    shown = ", ".join(str(k) for k in keys[:5]) + (", ..." if len(keys) > 5 else "")
    return f"{what}{'s' if len(keys) > 1 else ''} {shown}"


def _slices_below(plan: Plan, task: Task, within: set[str] | None = None) -> list[Any]:
    """The slice keys below ``task`` in its stage, walking only through ``within`` (if
    given)."""
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
        if dep is None or dep.stage != task.stage or (within is not None and key not in within):
            continue
        if dep.slice is not None:
            found.append(dep.slice)
        else:
            stack.extend(dep.deps)
    return found


def describe_key(
    plan: Plan, task: Task, previous: Previous | None, unchanged: Collection[str] = ()
) -> dict[str, Any]:
    """A task's key, its components, and which of them differ from the last run's same task.
    ``unchanged``: keys the last run had without recording them (it planned their slices from
    its chain memo)."""
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
    if before is None and task.key in unchanged:
        return doc
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
