"""Which slices a ``window`` stage's frames reach: its halo, worked out from slice keys alone.

A window over a sliced input runs slice by slice when every row's frame can be bounded by slice
keys before the run: its functions read the rows of a ``range`` frame (not rows by position),
ordered by the one column whose value in every row of a slice is the slice's key (see
:func:`chanbatch.compile.plan.slicing_of`), with both offsets bounded. Then a row of slice ``k``
reads only rows whose order value lies in ``[k - preceding, k + following]``, which are exactly
the rows of the slices with keys in that interval: the slice's halo. Each slice's task reads its
halo and keeps its own rows, so a new slice recomputes only the slices whose frames reach it.

Anything else (``lag``, ``lead``, ``row_number``, a ``rows`` frame, an unbounded frame, an order
column that is not the slicing column, keys that are text) may reach any number of slices away:
the stage runs on its whole input, and the reason says why.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Sequence

from chanbatch.blueprint.functions import WINDOW_FUNCTIONS
from chanbatch.blueprint.model import Offset, Window
from chanbatch.snapshot.names import SliceKey

#: (first, end) positions in slice-key order of the slices a slice's task reads, its own among them
Halo = tuple[int, int]


def window_halos(op: Window, keys: Sequence[SliceKey], slicing: str | None) -> list[Halo] | str:
    """Each slice's halo, for slices with ``keys`` (in key order) of an input sliced by column
    ``slicing`` (None: not known to be); or why the window must read its whole input."""
    by_position = sorted(
        {call.func for call in op.columns.values() if not WINDOW_FUNCTIONS[call.func].framed}
    )
    if by_position:
        return (
            f"{', '.join(by_position)} read rows by position, which may be any number of "
            "slices away"
        )
    if op.frame.unit == "rows":
        return "a rows frame counts rows, which may be any number of slices away"
    order = op.order_by[0] if len(op.order_by) == 1 else None
    if order is None or order != slicing:
        return (
            f"its order column {'/'.join(op.order_by)!r} is not the column its input is "
            f"sliced by{f' ({slicing!r})' if slicing else ''}, so which slices a frame reaches "
            "is not known before the run"
        )
    if op.frame.preceding.unbounded or op.frame.following.unbounded:
        return "its frame is unbounded, so it reaches every slice on that side"
    if not keys:
        return []
    if isinstance(keys[0], str) or len({type(k) for k in keys}) > 1:
        return "its slice keys are text, which a frame cannot measure"
    before = _reach(op.frame.preceding, keys[0])
    after = _reach(op.frame.following, keys[0])
    halos = []
    for key in keys:
        first = bisect.bisect_left(keys, key - before)  # type: ignore[operator]
        end = bisect.bisect_right(keys, key + after)  # type: ignore[operator]
        halos.append((first, end))
    return halos


def _reach(offset: Offset, like: SliceKey) -> int | float | dt.timedelta:
    """A bounded offset in the units of slice keys like ``like``: days for dates."""
    if isinstance(like, dt.date):
        days = offset.seconds // 86400 if offset.seconds is not None else int(offset.value or 0)
        return dt.timedelta(days=days)
    return offset.value or 0


def reach_text(op: Window, later: bool, like: SliceKey) -> str:
    """How far a frame reaches towards ``later`` slices (its ``following``) or earlier ones,
    for slice keys like ``like``, as an explanation says it: "6 days", "2"."""
    offset = op.frame.following if later else op.frame.preceding
    if isinstance(like, dt.date) and offset.seconds is None and offset.value is not None:
        days = int(offset.value)
        return f"{days} day{'s' * (days != 1)}"
    return offset.render()


def reaches(op: Window, own: SliceKey, other: SliceKey) -> bool:
    """Whether the frames of slice ``own``'s rows reach slice ``other`` (a bounded range frame
    over the slicing column, keys of one type)."""
    try:
        before, after = _reach(op.frame.preceding, own), _reach(op.frame.following, own)
        return own - before <= other <= own + after  # type: ignore[operator]
    except TypeError:
        return False
