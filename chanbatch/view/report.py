"""The HTML report of a run: one self-contained file built from its run record alone.

The page holds the flow graph coloured by what the run did, a per-stage table (computed,
reused, cut off, seconds, and rows in and out: :mod:`chanbatch.view.rows`), the timeline of
tasks per worker (:mod:`chanbatch.view.timeline`), the input and output snapshots, and the
first rows of each output, read from the store (:mod:`chanbatch.view.preview`). It loads
nothing: styles are inline, pictures are inline SVG, and it has no script. Every text from the
blueprint, the store or the data is escaped.

The graph is drawn from the blueprint the caller passes (``run --report`` has it), else from
the YAML text the record keeps, else (a record older than that) from the file it names when
that still holds the same blueprint (its digest equals the record's ``blueprint_hash``);
otherwise the page says why there is no graph. Without Graphviz's ``dot`` the graph is shown
as Mermaid text.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chanbatch.cache.runs import latest_record, read_record, run_ids, tally
from chanbatch.errors import ChanbatchError, UsageError
from chanbatch.version import __version__
from chanbatch.view import timeline
from chanbatch.view.flow import COLOURS, StageCounts
from chanbatch.view.rows import StageRows, stage_rows

if TYPE_CHECKING:
    from chanbatch.blueprint.model import Blueprint
    from chanbatch.snapshot import SnapshotStore


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5rem auto;
max-width:1000px;padding:0 1rem;color:#222;background:#fff}
h1{font-size:1.5rem;margin:0 0 .25rem}h2{font-size:1.15rem;margin:1.75rem 0 .5rem;
border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;font-size:.9rem}th,td{padding:.25rem .6rem;text-align:left;
border-bottom:1px solid #eee;vertical-align:top}td.n,th.n{text-align:right;
font-variant-numeric:tabular-nums}tfoot td{font-weight:600;border-top:1px solid #bbb}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85rem;
word-break:break-all}
.badge{display:inline-block;padding:0 .5rem;border-radius:.6rem;font-size:.8rem;
border:1px solid #0002;color:#000}
.note{color:#555;font-size:.9rem}
pre{background:#f6f6f6;padding:.75rem;overflow:auto;font-size:.8rem}
figure{margin:0;overflow-x:auto}svg{max-width:100%;height:auto}
.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.3rem 1rem;font-size:.8rem}
.swatch{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:-1px;
border-radius:2px}
#summary th{font-weight:500;color:#555}
td.missing{color:#777;font-style:italic}
.preview{margin-bottom:1rem}
"""


def find_record(
    store: SnapshotStore, run_id: str | None = None, *, blueprint: str | None = None
) -> dict[str, Any]:
    """The record of run ``run_id`` (or a unique prefix of it), else of the latest finished run
    (of ``blueprint``, if given), as a document.

    Raises UsageError when no run matches, a prefix matches several, or the run did not finish
    (it is running, failed or was killed: its record holds no results), and StoreError when
    the record is damaged.
    """
    if run_id is None:
        latest = latest_record(store.storage, blueprint=blueprint)
        if latest is None:
            which = f" of blueprint {blueprint!r}" if blueprint is not None else ""
            raise UsageError(
                f"no finished run{which} in store {store.storage.url}",
                hint="run one first: chanbatch run BLUEPRINT --report report.html",
            )
        return latest.document()
    names = run_ids(store.storage)
    matches = [n for n in names if n == run_id] or [n for n in names if n.startswith(run_id)]
    if len(matches) > 1:
        raise UsageError(
            f"run id {run_id!r} matches {len(matches)} runs",
            hint="give more of it: " + ", ".join(matches[:4]),
        )
    if not matches:
        raise UsageError(
            f"no run {run_id!r} in store {store.storage.url}",
            hint=("latest runs: " + ", ".join(names[-3:])) if names else "no run is recorded",
        )
    record = read_record(store.storage, matches[0])
    if not record.finished:
        raise UsageError(
            f"run {matches[0]} did not finish (status {record.status!r}): "
            "its record holds no results to report",
            hint="a failed or killed run leaves only what it was about to use; run it again",
        )
    if blueprint is not None and record.blueprint != blueprint:
        raise UsageError(
            f"run {matches[0]} is of blueprint {record.blueprint!r}, not {blueprint!r}"
        )
    return record.document()


