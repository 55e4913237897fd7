"""A freeze's progress steps (``progress=`` with a ``step`` method): reading a file's bytes,
cutting its rows, writing its slices, in that order, each counting up to its total."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd

import chanbatch
from chanbatch.snapshot.freeze import Step


class Steps:
    def __init__(self) -> None:
        self.seen: list[Step] = []
        self.lock = threading.Lock()

    def step(self, step: Step) -> None:
        with self.lock:
            self.seen.append(step)


def test_steps_of_a_file_cut_by_a_column(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"month": rng.integers(1, 4, 300_000), "x": rng.normal(size=300_000)})
    path = tmp_path / "flights.csv"
    frame.to_csv(path, index=False)
    steps = Steps()

    info = chanbatch.Store(tmp_path / "s").freeze("f", [path], slice_by="month", progress=steps)

    phases = [s.phase for s in steps.seen]
    assert phases == sorted(phases, key=["reading", "cutting", "writing"].index)
    for phase in ("reading", "cutting", "writing"):
        mine = [s for s in steps.seen if s.phase == phase]
        assert [s.done for s in mine] == sorted(s.done for s in mine), phase
        assert all(s.done <= s.total for s in mine)
        assert mine[-1].done == mine[-1].total > 0, phase
    reading = [s for s in steps.seen if s.phase == "reading"]
    assert reading[-1].total == path.stat().st_size and reading[-1].what == "flights.csv"
    assert len(reading) > 2  # counted as it is read, not once at the end
    last = steps.seen[-1]
    assert (last.unit, last.total, last.slices, last.slices_total) == ("rows", 300_000, 3, 3)
    assert last.written == sum(s.bytes for s in info.slices) > 0


def test_a_plain_callable_still_counts_slices(tmp_path: Path) -> None:
    frame = pd.DataFrame({"k": [1, 2, 3, 3], "x": [1.0, 2.0, 3.0, 4.0]})
    calls: list[tuple[int, int]] = []
    chanbatch.Store(tmp_path).freeze(
        "f", frame, slice_by="k", progress=lambda d, t: calls.append((d, t))
    )
    assert calls == [(1, 3), (2, 3), (3, 3)]
