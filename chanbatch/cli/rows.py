"""``chanbatch show`` and ``chanbatch export``: a dataset's rows, on the terminal or in files."""

from __future__ import annotations

import sys
from typing import Any

import click

from chanbatch.cli.commands import (
    cli,
    complete_ref,
    count,
    emit_json,
    json_option,
    open_store,
    store_option,
)
from chanbatch.errors import UsageError
from chanbatch.ids import short
from chanbatch.snapshot.names import encode_key

#: Rows ``show`` prints as a table when no --limit is given.
DEFAULT_LIMIT = 20


def split_list(values: tuple[str, ...] | str | None, option: str) -> list[str] | None:
    """Names from a comma list (or several of them: ``--sort a,-b --sort c``), in order."""
    if values is None:
        return None
    given = (values,) if isinstance(values, str) else values
    names = [n.strip() for v in given for n in v.split(",") if n.strip()]
    if given and not names:
        raise UsageError(f"{option} names no column", hint=f"write e.g. {option} carrier,origin")
    return names


def complete_columns(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion of ``--columns``/``--sort``: the REF's column names after the last comma
    (a ``-`` before a sort column is kept). Completes nothing on any failure."""
    from click.shell_completion import CompletionItem

    try:
        store = open_store(ctx.params.get("store_url") or "snapshots")
        # before the option's value is typed, Click leaves the arguments unparsed in ctx.args
        ref = ctx.params.get("ref") or ctx.args[0]
        names = [c.name for c in store.resolve(ref).manifest.schema]
        head, _, word = incomplete.rpartition(",")
        lead = head + "," if head or incomplete.startswith(",") else ""
        sign = "-" if param.name == "sort" and word.startswith("-") else ""
        word = word.removeprefix(sign)
        return [CompletionItem(f"{lead}{sign}{n}") for n in names if n.startswith(word)]
    except Exception:  # never fail while completing
        return []


def _label(store: Any, ref: str) -> str:
    resolved = store.resolve(ref)
    where = f"[{resolved.slice_key}]" if resolved.slice_key is not None else ""
    return f"{resolved.dataset}@{short(resolved.snapshot)}{where}"


# The row selection that show and export share.
columns_option = click.option(
    "-c",
    "--columns",
    metavar="A,B",
    shell_complete=complete_columns,
    help="Only these columns, in this order.",
)
where_option = click.option(
    "-w",
    "--where",
    metavar="EXPR",
    help="Only the rows where EXPR (the blueprint expression language) is true; a null is not "
    "true. E.g. \"dep_delay > 60 and origin == 'JFK'\".",
)


@cli.command("show")
@click.argument("ref", shell_complete=complete_ref)
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(min=0),
    metavar="N",
    help=f"Show at most N rows, 0 for all [default: {DEFAULT_LIMIT} in a table; all with --json "
    "or --csv].",
)
@columns_option
@where_option
@click.option(
    "-s",
    "--sort",
    multiple=True,
    metavar="[-]COL,...",
    shell_complete=complete_columns,
    help="Sort by these columns (-COL: descending; nulls last). Repeatable.",
)
@click.option("--csv", "as_csv", is_flag=True, help="Print the rows as CSV, with a header.")
@store_option
@json_option
def show_cmd(
    ref: str,
    limit: int | None,
    columns: str | None,
    where: str | None,
    sort: tuple[str, ...],
    as_csv: bool,
    store_url: str,
    as_json: bool,
) -> None:
    """Print the rows of REF: DATASET (its newest snapshot), DATASET@<id prefix> or
    DATASET[slice].

    Reads only the columns it needs, and, without --sort, only the slices it needs for the
    first N rows. The table fits the terminal: text wraps, and when the columns cannot fit, each
    row is printed as a block of 'column: value' lines. Numbers are never cut.

    \b
      chanbatch show flights
      chanbatch show 'flights[7]' --columns carrier,dep_delay --sort -dep_delay
      chanbatch show flights --where "dep_delay > 60 and origin == 'JFK'" --csv > late.csv
    """
    if as_json and as_csv:
        raise UsageError("give --json or --csv, not both")
    store = open_store(store_url)
    machine = as_json or as_csv
    wanted = (None if machine else DEFAULT_LIMIT) if limit is None else (limit or None)
    selection = store.select(
        ref,
        columns=split_list(columns, "--columns"),
        where=where,
        sort=split_list(sort, "--sort") or (),
        limit=wanted,
    )
    if as_json:
        from chanbatch.snapshot.export import json_rows

        resolved = store.resolve(ref)
        emit_json(
            {
                "dataset": resolved.dataset,
                "snapshot": resolved.snapshot,
                "slice": None if resolved.slice_key is None else encode_key(resolved.slice_key),
                "schema": [{"name": f.name, "type": str(f.type)} for f in selection.table.schema],
                "rows": json_rows(selection.table),
                "shown": selection.shown,
                "matched": selection.matched,
                "total": selection.total,
            }
        )
    elif as_csv:
        import pyarrow.csv as pacsv

        sys.stdout.flush()
        pacsv.write_csv(selection.table, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        from chanbatch.cli.render.rows import show_rows

        show_rows(selection, _label(store, ref))


@cli.command("export")
@click.argument("ref", shell_complete=complete_ref)
@click.argument("path", type=click.Path())
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["parquet", "csv", "jsonl"]),
    help="The file format [default: from PATH's suffix: .parquet, .csv, .jsonl or .json; "
    "parquet with --per-slice].",
)
@click.option(
    "--per-slice",
    is_flag=True,
    help="Write one file per slice into the directory PATH, named by the slice key "
    "(1.parquet, 2013-01-01.parquet, ...).",
)
@columns_option
@where_option
@click.option(
    "--force",
    is_flag=True,
    help="Replace an existing file PATH (with --per-slice: files of the same names in PATH).",
)
@store_option
@json_option
def export_cmd(
    ref: str,
    path: str,
    fmt: str | None,
    per_slice: bool,
    columns: str | None,
    where: str | None,
    force: bool,
    store_url: str,
    as_json: bool,
) -> None:
    """Write the rows of REF to PATH as Parquet, CSV or JSON lines.

    Parquet keeps every type: freezing the export with the same slicing (--slice-by, or the
    per-slice files as they are) gives the same snapshot id. An existing PATH is refused
    unless --force is given.

    \b
      chanbatch export flights flights.parquet
      chanbatch export flights by_month --per-slice --format csv
      chanbatch export flights late.jsonl --where "dep_delay > 60" --columns flight,dep_delay
    """
    store = open_store(store_url)
    result = store.export(
        ref,
        path,
        format=fmt,
        columns=split_list(columns, "--columns"),
        where=where,
        per_slice=per_slice,
        force=force,
    )
    if as_json:
        emit_json({"dataset": store.resolve(ref).dataset, **result.document()})
        return
    from chanbatch.cli.render.terminal import console

    files = count(len(result.files), "file")
    where_to = f"{files} in {result.path}" if per_slice else result.path
    console.print(
        f"wrote {count(result.rows, 'row')} of {_label(store, ref)} to {where_to} ({result.format})",
        soft_wrap=True,
        markup=False,
    )
