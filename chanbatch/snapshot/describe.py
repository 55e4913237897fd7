"""Describe: a snapshot as a plain value, and how snapshots, inspections and freezes display.

:class:`Snapshot` is built from the snapshot manifest and its ref-log entry alone, so getting
one reads two small files and no data. The ``_repr_html_`` methods are what Jupyter and VS Code
show for these objects; ``__repr__`` is the one-line form a terminal REPL prints. Neither reads
anything from the store.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from chanbatch import html as h
from chanbatch.ids import SnapshotId, short
from chanbatch.snapshot.manifest import SliceEntry
from chanbatch.snapshot.names import KeyType, SliceKey, encode_key
from chanbatch.snapshot.read import select_slices
from chanbatch.snapshot.refs import RefEntry, Resolved

#: Slices a table shows before it elides the middle ones (the first and last half each).
SLICE_ROWS = 12
#: Versions of the ref log an inspection shows, newest first.
HISTORY_ROWS = 10
#: Columns a schema shows before it elides the middle ones.
COLUMN_ROWS = 200
_VALUE_WIDTH = 40
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """One version of a dataset, as its manifest and ref-log entry describe it.

    ``schema`` is ``(name, type)`` pairs with the Arrow type's string form; ``slices`` are in
    key order. For a REF naming one slice (``flights[7]``), ``slice_key`` is that key and
    ``slices``, ``rows`` and ``bytes`` cover that slice only.
    """

    dataset: str
    id: SnapshotId
    version: int
    created_at: str
    author: str = ""
    operation: str = "freeze"
    parent: SnapshotId | None = None
    slice_by: str | None = None
    key_type: KeyType = "str"
    schema: tuple[tuple[str, str], ...] = ()
    slices: tuple[SliceEntry, ...] = ()
    slice_key: SliceKey | None = None
    # a dict cannot be hashed; dataset, id and version already tell snapshots apart
    lineage: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.slices)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.slices)

    @property
    def ref(self) -> str:
        """A REF naming exactly this snapshot (and slice), for ``store.read`` and blueprints."""
        where = f"[{encode_key(self.slice_key)}]" if self.slice_key is not None else ""
        return f"{self.dataset}@{self.id}{where}"

    def document(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "snapshot": self.id,
            "version": self.version,
            "created_at": self.created_at,
            "author": self.author,
            "operation": self.operation,
            "parent": self.parent,
            "slice_by": self.slice_by,
            "slice": encode_key(self.slice_key) if self.slice_key is not None else None,
            "rows": self.rows,
            "bytes": self.bytes,
            "schema": [{"name": n, "type": t} for n, t in self.schema],
            "slices": [s.document() for s in self.slices],
            "lineage": dict(self.lineage),
        }

    def __repr__(self) -> str:
        return (
            f"Snapshot({_label(self.dataset, self.id, self.slice_key)}, version {self.version}, "
            f"{_counts(len(self.slices), self.rows, self.bytes)})"
        )

    def _repr_html_(self) -> str:
        return h.card(
            _title("Snapshot", self.dataset, self.id, self.slice_key),
            h.facts(
                [
                    ("version", self.version),
                    ("rows", h.number(self.rows)),
                    ("size", h.human_bytes(self.bytes)),
                    ("slices", h.number(len(self.slices))),
                    ("sliced by", self.slice_by),
                    ("created", _when(self.created_at)),
                    ("by", self.operation + (f" ({self.author})" if self.author else "")),
                    ("parent", h.short_id(self.parent) if self.parent else None),
                ]
            ),
            schema_table(self.schema),
            slice_table(self.slices),
            _lineage_section(self.lineage),
        )


def describe(resolved: Resolved) -> Snapshot:
    """The :class:`Snapshot` a resolved REF names; reads nothing more."""
    manifest, entry = resolved.manifest, resolved.entry
    slices = (
        select_slices(manifest, key=resolved.slice_key)
        if resolved.slice_key is not None
        else manifest.slices
    )
    return Snapshot(
        dataset=resolved.dataset,
        id=entry.snapshot,
        version=entry.version,
        created_at=entry.created_at,
        author=entry.author,
        operation=entry.operation,
        parent=entry.parent,
        slice_by=manifest.slice_by,
        key_type=manifest.key_type,
        schema=tuple((c.name, c.type) for c in manifest.schema),
        slices=tuple(slices),
        slice_key=resolved.slice_key,
        lineage=dict(entry.lineage),
    )


# -- tables shared by the displays below ---------------------------------------------------------


def schema_table(schema: Sequence[tuple[str, str]]) -> h.Markup:
    return h.section(
        f"Schema ({len(schema)} columns)",
        h.table(
            ["column", "type"], [(n, h.tag("code", t)) for n, t in schema], max_rows=COLUMN_ROWS
        ),
    )


def slice_table(slices: Sequence[Any], *, status: bool = False) -> h.Markup:
    """Key, id, rows and bytes of each slice (first and last few of a long list); with
    ``status``, whether a freeze found it new, replaced or unchanged (``FrozenSlice``)."""
    columns = ["key", "id", "rows", "bytes"] + (["status"] if status else [])

    def row(s: Any) -> tuple[Any, ...]:
        cells: tuple[Any, ...] = (str(encode_key(s.key)), h.short_id(s.id), s.rows, s.bytes)
        if status:
            healed = getattr(s, "healed", False)  # damaged files the freeze rewrote
            cells += (
                "healed"
                if healed
                else h.badge("new", "new")
                if s.new
                else "replaced"
                if getattr(s, "replaced", False)
                else "unchanged",
            )
        return cells

    heading = f"Slices ({len(slices):,})"
    return h.section(heading, h.table(columns, _Rows(slices, row), max_rows=SLICE_ROWS))


def _lineage_section(lineage: Mapping[str, Any]) -> h.Markup | str:
    if not lineage:
        return ""
    rows = [(k, _lineage_value(k, v)) for k, v in lineage.items()]
    return h.section("Lineage", h.table(["field", "value"], rows, max_rows=None, wrap=["value"]))


def _lineage_value(key: str, value: Any) -> Any:
    if isinstance(value, Mapping):
        return h.join((h.join([k, " ", _lineage_value(k, v)]) for k, v in value.items()), ", ")
    if isinstance(value, str) and _HEX64.fullmatch(value):  # an id or a hash
        return h.short_id(value)
    return _text(value)


# -- InspectReport and FreezeResult ---------------------------------------------------------------
# The reports are typed here by the fields their displays read, not by their classes: the
# classes (chanbatch.snapshot.inspect, chanbatch.snapshot.freeze) import these displays, so
# naming them here would tie the modules in a circle.


class ColumnStatsView(Protocol):
    """What a display reads of a column's statistics (``inspect.ColumnStats``)."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def min(self) -> Any: ...
    @property
    def max(self) -> Any: ...
    @property
    def nulls(self) -> int: ...


