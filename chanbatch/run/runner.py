"""Plan and run a blueprint against a store.

``run_blueprint`` resolves the inputs and checks the outputs; a run that finds nothing changed
since the last computing run is answered from that run's outcome (:mod:`chanbatch.run.repeat`)
without loading the planner. Any other run is planned (:mod:`chanbatch.run.planned`): it lays
out the plan, decides what to reuse, executes the rest on an executor (each stored task records
its result as it finishes), freezes each output as a snapshot with its lineage, and writes a
run record to ``runs/<run id>.json``.

The pieces: :mod:`~chanbatch.run.executor` (where the graph runs), :mod:`~chanbatch.run.outputs`
(freezing), :mod:`~chanbatch.run.recording` (the record, statistics and memo) and
:mod:`~chanbatch.run.results` (what is handed back).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from chanbatch.blueprint.model import Blueprint
from chanbatch.cache.index import (
    chain_delta_path,
    chains_path,
    memo_path,
    outcome_path,
    read_outcome,
)
from chanbatch.errors import UsageError, did_you_mean
from chanbatch.run.owners import check_outputs
from chanbatch.run.repeat import repeat as repeated
from chanbatch.snapshot import SnapshotStore, layout, refs
from chanbatch.snapshot.names import parse_ref
from chanbatch.snapshot.storage import remembering

if TYPE_CHECKING:
    from chanbatch.run.executor import Executor, Progress
    from chanbatch.run.results import RunResult

__all__ = ["resolve_inputs", "run_blueprint"]


def resolve_inputs(
    blueprint: Blueprint,
    store: SnapshotStore,
    sets: Mapping[str, str] | None = None,
    known: refs.Heads | None = None,
) -> dict[str, refs.Resolved]:
    """Resolve every input REF, with ``sets`` rebinding some (``--set input=REF``); ``known``:
    heads read already (:func:`~chanbatch.snapshot.refs.heads`).

    Raises UsageError for a rebinding of an unknown input, and RefError for a REF that does not
    resolve.
    """
    bindings = _bindings(blueprint, sets)
    resolved = {}
    for name, ref in bindings.items():
        try:
            # the manifests are read when planning asks for them: a repeat never does
            resolved[name] = refs.resolve(store.storage, ref, lazy=True, known=known)
        except UsageError as exc:
            raise type(exc)(f"input {name!r}: {exc.message}", hint=exc.hint) from exc
    return resolved


def _bindings(blueprint: Blueprint, sets: Mapping[str, str] | None) -> dict[str, str]:
    """Each input's REF, with ``sets`` rebinding some; raises UsageError for an unknown one."""
    bindings = dict(blueprint.inputs)
    for name, ref in (sets or {}).items():
        if name not in bindings:
            close = did_you_mean(name, bindings)
            raise UsageError(
                f"--set {name}=...: blueprint {blueprint.name!r} has no input {name!r}",
                hint=close or "inputs: " + ", ".join(bindings),
            )
        bindings[name] = ref
    return bindings


def _heads(
    blueprint: Blueprint, store: SnapshotStore, sets: Mapping[str, str] | None
) -> refs.Heads:
    """The heads a run reads first, its inputs' and its outputs', read at once (on an object
    store; see :func:`~chanbatch.snapshot.refs.heads`). A REF that does not parse is left to
    :func:`resolve_inputs` to refuse."""
    datasets = []
    for ref in _bindings(blueprint, sets).values():
        try:
            parsed = parse_ref(ref)
        except UsageError:
            continue
        if parsed.snapshot is None:
            datasets.append(parsed.dataset)
    return refs.heads(store.storage, [*datasets, *blueprint.outputs.values()])


def _manifests_to_plan(
    inputs: Mapping[str, refs.Resolved], outcome: Mapping[str, Any] | None
) -> list[str]:
    """The snapshot manifests a plan reads: its inputs', and the last run's inputs' and
    outputs' (what explanations compare with, and what an output's freeze builds on)."""
    ids = [r.snapshot for r in inputs.values()]
    for part in ("inputs", "outputs"):
        for info in ((outcome or {}).get(part) or {}).values():
            if isinstance(info, dict) and isinstance(info.get("snapshot"), str):
                ids.append(info["snapshot"])
    return list(dict.fromkeys(ids))


def run_blueprint(
    blueprint: Blueprint,
    store: SnapshotStore,
    *,
    scheduler: Any = "threads",
    workers: int | None = None,
    sets: Mapping[str, str] | None = None,
    allow_modules: tuple[str, ...] | frozenset[str] = (),
    progress: Progress | None = None,
    pin_cpus: bool = False,
    overwrite: Collection[str] = (),
    repeat: bool = True,
) -> RunResult:
    """Run ``blueprint`` and freeze its outputs; see the module docstring. With ``repeat``, a
    run that finds nothing changed since the last computing run is answered without planning
    (:mod:`chanbatch.run.repeat`).

    Raises BlueprintError, RefError and UsageError before anything runs (UsageError also
    for an output that is an input, or a dataset not written by this blueprint and not named
    in ``overwrite``, or an unknown scheduler), and StageFailed (naming the stage and slice)
    when a stage raises.
    """
    # a result is stored in the cache, then again in the output: once on an object store
    with remembering():
        clock = time.perf_counter()
        store.storage.read_ahead([outcome_path(blueprint.name)])  # read while the inputs resolve
        known = _heads(blueprint, store, sets)
        inputs = resolve_inputs(blueprint, store, sets, known)
        check_outputs(blueprint, store, inputs, overwrite, known)

        def executor() -> Executor:
            from chanbatch.run.executor import choose_executor

            return choose_executor(scheduler, workers=workers, pin_cpus=pin_cpus)

        outcome = read_outcome(store.storage, blueprint.name)
        if repeat:
            result = repeated(
                store, blueprint, inputs, lambda: executor().name, clock, outcome, known
            )
            if result is not None:
                return result
        if not store.storage.is_local:
            _import_ahead()
        # what planning reads first, together (on an object store: one round trip, not four)
        name = blueprint.name
        store.storage.read_ahead(
            [chains_path(name), chain_delta_path(name), memo_path(name)]
            + [layout.manifest_path(sid) for sid in _manifests_to_plan(inputs, outcome)]
        )
        store.storage.list_ahead(layout.CACHE)  # which results have entry files (CacheView)
        from chanbatch.run.planned import run_planned  # the planner: only for a run to plan

        return run_planned(
            blueprint,
            store,
            inputs,
            outcome,
            allow_modules=allow_modules,
            executor=executor,
            progress=progress,
            clock=clock,
        )


def _import_ahead() -> None:
    """Import what executing needs (pyarrow: 0.3 s) on a thread, while the run plans. On an
    object store planning mostly waits on round trips (the memos, the manifests, the cache's
    entries), so the import costs no time there; on a local disk planning is busy, and the two
    would only take turns. Only libraries: the thread imports none of chanbatch's modules,
    which the planner imports meanwhile. A failed import fails again, and is reported, where
    the run imports it itself."""
    import threading

    def load() -> None:
        with contextlib.suppress(Exception):
            import pyarrow.compute
            import pyarrow.parquet  # noqa: F401

    threading.Thread(target=load, name="chanbatch-import").start()
