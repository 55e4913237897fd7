"""Rows in and out of each stage of a run, from its record: how much each filter kept.

A task that ran records the rows it returned; a stage's output is what its last tasks returned
(those no other task of the stage reads: a filter's per-slice tasks, an aggregate's finish), and
its input is what its upstream stages returned, or, for an input, the rows the run read of it.
Nothing is estimated: when a task that counts did not run in this run (it was reused from the
cache, or cut off) or the record is older than per-task rows, the number is missing and
:attr:`StageRows.why` says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chanbatch.blueprint.model import Blueprint


@dataclass(frozen=True, slots=True, kw_only=True)
class StageRows:
    """The rows a stage read (``rows_in``) and returned (``rows_out``), None where the record
    cannot tell; ``why_in`` and ``why_out`` say why in that case."""

    rows_in: int | None = None
    rows_out: int | None = None
    why_in: str = ""
    why_out: str = ""

    @property
    def kept(self) -> float | None:
        """The share of its input rows the stage returned, when both are known."""
        if self.rows_in is None or self.rows_out is None or self.rows_in == 0:
            return None
        return self.rows_out / self.rows_in


def stage_rows(record: Mapping[str, Any], blueprint: Blueprint | None) -> dict[str, StageRows]:
    """Stage -> its :class:`StageRows` in the run ``record`` (a record document), for every stage
    with tasks. ``blueprint`` (the one that ran) says what each stage reads; without it only the
    rows out are known. Raises nothing: a missing number carries its reason."""
    tasks = [t for t in record.get("tasks") or [] if isinstance(t, Mapping)]
    by_stage: dict[str, list[Mapping[str, Any]]] = {}
    for task in tasks:
        by_stage.setdefault(str(task.get("stage")), []).append(task)
    outs = {stage: _rows_out(stage_tasks) for stage, stage_tasks in by_stage.items()}
    inputs = record.get("inputs") or {}
    result = {}
    for stage, (rows_out, why_out) in outs.items():
        rows_in, why_in = _rows_in(stage, blueprint, outs, inputs)
        result[stage] = StageRows(
            rows_in=rows_in, rows_out=rows_out, why_in=why_in, why_out=why_out
        )
    return result


def _rows_out(tasks: list[Mapping[str, Any]]) -> tuple[int | None, str]:
    read = {d for t in tasks for d in (*(t.get("deps") or ()), *(t.get("broadcast") or ()))}
    last = [t for t in tasks if t.get("key") not in read] or tasks
    reused = sum(1 for t in last if t.get("outcome") is None)
    cut = sum(1 for t in last if t.get("outcome") == "cutoff")
    if reused or cut:
        parts = []
        if reused:
            parts.append(f"{reused} of its {len(last)} last tasks were reused from the cache")
        if cut:
            parts.append(f"{cut} of its {len(last)} last tasks were cut off")
        return None, "not recorded: " + " and ".join(parts) + " (they did not run)"
    if any(not isinstance(t.get("rows"), int) for t in last):
        return None, "not recorded: this run record is older than per-task rows"
    return sum(int(t["rows"]) for t in last), ""


def _rows_in(
    stage: str,
    blueprint: Blueprint | None,
    outs: Mapping[str, tuple[int | None, str]],
    inputs: Mapping[str, Any],
) -> tuple[int | None, str]:
    if blueprint is None or stage not in blueprint.stages:
        return None, "not known: the blueprint that ran is not available"
    total = 0
    for upstream in blueprint.stages[stage].upstream:
        if upstream in blueprint.inputs:
            rows = (inputs.get(upstream) or {}).get("rows")
            if not isinstance(rows, int):
                return None, f"not recorded: the rows read of input {upstream}"
        else:
            rows, why = outs.get(upstream, (None, "it has no tasks in this run"))
            if rows is None:
                return None, f"{why} (in stage {upstream})"
        total += rows
    return total, ""
