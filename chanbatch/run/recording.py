"""The run's record (``runs/<run id>.json``, a :class:`~chanbatch.cache.runs.RunRecord`), its
statistics, and the memo it leaves for the next plan.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from chanbatch.blueprint.model import Blueprint
from chanbatch.cache.runs import RUNNING, RunRecord, StageStats, TaskOutcome, run_stats, tally
from chanbatch.compile.keys import blueprint_digest, engine_salt
from chanbatch.snapshot.roots import Ref, Roots

if TYPE_CHECKING:  # types only: a repeated run records itself without loading the planner
    from chanbatch.compile.decide import Decision
    from chanbatch.compile.plan import Plan
    from chanbatch.run.results import PlanReport
    from chanbatch.snapshot.refs import Resolved


def intent_record(run_id: str, started_at: dt.datetime, plan: Plan) -> RunRecord:
    """The record a run writes before it reads anything: what it is about to use.

    gc roots every young run record, so the stored results this run reuses and the input
    snapshots it reads cannot be collected under it, however old they are; gc reads records
    written while it swept once more before it deletes (see chanbatch.snapshot.gc). The full
    record replaces this one at the end; a run that dies leaves it, with status "running".
    """
    return RunRecord(
        run=run_id,
        started_at=started_at.isoformat(timespec="milliseconds"),
        blueprint=plan.blueprint.name,
        status=RUNNING,
        # no refs: an intent names no versions for verify to check (a run that dies leaves it)
        roots=Roots.of(
            snapshots=sorted({r.snapshot for r in plan.inputs.values()}),
            cache=plan.kept_keys(),  # in plan order, as the full record lists them
        ).stating(name=run_id),
    )


def recorded_tasks(
    report: PlanReport, done: dict[str, TaskOutcome], started_at: dt.datetime
) -> list[dict[str, Any]]:
    """The reported tasks of the plan, with the cache key each resolved to and, for those that
    ran, what they did."""
    tasks = report.tasks()
    epoch = started_at.timestamp()
    for task in tasks:
        entry = done.get(task["key"])
        if entry is not None:
            task["key"] = entry.key
            task["outcome"] = entry.outcome
            task["seconds"] = entry.seconds
            # the rows it returned (none for a cut-off task, which read nothing): the report's
            # rows in and out per stage
            task["rows"] = entry.rows
            task["worker"] = entry.worker
            if entry.worker_name is not None:
                task["worker_name"] = entry.worker_name
            # wall clock, as seconds after started_at: the report's timeline
            task["began"] = round(entry.began - epoch, 3)
            task["ended"] = round(entry.began + entry.seconds - epoch, 3)
        task["deps"] = [done[d].key if d in done else d for d in task["deps"]]
    return tasks


def stage_stats(
    tasks: list[dict[str, Any]], collapsed: dict[str, int] | None = None
) -> dict[str, StageStats]:
    """Per-stage statistics of a run, from its recorded tasks (the one tally of them), with
    the tasks a chain memo answered for (``collapsed``, per stage: reused, never planned)."""
    stats = tally(tasks)
    for stage, n in (collapsed or {}).items():
        row = stats.get(stage, StageStats(computed=0, reused=0, cutoff=0, seconds=0.0))
        stats[stage] = dataclasses.replace(row, reused=row.reused + n)
    return stats


def pack_of(
    done: dict[str, TaskOutcome],
    decisions: Mapping[str, Decision],
    hints: Mapping[str, str],
) -> Callable[[str], str]:
    """The pack a stored result is in after the run ("" when not in a pack of several, or not
    known): where this run stored it, where planning found it, or what the last run said."""

    # by the key each resolved to: a provisional task's differs from its placeholder
    resolved = {outcome.key: outcome for outcome in done.values()}

    def pack(key: str) -> str:
        entry = resolved.get(key)
        if entry is not None:
            return entry.pack or ""
        decision = decisions.get(key)
        if decision is not None and decision.entry is not None and decision.entry.pack:
            return decision.entry.pack
        return hints.get(key, "")

    return pack


def memo_packs(contents: Mapping[str, str], pack: Callable[[str], str]) -> dict[str, str]:
    """The pack hints of the memo: each packed result of ``contents`` -> its pack."""
    return {key: name for key in contents if (name := pack(key))}


def content_of(plan: Plan, done: dict[str, TaskOutcome]) -> Callable[[str], str | None]:
    """What a stored task's result is hashed as after the run: the content it was stored
    with, if it ran, else what the plan knew."""

    def content(key: str) -> str | None:
        entry = done.get(key)
        if entry is not None:
            return entry.stored or None
        task = plan.tasks.get(key)
        return task.ident if task is not None and task.ident else None

    return content


def finished_record(
    *,
    intent: RunRecord,
    plan: Plan,
    scheduler: str,
    tasks: list[dict[str, Any]],
    done: dict[str, TaskOutcome],
    output_keys: dict[str, list[str]],
    snapshots: dict[str, dict[str, Any]],
    versions: dict[str, int],
    stats: dict[str, Any],
) -> RunRecord:
    """``runs/<run id>.json`` at the end: what ran, with the cache keys each task resolved to
    (``versions``: each output's version in its dataset's ref log, for verify)."""
    stored = [done[k].key if k in done else k for k in plan.kept_keys()]
    return RunRecord(
        run=intent.run,
        status="finished",
        started_at=intent.started_at,
        **described(plan.blueprint),
        scheduler=scheduler,
        inputs=record_inputs(plan.inputs),
        tasks=tasks,
        outputs=snapshots,
        output_versions=versions,
        output_keys=output_keys,
        stats=stats,
        roots=Roots.of(
            snapshots=sorted({o["snapshot"] for o in snapshots.values()}), cache=stored
        ).stating(name=intent.run, refs=named_refs(plan.inputs, snapshots, versions)),
    )


def new_run_id(started_at: dt.datetime) -> str:
    """A run's id: its UTC start time to the second, then 8 hex digits: the microsecond (5)
    and 3 random ones. Ids sort by start time also within a second, so the newest run of a
    blueprint is found by its id even when two runs start in the same second."""
    return f"{started_at:%Y%m%dT%H%M%S}-{started_at.microsecond:05x}{uuid.uuid4().hex[:3]}"


def described(blueprint: Blueprint) -> dict[str, Any]:
    """What a finished record says of its blueprint: name, hash, file, text, stage specs, and
    the engine salt it ran with."""
    return {
        "blueprint": blueprint.name,
        "blueprint_hash": blueprint_digest(blueprint),
        "source": blueprint.source,
        "text": blueprint.text,
        "salt": engine_salt(),
        "specs": {name: stage.canonical() for name, stage in blueprint.stages.items()},
    }


def record_inputs(
    inputs: dict[str, Resolved], rows: Mapping[str, int] | None = None
) -> dict[str, dict[str, Any]]:
    """A record's ``inputs``: each input's dataset, snapshot, version and rows read (``rows``:
    those already known, by input name, so that the manifest need not be read for them)."""
    known = rows or {}
    return {
        name: {
            "dataset": r.dataset,
            "snapshot": r.snapshot,
            "version": r.entry.version,  # verify finds a ref file deleted under it
            # the rows the run read: the whole snapshot, or its one slice (DATASET[slice])
            "rows": known[name]
            if name in known
            else sum(e.rows for e in r.manifest.slices if r.slice_key in (None, e.key)),
        }
        for name, r in inputs.items()
    }


def named_refs(
    inputs: dict[str, Resolved],
    snapshots: dict[str, dict[str, Any]],
    output_versions: dict[str, int],
) -> list[Ref]:
    """The dataset versions a record names, for verify to find a ref file deleted under them
    (chanbatch.snapshot.continuity): each input, then each output, by name."""
    refs = [
        Ref(dataset=r.dataset, snapshot=r.snapshot, version=r.entry.version, what=f"input {name!r}")
        for name, r in sorted(inputs.items())
    ]
    refs += [
        Ref(
            dataset=info["dataset"],
            snapshot=info["snapshot"],
            version=output_versions.get(stage),
            what=f"output {stage!r}",
        )
        for stage, info in sorted(snapshots.items())
    ]
    return refs


def memo_contents(plan: Plan, done: dict[str, TaskOutcome]) -> dict[str, str]:
    """Key -> object id of every stored result this run used or made, for the next plan,
    but the partials of slice chains, which the chain memo holds."""
    out = {}
    for task in plan.tasks.values():
        # a slice chain's partials are in the chain memo (Plan.chain_memo), not here
        if not task.stored or (task.kind == "partial" and task.stage in plan.chains):
            continue
        entry = done.get(task.key)
        if entry is not None:
            if entry.stored:
                out[entry.key] = entry.stored
        elif task.ident:
            out[task.key] = task.ident
    return out


__all__ = [
    "described",
    "finished_record",
    "intent_record",
    "memo_contents",
    "named_refs",
    "new_run_id",
    "record_inputs",
    "recorded_tasks",
    "run_stats",
    "stage_stats",
]
