"""How plans, runs and blueprints display: a one-line ``__repr__`` for a terminal REPL, and
``_repr_html_`` tables for Jupyter and VS Code.

Everything here works from what the objects already hold: no store access, no dask, no data.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Protocol

from chanbatch import html as h
from chanbatch.blueprint.model import (
    Blueprint,
)
from chanbatch.blueprint.summary import operation_text
from chanbatch.ids import short


class PlanShape(Protocol):
    """What a plan's pictures read (chanbatch.run.results.PlanReport has it)."""

    @property
    def plan(self) -> Any: ...

    @property
    def has_work(self) -> bool: ...

    def tasks(self) -> list[dict[str, Any]]: ...

    def summary(self) -> dict[str, int]: ...

    def stage_tally(self) -> dict[str, dict[str, int]]: ...


class RunShape(Protocol):
    """What a run's pictures read (chanbatch.run.results.RunResult has it)."""

    @property
    def run_id(self) -> str: ...

    @property
    def snapshots(self) -> dict[str, dict[str, Any]]: ...

    @property
    def stats(self) -> dict[str, Any]: ...


#: Distinct reasons a stage's row lists before it says how many more there are.
REASONS_SHOWN = 4
#: A spec summary longer than this is cut, its whole text in a tooltip.
SUMMARY_WIDTH = 120
#: Combine tasks name their level (``by_carrier combine[2]``); a reason's count ignores it.
_LEVEL = re.compile(r" combine\[\d+\]")
#: "new slice 2013-12", "new slices 1, 2, 3, ...": one reason, whatever the slices.
_SLICES = re.compile(r"^(new|changed|removed) slices? .*?(; reused if .*)?$")


# -- plans ------------------------------------------------------------------------------------------


def plan_repr(report: PlanShape) -> str:
    s = report.summary()
    provisional = f" ({s['provisional']:,} provisional)" if s["provisional"] else ""
    return (
        f"Plan({report.plan.blueprint.name}: {s['compute']:,} compute{provisional}, "
        f"{s['reuse']:,} reuse)"
    )


def stage_rows(report: PlanShape) -> list[dict[str, Any]]:
    """Per stage, in plan order: compute, reuse and provisional counts, and the distinct
    reasons with how many tasks each explains (slice keys folded, so that a hundred new slices
    are one reason)."""
    stages: dict[str, dict[str, Any]] = {
        stage: {"stage": stage, **{k: row[k] for k in ("compute", "reuse", "provisional")}}
        for stage, row in report.stage_tally().items()
    }
    reasons: dict[str, Counter[tuple[str, str]]] = {}
    first: dict[tuple[str, str, str], str] = {}  # a folded reason's first text, shown when alone
    for task in report.tasks():
        stage = task["stage"]
        why = _fold(task["reason"], task["slice"])
        reasons.setdefault(stage, Counter())[(task["action"], why)] += 1
        first.setdefault((stage, task["action"], why), task["reason"])
    for stage, row in stages.items():
        # what is computed, and why, matters more than what is reused
        ordered = sorted(reasons[stage].items(), key=lambda kv: (kv[0][0] != "compute", -kv[1]))
        row["reasons"] = [
            (action, first[(stage, action, text)] if n == 1 else text, n)
            for (action, text), n in ordered
        ]
    return list(stages.values())


def _fold(reason: str, slice_key: Any) -> str:
    found = _SLICES.match(reason)
    if found:
        return f"{found.group(1)} slices{found.group(2) or ''}"
    if slice_key is not None:
        # "input to by_carrier@7 partial, ...": the same reason on every slice
        reason = reason.replace(f"@{slice_key} ", " ")
    return _LEVEL.sub(" combine", reason)


