"""A run that finds nothing changed since its blueprint's last computing run, known without
planning.

A result depends only on its inputs' snapshot ids, the stages' specs and the engine, so a run
whose blueprint, input snapshots and engine salt hash to the *fingerprint* the last computing
run left (``memo/<name hash>.last.json``: :func:`~chanbatch.cache.index.read_outcome`), and
whose outputs are still the heads of their datasets with their cached results present, would
compute nothing and freeze the same snapshots: every key of its plan is a key of that run's
plan. Planning it anyway costs time in proportion to the slices (at 100,000 slices, seconds),
so such a run is answered from that outcome: it writes a short record that *repeats* the
earlier one (no tasks; its roots keep alive what that record keeps alive, however old it
gets) and returns the same snapshots.

Anything that does not match exactly (another input snapshot, an edited stage, another engine
salt, an output dataset moved on, a result evicted or damaged, a missing or damaged outcome,
a memo other than the one that run left) goes the normal way, through the plan, which then
explains what changed and rewrites what it must.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chanbatch.blueprint.model import Blueprint
from chanbatch.cache.index import lookup, memo_path, read_outcome, write_outcome
from chanbatch.cache.runs import RunRecord, StageStats, run_stats, write_record
from chanbatch.compile.keys import blueprint_digest, engine_salt
from chanbatch.hashing import digest, digest_json
from chanbatch.run.recording import (
    described,
    named_refs,
    new_run_id,
    record_inputs,
)
from chanbatch.run.results import RunResult
from chanbatch.snapshot import SnapshotStore, refs
from chanbatch.snapshot.names import encode_key
from chanbatch.snapshot.roots import Roots

if TYPE_CHECKING:
    from chanbatch.compile.plan import Plan

# An outcome whose outputs have more cached results than this (a big sliced output) is not
# checked key by key; such a run is planned.
MAX_KEYS = 1024


def fingerprint(blueprint: Blueprint, inputs: dict[str, refs.Resolved]) -> str:
    """What a run's results depend on: the engine salt, the blueprint's stages, wiring and
    outputs (UDF versions included), and the snapshot (and slice) each input is bound to."""
    return digest_json(
        {
            "salt": engine_salt(),
            "blueprint": blueprint_digest(blueprint),
            "inputs": {
                name: [r.snapshot, None if r.slice_key is None else encode_key(r.slice_key)]
                for name, r in sorted(inputs.items())
            },
        }
    )


def leave_outcome(
    store: SnapshotStore,
    plan: Plan,
    run_id: str,
    output_keys: dict[str, list[str]],
    snapshots: dict[str, dict[str, Any]],
    stats: dict[str, Any],
    memo: str | None = None,
) -> None:
    """Record what this computing (or planned) run left, for the next run to repeat.
    ``memo``: the digest of the memo this run wrote (else the memo file is read for it)."""
    stages = {
        name: {"computed": 0, "reused": doc.get("computed", 0) + doc.get("reused", 0)}
        for name, doc in (stats.get("stages") or {}).items()
    }
    write_outcome(
        store.storage,
        plan.blueprint.name,
        {
            "fingerprint": fingerprint(plan.blueprint, plan.inputs),
            "memo": memo or _memo_digest(store, plan.blueprint.name),
            "run": run_id,
            "outputs": snapshots,
            "output_keys": output_keys,
            "stages": stages,
            # what an explanation and the outputs' freeze read of the last run, without its
            # record (which lists every task: megabytes at 100,000 slices)
            "specs": {name: stage.canonical() for name, stage in plan.blueprint.stages.items()},
            "inputs": record_inputs(plan.inputs),
        },
    )


def outcome_record(
    store: SnapshotStore, blueprint: str, last: dict[str, Any] | None = None
) -> RunRecord | None:
    """The last computing run of ``blueprint`` as its outcome tells it (``last``, when the
    caller read it already): its id, stage specs, inputs and outputs, no tasks; None without
    an outcome that has them all."""
    if last is None:
        last = read_outcome(store.storage, blueprint)
    if last is None or not all(k in last for k in ("run", "specs", "inputs", "outputs")):
        return None
    return RunRecord(
        run=str(last["run"]),
        status="finished",
        blueprint=blueprint,
        specs=last["specs"],
        inputs=last["inputs"],
        outputs=last["outputs"],
        output_keys=last.get("output_keys"),
        tasks=[],
    )


def _memo_digest(store: SnapshotStore, blueprint: str) -> str | None:
    """The blake3 of the blueprint's memo file as it is (no parse), or None without one."""
    try:
        return digest(store.storage.read_bytes(memo_path(blueprint)))
    except FileNotFoundError:
        return None


