"""Progress on stderr: a freeze's phases and a run's bars (or only its notes), drawn by
:mod:`~chanbatch.cli.render.live`, on a terminal only."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from chanbatch.cli.render.live import FreezeView, RunView
from chanbatch.cli.render.terminal import bars_allowed, err_console, note, on_terminal, quiet


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


@contextlib.contextmanager
def freeze_progress(enabled: bool = True) -> Iterator[FreezeView | None]:
    """A freeze's live display of reading, cutting and writing (a ``Watcher`` to pass as
    ``progress=``), drawn from the moment it is entered; None off a terminal, with ``-q``,
    ``--no-progress``, or ``enabled=False`` (``--json``)."""
    if not enabled or not bars_allowed():
        yield None
        return
    view = FreezeView()
    try:
        yield view
    finally:
        view.stop()


class RunNotes:
    """A run's display without bars (``--no-progress``): only its notes, such as the dashboard."""

    def begin(self, totals: dict[str, int]) -> None:
        pass

    def advance(self, stage: str, outcome: str) -> None:
        pass

    def message(self, text: str) -> None:
        note(text)


@contextlib.contextmanager
def run_progress(enabled: bool = True) -> Iterator[RunView | RunNotes | None]:
    """A run's bars (all tasks, then each stage in flow order) and notes, on a terminal only;
    ``enabled=False`` (``--json``) and ``-q`` show neither, ``--no-progress`` only the notes."""
    if not enabled or quiet() or not on_terminal():
        yield None
        return
    if not bars_allowed():
        yield RunNotes()
        return
    bars = RunView()
    try:
        yield bars
    finally:
        bars.stop()
