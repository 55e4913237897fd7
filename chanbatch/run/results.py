"""What planning and running hand back: a :class:`PlanReport` and a :class:`RunResult`.

Both display themselves through :mod:`chanbatch.run.display`, whose renderers take any object of
the same shape (a Protocol) and import nothing from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chanbatch.run import display
from chanbatch.snapshot.names import encode_key

if TYPE_CHECKING:  # types only: a repeated run hands back a RunResult without planning
    from chanbatch.cache.runs import RunRecord
    from chanbatch.compile.decide import Decision
    from chanbatch.compile.plan import Plan
    from chanbatch.snapshot import SnapshotStore

#: The task kinds a plan shows and a run counts: loads, gathers and the like are plumbing.
REPORTED_KINDS = ("apply", "partial", "combine", "finish", "whole")


@dataclass(slots=True, kw_only=True)
class PlanReport:
    """A plan with its reuse decisions, as ``plan`` shows it."""

    plan: Plan
    decisions: dict[str, Decision]
    memo: dict[str, str] = field(default_factory=dict)  # the memo as planning read it
    hints: dict[str, str] = field(default_factory=dict)  # key -> pack, as planning read them
    # the keys with an entry file of their own when planning listed the cache (None: unlisted)
    listed: frozenset[str] | None = None
    # the blueprint's last run record, once planning has read it (a run reads it once)
    last: RunRecord | None = None
    read_last: bool = False

    @property
    def has_work(self) -> bool:
        """Whether a run would compute anything (else everything comes from the cache)."""
        return any(d.action == "compute" for d in self.decisions.values())

    def tasks(self) -> list[dict[str, Any]]:
        """The reported tasks in plan order, each with its decision."""
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

    def stage_tally(self) -> dict[str, dict[str, int]]:
        """Per stage, in plan order: its tasks to compute and to reuse, how many of the computed
        are provisional (reused after all if their recomputed inputs come out unchanged), and
        how many are an aggregate's per-slice partials. The one count of a plan's tasks that
        the summary, the plan table and the flow picture all read."""
        tally: dict[str, dict[str, int]] = {}
        for task in self.plan.tasks.values():
            if task.kind not in REPORTED_KINDS:
                continue
            decision = self.decisions[task.key]
            row = tally.setdefault(
                task.stage, {"compute": 0, "reuse": 0, "provisional": 0, "partials": 0}
            )
            row[decision.action] += 1
            row["provisional"] += bool(decision.provisional)
            row["partials"] += task.kind == "partial"
        return tally

    def summary(self) -> dict[str, int]:
        """Tasks to compute and to reuse, and how many of the computed are provisional."""
        rows = self.stage_tally().values()
        return {
            part: sum(row[part] for row in rows) for part in ("compute", "reuse", "provisional")
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
