"""Map functions for the run tests (``map: {function: 'udfs:...'}`` with ``--allow-module udfs``)."""

from __future__ import annotations

import time

import pandas as pd


def add_ratio(frame: pd.DataFrame) -> pd.DataFrame:
    """A new column ``ratio = x / (y + 1)``, and only the rows with an even ``id``."""
    out = frame[frame["id"] % 2 == 0].copy()
    out["ratio"] = out["x"] / (out["y"] + 1)
    return out


def explode_on_slice_two(frame: pd.DataFrame) -> pd.DataFrame:
    """Raises on the rows of slice 2, and passes every other slice through."""
    if (frame["s"] == 2).any():
        raise ValueError("cannot handle these rows")
    return frame


def not_a_frame(frame: pd.DataFrame) -> int:
    return len(frame)


#: Tests switch this off to "fix" ``fail_late_on_slice_two`` without changing its version.
STATE = {"fail": True}


def fail_late_on_slice_two(frame: pd.DataFrame) -> pd.DataFrame:
    """Like ``explode_on_slice_two``, but only after the other slices have had time to finish,
    and only while ``STATE["fail"]`` is set."""
    if STATE["fail"] and (frame["s"] == 2).any():
        time.sleep(1.0)
        raise ValueError("cannot handle these rows yet")
    return frame


def text_on_slice_two(frame: pd.DataFrame) -> pd.DataFrame:
    """Column ``v`` as text on the rows of slice 2 and as numbers elsewhere: the output's
    slices disagree on a type, which only its freeze can find."""
    out = frame.copy()
    out["v"] = out["s"].astype(str) if (frame["s"] == 2).any() else out["s"]
    return out


def whole_or_fractions(frame: pd.DataFrame) -> pd.DataFrame:
    """Column ``v``: ``part`` as int64 on a slice whose values are all whole, as float64 on the
    others: the output's slices disagree on int64 and double, and its freeze makes all double."""
    out = frame[["day"]].copy()
    part = frame["part"]
    out["v"] = part.astype("int64") if bool((part == part.round()).all()) else part
    return out
