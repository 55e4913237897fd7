"""Slice chains: the per-slice stages from an input to the partials of the stage that merges
them, planned top-down when an earlier run has seen most of their slices.

A chain is an input read by one stage only, then row-wise stages (filter, derive, select,
rename, map) each read only by the next, ending in the stage whose per-slice *partials* a
combine tree merges (a decomposable aggregate, or a sort whose only reader is a limit). Every
task of a chain over one slice has a key that depends only on the chain's specs, the engine
salt and that slice's id, so the last run can leave, per slice id, the key of the slice's
partial, the content id of its result, the pack holding it and the keys of its kept
checkpoints: the *chain memo*
(:func:`chanbatch.cache.index.read_chains`). A run that finds a slice there plans none of its tasks; the
combine tree is built over the remembered contents, and a slice's tasks are laid out only
when a combine above it must be computed (the new slice's path to the root, and its siblings
there). At 2,526 day slices a new day's run then lays out about 40 tasks instead of 7,600.

The memo is only a hint: a slice whose laid-out partial has another key than the memo says
makes the plan start again without it (:class:`StaleChains`), and so does a reused result
whose cache entry has gone (the runner checks that every computed task's inputs are planned).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from chanbatch.blueprint.model import Aggregate, Blueprint, Sort, Stage
from chanbatch.compile.keys import engine_salt
from chanbatch.compile.operations import rules_of
from chanbatch.hashing import digest_json

#: chain digest -> slice id -> [partial key, content id of its result, the pack it is in or "",
#: kept checkpoint keys...]
ChainMemo = dict[str, dict[str, list[str]]]


class StaleChains(Exception):
    """The chain memo disagrees with a slice's laid-out tasks: plan without it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Chain:
    """An input, the row-wise stages after it (in order), and the stage merging their slices."""

    input: str
    stages: tuple[str, ...]
    merge: str


def find_chains(blueprint: Blueprint, inputs: Collection[str]) -> list[Chain]:
    """The chains of ``blueprint`` (see the module docstring); the merging stage's own
    conditions (a decomposable aggregate, a top-N sort) are the planner's to check."""
    readers: dict[str, list[Stage]] = {}
    for stage in blueprint.stages.values():
        for name in {stage.from_, *stage.operation.references()}:
            readers.setdefault(name, []).append(stage)
    chains = []
    for name in inputs:
        stages: list[str] = []
        current = name
        while True:
            after = readers.get(current, [])
            if len(after) != 1 or after[0].from_ != current or after[0].per_slice:
                break
            stage = after[0]
            if isinstance(stage.operation, Aggregate | Sort):
                chains.append(Chain(input=name, stages=tuple(stages), merge=stage.name))
                break
            if not _row_wise(stage) or stage.name in blueprint.outputs:
                break
            stages.append(stage.name)
            current = stage.name
    return chains


def _row_wise(stage: Stage) -> bool:
    """Whether ``stage`` runs on each slice alone, reading nothing else."""
    op = stage.operation
    rules = rules_of(op)
    return rules.runs_per_slice(op, False) and not rules.broadcast(op) and not op.references()


def chain_digest(
    blueprint: Blueprint, chain: Chain, projection: tuple[str, ...] | None, merge: dict[str, Any]
) -> str:
    """What the keys of a chain's tasks depend on besides a slice's id: the engine salt, the
    columns loaded, each stage's spec and the spec of the partials (``merge``)."""
    return digest_json(
        {
            "salt": engine_salt(),
            "columns": None if projection is None else list(projection),
            "stages": [blueprint.stages[name].canonical() for name in chain.stages],
            "partial": merge,
        }
    )
