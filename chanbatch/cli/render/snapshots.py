"""Snapshots and the store on the terminal: freeze, demo, list, history, inspect, verify, diff
and gc."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from chanbatch.cli.render.terminal import SLICE_PREVIEW, cell, console, err_console, rows, when
from chanbatch.html import human_bytes
from chanbatch.ids import short


def freeze_result(result: Any) -> None:
    slices = result.slices
    new = sum(1 for s in slices if s.new)
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
            else "[dim]unchanged[/]",
        )
    if len(shown) < len(slices):
        table.add_row(f"... {len(slices) - len(shown)} more", "", "", "", "")
    console.print(table)
    verb = "created" if result.created else "unchanged at"
    console.print(
        f"[bold]{result.dataset}[/]: {verb} snapshot [cyan]{short(result.snapshot)}[/] "
        f"(version {result.version}); {len(slices)} slices given, {new} new"
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
    table = Table(box=box.SIMPLE_HEAD, title=f"datasets in {url}")
    for name in ("dataset", "snapshot", "version", "slices", "rows", "bytes", "updated"):
        table.add_column(
            name, justify="right" if name in ("version", "slices", "rows", "bytes") else "left"
        )
    for e in entries:
        table.add_row(
            e["dataset"],
            short(e["snapshot"]),
            str(e["version"]),
            str(e["slices"]),
            rows(e["rows"]),
            human_bytes(e["bytes"]),
            when(e["updated"]),
        )
    console.print(table)


def history(dataset: str, versions: list[dict[str, Any]]) -> None:
    table = Table(box=box.SIMPLE_HEAD, title=f"history of {dataset}")
    for name in ("version", "snapshot", "created", "author", "operation", "added", "replaced"):
        table.add_column(
            name, justify="right" if name in ("version", "added", "replaced") else "left"
        )
    for v in versions:
        table.add_row(
            str(v["version"]),
            short(v["snapshot"]),
            when(v["created_at"]),
            v["author"],
            v["operation"],
            str(len(v["added"])),
            str(len(v["replaced"])),
        )
    console.print(table)


def inspect_report(doc: dict[str, Any], show_all: bool = False) -> None:
    title = escape(doc["dataset"] + (f"[{doc['slice']}]" if doc["slice"] is not None else ""))
    lineage = doc["lineage"]
    console.print(f"[bold]{title}[/]  snapshot [cyan]{doc['snapshot']}[/]")
    console.print(
        f"version {doc['version']}  ·  {rows(doc['rows'])} rows  ·  {human_bytes(doc['bytes'])}"
        f"  ·  {len(doc['slices'])} slices"
        + (f" by {doc['slice_by']}" if doc["slice_by"] else "")
        + ("  ·  [yellow]pinned[/]" if doc["pinned"] else "")
    )
    console.print(
        f"[dim]{lineage['operation']} by {lineage['author']} at {lineage['created_at']}; "
        f"parent {short(lineage['parent'])}[/]"
    )
    extra = {
        k: v for k, v in lineage.items() if k not in ("parent", "operation", "created_at", "author")
    }
    for key, value in extra.items():
        console.print(f"[dim]{escape(str(key))}: {cell(value, 200)}[/]")

    schema = Table(box=box.SIMPLE_HEAD, title="schema")
    for name in ("column", "type", "min", "max", "nulls"):
        schema.add_column(name, justify="right" if name == "nulls" else "left")
    for c in doc["columns"]:
        schema.add_row(
            cell(c["name"]),
            cell(c["type"]),
            cell(c["min"], 28),
            cell(c["max"], 28),
            rows(c["nulls"]),
        )
    console.print(schema)

    slices = doc["slices"]
    table = Table(box=box.SIMPLE_HEAD, title="slices")
    for name in ("slice", "id", "rows", "bytes"):
        table.add_column(name, justify="right" if name in ("rows", "bytes") else "left")
    limit = len(slices) if show_all or len(slices) <= SLICE_PREVIEW * 2 else SLICE_PREVIEW
    for s in slices[:limit]:
        table.add_row(cell(s["key"]), short(s["id"]), rows(s["rows"]), human_bytes(s["bytes"]))
    if limit < len(slices):
        table.add_row(f"... {len(slices) - limit} more (--all)", "", "", "")
    console.print(table)

    hist = doc["history"][-10:]
    table = Table(box=box.SIMPLE_HEAD, title="history (newest 10)")
    for name in ("version", "snapshot", "created", "operation", "added", "replaced"):
        table.add_column(
            name, justify="right" if name in ("version", "added", "replaced") else "left"
        )
    for v in hist:
        mark = " ←" if v["snapshot"] == doc["snapshot"] else ""
        table.add_row(
            str(v["version"]),
            short(v["snapshot"]) + mark,
            when(v["created_at"]),
            v["operation"],
            str(len(v["added"])),
            str(len(v["replaced"])),
        )
    console.print(table)


def verify_report(doc: dict[str, Any]) -> None:
    rate = doc["bytes"] / doc["seconds"] / 1e9 if doc["seconds"] else 0.0
    summary = (
        f"checked {doc['checked']} files, {human_bytes(doc['bytes'])} "
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
    err_console.print(f"[red]FAILED[/]: {n} problems; {summary}")


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
        f"gc {verb} {removed['objects']} objects, {removed['manifests']} manifests, "
        f"{removed['refs']} old versions, {removed['cache']} cache entries, {removed['tmp']} "
        f"temporary files ({human_bytes(doc['bytes'])}); kept {doc['live_objects']} live objects"
        + (
            f" and {doc['kept_young']} files younger than the grace period"
            if doc["kept_young"]
            else ""
        )
    )
