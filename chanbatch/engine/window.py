"""The ``window`` operation on pandas frames: per row, functions over the rows of its frame.

Rows are put in order once (a stable sort by the partition columns, then the order columns,
nulls last), each row's frame becomes a pair of positions ``[start, end)`` in that order, and
every function is computed for all rows at once from those pairs:

- ``count``, ``sum`` and ``mean`` from sums over the frames: exact prefix sums for integers,
  one sum per frame for floats and decimals (so a frame's sum does not depend on the rows
  before it);
- ``min`` and ``max`` from the ranks of the values, through a sparse table (each frame is
  covered by two power-of-two blocks), so any ordered type keeps its type;
- ``lag``, ``lead`` and ``row_number`` from positions within the partition.

Frames follow SQL (as DuckDB computes ``OVER (PARTITION BY ... ORDER BY ... RANGE|ROWS BETWEEN
...)``): a range frame holds the rows whose order value is within the offsets of the row's
(peers included); a row whose order value is null has only its null peers in a bounded range
frame, and rows with nulls sort last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from chanbatch.blueprint.model import Frame, Offset, Window
from chanbatch.blueprint.nodes import WindowCall
from chanbatch.engine.aggregate_kernels import is_decimal, sum_type
from chanbatch.engine.pandas_eval import evaluate
from chanbatch.snapshot.read import nullable_dtype

if TYPE_CHECKING:
    import pandas as pd

# A frame sum is computed frame by frame while the frames hold at most this many rows per row
# on average; beyond, from prefix sums (floats may then differ in their last bits).
_SUM_BY_FRAME = 64
_NS_PER_SECOND = 1_000_000_000


def window(
    op: Window, frame: pd.DataFrame, keep: slice | None = None, *, segment: str | None = None
) -> pd.DataFrame:
    """``frame`` with ``op``'s columns added (or replaced), its rows in their order; with
    ``keep``, only those rows are returned (the others were read for their frames only).

    With ``segment``, the name of a column of ``frame`` that is the first of ``op``'s
    partition columns, each of its values marks a segment computed as if alone: a frame sum
    takes the way it would over the segment's rows alone (see :func:`_sum`), so that many
    slices' windows computed at once give each one's values to the bit
    (:func:`chanbatch.engine.execute.window_slices`)."""
    order = _Order.of(op, frame)
    segments = _segments(frame[segment], order) if segment is not None else None
    out = frame.copy(deep=False)
    for name, call in op.columns.items():
        out[name] = _column(call, op.frame, frame, order, segments)
    if keep is not None:
        out = out.iloc[keep]
    return out.reset_index(drop=True)


def _segments(tags: pd.Series, order: _Order) -> np.ndarray:
    """Where each segment's rows begin in window order, and the end: its values
    (``tags``) lead the partition columns, so each segment's rows are together."""
    ordered = tags.to_numpy(dtype=np.int64)[order.rows]
    starts = np.flatnonzero(np.diff(ordered, prepend=ordered[:1] - 1))
    return np.append(starts.astype(np.int64), len(ordered))


