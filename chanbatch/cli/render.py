"""Human output: Rich tables and progress bars. Reports arrive here as plain documents."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from chanbatch.html import human_bytes

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

SLICE_PREVIEW = 24


def short(value: str | None) -> str:
    return value[:12] if value else "-"


def rows(n: int) -> str:
    return f"{n:,}"


def cell(value: Any, width: int = 40) -> str:
    """A data value as table text: shortened, and escaped so Rich never reads it as markup."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return escape(text if len(text) <= width else text[: width - 3] + "...")


def when(stamp: str) -> str:
    return stamp[:16].replace("T", " ")


def display() -> Any:
    """The global options' :class:`~chanbatch.cli.commands.Display`, or None outside a command."""
    ctx = click.get_current_context(silent=True)
    return ctx.find_root().obj if ctx is not None else None


def quiet() -> bool:
    return bool(getattr(display(), "quiet", False))


def on_terminal() -> bool:
    """Whether a person is watching: stdout and stderr are both terminals. Output piped into
    a file or another program (``run x | head``, ``> log``) gets no bars and no notes drawn
    for the eye, even though stderr may still be the terminal."""
    return sys.stderr.isatty() and sys.stdout.isatty()


def bars_allowed() -> bool:
    """Progress bars go to stderr, and only on a terminal (see :func:`on_terminal`): never into
    a log file or a pipe, and never with ``-q`` or ``--no-progress``."""
    return bool(getattr(display(), "progress", True)) and on_terminal()


def note(text: str) -> None:
    """A remark for the person at the terminal (not data) on stderr; ``-q`` silences it."""
    if not quiet():  # one line however narrow the terminal: a note may be grepped for
        err_console.print(escape(text), soft_wrap=True)


@contextlib.contextmanager
def progress_bar(
    description: str, *, enabled: bool = True, min_total: int = 0
) -> Iterator[Callable[[int, int], None] | None]:
    """A ``(done, total)`` callback drawing a bar on a terminal once ``total > min_total``;
    ``enabled=False`` (``--json``) draws nothing."""
    if not enabled or not bars_allowed():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )
    task: list[Any] = []

    def update(done: int, total: int) -> None:
        if total <= min_total:
            return
        if not task:
            progress.start()
            task.append(progress.add_task(description, total=total))
        progress.update(task[0], completed=done, total=total)

    try:
        yield update
    finally:
        if task:
            progress.stop()


def freeze_progress(enabled: bool = True) -> Any:
    """A freeze's bar, shown once it has more than 3 slices."""
    return progress_bar("freezing slices", enabled=enabled, min_total=3)


class StageBars:
    """A run's progress: one bar per stage, tasks done out of tasks to run, with the tasks cut
    off early (found in the cache once their inputs came out unchanged) counted apart."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            "{task.fields[note]}",
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        )
        self.bars: dict[str, Any] = {}
        self.cutoff: dict[str, int] = {}
        self.started = False

    def begin(self, totals: dict[str, int]) -> None:
        if not totals:
            return
        self.progress.start()
        self.started = True
        width = max(len(stage) for stage in totals)
        for stage, total in totals.items():
            self.bars[stage] = self.progress.add_task(stage.ljust(width), total=total, note="")

    def advance(self, stage: str, outcome: str) -> None:
        bar = self.bars.get(stage)
        if bar is None:
            return
        note = None
        if outcome == "cutoff":
            self.cutoff[stage] = self.cutoff.get(stage, 0) + 1
            note = f"{self.cutoff[stage]} unchanged, reused"
        if note is None:
            self.progress.advance(bar)
        else:
            self.progress.update(bar, advance=1, note=note)

    def message(self, text: str) -> None:
        err_console.print(escape(text))

    def stop(self) -> None:
        if self.started:
            self.progress.stop()


class RunNotes:
    """A run's display without bars (``--no-progress``): only its notes, such as the dashboard."""

    def begin(self, totals: dict[str, int]) -> None:
        pass

    def advance(self, stage: str, outcome: str) -> None:
        pass

    def message(self, text: str) -> None:
        note(text)


@contextlib.contextmanager
def run_progress(enabled: bool = True) -> Iterator[StageBars | RunNotes | None]:
    """A run's bars and notes, on a terminal only; ``enabled=False`` (``--json``) and ``-q``
    show neither, ``--no-progress`` only the notes."""
    if not enabled or quiet() or not on_terminal():
        yield None
        return
    if not bars_allowed():
        yield RunNotes()
        return
    bars = StageBars()
    try:
        yield bars
    finally:
        bars.stop()


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


def plan_report(doc: dict[str, Any], show_all: bool = False) -> None:
    summary = doc["summary"]
    console.print(
        f"[bold]{escape(doc['blueprint'])}[/]: {summary['compute']} tasks to compute, "
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
                entry["reasons"][t["reason"]] = entry["reasons"].get(t["reason"], 0) + 1
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
        f"run {doc['run']}: computed {stats['computed']} tasks, reused {stats['reused']}, "
        f"in {stats['seconds']:.2f}s"
    )
    for name, info in doc["outputs"].items():
        console.print(
            f"[bold]{escape(name)}[/] → {escape(info['dataset'])}@[cyan]{short(info['snapshot'])}[/]"
            f" ({rows(info['rows'])} rows)"
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
        box=box.SIMPLE_HEAD, title=f"cache: {doc['entries']} entries, {human_bytes(doc['bytes'])}"
    )
    for name in ("stage", "entries", "bytes"):
        table.add_column(name, justify="left" if name == "stage" else "right")
    for stage, s in sorted(doc["stages"].items()):
        table.add_row(cell(stage), str(s["entries"]), human_bytes(s["bytes"]))
    console.print(table)


def explain_report(docs: list[dict[str, Any]]) -> None:
    import json as _json

    for doc in docs:
        where = f"@{doc['slice']}" if doc["slice"] is not None else ""
        level = f" (level {doc['level']})" if doc["kind"] == "combine" else ""
        console.print(
            f"[bold]{escape(doc['stage'])}{escape(where)}[/] {doc['kind']}{level}: "
            f"key [cyan]{doc['key']}[/]"
        )
        c = doc["components"]
        console.print(f"  salt       {escape(_json.dumps(c['salt'], sort_keys=True))}")
        console.print(f"  spec       {escape(_json.dumps(c['spec'], sort_keys=True))}")
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
