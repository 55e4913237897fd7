"""A map function for the load tests (``map: {function: 'udfs_load:gate', ...}``,
``--allow-module udfs_load``): worker loss, concurrent runs, gc under load.

``gate`` returns its input with ``w = x * 2 + 1``. When ``CHANBATCH_TEST_GATE_DIR`` names a
directory and the slice's ``day`` is one of ``CHANBATCH_TEST_GATE_HOLD`` (comma-separated), it
first leaves an arrival file there (``arrived-<day>-<pid>-<n>``, so the test knows which process
holds which slice), then waits until the test creates ``go`` in that directory. That is how a
test holds a run in the middle, with other slices' results recorded, for as long as it needs:
to kill the worker that holds the slice, to start a second run, or to let gc sweep.

The environment is not part of the map's ``version``: a gated run computes the very same
results under the very same keys as an ungated one. Workers of ``--scheduler processes``
inherit it from the ``chanbatch`` process.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pandas as pd

GATE_DIR = "CHANBATCH_TEST_GATE_DIR"
GATE_HOLD = "CHANBATCH_TEST_GATE_HOLD"
#: A held slice gives up after this long, so a broken test fails instead of hanging.
GATE_TIMEOUT = 120.0


def held_days() -> set[int]:
    return {int(day) for day in os.environ.get(GATE_HOLD, "").split(",") if day.strip()}


def gate(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus ``w = x * 2 + 1``; held at the gate first when its slice is (see the
    module docstring)."""
    folder = os.environ.get(GATE_DIR)
    days = set(frame["day"].unique().tolist()) & held_days() if folder else set()
    if folder and days:
        gate_dir = Path(folder)
        arrival = gate_dir / f"arrived-{min(days)}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        arrival.write_text(str(os.getpid()))
        deadline = time.monotonic() + GATE_TIMEOUT
        while not (gate_dir / "go").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gate in {folder} was not opened in {GATE_TIMEOUT} s")
            time.sleep(0.01)
    out = frame.copy()
    out["w"] = out["x"] * 2 + 1
    return out
