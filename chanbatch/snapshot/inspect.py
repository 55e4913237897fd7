"""Inspect: a snapshot's schema, counts, slices, per-column statistics, lineage and history.

Column statistics come from the Parquet footers alone (min, max and null count per row group,
merged), so inspecting a large snapshot reads kilobytes, not the data. Footers are not
re-hashed here; ``verify`` is the integrity check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chanbatch.snapshot import describe, refs
from chanbatch.snapshot.describe import jsonable
from chanbatch.snapshot.names import encode_key
from chanbatch.snapshot.pins import list_pins
from chanbatch.snapshot.read import read_footers, select_slices, slice_parts
from chanbatch.snapshot.refs import Resolved
from chanbatch.snapshot.storage import Storage


@dataclass(slots=True, kw_only=True)
class ColumnStats:
    name: str
    type: str
    min: Any = None
    max: Any = None
    nulls: int = 0
    complete: bool = True  # False when some row group had no min/max statistics

    def document(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "min": jsonable(self.min),
            "max": jsonable(self.max),
            "nulls": self.nulls,
        }


@dataclass(slots=True, kw_only=True)
class InspectReport:
    resolved: Resolved
    columns: list[ColumnStats] = field(default_factory=list)
    history: list[refs.RefEntry] = field(default_factory=list)
    pinned: bool = False

    def __repr__(self) -> str:
        return describe.inspect_repr(self)

    def _repr_html_(self) -> str:
        return describe.inspect_html(self)

    def document(self) -> dict[str, Any]:
        r = self.resolved
        m = r.manifest
        slices = select_slices(m, key=r.slice_key) if r.slice_key is not None else m.slices
        return {
            "dataset": r.dataset,
            "snapshot": r.snapshot,
            "version": r.entry.version,
            "slice": encode_key(r.slice_key) if r.slice_key is not None else None,
            "rows": sum(s.rows for s in slices),
            "bytes": sum(s.bytes for s in slices),
            "slice_by": m.slice_by,
            "key_type": m.key_type,
            "pinned": self.pinned,
            "schema": [{"name": c.name, "type": c.type} for c in m.schema],
            "columns": [c.document() for c in self.columns],
            "slices": [s.document() for s in slices],
            "lineage": {
                "parent": r.entry.parent,
                "operation": r.entry.operation,
                "created_at": r.entry.created_at,
                "author": r.entry.author,
                **r.entry.lineage,
            },
            "history": [
                {
                    "version": e.version,
                    "snapshot": e.snapshot,
                    "created_at": e.created_at,
                    "author": e.author,
                    "operation": e.operation,
                    "added": list(e.added),
                    "replaced": list(e.replaced),
                }
                for e in self.history
            ],
        }


def inspect(storage: Storage, resolved: Resolved) -> InspectReport:
    """Gather everything ``snapshot inspect`` shows about a resolved REF."""
    manifest = resolved.manifest
    entries = (
        select_slices(manifest, key=resolved.slice_key)
        if resolved.slice_key is not None
        else list(manifest.slices)
    )
    parts = slice_parts(storage, entries)
    footers = read_footers(storage, parts)
    stats = {c.name: ColumnStats(name=c.name, type=c.type) for c in manifest.schema}
    for meta in footers:
        for rg in range(meta.num_row_groups):
            group = meta.row_group(rg)
            for i in range(group.num_columns):
                chunk = group.column(i)
                name = chunk.path_in_schema.split(".", 1)[0]
                column = stats.get(name)
                if column is None or chunk.path_in_schema != name:
                    continue  # nested leaves carry no useful top-level stats
                st = chunk.statistics
                if st is None:
                    column.complete = False
                    continue
                if st.has_null_count:
                    column.nulls += st.null_count
                if st.has_min_max:
                    column.min = st.min if column.min is None else min(column.min, st.min)
                    column.max = st.max if column.max is None else max(column.max, st.max)
                elif group.num_rows > st.null_count:
                    column.complete = False
    pinned = any(p.snapshot == resolved.snapshot for p in list_pins(storage))
    return InspectReport(
        resolved=resolved,
        columns=list(stats.values()),
        history=refs.history(storage, resolved.dataset),
        pinned=pinned,
    )
