"""The terminal itself: the two consoles, what the global options ask of output, and the
formatting of single values that every table shares."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

#: Slices a table shows before it says how many more there are.
SLICE_PREVIEW = 24


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