def _rows_read(last: dict[str, Any], inputs: dict[str, refs.Resolved]) -> dict[str, int]:
    """The rows each input's snapshot has, as the repeated run recorded them for the same
    snapshot (its manifest is then not read)."""
    recorded = last.get("inputs")
    rows: dict[str, int] = {}
    if isinstance(recorded, dict):
        for name, r in inputs.items():
            doc = recorded.get(name)
            if not isinstance(doc, dict) or doc.get("snapshot") != r.snapshot:
                continue
            if isinstance(doc.get("rows"), int):
                rows[name] = doc["rows"]
    return rows


def repeat(
    store: SnapshotStore,
    blueprint: Blueprint,
    inputs: dict[str, refs.Resolved],
    scheduler: Callable[[], str],
    clock: float,
    last: dict[str, Any] | None,
    known: refs.Heads | None = None,
) -> RunResult | None:
    """The result of a run that finds everything as the last computing run left it (see the
    module docstring), its short record written; None when anything differs. ``scheduler``
    names the scheduler the run was asked for (and raises UsageError for an unknown one).
    ``last``: the outcome that run left (:func:`~chanbatch.cache.index.read_outcome`);
    ``known``: heads this command read already (:func:`~chanbatch.snapshot.refs.heads`)."""
    storage = store.storage
    if last is None or last.get("fingerprint") != fingerprint(blueprint, inputs):
        return None
    try:
        outputs: dict[str, dict[str, Any]] = dict(last["outputs"])
        keys: dict[str, list[str]] = dict(last["output_keys"])
        previous, stages = str(last["run"]), dict(last["stages"])
    except (KeyError, TypeError, ValueError):
        return None
    if set(outputs) != set(blueprint.outputs) or sum(len(k) for k in keys.values()) > MAX_KEYS:
        return None
    # the memo as that run left it (a damaged or replaced one is rewritten by a planned run)
    if last.get("memo") is None or last.get("memo") != _memo_digest(store, blueprint.name):
        return None
    versions = {}
    for stage, info in outputs.items():
        head = refs.head(storage, info["dataset"], known)
        if head is None or head.snapshot != info["snapshot"]:
            return None
        versions[stage] = head.version
    # as the plan would: each result re-hashed, a damaged one recomputed by a planned run
    wanted = (key for stage_keys in keys.values() for key in stage_keys)
    if any(lookup(storage, key, verify=True) is None for key in wanted):
        return None
    started = dt.datetime.now(dt.UTC)
    run_id = new_run_id(started)
    per_stage = {name: StageStats.parse(doc) for name, doc in stages.items()}
    stats = run_stats(per_stage, time.perf_counter() - clock)
    record = RunRecord(
        run=run_id,
        status="finished",
        started_at=started.isoformat(timespec="milliseconds"),
        **described(blueprint),
        scheduler=scheduler(),
        inputs=record_inputs(inputs, _rows_read(last, inputs)),
        tasks=[],
        outputs=outputs,
        output_versions=versions,
        output_keys=keys,
        stats=stats,
        repeats=previous,
        roots=Roots.of(
            snapshots=sorted({o["snapshot"] for o in outputs.values()}),
            cache=sorted({k for stage_keys in keys.values() for k in stage_keys}),
        )
        .repeating([previous])
        .stating(name=run_id, refs=named_refs(inputs, outputs, versions)),
    )
    write_record(storage, record)
    return RunResult(run_id=run_id, snapshots=outputs, stats=stats, store=store)
