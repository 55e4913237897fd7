"""The first rows of a run's outputs, read from their snapshots in the store, for the report.

Only the first slices are read, until :data:`PREVIEW_ROWS` rows are found (every object read is
verified, as any read is). A snapshot that is no longer in the store (collected by gc) is not an
error here: the preview says so.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chanbatch.errors import ChanbatchError

if TYPE_CHECKING:
    from chanbatch.snapshot import SnapshotStore

PREVIEW_ROWS = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class Preview:
    """The first rows of a snapshot as text cells, or why there are none (``problem``)."""

    columns: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    numeric: tuple[bool, ...] = ()  # per column: right-align it
    total: int = 0
    problem: str = ""


def preview(store: SnapshotStore, snapshot: str, limit: int = PREVIEW_ROWS) -> Preview:
    """The first ``limit`` rows of ``snapshot`` (a full id) in ``store``. Raises nothing: a
    snapshot that cannot be read gives a Preview whose ``problem`` says why."""
    import pyarrow as pa

    from chanbatch.snapshot.objects import get_snapshot
    from chanbatch.snapshot.read import arrow_schema
    from chanbatch.snapshot.select import select_rows

    try:
        manifest = get_snapshot(store.storage, snapshot)
        names = list(arrow_schema(store.storage, manifest).names)
        selection = select_rows(store.storage, manifest.slices, columns=names, limit=limit)
    except (ChanbatchError, OSError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        return Preview(problem=f"snapshot {snapshot[:12]} cannot be read: {message}")
    table = selection.table
    numeric = tuple(
        pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)
        for f in table.schema
    )
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    rows = tuple(tuple(cell(col[r]) for col in columns) for r in range(table.num_rows))
    return Preview(
        columns=tuple(table.column_names),
        rows=rows,
        numeric=numeric,
        total=selection.total,
    )


def cell(value: Any) -> str:
    """A value as the report shows it: ``null`` for a missing value, ISO dates, numbers whole
    (no separators: a year or an id is a number too)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.10g}"  # 6.03, not 6.029999999999999
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    return str(value)
