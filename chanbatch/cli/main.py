"""Entry point and error mapping: ``Error: <what>`` on one line, exit 0, 1 or 2."""

from __future__ import annotations

import gc
import io
import itertools
import sys
import traceback
import unicodedata

import click

from chanbatch.cli import (
    blueprints,  # noqa: F401  (adds validate, plan, run, explain and schema)
    caches,  # noqa: F401  (adds the cache commands)
    kube,  # noqa: F401  (adds the k8s commands)
    project,  # noqa: F401  (adds init and completion)
    reports,  # noqa: F401  (adds the report command)
    rows,  # noqa: F401  (adds show and export)
    snapshots,  # noqa: F401  (adds the snapshot commands, gc and demo)
    visual,  # noqa: F401  (adds the graph command)
)
from chanbatch.cli.commands import cli
from chanbatch.deferred import defer_pandas
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


#: Global options (of the ``chanbatch`` group) also accepted after the command.
GLOBAL_FLAGS = frozenset({"-v", "--verbose", "-q", "--quiet", "--no-progress"})


def _option(command: click.Command, token: str) -> click.Option | None:
    name = token.split("=", 1)[0]
    for param in command.params:
        if isinstance(param, click.Option) and name in (*param.opts, *param.secondary_opts):
            return param
    return None


def hoist_global_flags(args: list[str]) -> list[str]:
    """``args`` with the global flags given after the command moved to the front.

    Users write ``chanbatch run x.yaml -q``; Click accepts a group's options only before the
    command. The walk follows the command tree so that only a real flag moves: a value of an
    option (``--slice -q`` freezes slice "-q"), anything after ``--``, and a command's own
    option of the same name stay where they are.
    """
    command: click.Command = cli
    front: list[str] = []
    rest: list[str] = []
    below_group = False
    tokens = iter(args)
    for token in tokens:
        if token == "--":
            rest += [token, *tokens]
            break
        own = _option(command, token) if token.startswith("-") else None
        if below_group and token in GLOBAL_FLAGS and own is None:
            front.append(token)
            continue
        rest.append(token)
        if own is not None:
            if not (own.is_flag or own.count) and "=" not in token:
                rest += itertools.islice(tokens, max(own.nargs, 1))  # its value(s), as given
        elif not token.startswith("-") and isinstance(command, click.Group):
            sub = command.commands.get(token)
            if sub is not None:
                command, below_group = sub, True
    return front + rest


def _verbose(args: list[str]) -> bool:
    """Whether ``-v`` is among the leading global options (after hoisting)."""
    for token in args:
        if not token.startswith("-") or token == "--":
            return False
        if token in ("-v", "--verbose"):
            return True
    return False


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with its code; never prints a traceback without ``--verbose``."""
    args = hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    verbose = _verbose(args)
    defer_pandas()  # a run whose stages all run on Arrow never imports pandas
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


# the cyclic collector's thresholds for a command (Python's defaults: 700, 10, 10)
_COLLECT_AFTER = (50_000, 20, 20)


def console() -> None:
    """The ``chanbatch`` console script: :func:`main`, with fewer garbage collections, then a
    quick exit.

    The cyclic collector runs whenever 700 more objects are alive than before, and every tenth
    time also over the older ones: a plan over 100,000 slices makes millions of objects (a
    manifest, a chain memo, a run record) and spent 0.8 s of its 4.5 s in collections that
    found almost nothing to free, as the objects live until the command ends. A command is a
    short process, so the thresholds are raised (as mypy does), not turned off: cycles are
    still collected. At exit, a process that has imported pyarrow, botocore or dask spends
    0.05 to 0.2 s in the interpreter's last collections, walking every object it made only to
    free memory the system takes back anyway. Everything the command writes is written, and its
    streams flushed, before this returns, so the objects are frozen first (:func:`gc.freeze`)
    and those collections find nothing to walk. :func:`main` itself leaves the collector alone
    for callers that go on running.
    """
    gc.set_threshold(*_COLLECT_AFTER)
    try:
        main()
    finally:
        gc.freeze()
