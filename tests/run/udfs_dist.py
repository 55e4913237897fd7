"""Map functions for ``test_distributed.py`` (``map: {function: 'udfs_dist:...'}``,
``--allow-module udfs_dist``).

They run on Dask workers in other processes, so anything a test wants to switch at run time
travels through the environment (inherited by the workers a test starts) and files, never
through module state. None of it is part of a map's ``version``: a switched function computes
the very same results under the very same keys.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd

from chanbatch.cache.packs import read_packs
from chanbatch.engine.graph import storage_for

#: While the file this names exists, ``fail_on_slice`` raises on slice FAIL_SLICE.
FAIL_FLAG = "CHANBATCH_TEST_FAIL_FLAG"
#: The store's cache directory, and how many partials of stage ``totals`` must be recorded
#: there before ``fail_on_slice`` raises (so the rest of the run has finished by then; in
#: batches, fewer: see ``_wait_for_the_others``).
WAIT_CACHE = "CHANBATCH_TEST_WAIT_CACHE"
WAIT_FOR = "CHANBATCH_TEST_WAIT_FOR"
FAIL_SLICE = 5


def nap(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` unchanged, after 20 ms: enough for every worker of a cluster to get work."""
    time.sleep(0.02)
    return frame


def slow(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus ``w = x * 2 + 1``, after 0.1 s."""
    time.sleep(0.1)
    out = frame.copy()
    out["w"] = out["x"] * 2 + 1
    return out


def _partials(cache: Path, stage: str) -> int:
    """How many partials of ``stage`` the cache records: in entry files of their own
    (``cache/<key>.json``) and as members of packs (read as a plan reads them)."""
    keys = set()
    for path in cache.glob("*.json"):
        try:
            entry = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if entry.get("stage") == stage and entry.get("kind") == "partial":
            keys.add(entry.get("key"))
    packed = read_packs(storage_for(str(cache.parent)))
    keys.update(k for k, e in packed.items() if e.stage == stage and e.kind == "partial")
    return len(keys)


def _wait_for_the_others(cache: Path, want: int) -> None:
    """Until ``want`` partials of ``totals`` are recorded, or (the slices computed in batches)
    as many as will be before this one fails: those of the other batches, each recorded whole
    when it ends (this batch's others are recorded after this one fails), so the count has
    been the same, and above zero, for a second. At most 20 s."""
    deadline = time.monotonic() + 20
    seen, since = 0, time.monotonic()
    while time.monotonic() < deadline:
        count = _partials(cache, "totals")
        if count >= want or (count and count == seen and time.monotonic() - since >= 1):
            return
        if count != seen:
            seen, since = count, time.monotonic()
        time.sleep(0.02)


def fail_on_slice(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` unchanged; raises on slice FAIL_SLICE (column ``day``) while the flag file
    exists, after waiting (at most 20 s) until the other slices' partials are recorded."""
    flag = os.environ.get(FAIL_FLAG)
    if flag and Path(flag).exists() and (frame["day"] == FAIL_SLICE).any():
        cache = os.environ.get(WAIT_CACHE)
        if cache:
            _wait_for_the_others(Path(cache), int(os.environ.get(WAIT_FOR, "0")))
        raise ValueError(f"cannot handle day {FAIL_SLICE}")
    return frame