def plan_html(report: PlanShape) -> str:
    s = report.summary()
    plan = report.plan
    inputs = [
        (name, h.ref(r.dataset, r.snapshot), len(r.manifest.slices), r.manifest.rows)
        for name, r in plan.inputs.items()
    ]
    stages = []
    for row in stage_rows(report):
        shown = row["reasons"][:REASONS_SHOWN]
        items: list[Any] = [
            h.join([h.badge(action, action), " ", text, f" \u00d7{n:,}" if n > 1 else ""])
            for action, text, n in shown
        ]
        if len(row["reasons"]) > len(shown):
            items.append(f"\u2026 {len(row['reasons']) - len(shown)} more reasons")
        stages.append(
            (
                row["stage"],
                row["compute"],
                row["reuse"],
                row["provisional"],
                h.join(items, h.Markup("<br/>")),
            )
        )
    verdict = "nothing to compute: a run reuses everything" if not report.has_work else None
    return h.card(
        h.join(["Plan ", plan.blueprint.name]),
        h.facts(
            [
                ("compute", h.number(s["compute"])),
                ("reuse", h.number(s["reuse"])),
                ("provisional", h.number(s["provisional"]) if s["provisional"] else None),
                ("tasks", h.number(s["compute"] + s["reuse"])),
                ("", verdict),
            ]
        ),
        h.section(
            "Inputs", h.table(["input", "snapshot", "slices", "rows"], inputs, max_rows=None)
        ),
        h.section(
            "Stages",
            h.table(
                ["stage", "compute", "reuse", "provisional", "why"],
                stages,
                max_rows=None,
                wrap=["why"],
            ),
        ),
        h.section("Notes", h.bullets(plan.notes)) if plan.notes else "",
    )


# -- runs -----------------------------------------------------------------------------------------


def run_repr(result: RunShape) -> str:
    st = result.stats
    outputs = ", ".join(
        f"{stage} -> {o['dataset']}@{short(o['snapshot'])}" for stage, o in result.snapshots.items()
    )
    return (
        f"RunResult(run {result.run_id}: {st.get('computed', 0):,} computed, "
        f"{st.get('reused', 0):,} reused, {st.get('seconds', 0.0):.3f} s; "
        f"outputs: {outputs or 'none'})"
    )


def run_html(result: RunShape) -> str:
    st = result.stats
    outputs = [
        (stage, h.ref(o["dataset"], o["snapshot"]), o.get("rows"))
        for stage, o in result.snapshots.items()
    ]
    stages: list[tuple[Any, ...]] = [
        (name, c["computed"], c["reused"], c["cutoff"], float(c["seconds"]))
        for name, c in st.get("stages", {}).items()
    ]
    stages.append(
        (
            h.tag("b", "total"),
            st.get("computed", 0),
            st.get("reused", 0),
            st.get("cutoff", 0),
            float(st.get("seconds", 0.0)),
        )
    )
    return h.card(
        h.join(["Run ", h.tag("code", result.run_id)]),
        h.facts(
            [
                ("computed", h.number(st.get("computed", 0))),
                ("reused", h.number(st.get("reused", 0))),
                (
                    "of those after early cutoff",
                    h.number(st["cutoff"]) if st.get("cutoff") else None,
                ),
                ("seconds", f"{st.get('seconds', 0.0):.3f}"),
            ]
        ),
        h.section("Outputs", h.table(["stage", "snapshot", "rows"], outputs, max_rows=None)),
        h.section(
            "Stages (seconds are task time summed over workers; the total is wall time)",
            h.table(["stage", "computed", "reused", "cutoff", "seconds"], stages, max_rows=None),
        ),
    )


# -- blueprints -----------------------------------------------------------------------------------


def blueprint_repr(bp: Blueprint) -> str:
    outputs = ", ".join(f"{stage} -> {dataset}" for stage, dataset in bp.outputs.items())
    return (
        f"Blueprint({bp.name}: {_count(len(bp.inputs), 'input')}, "
        f"{_count(len(bp.stages), 'stage')}; outputs: {outputs or 'none'})"
    )


def blueprint_html(bp: Blueprint) -> str:
    inputs = [(name, h.tag("code", ref)) for name, ref in bp.inputs.items()]
    stages = [
        (
            name,
            stage.from_,
            stage.operation.kind + (" (per slice)" if stage.per_slice else ""),
            _cut(operation_text(stage)),
        )
        for name, stage in bp.stages.items()
    ]
    outputs = [(stage, dataset) for stage, dataset in bp.outputs.items()]
    return h.card(
        h.join(["Blueprint ", bp.name]),
        h.facts(
            [
                ("inputs", len(bp.inputs)),
                ("stages", len(bp.stages)),
                ("outputs", len(bp.outputs)),
                ("source", bp.source if bp.source != "<string>" else None),
            ]
        ),
        h.section("Inputs", h.table(["input", "REF"], inputs, max_rows=None)),
        h.section(
            "Stages",
            h.table(["stage", "from", "operation", "spec"], stages, max_rows=None, wrap=["spec"]),
        ),
        h.section("Outputs", h.table(["stage", "dataset"], outputs, max_rows=None)),
    )


def _cut(text: str) -> Any:
    if len(text) <= SUMMARY_WIDTH:
        return text
    return h.tag("span", text[: SUMMARY_WIDTH - 1] + "\u2026", title=text)


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")
