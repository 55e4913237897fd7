"""``chanbatch report``: the HTML report of any recorded run (``run --report`` writes it as it
runs)."""

from __future__ import annotations

import click

from chanbatch.cli.commands import cli, emit_json, json_option, open_store, store_option


@cli.command("report")
@click.argument("run_id", required=False, metavar="[RUN_ID]")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    default="report.html",
    show_default=True,
    metavar="PATH",
    help="Where to write the HTML file.",
)
@click.option(
    "--blueprint", "blueprint_name", metavar="NAME", help="The latest run of this blueprint."
)
@store_option
@json_option
def report_cmd(
    run_id: str | None, output: str, blueprint_name: str | None, store_url: str, as_json: bool
) -> None:
    """Write the HTML report of run RUN_ID (an id or a unique prefix; default: the latest
    finished run): the flow graph, per-stage counts, the timeline of tasks per worker, and the
    input and output snapshots, in one self-contained file.

    \b
    chanbatch report -o report.html
    chanbatch report --blueprint carrier_delays -o delays.html
    """
    record = open_store(store_url).report(output, run_id, blueprint=blueprint_name)
    if as_json:
        emit_json({"run": record["run"], "blueprint": record.get("blueprint"), "report": output})
    else:
        click.echo(f"report of run {record['run']} ({record.get('blueprint')}): {output}")
