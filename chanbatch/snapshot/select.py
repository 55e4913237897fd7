"""Select rows of a snapshot: some columns, the rows a condition keeps, sorted, the first N.

What ``chanbatch show`` prints and ``Store.select`` returns. Only what is needed is read:

- columns are projected in the Parquet read (the shown ones, plus those the condition and the
  sort read);
- without a sort, reading stops at the first slice that completes the limit;
- with a sort and a limit, each slice keeps only its first N rows in the sort's order before the
  slices are merged, so memory holds at most N rows per slice read.

The condition is a function from a table to a boolean array, built by the layers that know the
expression language (:mod:`chanbatch.api`); a null in it does not select the row, as in SQL.
Sorting is stable (ties keep slice order, then row order) and puts nulls last in either
direction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chanbatch.snapshot.manifest import SliceEntry
from chanbatch.snapshot.read import PartRef, load_object, slice_parts
from chanbatch.snapshot.storage import Storage

if TYPE_CHECKING:
    import pyarrow as pa

#: A condition: the rows of a table it keeps, as a boolean array (null keeps nothing).
Condition = Callable[["pa.Table"], Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class SortKey:
    """One column of a sort, and its direction."""

    column: str
    descending: bool = False

    @property
    def text(self) -> str:
        return f"-{self.column}" if self.descending else self.column


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """The selected rows, and how they relate to the rest.

    ``table`` holds the selected columns of at most ``limit`` rows. ``total`` is the number of
    rows in the REF; ``matched`` the number the condition keeps (``total`` without one), or None
    when reading stopped early, before every slice was seen; ``slices_read`` of ``slices`` slices
    were read.
    """

    table: pa.Table
    total: int
    matched: int | None
    slices: int
    slices_read: int

    @property
    def shown(self) -> int:
        return int(self.table.num_rows)

    @property
    def complete(self) -> bool:
        """Whether ``table`` holds every row that matched."""
        return self.matched is not None and self.matched == self.shown


def select_rows(
    storage: Storage,
    entries: Sequence[SliceEntry],
    *,
    columns: Sequence[str],
    condition: Condition | None = None,
    condition_columns: Sequence[str] = (),
    sort: Sequence[SortKey] = (),
    limit: int | None = None,
) -> Selection:
    """The rows of ``entries`` (slices, in order) that ``condition`` keeps, sorted by ``sort``,
    at most ``limit`` of them, with only ``columns``.

    Every object read is re-hashed first (IntegrityError if it is corrupt). The caller checks
    that the column names exist.
    """
    import pyarrow as pa

    wanted = _unique([*columns, *condition_columns, *(k.column for k in sort)])
    total = sum(e.rows for e in entries)
    kept: list[pa.Table] = []
    matched = 0
    read: set[Any] = set()
    stopped = False
    for part in slice_parts(storage, list(entries)):
        if limit is not None and not sort and matched >= limit:
            stopped = True
            break
        read.add(part.key)
        table = _keep(_load(storage, part, wanted), condition)
        matched += table.num_rows
        if sort and limit is not None:
            table = table.take(_order(table, sort)[:limit])
        kept.append(table)
    table = pa.concat_tables(kept) if kept else _empty(storage, entries, wanted)
    if sort:
        order = _order(table, sort)
        table = table.take(order if limit is None else order[:limit])
    elif limit is not None:
        table = table.slice(0, limit)
    known = None if (stopped and condition is not None) else matched if not stopped else total
    return Selection(
        table=table.select(list(columns)),
        total=total,
        matched=known,
        slices=len(entries),
        slices_read=len(read),
    )


def slice_tables(
    storage: Storage,
    entry: SliceEntry,
    *,
    columns: Sequence[str],
    condition: Condition | None = None,
    condition_columns: Sequence[str] = (),
) -> Iterator[pa.Table]:
    """The rows of slice ``entry`` that ``condition`` keeps, with only ``columns``, one table per
    stored object: what an export streams out, one object at a time."""
    wanted = _unique([*columns, *condition_columns])
    for part in slice_parts(storage, [entry]):
        yield _keep(_load(storage, part, wanted), condition).select(list(columns))


def _load(storage: Storage, part: PartRef, columns: list[str]) -> pa.Table:
    return load_object(storage, part.object, columns, part.bytes)


def _keep(table: pa.Table, condition: Condition | None) -> pa.Table:
    if condition is None:
        return table
    return table.filter(condition(table), null_selection_behavior="drop")


def _order(table: pa.Table, sort: Sequence[SortKey]) -> Any:
    import pyarrow.compute as pc

    keys = [(k.column, "descending" if k.descending else "ascending", "at_end") for k in sort]
    return pc.sort_indices(table, sort_keys=keys)


def _empty(storage: Storage, entries: Sequence[SliceEntry], columns: list[str]) -> pa.Table:
    """A table without rows, of ``columns``' types (from the first object's footer)."""
    import pyarrow as pa

    from chanbatch.snapshot.read import read_footer

    parts = slice_parts(storage, list(entries[:1]))
    if not parts:
        return pa.table({c: pa.array([], pa.null()) for c in columns})
    schema = read_footer(storage, parts[0].object, parts[0].bytes).schema.to_arrow_schema()
    return schema.empty_table().select(columns)


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))
