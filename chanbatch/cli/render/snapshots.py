"""Snapshots and the store on the terminal: freeze, demo, list, history, inspect, verify, diff
and gc."""

from __future__ import annotations

import re
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from chanbatch.cli.commands import count
from chanbatch.cli.render.tables import Col, fitted
from chanbatch.cli.render.terminal import SLICE_PREVIEW, cell, console, err_console, rows, when
from chanbatch.html import human_bytes
from chanbatch.ids import short


def freeze_result(result: Any) -> None:
    slices = result.slices
    new = sum(1 for s in slices if s.new)
    replaced = sum(1 for s in slices if getattr(s, "replaced", False))
    table = Table(box=box.SIMPLE_HEAD, title=None)
    for name, justify in (
        ("slice", "left"),
        ("id", "left"),
        ("rows", "right"),
        ("bytes", "right"),
        ("", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    shown = slices if len(slices) <= SLICE_PREVIEW * 2 else slices[:SLICE_PREVIEW]
    for s in shown:
        table.add_row(
            cell(s.key),
            short(s.id),
            rows(s.rows),
            human_bytes(s.bytes),
            "[yellow]healed[/]"
            if getattr(s, "healed", False)
            else "[green]new[/]"
            if s.new
            else "[yellow]replaced[/]"
            if getattr(s, "replaced", False)
            else "[dim]unchanged[/]",
        )
    if len(shown) < len(slices):
        table.add_row(f"... {len(slices) - len(shown)} more", "", "", "", "")
    console.print(table)
    verb = "created" if result.created else "unchanged at"
    console.print(
        f"[bold]{result.dataset}[/]: {verb} snapshot [cyan]{short(result.snapshot)}[/] "
        f"(version {result.version}); {count(len(slices), 'slice')} given, {new} new"
        + (f", {replaced} replaced" if replaced else "")
        + (f", {result.healed} healed (damaged files rewritten)" if result.healed else "")
    )


def demo_result(url: str, results: list[Any]) -> None:
    table = Table(box=box.SIMPLE_HEAD, title=f"demo data in {url}")
    for name in ("dataset", "snapshot", "slices", "rows", "new slices"):
        table.add_column(
            name, justify="right" if name in ("slices", "rows", "new slices") else "left"
        )
    for r in results:
        table.add_row(
            r.dataset,
            short(r.snapshot),
            str(len(r.slices)),
            rows(sum(s.rows for s in r.slices)),
            str(sum(1 for s in r.slices if s.new)),
        )
    console.print(table)
    console.print("Next: [bold]chanbatch snapshot inspect flights[/]")


def dataset_list(url: str, entries: list[dict[str, Any]]) -> None:
    if not entries:
        console.print(f"No datasets in {url}. Try [bold]chanbatch demo[/].")
        return
    columns = [
        Col("dataset"),
        Col("snapshot", "id"),
        *(Col(name, "number") for name in ("version", "slices", "rows", "bytes")),
        Col("updated", "text"),
    ]
    table = [
        [
            escape(e["dataset"]),
            short(e["snapshot"]),
            str(e["version"]),
            str(e["slices"]),
            rows(e["rows"]),
            human_bytes(e["bytes"]),
            when(e["updated"]),
        ]
        for e in entries
    ]
    console.print(fitted(columns, table, title=escape(f"datasets in {url}")))


def history(dataset: str, versions: list[dict[str, Any]]) -> None:
    columns = [
        Col("version", "number"),
        Col("snapshot", "id"),
        Col("created", "text"),
        Col("author", "text"),
        Col("operation"),
        Col("added", "number"),
        Col("replaced", "number"),
    ]
    table = [
        [
            str(v["version"]),
            short(v["snapshot"]),
            when(v["created_at"]),
            escape(str(v["author"])),
            escape(str(v["operation"])),
            str(len(v["added"])),
            str(len(v["replaced"])),
        ]
        for v in versions
    ]
    console.print(fitted(columns, table, title=escape(f"history of {dataset}")))


def inspect_report(doc: dict[str, Any], show_all: bool = False) -> None:
    title = escape(doc["dataset"] + (f"[{doc['slice']}]" if doc["slice"] is not None else ""))
    lineage = doc["lineage"]
    console.print(f"[bold]{title}[/]  snapshot [cyan]{doc['snapshot']}[/]")
    console.print(
        f"version {doc['version']}  ·  {count(doc['rows'], 'row')}  ·  {human_bytes(doc['bytes'])}"
        f"  ·  {count(len(doc['slices']), 'slice')}"
        + (f" by {doc['slice_by']}" if doc["slice_by"] else "")
        + ("  ·  [yellow]pinned[/]" if doc["pinned"] else "")
    )
    for line in lineage_lines(lineage):
        console.print(f"[dim]{escape(line)}[/]", soft_wrap=True)

    schema = [
        [
            escape(str(c["name"])),
            escape(str(c["type"])),
            stat(c["min"]),
            stat(c["max"]),
            rows(c["nulls"]),
        ]
        for c in doc["columns"]
    ]
    kinds = (("column", "name"), ("type", "text"), ("min", "text"), ("max", "text"))
    columns = [*(Col(n, k) for n, k in kinds), Col("nulls", "number")]  # type: ignore[arg-type]
    console.print(fitted(columns, schema, title="schema"))

    slices = doc["slices"]
    limit = len(slices) if show_all or len(slices) <= SLICE_PREVIEW * 2 else SLICE_PREVIEW
    table = [
        [escape(str(s["key"])), short(s["id"]), rows(s["rows"]), human_bytes(s["bytes"])]
        for s in slices[:limit]
    ]
    if limit < len(slices):
        table.append([f"... {len(slices) - limit} more (--all)", "", "", ""])
    columns = [Col("slice"), Col("id", "id"), Col("rows", "number"), Col("bytes", "number")]
    console.print(fitted(columns, table, title="slices"))

    table = [
        [
            str(v["version"]),
            short(v["snapshot"]) + (" ←" if v["snapshot"] == doc["snapshot"] else ""),
            when(v["created_at"]),
            escape(str(v["operation"])),
            str(len(v["added"])),
            str(len(v["replaced"])),
        ]
        for v in doc["history"][-10:]
    ]
    columns = [
        Col("version", "number"),
        Col("snapshot", "id"),
        Col("created", "text"),
        Col("operation"),
        Col("added", "number"),
        Col("replaced", "number"),
    ]
    console.print(fitted(columns, table, title="history (newest 10)"))


def stat(value: Any) -> str:
    """A column's min or max as the schema table shows it: a number whole (a float by its
    shortest exact form), a timestamp with a space before its time (where it may wrap), text
    shortened past 28 characters."""
    if isinstance(value, bool) or value is None:
        return cell(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if re.match(r"^\d{4}-\d\d-\d\dT\d", text):
        text = text.replace("T", " ", 1)
    return cell(text, 28)


def lineage_lines(lineage: dict[str, Any]) -> list[str]:
    """A snapshot's lineage as sentences: who made it, when, from which parent; for a run's
    output, which run of which blueprint and stage, from which input snapshots; then any other
    field (a Python freeze's own lineage) as ``field: value``."""
    lineage = dict(lineage)
    operation = str(lineage.pop("operation", None) or "freeze")
    author, created = lineage.pop("author", None), lineage.pop("created_at", None)
    parent = lineage.pop("parent", None)
    made = "frozen" if operation == "freeze" else f"{operation}"
    made += f" by {author}" if author else ""
    made += f" at {when(str(created))}" if created else ""
    made += f"; parent {short(parent)}" if parent else "; no parent (the first version)"
    lines = [made]
    run = lineage.pop("run", None)
    if run is not None:
        wrote = f"written by run {run}"
        blueprint, digest = lineage.pop("blueprint", None), lineage.pop("blueprint_hash", None)
        if blueprint is not None:
            wrote += f" of blueprint {blueprint}"
            wrote += f" (hash {_lineage_value(digest)})" if digest is not None else ""
        stage = lineage.pop("stage", None)
        wrote += f", stage {stage}" if stage is not None else ""
        inputs = lineage.pop("inputs", None)
        if isinstance(inputs, dict) and inputs:
            shown = ", ".join(
                f"{name} (snapshot {_lineage_value(snap)})" for name, snap in inputs.items()
            )
            wrote += f", from input{'s' if len(inputs) > 1 else ''} {shown}"
        lines.append(wrote)
    removed = lineage.pop("removed", None)
    if isinstance(removed, list) and removed:
        keys = ", ".join(str(k) for k in sorted(removed, key=_natural))
        lines.append(f"removed slice{'s' if len(removed) > 1 else ''} {keys}")
    lines += [f"{key}: {_lineage_value(value)}" for key, value in lineage.items()]
    return lines


def _lineage_value(value: Any) -> str:
    """A lineage value as text: ids and hashes short, mappings as ``a=1, b=2``, lists joined."""
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return short(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_lineage_value(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_lineage_value(v) for v in value)
    return "-" if value is None else str(value)


def _natural(key: Any) -> tuple[int, Any]:
    """Slice keys (as JSON has them) in their natural order: numbers numerically, then text."""
    return (0, key) if isinstance(key, int) else (1, str(key))


def verify_report(doc: dict[str, Any]) -> None:
    rate = doc["bytes"] / doc["seconds"] / 1e9 if doc["seconds"] else 0.0
    summary = (
        f"checked {count(doc['checked'], 'file')}, {human_bytes(doc['bytes'])} "
        f"in {doc['seconds']:.2f}s ({rate:.2f} GB/s)"
    )
    if doc["ok"]:
        console.print(f"[green]ok[/]: {summary}")
        return
    held: dict[str, list[dict[str, Any]]] = {}
    for record in doc.get("damaged", []):
        held.setdefault(record["object"], []).append(record)
    for bad in doc["files"]:
        named = f" ({bad['id']})" if bad["id"] != bad["path"] else ""
        err_console.print(f"[red]{bad['problem']}[/]: {bad['path']}{named}", soft_wrap=True)
        for record in held.get(bad["id"], []):
            err_console.print(f"  {escape(damage_line(record))}", soft_wrap=True)
    for problem in doc["problems"]:
        err_console.print(f"[red]problem[/]: {escape(problem)}", soft_wrap=True)
    n = len(doc["corrupt"]) + len(doc["missing"]) + len(doc["problems"])
    err_console.print(f"[red]FAILED[/]: {count(n, 'problem')}; {summary}")


def damage_line(record: dict[str, Any]) -> str:
    """Where a damaged object is used, and how to heal it, as one line of verify's output."""
    if record["dataset"] is not None:
        versions = record["versions"]
        where = f"{record['dataset']} version {record['version']}" + (
            " (the head)" if record["head"] else ""
        )
        if len(versions) > 1:
            where += f" and {len(versions) - 1} earlier"
        where += f", slice {record['slice']}"
    else:
        where = "not in any snapshot"
    caches = record.get("cache") or []
    if caches:
        stages = sorted({c["stage"] for c in caches if c.get("stage")})
        where += f"; {len(caches)} cache {'entry' if len(caches) == 1 else 'entries'}"
        where += f" (stage {', '.join(stages)})" if stages else ""
    return f"{where}; to heal it: {record['heal']}"


def diff_report(doc: dict[str, Any]) -> None:
    a, b = doc["from"], doc["to"]
    console.print(f"{a['dataset']}@{short(a['snapshot'])} → {b['dataset']}@{short(b['snapshot'])}")
    if doc["identical"]:
        console.print("identical")
        return
    table = Table(box=box.SIMPLE_HEAD)
    for name in ("", "slice", "before", "after", "rows before", "rows after"):
        table.add_column(name, justify="right" if name.startswith("rows") else "left")
    for kind, mark in (
        ("added", "[green]+[/]"),
        ("removed", "[red]-[/]"),
        ("changed", "[yellow]~[/]"),
    ):
        for c in doc[kind]:
            table.add_row(
                mark,
                cell(c["key"]),
                short(c["before"]),
                short(c["after"]),
                rows(c["rows_before"]),
                rows(c["rows_after"]),
            )
    console.print(table)
    for s in doc["schema"]:
        console.print(
            f"[yellow]schema[/]: {cell(s['column'])}: {cell(s['before'])} → {cell(s['after'])}"
        )
    console.print(
        f"{len(doc['added'])} added, {len(doc['removed'])} removed, "
        f"{len(doc['changed'])} changed, {doc['unchanged']} unchanged"
    )


def gc_report(doc: dict[str, Any]) -> None:
    removed = doc["removed"]
    verb = "would remove" if doc["dry_run"] else "removed"
    console.print(
        f"gc {verb} {count(removed['objects'], 'object')}, "
        f"{count(removed['manifests'], 'manifest')}, {count(removed['refs'], 'old version')}, "
        f"{count(removed['cache'], 'cache entry', 'cache entries')}, "
        f"{count(removed['tmp'], 'temporary file')} ({human_bytes(doc['bytes'])}); "
        f"kept {count(doc['live_objects'], 'live object')}"
        + (
            f" and {count(doc['kept_young'], 'file')} younger than the grace period"
            if doc["kept_young"]
            else ""
        )
    )
