"""Entry point and error mapping: ``Error: <what>`` on one line, exit 0, 1 or 2."""

from __future__ import annotations

import io
import sys
import traceback
import unicodedata

import click

from chanbatch.cli import (
    kube,  # noqa: F401  (adds the k8s commands)
    reports,  # noqa: F401  (adds the report command)
    visual,  # noqa: F401  (adds the graph command)
)
from chanbatch.cli.commands import cli
from chanbatch.errors import ChanbatchError

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


def printable(text: str) -> str:
    """``text`` with control and format characters escaped (``\\x1b``), newlines kept.

    Messages quote what users and their files hold (a path, a CSV row): an escape sequence in
    them must reach the terminal as text, not retitle the window or hide the rest of the line.
    """
    return "".join(
        ch if ch == "\n" or unicodedata.category(ch)[0] != "C" else ascii(ch)[1:-1] for ch in text
    )


def format_error(exc: ChanbatchError) -> str:
    """The one line the CLI prints for a library error."""
    message = " ".join(str(exc).split()) if "\n" not in str(exc) else str(exc)
    if exc.hint:
        message += f"; {exc.hint}" if "\n" not in message else f"\nhint: {exc.hint}"
    return printable(f"Error: {message}")


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with its code; never prints a traceback without ``--verbose``."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in args or (bool(args) and args[0] == "-v")
    if "--verbose" in args[1:]:  # accepted after the command too, where Click would refuse it
        args = ["--verbose", *(a for a in args if a != "--verbose")]
    try:
        code = cli.main(args=args, prog_name="chanbatch", standalone_mode=False)
        sys.exit(code if isinstance(code, int) else EXIT_OK)
    except ChanbatchError as exc:
        if verbose:
            traceback.print_exc()
        click.echo(format_error(exc), err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.ClickException as exc:
        shown = io.StringIO()  # Click quotes the arguments it refuses: escape them too
        exc.show(file=shown)
        sys.stderr.write(printable(shown.getvalue()))
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("Error: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(EXIT_OK)
    except Exception as exc:  # a bug: say so plainly, keep the traceback behind --verbose
        if verbose:
            traceback.print_exc()
        detail = printable(" ".join(str(exc).split()))
        click.echo(
            f"Error: internal error: {type(exc).__name__}: {detail} "
            "(rerun with --verbose for the traceback, and please report it)",
            err=True,
        )
        sys.exit(EXIT_RUNTIME)