class InspectView(Protocol):
    """What a display reads of an inspection (``inspect.InspectReport``)."""

    @property
    def resolved(self) -> Resolved: ...
    @property
    def columns(self) -> Sequence[ColumnStatsView]: ...
    @property
    def history(self) -> Sequence[RefEntry]: ...
    @property
    def pinned(self) -> bool: ...


class FrozenSliceView(Protocol):
    """What a display reads of a slice a freeze was given (``freeze.FrozenSlice``)."""

    @property
    def key(self) -> SliceKey: ...
    @property
    def id(self) -> str: ...
    @property
    def rows(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def new(self) -> bool: ...
    @property
    def replaced(self) -> bool: ...
    @property
    def healed(self) -> bool: ...


class FreezeView(Protocol):
    """What a display reads of a freeze's result (``freeze.FreezeResult``)."""

    @property
    def dataset(self) -> str: ...
    @property
    def snapshot(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def created(self) -> bool: ...
    @property
    def slices(self) -> Sequence[FrozenSliceView]: ...
    @property
    def healed(self) -> int: ...


def inspect_repr(report: InspectView) -> str:
    r = report.resolved
    slices = _selected(r)
    rows, size = sum(s.rows for s in slices), sum(s.bytes for s in slices)
    return (
        f"InspectReport({_label(r.dataset, r.snapshot, r.slice_key)}, version {r.entry.version}, "
        f"{_counts(len(slices), rows, size)}, {len(r.manifest.schema)} columns)"
    )


def inspect_html(report: InspectView) -> str:
    r = report.resolved
    snap = describe(r)
    columns = [
        (
            c.name,
            h.tag("code", c.type),
            _text(_stat(c.min)),
            _text(_stat(c.max)),
            c.nulls,
        )
        for c in report.columns
    ]
    history = [
        (
            e.version,
            h.short_id(e.snapshot),
            _when(e.created_at),
            e.operation,
            len(e.added),
            len(e.replaced),
        )
        for e in reversed(report.history[-HISTORY_ROWS:])
    ]
    older = len(report.history) - len(history)
    return h.card(
        _title("Inspect", r.dataset, r.snapshot, r.slice_key),
        h.facts(
            [
                ("version", r.entry.version),
                ("rows", h.number(snap.rows)),
                ("size", h.human_bytes(snap.bytes)),
                ("slices", h.number(len(snap.slices))),
                ("sliced by", snap.slice_by),
                ("created", _when(snap.created_at)),
                ("pinned", "yes" if report.pinned else None),
                ("parent", h.short_id(snap.parent) if snap.parent else None),
            ]
        ),
        h.section(
            f"Columns ({len(columns)}; min, max and nulls from Parquet statistics)",
            h.table(["column", "type", "min", "max", "nulls"], columns, max_rows=COLUMN_ROWS),
        ),
        slice_table(snap.slices),
        _lineage_section(snap.lineage),
        h.section(
            f"History ({len(report.history)} versions"
            + (f", the newest {len(history)} shown)" if older else ")"),
            h.table(
                ["version", "snapshot", "created", "operation", "added", "replaced"],
                history,
                max_rows=None,
            ),
        )
        if history
        else "",
    )


def freeze_repr(result: FreezeView) -> str:
    new = sum(1 for s in result.slices if s.new)
    replaced = sum(1 for s in result.slices if s.replaced)
    rows = sum(s.rows for s in result.slices)
    written = "" if result.created else ", no new version"
    return (
        f"FreezeResult({result.dataset}@{short(result.snapshot)}, version {result.version}"
        f"{written}: {_plural(len(result.slices), 'slice')} given, {new:,} new, "
        + (f"{replaced:,} replaced, " if replaced else "")
        + f"{len(result.slices) - new - replaced:,} unchanged, {_plural(rows, 'row')}"
        + (f", {result.healed:,} healed" if result.healed else "")
        + ")"
    )


def freeze_html(result: FreezeView) -> str:
    new = sum(1 for s in result.slices if s.new)
    replaced = sum(1 for s in result.slices if s.replaced)
    return h.card(
        _title("Freeze", result.dataset, result.snapshot, None),
        h.facts(
            [
                ("version", result.version),
                ("new version", "yes" if result.created else "no: nothing changed"),
                ("slices given", h.number(len(result.slices))),
                ("new", h.number(new)),
                ("replaced", h.number(replaced)),
                ("unchanged", h.number(len(result.slices) - new - replaced)),
                ("rows", h.number(sum(s.rows for s in result.slices))),
                ("size", h.human_bytes(sum(s.bytes for s in result.slices))),
            ]
        ),
        slice_table(result.slices, status=True),
    )


# -- small pieces -----------------------------------------------------------------------------------


class _Rows(Sequence[tuple[Any, ...]]):
    """Table rows made only for the items a table shows: a snapshot may have 100,000 slices."""

    def __init__(self, items: Sequence[Any], row: Callable[[Any], tuple[Any, ...]]) -> None:
        self.items, self.row = items, row

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self.row(item) for item in self.items[index]]
        return self.row(self.items[index])


def _selected(r: Resolved) -> Sequence[SliceEntry]:
    if r.slice_key is None:
        return r.manifest.slices
    return select_slices(r.manifest, key=r.slice_key)


def _label(dataset: str, snapshot: str, key: SliceKey | None) -> str:
    where = f"[{encode_key(key)}]" if key is not None else ""
    return f"{dataset}@{short(snapshot)}{where}"


def _title(kind: str, dataset: str, snapshot: str, key: SliceKey | None) -> h.Markup:
    where = f"[{encode_key(key)}]" if key is not None else ""
    return h.join([kind, " ", h.ref(dataset, snapshot), where])


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _counts(slices: int, rows: int, size: int) -> str:
    return f"{_plural(slices, 'slice')}, {_plural(rows, 'row')}, {h.human_bytes(size)}"


def _when(stamp: str) -> str | None:
    return stamp[:19].replace("T", " ") + " UTC" if stamp else None


def _stat(value: Any) -> Any:
    """A Parquet statistic as text: numbers as written (a year is 2013, not 2,013)."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return None if value is None else str(jsonable(value))


def _text(value: Any) -> Any:
    """A value shortened for a table cell, its whole text in a tooltip when cut."""
    if value is None:
        return None
    text = str(value)
    if len(text) <= _VALUE_WIDTH:
        return text
    return h.tag("span", text[: _VALUE_WIDTH - 1] + "\u2026", title=text)


def jsonable(value: Any) -> Any:
    """A JSON-friendly form of a Parquet statistics value."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.hex()
    return str(value)
