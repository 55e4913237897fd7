"""Live displays on stderr: a freeze's phases, and a run's overall bar over its stages.

A freeze shows a line per phase as it comes (reading with the bytes read of the file, cutting
with the rows grouped, writing with the slices and bytes written), each with an ETA, from the
moment it starts. A run shows one bar of every task to compute, with an ETA, and under it a
bar per stage in flow order. Both are transient: the result that follows replaces them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.filesize import decimal
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
)
from rich.table import Column
from rich.text import Text

from chanbatch.cli.render.terminal import err_console

if TYPE_CHECKING:
    from chanbatch.snapshot.freeze import Step

#: the phases of a freeze, in the order they come and are listed
PHASES = ("reading", "cutting", "writing")


class EtaColumn(ProgressColumn):
    """``eta 0:00:03`` while a bar moves (once its speed is known), the time it took once done."""

    def render(self, task: Task) -> Text:
        if task.finished:
            elapsed = task.finished_time or task.elapsed or 0.0
            return Text(f"done {elapsed:.1f}s", style="progress.elapsed")
        remaining = task.time_remaining
        if remaining is None or task.total is None or not task.completed:
            return Text("")
        minutes, seconds = divmod(int(remaining + 0.999), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"eta {hours}:{minutes:02d}:{seconds:02d}", style="progress.remaining")


def count(n: int) -> str:
    """A count short enough for a progress line: 9,999, 12.3k, 2.50M."""
    if n < 10_000:
        return f"{n:,}"
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.2f}M"


def amount(step: Step) -> str:
    """How far ``step`` is, in its own unit."""
    if step.phase == "writing":
        return f"{step.slices:,}/{step.slices_total:,} slices, {decimal(step.written)}"
    if step.unit == "bytes":
        return f"{decimal(step.done)} of {decimal(step.total)}"
    return f"{count(step.done)}/{count(step.total)} {step.unit}"


class FreezeView:
    """A freeze's phases as one live display (a :class:`~chanbatch.snapshot.freeze.Watcher`).

    It starts drawing when made: the reading line pulses until the first bytes are read, so
    something moves from the first second, whatever the freeze does before it reads."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}", table_column=Column(width=7, no_wrap=True)),
            TextColumn(
                "{task.fields[what]}",
                table_column=Column(width=16, no_wrap=True, overflow="ellipsis"),
            ),
            BarColumn(bar_width=16),
            TextColumn(
                "{task.fields[amount]}",
                justify="right",
                table_column=Column(width=22, no_wrap=True, overflow="ellipsis"),
            ),
            EtaColumn(table_column=Column(width=11, no_wrap=True)),
            console=err_console,
            transient=True,
        )
        self.tasks: dict[str, Any] = {}
        self.progress.start()
        self._task("reading", total=None, what="", amount="starting")

    def _task(self, phase: str, **fields: Any) -> Any:
        task = self.tasks.get(phase)
        if task is None:
            task = self.tasks[phase] = self.progress.add_task(phase, **fields)
        return task

    def step(self, step: Step) -> None:
        for earlier in PHASES[: PHASES.index(step.phase)]:
            self._finish(earlier)  # a phase that never reported (a frame is not read) is done
        task = self._task(step.phase, total=step.total, what="", amount="")
        current = self._current(task)
        fields: dict[str, Any] = {"what": escape(step.what), "amount": amount(step)}
        # its first step (the reading line waited for it), or the demo's next dataset, a new
        # freeze: the bar, its clock and its speed start afresh
        afresh = current.total is None or step.done < current.completed
        afresh |= current.total != step.total
        if afresh:
            self.progress.reset(task, total=step.total, completed=step.done, **fields)
        else:
            self.progress.update(task, total=step.total, completed=step.done, **fields)

    def _finish(self, phase: str) -> None:
        task = self.tasks.get(phase)
        if task is None:
            return
        current = self._current(task)
        if current.total is None:  # never reported: nothing to show for it
            self.progress.update(task, visible=False)
        elif not current.finished:
            self.progress.update(task, completed=current.total)

    def _current(self, task: Any) -> Task:
        return next(t for t in self.progress.tasks if t.id == task)

    def stop(self) -> None:
        self.progress.stop()


class RunView:
    """A run's progress: one bar of every task to compute, with an ETA, then a bar per stage
    in flow order, tasks done out of tasks to run, with the tasks cut off early (found in the
    cache once their inputs came out unchanged) counted apart."""

    def __init__(self) -> None:
        self.progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            "{task.fields[note]}",
            EtaColumn(),
            console=err_console,
            transient=True,
        )
        self.bars: dict[str, Any] = {}
        self.overall: Any = None
        self.cutoff: dict[str, int] = {}
        self.started = False

    def begin(self, totals: dict[str, int]) -> None:
        """Draw the bars: ``totals`` are the tasks of each stage, in flow order."""
        if not totals:
            return
        self.progress.start()
        self.started = True
        width = max(len("all tasks"), *(len(stage) + 2 for stage in totals))
        self.overall = self.progress.add_task(
            "all tasks".ljust(width), total=sum(totals.values()), note=""
        )
        for stage, total in totals.items():
            label = escape(f"  {stage}".ljust(width))
            self.bars[stage] = self.progress.add_task(label, total=total, note="")

    def advance(self, stage: str, outcome: str) -> None:
        bar = self.bars.get(stage)
        if bar is None:
            return
        self.progress.advance(self.overall)
        if outcome == "cutoff":
            self.cutoff[stage] = self.cutoff.get(stage, 0) + 1
            note = f"{self.cutoff[stage]} unchanged, reused"
            self.progress.update(bar, advance=1, note=note)
        else:
            self.progress.advance(bar)

    def message(self, text: str) -> None:
        err_console.print(escape(text))

    def stop(self) -> None:
        if self.started:
            self.progress.stop()
