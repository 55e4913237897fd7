"""``chanbatch graph``: draw a blueprint's flow, coloured by what the next run would do."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from chanbatch.cli.commands import (
    cli,
    emit_json,
    json_option,
    open_store,
    parse_sets,
    set_option,
    store_option,
)
from chanbatch.errors import UsageError

FORMATS = ("dot", "mermaid", "svg", "png", "html")
SUFFIXES = {
    ".dot": "dot",
    ".gv": "dot",
    ".mmd": "mermaid",
    ".mermaid": "mermaid",
    ".svg": "svg",
    ".png": "png",
    ".html": "html",
    ".htm": "html",
}


def choose_format(output: str | None, fmt: str | None) -> str:
    """The format asked for: ``--format``, else ``-o``'s suffix, else DOT.

    Raises UsageError for an output suffix that names no format.
    """
    if fmt is not None:
        return fmt
    if output is None:
        return "dot"
    suffix = Path(output).suffix.lower()
    if suffix not in SUFFIXES:
        raise UsageError(
            f"cannot tell the format of {output!r} from its suffix",
            hint="name it .svg, .png, .html, .dot or .mmd, or give --format",
        )
    return SUFFIXES[suffix]


def draw(flow: Any, fmt: str) -> bytes:
    """``flow`` in ``fmt`` as bytes; raises GraphvizMissing for an image without Graphviz."""
    if fmt == "dot":
        return flow.dot().encode("utf-8")
    if fmt == "mermaid":
        return flow.mermaid().encode("utf-8")
    if fmt == "html":
        return flow.html().encode("utf-8")
    return bytes(flow.render(fmt))


@cli.command("graph")
@click.argument("blueprint", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    help="Write the graph to FILE (.svg, .png, .html, .dot or .mmd) instead of stdout.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    help="Output format [default: from FILE's suffix, else dot].",
)
@set_option
@store_option
@json_option
def graph_cmd(
    blueprint: str,
    output: str | None,
    fmt: str | None,
    sets: tuple[str, ...],
    store_url: str,
    as_json: bool,
) -> None:
    """Draw BLUEPRINT's flow: inputs, stages and outputs, each stage coloured by what the
    next run would do (green reuse, orange compute, yellow partial) with its task counts.

    Images (svg, png, html) need Graphviz's dot program. Without it, the graph is written as
    Mermaid text instead (FILE.mmd, or stdout), with a note on stderr.

    \b
    chanbatch graph blueprints/carrier_delays.yaml -o flow.svg
    chanbatch graph blueprints/carrier_delays.yaml --format mermaid
    """
    from chanbatch.cli.blueprints import load
    from chanbatch.view.flow import GraphvizMissing

    wanted = choose_format(output, fmt)
    if wanted == "png" and output is None and not as_json and sys.stdout.isatty():
        raise UsageError("a PNG needs a file", hint="give -o flow.png, or pipe stdout to a file")
    # a picture writes nothing: which datasets a run may write is run's (and plan's) to check
    flow = load(blueprint).flow(open_store(store_url), sets=parse_sets(sets))

    written = wanted
    data = None
    if output is not None or not as_json:
        try:
            data = draw(flow, wanted)
        except GraphvizMissing as exc:
            # The user still gets a graph they can paste into any Mermaid viewer: exit 0.
            written = "mermaid"
            data = flow.mermaid().encode("utf-8")
            if output is not None:
                output = str(Path(output).with_suffix(".mmd"))
            where = f" to {output}" if output is not None else ""
            from chanbatch.cli import render  # rich: only when there is something to say

            render.note(
                f"Warning: cannot draw {wanted}: {exc.message}; wrote Mermaid text{where} "
                f"instead; {exc.hint}"
            )
    if output is not None and data is not None:
        try:
            Path(output).write_bytes(data)
        except OSError as exc:
            raise UsageError(
                f"cannot write {output}: {exc.strerror}", hint="check the path"
            ) from exc
    if as_json:
        emit_json({**flow.document(), "output": output, "format": written})
    elif output is None and data is not None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
