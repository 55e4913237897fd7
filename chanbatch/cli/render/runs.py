"""Blueprints and their results on the terminal: plan, run, explain, and the cache they fill."""

from __future__ import annotations

import json
from typing import Any

from rich.markup import escape

from chanbatch.cli.commands import count
from chanbatch.cli.render.rows import columns_of, table_lines
from chanbatch.cli.render.tables import Col, fitted
from chanbatch.cli.render.terminal import cell, console, rows, when
from chanbatch.html import human_bytes
from chanbatch.ids import short

#: How plan's tables name a task computed unless its inputs come out as before.
MAY_REUSE_SHORT = "may reuse"
#: Said under such a table.
MAY_REUSE_NOTE = (
    f"{MAY_REUSE_SHORT}: reused if its inputs come out unchanged (whole reasons: --json)"
)


def short_reasons() -> dict[str, str]:
    """The parts of plan's reasons (between "; ") that its tables shorten, and how."""
    from chanbatch.compile.decide import PROVISIONAL
    from chanbatch.compile.explain import MAY_REUSE

    return {MAY_REUSE: MAY_REUSE_SHORT, PROVISIONAL.split("; ")[-1]: MAY_REUSE_SHORT}


def plan_report(doc: dict[str, Any], show_all: bool = False) -> None:
    summary = doc["summary"]
    console.print(
        f"[bold]{escape(doc['blueprint'])}[/]: {count(summary['compute'], 'task')} to compute, "
        f"{summary['reuse']} to reuse"
    )
    for name, info in doc["inputs"].items():
        console.print(
            f"[dim]input {escape(name)} = {escape(info['dataset'])}@{short(info['snapshot'])}[/]"
        )
    shorter = short_reasons()
    shortened = False
    if show_all:
        columns = [Col("stage"), Col("slice"), Col("kind"), Col("action"), Col("reason", "text")]
        table = []
        for t in doc["tasks"]:
            colour = "yellow" if t["action"] == "compute" else "green"
            parts = [p.strip() for p in t["reason"].split("; ")]
            shortened |= any(p in shorter for p in parts)
            table.append(
                [
                    escape(str(t["stage"])),
                    cell(t["slice"], 10**6),
                    escape(str(t["kind"])),
                    f"[{colour}]{t['action']}[/]",
                    escape("; ".join(shorter.get(p, p) for p in parts)),
                ]
            )
    else:
        columns = [
            Col("stage"),
            Col("compute", "number"),
            Col("reuse", "number"),
            Col("why", "text"),
        ]
        stages: dict[str, dict[str, Any]] = {}
        for t in doc["tasks"]:
            entry = stages.setdefault(t["stage"], {"compute": 0, "reuse": 0, "reasons": {}})
            entry[t["action"]] += 1
            if t["action"] == "compute":
                # a reason may join several ("new slice 12; reused if ..."): count each part
                # once per task, so that a part shared by several reasons is shown once
                for part in dict.fromkeys(p.strip() for p in t["reason"].split("; ")):
                    shortened |= part in shorter
                    part = shorter.get(part, part)
                    entry["reasons"][part] = entry["reasons"].get(part, 0) + 1
        table = []
        for stage, entry in stages.items():
            why = "; ".join(f"{r} ({n})" if n > 1 else r for r, n in entry["reasons"].items())
            table.append(
                [escape(stage), str(entry["compute"]), str(entry["reuse"]), escape(why or "-")]
            )
    console.print(fitted(columns, table))
    if shortened:
        console.print(f"[dim]{MAY_REUSE_NOTE}[/]")
    for note in doc["notes"]:
        console.print(f"[yellow]note[/]: {escape(note)}")


#: Rows of each output that run shows.
PREVIEW = 5


def run_result(store: Any, doc: dict[str, Any]) -> None:
    stats = doc["stats"]
    console.print(
        f"run {doc['run']}: computed {count(stats['computed'], 'task')}, "
        f"reused {stats['reused']}, "
        f"in {stats['seconds']:.2f}s"
    )
    for name, info in doc["outputs"].items():
        console.print(
            f"[bold]{escape(name)}[/] → {escape(info['dataset'])}@[cyan]{short(info['snapshot'])}[/]"
            f" ({count(info['rows'], 'row')})"
        )
        preview = store.select(f"{info['dataset']}@{info['snapshot']}", limit=PREVIEW).table
        if preview.num_rows:  # laid out as `chanbatch show` does: numbers whole, names whole
            for line in table_lines(columns_of(preview), console.width):
                console.print(line, soft_wrap=True)
            console.print()


def cache_list(entries: list[dict[str, Any]]) -> None:
    if not entries:
        console.print("The cache is empty.")
        return
    columns = [
        Col("key", "id"),
        Col("stage"),
        Col("kind"),
        Col("rows", "number"),
        Col("bytes", "number"),
        Col("created", "text"),
    ]
    table = [
        [
            short(e["key"]),
            escape(str(e["stage"])),
            escape(str(e["kind"])),
            rows(e["rows"]),
            human_bytes(e["bytes"]),
            when(e["created_at"]),
        ]
        for e in entries
    ]
    console.print(fitted(columns, table))


def cache_usage(doc: dict[str, Any]) -> None:
    title = f"cache: {count(doc['entries'], 'entry', 'entries')}, {human_bytes(doc['bytes'])}"
    columns = [Col("stage"), Col("entries", "number"), Col("bytes", "number")]
    table = [
        [escape(stage), str(s["entries"]), human_bytes(s["bytes"])]
        for stage, s in sorted(doc["stages"].items())
    ]
    console.print(fitted(columns, table, title=title))


def explain_report(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        where = f"@{doc['slice']}" if doc["slice"] is not None else ""
        level = f" (level {doc['level']})" if doc["kind"] == "combine" else ""
        console.print(
            f"[bold]{escape(doc['stage'])}{escape(where)}[/] {doc['kind']}{level}: "
            f"key [cyan]{doc['key']}[/]"
        )
        c = doc["components"]
        console.print(f"  salt       {escape(json.dumps(c['salt'], sort_keys=True))}")
        console.print(f"  spec       {escape(json.dumps(c['spec'], sort_keys=True))}")
        for dep in c["upstream"]:
            console.print(f"  upstream   {short(dep['key'])}  {escape(dep['what'])}")
        for dep in c["broadcast"]:
            console.print(f"  broadcast  {short(dep['key'])}  {escape(dep['what'])}")
        if doc["changed"]:
            console.print(
                f"  [yellow]differs from run {doc['previous_run'] or '-'}[/]: "
                + escape("; ".join(doc["changed"]))
            )
        else:
            console.print(f"  [green]unchanged since run {doc['previous_run']}[/]")