@dataclass(frozen=True, slots=True)
class _Order:
    """The rows in window order: ``rows[i]`` is the position in the frame of the ``i``-th row
    in order; ``first``/``last`` the bounds ``[first, last)`` of its partition; ``values``
    the order column as numbers (for a range frame; for several order columns, their peer
    groups), with ``null_from`` the first position of its partition's rows whose order value
    is null."""

    rows: np.ndarray
    first: np.ndarray
    last: np.ndarray
    values: np.ndarray | None
    null_from: np.ndarray | None
    unit: str  # what one unit of ``values`` is: "number", "days" or "ns"

    @classmethod
    def of(cls, op: Window, frame: pd.DataFrame) -> _Order:
        keys = [*op.partition_by, *op.order_by]
        n = len(frame)
        if keys and n:
            ordered = frame[keys].reset_index(drop=True)
            ordered = ordered.sort_values(keys, kind="stable", na_position="last")
            rows = ordered.index.to_numpy()
        else:
            rows = np.arange(n)
        if op.partition_by and n:
            groups = frame[list(op.partition_by)].iloc[rows]
            ids = groups.groupby(list(op.partition_by), dropna=False, sort=False).ngroup()
            starts = np.flatnonzero(np.diff(ids.to_numpy(), prepend=-1))
        else:
            starts = np.zeros(1 if n else 0, dtype=np.int64)
        bounds = np.append(starts, n)
        sizes = np.diff(bounds)
        first = np.repeat(bounds[:-1], sizes)
        last = np.repeat(bounds[1:], sizes)
        values = null_from = None
        unit = "number"
        if op.frame.unit == "range" and n:
            column = frame[op.order_by[0]].iloc[rows] if len(op.order_by) == 1 else None
            if column is not None and _measurable(column):
                values, unit = _as_numbers(column)
                null = column.isna().to_numpy()
            else:  # offsets are 0 or unbounded (text, several columns): frames end at peers
                peers = frame[keys].iloc[rows].groupby(keys, dropna=False, sort=False).ngroup()
                values = peers.to_numpy().astype(np.float64)
                null = np.zeros(n, dtype=bool)
            # nulls sort last in each partition: where each partition's nulls begin
            valid = np.add.reduceat((~null).astype(np.int64), bounds[:-1])
            null_from = np.repeat(bounds[:-1] + valid, sizes)
        return cls(rows, first, last, values, null_from, unit)

    def bounds(self, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
        """Each row's frame as positions ``[start, end)`` in order."""
        n = len(self.rows)
        here = np.arange(n)
        if frame.unit == "rows":
            before, after = frame.preceding.value, frame.following.value
            start = self.first if before is None else np.maximum(self.first, here - before)
            end = self.last if after is None else np.minimum(self.last, here + after + 1)
            return start, np.maximum(end, start)
        if self.values is None or self.null_from is None:  # no rows
            return here, here
        start = np.empty(n, dtype=np.int64)
        end = np.empty(n, dtype=np.int64)
        before = _reach(frame.preceding, self.unit)
        after = _reach(frame.following, self.unit)
        for head in np.flatnonzero(np.diff(self.first, prepend=-1)):
            tail, nulls = self.last[head], self.null_from[head]
            values = self.values[head:nulls]
            valid = slice(head, nulls)
            if before is None:
                start[valid] = head
            else:
                start[valid] = head + np.searchsorted(values, values - before, side="left")
            if after is None:
                end[valid] = tail
            else:
                end[valid] = head + np.searchsorted(values, values + after, side="right")
            # a null order value: its peers are the other nulls; unbounded reaches further
            start[nulls:tail] = head if before is None else nulls
            end[nulls:tail] = tail
        return start, np.maximum(end, start)


def _reach(offset: Offset, unit: str) -> int | float | None:
    """How far an offset reaches, in units of the order values; None when unbounded."""
    if offset.unbounded:
        return None
    if offset.seconds is not None:
        return offset.seconds * _NS_PER_SECOND if unit == "ns" else offset.seconds // 86400
    value = offset.value or 0
    return value * 86400 * _NS_PER_SECOND if unit == "ns" else value


def _measurable(column: pd.Series) -> bool:
    """Whether a range frame can measure distances in ``column``: numbers, dates, timestamps."""
    import pandas as pd
    import pyarrow as pa

    dtype = column.dtype
    if isinstance(dtype, pd.ArrowDtype):
        kind = dtype.pyarrow_dtype
        return bool(
            pa.types.is_integer(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_decimal(kind)
            or pa.types.is_temporal(kind)
        )
    return bool(
        pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
    ) or pd.api.types.is_datetime64_any_dtype(dtype)


def _as_numbers(column: pd.Series) -> tuple[np.ndarray, str]:
    """A range frame's order column as numbers to search (a null's number is arbitrary: nulls
    are told apart by their mask), and what one unit of them is: "days" for dates, "ns" for
    timestamps (exact int64), else "number" (float64)."""
    import pandas as pd
    import pyarrow as pa

    dtype = column.dtype
    null = column.isna().to_numpy()
    if isinstance(dtype, pd.ArrowDtype) and pa.types.is_date(dtype.pyarrow_dtype):
        days = pa.array(column).cast(pa.date32()).cast(pa.int32()).fill_null(0)
        return days.to_numpy().astype(np.int64), "days"
    if pd.api.types.is_datetime64_any_dtype(dtype) or (
        isinstance(dtype, pd.ArrowDtype) and pa.types.is_timestamp(dtype.pyarrow_dtype)
    ):
        stamps = pd.to_datetime(column, utc=True).dt.as_unit("ns")
        ns = stamps.to_numpy(dtype="datetime64[ns]").view(np.int64)
        return np.where(null, 0, ns), "ns"
    return column.to_numpy(dtype=np.float64, na_value=np.nan), "number"


def _column(
    call: WindowCall,
    frame_spec: Frame,
    frame: pd.DataFrame,
    order: _Order,
    segments: np.ndarray | None = None,
) -> Any:
    """One window function's values, one per row of ``frame`` in its order."""
    import pandas as pd

    n = len(order.rows)
    values = evaluate(call.arg, frame) if call.arg is not None else None
    if isinstance(values, pd.Series):
        values = values.reset_index(drop=True)
    elif values is not None:  # a constant
        values = pd.Series([values] * n)
    in_order = values.iloc[order.rows].reset_index(drop=True) if values is not None else None
    here = np.arange(n)
    match call.func:
        case "row_number":
            result: Any = pd.Series(here - order.first + 1, dtype="int64")
        case "lag" | "lead":
            assert in_order is not None
            step = -(call.offset or 0) if call.func == "lag" else (call.offset or 0)
            result = _shifted(in_order, here + step, order)
        case _:
            start, end = order.bounds(frame_spec)
            result = _framed(call.func, in_order, start, end, segments)
    # back from window order to the frame's
    back = np.empty(n, dtype=np.int64)
    back[order.rows] = here
    return result.iloc[back].reset_index(drop=True) if n else result


def _shifted(values: pd.Series, at: np.ndarray, order: _Order) -> pd.Series:
    inside = (at >= order.first) & (at < order.last)
    taken = values.astype(nullable_dtype(values.dtype)).iloc[np.where(inside, at, 0)]
    return taken.reset_index(drop=True).where(inside)


def _framed(
    func: str,
    values: pd.Series | None,
    start: np.ndarray,
    end: np.ndarray,
    segments: np.ndarray | None = None,
) -> pd.Series:
    import pandas as pd

    size = end - start
    if values is None:  # count()
        return pd.Series(size, dtype="int64")
    valid = values.notna().to_numpy()
    counts = _prefix(valid.astype(np.int64), start, end)
    if func == "count":
        return pd.Series(counts, dtype="int64")
    if func in ("min", "max"):
        return _extreme(func, values, valid, start, end, counts)
    total = _sum(values, valid, start, end, segments)
    if func == "sum":
        return total.where(counts > 0)
    numbers = total.astype("float64") if not is_decimal(values) else _decimal_floats(total)
    return (numbers / np.where(counts > 0, counts, 1)).where(counts > 0)


def _prefix(values: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Exact sums of integer ``values`` over each ``[start, end)``."""
    sums = np.concatenate(([0], np.cumsum(values, dtype=np.int64)))
    return sums[end] - sums[start]


def _sum(
    values: pd.Series,
    valid: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    segments: np.ndarray | None = None,
) -> pd.Series:
    """Each frame's sum of ``values`` (nulls skipped), in the type SQL sums them to. Float
    sums are taken frame by frame, or from prefix sums where the frames are long: decided,
    and the prefix summed, per segment (``segments``: their bounds in window order), as if
    each were alone."""
    import pandas as pd
    import pyarrow as pa

    n = len(values)
    if is_decimal(values):
        objects = np.where(valid, values.to_numpy(dtype=object, na_value=None), 0)
        sums = _each_frame(objects, start, end, zero=0)
        dtype = sum_type(values.dtype)
        return pd.Series(pa.array(list(sums), type=dtype.pyarrow_dtype), dtype=dtype)
    if pd.api.types.is_integer_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        numbers = values.to_numpy(dtype=np.int64, na_value=0)
        return pd.Series(_prefix(numbers, start, end), dtype="Int64")
    floats = values.to_numpy(dtype=np.float64, na_value=0.0)
    floats = np.where(valid, floats, 0.0)
    bounds = np.array([0, n]) if segments is None else segments
    out = np.empty(n, dtype=np.float64)
    for first, last in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        own = floats[first:last]
        begin, stop = start[first:last] - first, end[first:last] - first
        if int((stop - begin).sum()) <= _SUM_BY_FRAME * max(last - first, 1):
            out[first:last] = _each_frame(own, begin, stop, zero=0.0)
        else:
            sums = np.concatenate(([0.0], np.cumsum(own)))
            out[first:last] = sums[stop] - sums[begin]
    return pd.Series(out, dtype="float64")


def _each_frame(values: np.ndarray, start: np.ndarray, end: np.ndarray, zero: Any) -> np.ndarray:
    """The sum of each ``values[start:end]``, added up frame by frame from its first row."""
    n = len(start)
    if not n:
        return np.zeros(0, dtype=values.dtype)
    # np.add.reduceat sums values[i:j] for consecutive index pairs; an empty frame gives the
    # value at its start, masked below. Indices must lie inside the array.
    padded = np.append(values, np.array([zero], dtype=values.dtype))
    index = np.empty(2 * n, dtype=np.int64)
    index[0::2] = start
    index[1::2] = end
    sums = np.add.reduceat(padded, index)[0::2]
    return np.where(end > start, sums, zero)


def _decimal_floats(total: pd.Series) -> pd.Series:
    """Decimal sums as floats, each correctly rounded (an Arrow cast is not)."""
    import pandas as pd

    sums = total.to_numpy(dtype=object, na_value=None)
    return pd.Series([np.nan if v is None else float(v) for v in sums], dtype="float64")


def _extreme(
    func: str,
    values: pd.Series,
    valid: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    counts: np.ndarray,
) -> pd.Series:
    """Each frame's least (``min``) or greatest value, in the values' own type: the frames'
    extreme ranks from a sparse table, read back as the values holding them."""
    n = len(values)
    ranks = values.rank(method="min", na_option="keep").to_numpy(dtype=np.float64, na_value=np.nan)
    fill = np.inf if func == "min" else -np.inf
    ranks = np.where(valid, ranks, fill)
    pick = np.minimum if func == "min" else np.maximum
    best = _sparse_query(ranks, start, end, pick, fill)
    found = np.isfinite(best) & (counts > 0)
    holder = np.zeros(n + 1, dtype=np.int64)
    positions = np.flatnonzero(valid)
    holder[ranks[positions].astype(np.int64)] = positions
    at = np.where(found, holder[np.where(found, best, 0).astype(np.int64)], 0)
    taken = values.astype(nullable_dtype(values.dtype)).iloc[at].reset_index(drop=True)
    return taken.where(found)


def _sparse_query(
    values: np.ndarray, start: np.ndarray, end: np.ndarray, pick: Any, fill: float
) -> np.ndarray:
    """``pick`` (np.minimum or np.maximum) over each ``values[start:end]``; ``fill`` for an
    empty frame."""
    n = len(values)
    if not n:
        return values
    size = np.maximum(end - start, 1)
    level = np.floor(np.log2(size)).astype(np.int64)
    table = [values]
    while (1 << len(table)) <= int(size.max()):
        half = 1 << (len(table) - 1)
        prev = table[-1]
        table.append(pick(prev[:-half], prev[half:]) if len(prev) > half else prev[:0])
    result = np.full(len(start), fill)
    for k in np.unique(level):
        rows = np.flatnonzero(level == k)
        block = table[k]
        left = block[np.minimum(start[rows], len(block) - 1)]
        right = block[np.minimum(end[rows] - (1 << k), len(block) - 1)]
        result[rows] = pick(left, right)
    return np.where(end > start, result, fill)