def write_report(
    store: SnapshotStore,
    run_id: str | None,
    path: str | os.PathLike[str],
    *,
    blueprint: str | None = None,
    model: Blueprint | None = None,
) -> dict[str, Any]:
    """Write the HTML report of run ``run_id`` (None: the latest finished run, of the blueprint
    named ``blueprint`` if given) to ``path``, and return the run's record.

    ``model`` is the blueprint the run ran, for the graph (else the record's blueprint file is
    read). Raises UsageError for an unknown or unfinished run (see :func:`find_record`) or a
    path that cannot be written, and StoreError for a damaged record.
    """
    target = check_target(path)
    record = find_record(store, run_id, blueprint=blueprint)
    page = render_report(record, blueprint=model, store=store)
    try:
        target.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise UsageError(
            f"cannot write the report to {target}: {exc.strerror or exc}",
            hint="give a path in a directory that exists and can be written",
        ) from exc
    return record


def check_target(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path, once it is clear a file can be written there: what ``run --report``
    checks before running, so that a typo costs no run.

    Raises UsageError for a directory, or a path whose directory is missing or not writable.
    """
    target = Path(path)
    folder = target.parent
    hint = "give a path in a directory that exists and can be written"
    if target.is_dir():
        raise UsageError(f"cannot write the report to {target}: it is a directory", hint=hint)
    if not folder.is_dir():
        raise UsageError(f"cannot write the report to {target}: no directory {folder}", hint=hint)
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise UsageError(f"cannot write the report to {target}: permission denied", hint=hint)
    return target


def render_report(
    record: Mapping[str, Any],
    *,
    blueprint: Blueprint | None = None,
    store: SnapshotStore | None = None,
) -> str:
    """The report of the run ``record`` describes, as one HTML page (text).

    ``blueprint`` (the model the run ran) draws the graph and tells what each stage reads;
    without it the record's blueprint text (or file, if it still holds the same blueprint) is
    read. ``store`` gives the outputs' first rows. Raises nothing for an old or partial record:
    what is missing is said on the page.
    """
    name = str(record.get("blueprint", "?"))
    run = str(record.get("run", "?"))
    tasks = list(record.get("tasks") or [])
    stats = dict(record.get("stats") or {})
    model, why = (blueprint, "") if blueprint is not None else _recorded_blueprint(record)
    rows = stage_rows(record, model)
    body = [
        f"<header><h1>Run report: {escape(name)}</h1>"
        f'<p class="note">run <code id="run-id">{escape(run)}</code></p></header>',
        _summary(record, tasks, stats),
        '<section id="flow"><h2>Flow</h2>',
        _flow(record, model, why),
        "</section>",
        '<section id="stages"><h2>Stages</h2>',
        _stage_table(tasks, stats, rows, record.get("specs") or {}, record.get("text")),
        "</section>",
        '<section id="timeline"><h2>Timeline</h2>',
        _timeline(tasks),
        "</section>",
        '<section id="snapshots"><h2>Snapshots</h2>',
        _snapshots(record),
        "</section>",
        '<section id="previews"><h2>Outputs: first rows</h2>',
        _previews(record, store),
        "</section>",
        f'<footer class="note"><p>Written by chanbatch {escape(__version__)} from the run '
        "record <code>runs/" + escape(run) + ".json</code>.</p></footer>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>chanbatch run {escape(run)}: {escape(name)}</title>\n"
        f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


# -- sections --------------------------------------------------------------------------------------


def _summary(record: Mapping[str, Any], tasks: list[dict[str, Any]], stats: dict[str, Any]) -> str:
    workers = {timeline.lane_of(t) for t in tasks if t.get("outcome") in ("computed", "cutoff")}
    fields = [
        ("blueprint", escape(str(record.get("blueprint", "?")))),
        ("blueprint file", f"<code>{escape(str(record.get('source', '?')))}</code>"),
        ("run", f"<code>{escape(str(record.get('run', '?')))}</code>"),
        ("scheduler", escape(str(record.get("scheduler", "?")))),
        ("workers", str(len(workers))),
        ("started", escape(_when(record.get("started_at")))),
        ("seconds", _number(stats.get("seconds"))),
        ("computed", _number(stats.get("computed"))),
        ("reused", _number(stats.get("reused"))),
        ("of which cut off", _number(stats.get("cutoff"))),
    ]
    rows = "".join(
        f'<tr data-field="{escape(key)}"><th>{escape(key)}</th><td>{value}</td></tr>'
        for key, value in fields
    )
    return f'<table id="summary">{rows}</table>'


def _flow(record: Mapping[str, Any], model: Blueprint | None, why: str) -> str:
    if model is None:
        return f'<p class="note" id="no-graph">No graph: {escape(why)}.</p>'
    from chanbatch.view.flow import GraphvizMissing, flow_graph

    partials: dict[str, int] = {}
    for task in record.get("tasks") or []:
        if task.get("kind") == "partial":
            partials[task["stage"]] = partials.get(task["stage"], 0) + 1
    counts = {
        stage: StageCounts(
            compute=int(c.get("computed", 0)),
            reuse=int(c.get("reused", 0)),
            seconds=float(c.get("seconds", 0.0)),
            partials=partials.get(stage, 0),
        )
        for stage, c in (record.get("stats") or {}).get("stages", {}).items()
    }
    inputs = {
        name: f"{info.get('dataset')}@{str(info.get('snapshot', ''))[:12]}"
        for name, info in (record.get("inputs") or {}).items()
    }
    outputs = {stage: info["dataset"] for stage, info in (record.get("outputs") or {}).items()}
    snapshots = {
        stage: str(info["snapshot"])
        for stage, info in (record.get("outputs") or {}).items()
        if info.get("snapshot")
    }
    flow = flow_graph(
        model,
        counts,
        inputs=inputs,
        outputs=outputs or None,
        snapshots=snapshots,
        title=model.name,
    )
    try:
        svg = flow.render("svg").decode("utf-8")
    except GraphvizMissing:
        return (
            '<p class="note" id="no-dot">Graphviz\'s <code>dot</code> program is not installed, '
            "so the graph is Mermaid text (paste it into any Mermaid viewer). For the picture, "
            "install graphviz (<code>apt-get install graphviz</code> or "
            "<code>brew install graphviz</code>) and write the report again with "
            "<code>chanbatch report RUN_ID -o report.html</code>.</p>"
            f'<pre id="mermaid">{escape(flow.mermaid())}</pre>'
        )
    svg = svg[svg.index("<svg") :]  # the XML declaration and doctype have no place in HTML
    return f'<figure id="flow-graph">{svg}</figure>'  # the graph draws its own legend


def _recorded_blueprint(record: Mapping[str, Any]) -> tuple[Blueprint | None, str]:
    """The blueprint the record's ``source`` names, if it is still the one that ran."""
    from chanbatch.blueprint.parse import load_blueprint, parse_blueprint
    from chanbatch.compile.keys import blueprint_digest

    text = record.get("text")
    if isinstance(text, str) and text:  # records since the text was kept: always drawable
        try:
            return parse_blueprint(text, source=str(record.get("source", "<string>"))), ""
        except ChanbatchError as exc:
            return None, f"the blueprint text in the run record no longer loads: {exc.message}"
    source = record.get("source")
    if not isinstance(source, str) or not source:
        return None, "the run record does not name its blueprint"
    if "\n" not in source and not os.path.isfile(source):
        return None, f"the blueprint file {source} is not here (the record names only its path)"
    try:
        model = load_blueprint(source)
    except ChanbatchError as exc:
        return None, f"the blueprint file {source} no longer loads: {exc.message}"
    if blueprint_digest(model) != record.get("blueprint_hash"):
        return None, f"the blueprint file {source} has changed since this run"
    return model, ""


def _stage_table(
    tasks: list[dict[str, Any]],
    stats: dict[str, Any],
    rows: Mapping[str, StageRows],
    specs: Mapping[str, Any],
    text: str | None = None,
) -> str:
    counted = stats.get("stages") or {s: c.document() for s, c in tally(tasks).items()}
    order = _flow_order(text) or _stage_order(tasks)
    stages = dict(sorted(counted.items(), key=lambda item: order.get(item[0], (len(order), 0))))
    if not stages:
        return '<p class="note">The run record lists no stages.</p>'
    head = (
        "<thead><tr><th>stage</th><th>state</th><th class='n'>computed</th>"
        "<th class='n'>reused</th><th class='n'>of which cut off</th>"
        "<th class='n'>seconds</th><th class='n'>rows in</th><th class='n'>rows out</th>"
        "<th class='n'>kept</th></tr></thead>"
    )
    lines = []
    for stage, c in stages.items():
        state = StageCounts(compute=int(c.get("computed", 0)), reuse=int(c.get("reused", 0))).state
        counted_rows = rows.get(stage, StageRows())
        lines.append(
            f'<tr class="stage" data-stage="{escape(stage)}" data-state="{state}">'
            f"<td>{escape(stage)}</td><td>{_badge(state)}</td>"
            f"<td class='n computed'>{_number(c.get('computed', 0))}</td>"
            f"<td class='n reused'>{_number(c.get('reused', 0))}</td>"
            f"<td class='n cutoff'>{_number(c.get('cutoff', 0))}</td>"
            f"<td class='n seconds'>{float(c.get('seconds') or 0.0):.3f}</td>"
            + _rows_cell("rows-in", counted_rows.rows_in, counted_rows.why_in)
            + _rows_cell("rows-out", counted_rows.rows_out, counted_rows.why_out)
            + _kept_cell(counted_rows, (specs.get(stage) or {}).get("op"))
            + "</tr>"
        )
    total = (
        "<tfoot><tr><td>all stages</td><td></td>"
        f"<td class='n'>{_number(sum(int(c.get('computed', 0)) for c in stages.values()))}</td>"
        f"<td class='n'>{_number(sum(int(c.get('reused', 0)) for c in stages.values()))}</td>"
        f"<td class='n'>{_number(sum(int(c.get('cutoff', 0)) for c in stages.values()))}</td>"
        f"<td class='n'>{sum(float(c.get('seconds') or 0.0) for c in stages.values()):.3f}</td>"
        "<td></td><td></td><td></td></tr></tfoot>"
    )
    note = (
        '<p class="note">Seconds are the sum of a stage\'s task times over every worker, so '
        "they can add up to more than the run's wall time. A cut-off task was recomputable, "
        "but its inputs came out unchanged, so its result was found in the cache. Rows out are "
        "the rows a stage's tasks returned in this run, rows in those its upstream stages "
        "returned (or that the run read of an input); kept is a filter's rows out over its rows "
        "in. A task that did not run (reused, or cut off) recorded no rows, so a stage with one "
        "says <em>not recorded</em> (hover it for why) rather than guess.</p>"
    )
    return f'<table id="stage-table">{head}<tbody>{"".join(lines)}</tbody>{total}</table>{note}'


def _timeline(tasks: list[dict[str, Any]]) -> str:
    ran = [t for t in tasks if t.get("outcome") in ("computed", "cutoff")]
    if not ran:
        return '<p class="note" id="no-timeline">Nothing ran: every task was reused.</p>'
    svg = timeline.render_timeline(tasks)
    if not svg:
        return (
            '<p class="note" id="no-timeline">No timings recorded: this run record is older '
            "than the task start times (written since chanbatch records them).</p>"
        )
    items = "".join(
        f'<li><span class="swatch" style="background:{colour}"></span>{escape(label)}</li>'
        if colour
        else f'<li class="more">{escape(label)}</li>'
        for label, colour in timeline.legend(tasks)
    )
    if timeline.binned(tasks):
        drawn = len(timeline.bars(tasks))
        what = (
            f'<p class="note" id="timeline-binned">Binned: {drawn:,} tasks ran, more than '
            f"{timeline.BIN_LIMIT:,}, so each lane is drawn as {timeline.BINS} spans of time "
            "rather than one bar per task. A span's colour is the slice its lane spent the "
            "most time on (grey: the whole input), its strength how busy the lane was. Hover a "
            "span for its tasks and time. The axis is in seconds after the run started; lanes "
            "are workers and their threads (hover a name for the recorded one). Reused tasks "
            "did not run and are only counted in the table.</p>"
        )
    else:
        what = (
            '<p class="note">One lane per worker (and thread: hover a name for the recorded '
            "one), one bar per task that ran, from its start to its end in seconds after the "
            "run started, coloured by slice: a lane of one colour is a slice kept on one "
            "worker. Hover a bar for its stage, slice, outcome and time. Hollow bars were cut "
            "off. Reused tasks did not run and are only counted in the table.</p>"
        )
    return f'{what}<figure id="timeline-chart">{svg}</figure><ul class="legend">{items}</ul>'


def _snapshots(record: Mapping[str, Any]) -> str:
    head = (
        "<thead><tr><th>{0}</th><th>dataset</th><th>snapshot</th><th class='n'>rows</th>"
        "</tr></thead>"
    )
    inputs = "".join(
        f'<tr class="input" data-name="{escape(name)}"><td>{escape(name)}</td>'
        f"<td class='dataset'>{escape(str(info.get('dataset', '')))}</td>"
        f"<td><code class='snapshot'>{escape(str(info.get('snapshot', '')))}</code></td>"
        f"<td class='n rows'>{_number(info.get('rows'))}</td></tr>"
        for name, info in (record.get("inputs") or {}).items()
    )
    outputs = "".join(
        f'<tr class="output" data-name="{escape(stage)}"><td>{escape(stage)}</td>'
        f"<td class='dataset'>{escape(str(info.get('dataset', '')))}</td>"
        f"<td><code class='snapshot'>{escape(str(info.get('snapshot', '')))}</code></td>"
        f"<td class='n rows'>{_number(info.get('rows'))}</td></tr>"
        for stage, info in (record.get("outputs") or {}).items()
    )
    return (
        f'<h3>Inputs</h3><table id="inputs">{head.format("input")}<tbody>{inputs}</tbody>'
        "</table>"
        f'<h3>Outputs</h3><table id="outputs">{head.format("stage")}<tbody>{outputs}</tbody>'
        "</table>"
    )


def _previews(record: Mapping[str, Any], store: SnapshotStore | None) -> str:
    from chanbatch.view.preview import PREVIEW_ROWS, preview

    outputs = record.get("outputs") or {}
    if not outputs:
        return '<p class="note">The run record lists no outputs.</p>'
    if store is None:
        return (
            '<p class="note" id="no-preview">No preview: this report was drawn without the '
            "store.</p>"
        )
    parts = [
        f'<p class="note">The first {PREVIEW_ROWS} rows of each output snapshot this run wrote, '
        "read from the store.</p>"
    ]
    for stage, info in outputs.items():
        dataset = str(info.get("dataset", ""))
        snapshot = str(info.get("snapshot", ""))
        shown = preview(store, snapshot) if snapshot else None
        title = (
            f"<h3>{escape(dataset)} <code>@{escape(snapshot[:12])}</code></h3>"
            if snapshot
            else f"<h3>{escape(dataset)}</h3>"
        )
        attrs = f'class="preview" data-stage="{escape(stage)}" data-dataset="{escape(dataset)}"'
        if shown is None or shown.problem:
            why = shown.problem if shown is not None else "the record names no snapshot"
            parts.append(f'<div {attrs}>{title}<p class="note">{escape(why)}.</p></div>')
            continue
        head = "".join(
            f"<th class='n'>{escape(c)}</th>" if n else f"<th>{escape(c)}</th>"
            for c, n in zip(shown.columns, shown.numeric, strict=True)
        )
        body = "".join(
            "<tr>"
            + "".join(
                f"<td class='n'>{escape(v)}</td>" if n else f"<td>{escape(v)}</td>"
                for v, n in zip(row, shown.numeric, strict=True)
            )
            + "</tr>"
            for row in shown.rows
        )
        count = f"{len(shown.rows):,} of {shown.total:,} rows"
        parts.append(
            f"<div {attrs}>{title}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
            f'</table><p class="note">{count}</p></div>'
        )
    return "".join(parts)


def _flow_order(text: str | None) -> dict[str, tuple[int, int]]:
    """Stage -> (its place in the flow, 0), from the blueprint's text as the record keeps it;
    empty when there is none or it does not parse (a record of an older blueprint syntax). A
    run planned top-down records only the tasks it laid out, which may be of no stage but the
    last: the tasks cannot tell the order then."""
    if not text:
        return {}
    from chanbatch.blueprint.parse import parse_blueprint

    try:
        order = parse_blueprint(text).topological_order()
    except (ChanbatchError, ValueError):
        return {}
    return {stage: (i, 0) for i, stage in enumerate(order)}


def _stage_order(tasks: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Stage -> (depth, first appearance): the flow's order, read from the tasks' ``deps``
    (the record's stats and specs are keyed in plan or sorted order)."""
    stage_of = {t.get("key"): t.get("stage") for t in tasks}
    reads: dict[str, set[str]] = {}
    first: dict[str, int] = {}
    for i, task in enumerate(tasks):
        stage = str(task.get("stage"))
        first.setdefault(stage, i)
        ups = reads.setdefault(stage, set())
        ups.update(u for d in task.get("deps") or () if (u := stage_of.get(d)) not in (None, stage))
    depth: dict[str, int] = {}

    def depth_of(stage: str, seen: frozenset[str] = frozenset()) -> int:
        if stage not in depth:
            ups = [u for u in reads.get(stage, ()) if u not in seen]  # a cycle cannot recurse
            depth[stage] = 1 + max((depth_of(u, seen | {stage}) for u in ups), default=-1)
        return depth[stage]

    return {stage: (depth_of(stage), first[stage]) for stage in first}


# -- small pieces ----------------------------------------------------------------------------------


def _rows_cell(name: str, value: int | None, why: str) -> str:
    if value is None:
        return f"<td class='n {name} missing' title=\"{escape(why)}\">not recorded</td>"
    return f"<td class='n {name}'>{value:,}</td>"


def _kept_cell(rows: StageRows, operation: Any) -> str:
    kept = rows.kept
    if operation != "filter" or kept is None:
        return "<td class='n kept'></td>"
    return f"<td class='n kept' title=\"{rows.rows_out:,} of {rows.rows_in:,}\">{kept:.1%}</td>"


def _badge(state: str) -> str:
    text = {"compute": "computed", "reuse": "reused", "partial": "partly reused"}.get(state, state)
    return f'<span class="badge" style="background:{COLOURS[state]}">{text}</span>'


def _number(value: Any) -> str:
    """A count with thousands separators, seconds with three decimals, or an en dash."""
    if isinstance(value, bool) or value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}"
    return escape(str(value))


def _when(started_at: Any) -> str:
    """``started_at`` (ISO 8601) as ``2026-11-24 16:46:07.123 UTC``."""
    try:
        moment = dt.datetime.fromisoformat(str(started_at)).astimezone(dt.UTC)
    except ValueError:
        return str(started_at)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d} UTC"
