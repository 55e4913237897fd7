"""Blueprints and their results on the terminal: plan, run, explain, and the cache they fill."""

from __future__ import annotations

import json
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from chanbatch.cli.commands import count
from chanbatch.cli.render.terminal import cell, console, rows, when
from chanbatch.html import human_bytes
from chanbatch.ids import short


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
    table = Table(box=box.SIMPLE_HEAD)
    if show_all:
        for name in ("stage", "slice", "kind", "action", "reason"):
            table.add_column(name)
        for t in doc["tasks"]:
            colour = "yellow" if t["action"] == "compute" else "green"
            table.add_row(
                cell(t["stage"]),
                cell(t["slice"]),
                t["kind"],
                f"[{colour}]{t['action']}[/]",
                cell(t["reason"], 80),
            )
    else:
        for name in ("stage", "compute", "reuse", "why"):
            table.add_column(name, justify="right" if name in ("compute", "reuse") else "left")
        stages: dict[str, dict[str, Any]] = {}
        for t in doc["tasks"]:
            entry = stages.setdefault(t["stage"], {"compute": 0, "reuse": 0, "reasons": {}})
            entry[t["action"]] += 1
            if t["action"] == "compute":
                # a reason may join several ("new slice 12; reused if ..."): count each part
                # once per task, so that a part shared by several reasons is shown once
                for part in dict.fromkeys(p.strip() for p in t["reason"].split("; ")):
                    entry["reasons"][part] = entry["reasons"].get(part, 0) + 1
        for stage, entry in stages.items():
            why = "; ".join(f"{r} ({n})" if n > 1 else r for r, n in entry["reasons"].items())
            table.add_row(
                cell(stage), str(entry["compute"]), str(entry["reuse"]), cell(why or "-", 80)
            )
    console.print(table)
    for note in doc["notes"]:
        console.print(f"[yellow]note[/]: {escape(note)}")


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
        frame = store.read_pandas(f"{info['dataset']}@{info['snapshot']}").head(5)
        table = Table(box=box.SIMPLE_HEAD)
        for column in frame.columns:
            table.add_column(cell(column))
        for values in frame.itertuples(index=False):
            table.add_row(*(cell(v, 24) for v in values))
        console.print(table)


def cache_list(entries: list[dict[str, Any]]) -> None:
    if not entries:
        console.print("The cache is empty.")
        return
    table = Table(box=box.SIMPLE_HEAD)
    for name in ("key", "stage", "kind", "rows", "bytes", "created"):
        table.add_column(name, justify="right" if name in ("rows", "bytes") else "left")
    for e in entries:
        table.add_row(
            short(e["key"]),
            cell(e["stage"]),
            e["kind"],
            rows(e["rows"]),
            human_bytes(e["bytes"]),
            when(e["created_at"]),
        )
    console.print(table)


def cache_usage(doc: dict[str, Any]) -> None:
    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"cache: {count(doc['entries'], 'entry', 'entries')}, {human_bytes(doc['bytes'])}",
    )
    for name in ("stage", "entries", "bytes"):
        table.add_column(name, justify="left" if name == "stage" else "right")
    for stage, s in sorted(doc["stages"].items()):
        table.add_row(cell(stage), str(s["entries"]), human_bytes(s["bytes"]))
    console.print(table)


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
