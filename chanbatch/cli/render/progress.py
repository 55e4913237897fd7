"""Progress on stderr: a freeze's bar and a run's bars per stage (or only its notes)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from rich.markup import escape

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
