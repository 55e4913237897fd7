"""A map function for ``test_resume.py`` (``map: {function: 'udfs_resume:...'}``,
``--allow-module udfs_resume``).

``hold_after_some`` returns its input with one more column. When the environment names a cache
directory in ``CHANBATCH_TEST_HOLD_CACHE`` and that directory holds at least
``CHANBATCH_TEST_HOLD_AFTER`` entries, one of them an aggregate's partial, it never returns: the
run is stuck in the middle, with some results recorded and others not, and the test kills it
there. Without the variable it is a plain function, so an uninterrupted run (and the rerun
after the kill) computes the very same results under the very same keys: the environment is
not part of the map's ``version``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd

HOLD_CACHE = "CHANBATCH_TEST_HOLD_CACHE"
HOLD_AFTER = "CHANBATCH_TEST_HOLD_AFTER"
#: A file that the first held call creates, so the test knows the run is stuck.
HELD_MARKER = "CHANBATCH_TEST_HELD_MARKER"


def _ready(cache: Path, after: int) -> bool:
    """Whether ``cache`` holds ``after`` entries or more, and a partial among them."""
    entries = list(cache.glob("*.json"))
    if len(entries) < after:
        return False
    for entry in entries:
        try:
            if json.loads(entry.read_bytes()).get("kind") == "partial":
                return True
        except (OSError, ValueError):
            continue
    return False


def hold_after_some(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus ``w = x * 2 + 1``; held forever once enough results are cached (see the
    module docstring)."""
    cache = os.environ.get(HOLD_CACHE)
    if cache:
        after = int(os.environ.get(HOLD_AFTER, "1"))
        if _ready(Path(cache), after):
            marker = os.environ.get(HELD_MARKER)
            if marker:
                Path(marker).touch()
            while True:  # the test kills the process here
                time.sleep(0.05)
    out = frame.copy()
    out["w"] = out["x"] * 2 + 1
    return out
