"""Reuse decisions: which tasks to compute, which to take from the cache, and why."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from chanbatch.cache import CacheEntry, CacheView, lookup
from chanbatch.compile.plan import Plan, Task
from chanbatch.snapshot.storage import Storage

Action = Literal["compute", "reuse", "load"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    action: Action
    reason: str
    cached: bool = False  # the result is read from the cache
    # computed unless its inputs come out as before: then the worker finds it cached
    provisional: bool = False
    entry: CacheEntry | None = None  # where a reused result is, as planning found it


PROVISIONAL = "its inputs are recomputed first; reused if they come out unchanged (early cutoff)"


def decide(plan: Plan, storage: Storage, view: CacheView | None = None) -> dict[str, Decision]:
    """Walk from the outputs back: a needed task is reused if its result is cached and
    verifies, else computed, which makes its inputs needed in turn. ``view`` saves the reads
    of keys that have no entry."""
    needed: set[str] = set()
    for stage in plan.blueprint.outputs:
        needed.update(k for k in plan.results[stage].keys if k)
    decisions: dict[str, Decision] = {}
    _prefetch(plan, view, _surely_needed(plan, needed))
    for task in reversed(list(plan.tasks.values())):
        if task.key not in needed:
            decisions[task.key] = Decision(
                action="reuse", reason="not needed: every result that uses it is cached"
            )
            continue
        if task.kind == "load":
            decisions[task.key] = Decision(action="load", reason="input slice")
            continue
        if task.provisional:
            decisions[task.key] = Decision(action="compute", reason=PROVISIONAL, provisional=True)
            needed.update(task.deps)
            _prefetch(plan, view, task.deps)
            continue
        entry = None
        if _known(task, view):
            entry = (
                view.lookup(task.key, verify=True)
                if view is not None
                else lookup(storage, task.key, verify=True)
            )
        if entry is not None:
            decisions[task.key] = Decision(
                action="reuse", reason="cached", cached=True, entry=entry
            )
            continue
        decisions[task.key] = Decision(action="compute", reason=_why(task.kind))
        needed.update(task.deps)
        _prefetch(plan, view, task.deps)
    return decisions


def _known(task: Task, view: CacheView | None) -> bool:
    """Whether ``task``'s result may be cached, by what planning knows (no read of it)."""
    known = bool(task.checkpoint or (task.stored and task.ident))
    return known and (view is None or view.has_entry(task.key, task.kind))


def _prefetch(plan: Plan, view: CacheView | None, deps: Sequence[str]) -> None:
    """Look up the cached results among ``deps`` (a computed task's inputs, each needed next)
    together: see :meth:`CacheView.prefetch`."""
    if view is None or view.storage.is_local:  # a local store reads them as asked
        return
    # whether each is cached is for the prefetch to find out, its pack indexes read together
    view.prefetch([k for k in deps if k in plan.tasks and _known(plan.tasks[k], None)])


def _surely_needed(plan: Plan, needed: set[str]) -> list[str]:
    """The tasks ``needed`` whatever the cache holds: those, and the inputs of each provisional
    one among them (computed without a look: its key is not known yet), and so on down. On a
    new slice's path these are every level's cached siblings, looked up together up front
    instead of one level after another."""
    out: list[str] = []
    seen: set[str] = set()
    stack = sorted(needed)
    while stack:
        key = stack.pop()
        task = plan.tasks.get(key)
        if key in seen or task is None:
            continue
        seen.add(key)
        out.append(key)
        if task.provisional:
            stack.extend(task.deps)
    return out


def _why(kind: str) -> str:
    return {
        "partial": "no cached partial for this slice",
        "combine": "no cached combine for these children",
        "finish": "no cached result",
        "whole": "no cached result",
    }.get(kind, "not cached")
