"""The timeline of a run as inline SVG: one lane per worker, one bar per task that ran.

Bars come from the run record's tasks (``began`` and ``ended``: seconds after the run's start,
on the wall clock, so tasks of every worker process share one axis, which starts at the run's
start). A bar's colour is its slice's, so slice affinity shows as one colour per lane; tasks
over the whole input (combines, finishes) are grey. Reused tasks did not run and have no bar.
Every bar carries a ``<title>`` (the browser's tooltip) naming stage, slice, outcome and
seconds.

Lanes are named for people (:func:`lane_names`): ``worker 1, thread 2`` for a thread of a local
process, numbered in the order the processes and threads first ran a task, or the distributed
worker's name; the recorded name (``12345:chanbatch_0``) is the lane's tooltip.

Past :data:`BIN_LIMIT` tasks the timeline is binned (:func:`binned`): each lane is cut into
:data:`BINS` spans of time, and each span is one box whose opacity is how busy the lane was
and whose colour is the slice it spent the most time on, so a 40,000-task run draws a few
thousand boxes instead of 40,000 bars.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

#: Fill colours of the first slices (Okabe-Ito and Tableau), without the green, orange and
#: yellow that mean reuse, compute and partial in the flow graph.
PALETTE = (
    "#0072b2",
    "#d55e00",
    "#cc79a7",
    "#56b4e9",
    "#6a3d9a",
    "#8c6d31",
    "#e15759",
    "#76b7b2",
    "#393b79",
    "#fb9a99",
    "#17becf",
    "#7f3b08",
)
WHOLE = "#9e9e9e"  # tasks over the whole input: no slice
LEGEND_LIMIT = 12  # slices named in the legend; the rest are counted
BIN_LIMIT = 2000  # tasks drawn one bar each; past this the timeline is binned
BINS = 240  # spans of time per lane in a binned timeline

WIDTH, LABEL, LANE, BAR, AXIS, PAD = 960, 170, 24, 16, 28, 12


@dataclass(frozen=True, slots=True, kw_only=True)
class Bar:
    """One task that ran: where (lane), when (seconds after the run's start) and what."""

    lane: str
    stage: str
    slice: str | None
    kind: str
    outcome: str
    began: float
    ended: float


def bars(tasks: Iterable[Mapping[str, Any]]) -> list[Bar]:
    """The tasks of a run record that ran on a worker and have their times recorded."""
    out = []
    for task in tasks:
        if task.get("outcome") not in ("computed", "cutoff") or task.get("began") is None:
            continue
        began = float(task["began"])
        ended = float(task.get("ended", began + float(task.get("seconds") or 0.0)))
        slice_key = task.get("slice")
        out.append(
            Bar(
                lane=lane_of(task),
                stage=str(task.get("stage")),
                slice=None if slice_key is None else str(slice_key),
                kind=str(task.get("kind", "")),
                outcome=str(task["outcome"]),
                began=began,
                ended=max(ended, began),
            )
        )
    return out


def lane_of(task: Mapping[str, Any]) -> str:
    """A task's worker: its Dask worker name, else where it ran (``pid:thread``)."""
    name = task.get("worker_name")
    return str(name) if name not in (None, "") else str(task.get("worker") or "?")


def lane_names(tasks: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Lane (:func:`lane_of`) -> the name the report shows: ``worker 1, thread 2`` for a
    thread of a local process (processes, then their threads, numbered from 1 in the order they
    first started a task), ``worker NAME`` for a distributed worker with a numeric name, else
    the distributed worker's name."""
    first: dict[str, float] = {}
    distributed: set[str] = set()
    for task in tasks:
        if task.get("outcome") not in ("computed", "cutoff"):
            continue
        lane = lane_of(task)
        began = float(task.get("began") or 0.0)
        first[lane] = min(first.get(lane, began), began)
        if task.get("worker_name") not in (None, ""):
            distributed.add(lane)
    order = sorted(first, key=lambda lane: (first[lane], natural(lane)))
    names: dict[str, str] = {}
    processes: dict[str, int] = {}
    threads: dict[str, int] = {}
    for lane in order:
        pid, sep, _ = lane.partition(":")
        if lane in distributed or not sep or not pid.isdigit():
            names[lane] = f"worker {lane}" if lane.isdigit() else lane
            continue
        process = processes.setdefault(pid, len(processes) + 1)
        threads[pid] = threads.get(pid, 0) + 1
        names[lane] = f"worker {process}, thread {threads[pid]}"
    return names


def binned(tasks: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the timeline of ``tasks`` is drawn binned (more than :data:`BIN_LIMIT` bars)."""
    return len(bars(tasks)) > BIN_LIMIT


def natural(text: str) -> tuple[Any, ...]:
    """Sort key that puts ``2`` before ``10`` (worker names, thread names, slice keys)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def slice_colours(slices: Iterable[str]) -> dict[str, str]:
    """Slice key -> fill colour, in the slices' natural order: the palette, then golden-angle
    hues for more slices than it has colours."""
    colours = {}
    for i, key in enumerate(sorted(set(slices), key=natural)):
        if i < len(PALETTE):
            colours[key] = PALETTE[i]
        else:
            colours[key] = f"hsl({(i * 137.508) % 360:.1f}, 60%, 55%)"
    return colours


def render_timeline(tasks: Sequence[Mapping[str, Any]]) -> str:
    """The SVG (markup text) of the tasks' timeline, or ``""`` when no task has its times.

    The axis starts at the run's start (0 s) and ends with the last task. Past
    :data:`BIN_LIMIT` tasks each lane is drawn in :data:`BINS` boxes rather than one bar a task.
    """
    drawn = bars(tasks)
    if not drawn:
        return ""
    names = lane_names(tasks)
    lanes = sorted({b.lane for b in drawn}, key=lambda lane: natural(names.get(lane) or lane))
    row = {lane: i for i, lane in enumerate(lanes)}
    colours = slice_colours(b.slice for b in drawn if b.slice is not None)
    start = min(0.0, min(b.began for b in drawn))
    end = max(max(b.ended for b in drawn), start + 1e-3)
    step = _tick_step(end - start)
    plot = WIDTH - LABEL - PAD
    scale = plot / (end - start)

    def x(t: float) -> float:
        return LABEL + (t - start) * scale

    height = AXIS + LANE * len(lanes) + PAD
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="tasks per worker over time">',
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>',
    ]
    tick = math.ceil(start / step) * step
    while tick <= end + 1e-9:
        tx = x(tick)
        parts.append(
            f'<line x1="{tx:.1f}" y1="{AXIS - 6}" x2="{tx:.1f}" y2="{height - PAD}" '
            f'stroke="#e0e0e0"/>'
            f'<text x="{tx:.1f}" y="{AXIS - 10}" font-size="11" text-anchor="middle" '
            f'fill="#555">{_seconds(tick, step)}</text>'
        )
        tick += step
    for lane, i in row.items():
        top = AXIS + i * LANE
        fill = "#f7f7f7" if i % 2 == 0 else "#ffffff"
        name = names.get(lane, lane)
        parts.append(
            f'<g class="lane" data-lane="{escape(lane)}" data-name="{escape(name)}">'
            f'<rect x="{LABEL}" y="{top}" width="{plot}" height="{LANE}" fill="{fill}"/>'
            f'<text x="{LABEL - 8}" y="{top + LANE / 2 + 4}" font-size="12" text-anchor="end" '
            f'fill="#333">{escape(_lane_label(name))}<title>{escape(lane)}</title></text></g>'
        )
    if len(drawn) > BIN_LIMIT:
        parts.extend(_bins(drawn, row, colours, start, end, x))
        parts.append("</svg>")
        return "".join(parts)
    for b in sorted(drawn, key=lambda b: (b.began, b.lane)):
        y = AXIS + row[b.lane] * LANE + (LANE - BAR) / 2
        width = max((b.ended - b.began) * scale, 1.5)
        colour = colours[b.slice] if b.slice is not None else WHOLE
        where = f"slice {b.slice}" if b.slice is not None else "whole input"
        tip = f"{b.stage} ({b.kind}) · {where} · {b.outcome} · {b.ended - b.began:.3f} s · {b.lane}"
        # a cut-off task only looked its result up: drawn hollow
        style = (
            f'fill="{colour}"'
            if b.outcome == "computed"
            else f'fill="#ffffff" stroke="{colour}" stroke-width="1.5"'
        )
        parts.append(
            f'<rect class="bar" data-stage="{escape(b.stage)}" '
            f'data-slice="{escape(b.slice if b.slice is not None else "")}" '
            f'data-lane="{escape(b.lane)}" data-outcome="{escape(b.outcome)}" '
            f'x="{x(b.began):.2f}" y="{y:.1f}" width="{width:.2f}" height="{BAR}" '
            f'rx="2" {style}><title>{escape(tip)}</title></rect>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _bins(
    drawn: Sequence[Bar],
    row: Mapping[str, int],
    colours: Mapping[str, str],
    start: float,
    end: float,
    x: Any,
) -> list[str]:
    """Each lane as :data:`BINS` boxes: opacity the lane's busy share of the span (its
    concurrency over its busiest span's, for a lane of many threads), colour the slice that
    took most of the span's time (grey for the whole input)."""
    width = (end - start) / BINS
    busy: dict[tuple[str, int], dict[str | None, float]] = {}
    count: dict[tuple[str, int], int] = {}
    for b in drawn:
        first = min(int((b.began - start) / width), BINS - 1)
        last = min(int((b.ended - start) / width), BINS - 1)
        for i in range(first, last + 1):
            lo, hi = start + i * width, start + (i + 1) * width
            overlap = min(b.ended, hi) - max(b.began, lo)
            cell = busy.setdefault((b.lane, i), {})
            cell[b.slice] = cell.get(b.slice, 0.0) + max(overlap, 0.0)
            count[(b.lane, i)] = count.get((b.lane, i), 0) + 1
    peak: dict[str, float] = {}
    for (lane, _), cell in busy.items():
        peak[lane] = max(peak.get(lane, 0.0), sum(cell.values()) / width)
    out = []
    for (lane, i), cell in sorted(busy.items(), key=lambda item: (row[item[0][0]], item[0][1])):
        load = sum(cell.values()) / width
        share = min(1.0, load / max(1.0, peak[lane]))
        top_slice = max(cell, key=lambda k: cell[k])
        colour = colours[top_slice] if top_slice is not None else WHOLE
        where = f"mostly slice {top_slice}" if top_slice is not None else "whole input"
        lo = start + i * width
        tip = (
            f"{count[(lane, i)]:,} tasks · {lo:.3f}–{lo + width:.3f} s · {load:.0%} busy · {where}"
        )
        y = AXIS + row[lane] * LANE + (LANE - BAR) / 2
        out.append(
            f'<rect class="bin" x="{x(lo):.1f}" y="{y:.1f}" width="{x(lo + width) - x(lo):.2f}" '
            f'height="{BAR}" fill="{colour}" fill-opacity="{max(share, 0.15):.2f}">'
            f"<title>{escape(tip)}</title></rect>"
        )
    return out


def legend(tasks: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(label, colour) of each slice on the timeline, then the whole-input colour if used."""
    drawn = bars(tasks)
    colours = slice_colours(b.slice for b in drawn if b.slice is not None)
    items = [(f"slice {key}", colour) for key, colour in colours.items()]
    if len(items) > LEGEND_LIMIT:
        items = [*items[:LEGEND_LIMIT], (f"… and {len(items) - LEGEND_LIMIT:,} more", "")]
    if any(b.slice is None for b in drawn):
        items.append(("whole input (combine, finish)", WHOLE))
    return items


def _tick_step(span: float) -> float:
    """A round step giving 4 to 10 ticks over ``span`` seconds."""
    raw = span / 8
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def _seconds(value: float, step: float) -> str:
    digits = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{value:.{digits}f} s"


def _lane_label(lane: str, limit: int = 24) -> str:
    """A lane label that fits the margin (a local thread without its ``pid:``); the full name
    is in its tooltip."""
    if ":" in lane and "://" not in lane and lane.split(":", 1)[0].isdigit():
        lane = lane.split(":", 1)[1]
    return lane if len(lane) <= limit else "…" + lane[-(limit - 1) :]
