"""Progress: what a freeze tells whoever watches it, phase by phase.

A freeze reads its files (bytes read of bytes to read), cuts their rows into slices (rows
grouped), then writes the slices (rows written, with slices and bytes written alongside). A
``progress=`` that has a ``step`` method (a :class:`Watcher`) is told each :class:`Step` as it
happens, from any thread; a plain ``(done, total)`` callable, as before, only of each slice
written, in key order. The library never draws: the CLI turns steps into a display.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

Phase = Literal["reading", "cutting", "writing"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """A freeze is in ``phase``, ``done`` of ``total`` ``unit`` (``"bytes"``, ``"rows"``, or
    what a caller such as the demo counts). ``what`` is the file being read (or the dataset a
    caller freezes); writing also counts the slices written and the bytes they took."""

    phase: Phase
    done: int
    total: int
    unit: str
    what: str = ""
    slices: int = 0
    slices_total: int = 0
    written: int = 0


@runtime_checkable
class Watcher(Protocol):
    """Told every step of a freeze, from the freezing thread or its worker threads."""

    def step(self, step: Step) -> None: ...


#: slices written, of slices to write: the original form of ``progress=``
SliceCount = Callable[[int, int], None]
Progress = SliceCount | Watcher


class _Reporter:
    """One freeze's progress: counts kept under a lock, passed on as :class:`Step`\\ s to a
    watcher, or as slice counts to a ``(done, total)`` callable."""

    def __init__(self, progress: Progress | None) -> None:
        self.watcher: Watcher | None = None
        self.count: SliceCount | None = None
        if isinstance(progress, Watcher):
            self.watcher = progress
        else:
            self.count = progress
        self.lock = threading.Lock()
        self.rows = self.rows_total = self.slices = self.slices_total = self.written = 0
        self.read = self.grouped = 0

    @property
    def watching(self) -> bool:
        """Whether anyone wants the steps (worth counting bytes and rows for)."""
        return self.watcher is not None

    def reading(self, what: str, nbytes: int, total: int) -> None:
        """``nbytes`` more of the ``total`` bytes of every file were read, now from ``what``."""
        if self.watcher is None:
            return
        with self.lock:
            self.read += nbytes
            done = min(self.read, total)  # a Parquet footer is read twice
            step = Step(phase="reading", done=done, total=total, unit="bytes", what=what)
            self.watcher.step(step)

    def cutting(self, rows: int, total: int) -> None:
        """``rows`` more of the ``total`` rows to cut were grouped by slice key."""
        if self.watcher is None:
            return
        with self.lock:
            self.grouped += rows
            self.watcher.step(Step(phase="cutting", done=self.grouped, total=total, unit="rows"))

    def writing(self, rows: int, slices: int) -> None:
        """Writing begins: ``rows`` rows in ``slices`` slices."""
        self.rows_total, self.slices_total = rows, slices
        self._wrote(0, 0, 0)

    def wrote(self, rows: int, nbytes: int, slices: int = 0) -> None:
        """An object of ``rows`` rows and ``nbytes`` bytes was written (and ``slices`` done)."""
        self._wrote(rows, nbytes, slices)

    def _wrote(self, rows: int, nbytes: int, slices: int) -> None:
        if self.watcher is None:
            return
        with self.lock:
            self.rows += rows
            self.written += nbytes
            self.slices += slices
            step = Step(
                phase="writing",
                done=self.rows,
                total=self.rows_total,
                unit="rows",
                slices=self.slices,
                slices_total=self.slices_total,
                written=self.written,
            )
            self.watcher.step(step)

    def collected(self, done: int, total: int) -> None:
        """``done`` of ``total`` slices are written, in key order: the original callback."""
        if self.count is not None:
            self.count(done, total)
