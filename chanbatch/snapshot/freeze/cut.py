"""Cut: the inputs of a freeze as slices, each a :data:`Piece`.

A slice is given whole (a file keyed by its stem, a frame with a slice key, an entry of a
mapping) or is cut out of the inputs by the values of a column. To cut, each input batch's rows
are grouped by key in one ``take`` (:class:`_Cut`), and the batch as given is let go of: the
grouped copy takes its place, so a cut input is held once. A slice is then its rows in each
grouped batch, put together when it is written (write.py).
"""

from __future__ import annotations

import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from chanbatch.errors import InputError, did_you_mean
from chanbatch.snapshot.freeze.load import _Input
from chanbatch.snapshot.freeze.progress import _Reporter
from chanbatch.snapshot.freeze.schema import _conform
from chanbatch.snapshot.names import KeyType, SliceKey, parse_key
from chanbatch.snapshot.normalize import normalize_batch

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pyarrow as pa

# Threads of the pools that group input batches (here) and write slices (write.py).
_WORKERS = max(2, min(8, os.cpu_count() or 2))
# A split works on input batches of this many rows, so that one batch's columns stay in cache
# while its rows are cast, grouped by key and taken out.
_BATCH_ROWS = 1 << 17
# Split slices are handed to the writers in waves of about this many bytes (of Arrow memory,
# as cut), the next wave once the one before last is written: the pool's queue stays short, and
# a failed write stops the freeze within two waves.
_WAVE_BYTES = 1 << 28


class KeyFunction(Protocol):
    """A slice key computed from each row (``--slice-by "date(time_hour)"``): ``text`` as the
    user wrote it, the ``columns`` it reads, and the keys of a batch of those columns (one per
    row). The snapshot layer only calls it; what computes it lives above (the API)."""

    @property
    def text(self) -> str: ...

    @property
    def columns(self) -> tuple[str, ...]: ...

    def __call__(self, batch: pa.RecordBatch) -> pa.Array: ...


# How rows are cut into slices: by a column's values, or by a key computed from each row.
SplitBy = str | KeyFunction


@dataclass(frozen=True, slots=True)
class _Cut:
    """One input batch with its rows grouped by slice key (in input order within a key),
    normalised and conformed to the freeze's schema."""

    seq: int  # position among all batches of the freeze, so that rows keep the input order
    batch: Any  # pa.RecordBatch: the rows of each key together, keys in first-seen order
    spans: dict[SliceKey, tuple[int, int]]  # key -> [start, end) of its rows in ``batch``
    row_bytes: float  # Arrow memory per row of ``batch``

    def rows(self, key: SliceKey) -> int:
        start, end = self.spans[key]
        return end - start


@dataclass(frozen=True, slots=True)
class WholePiece:
    """A slice given whole: the tables that hold it, in input order, conformed to the schema."""

    tables: tuple[pa.Table, ...]


@dataclass(frozen=True, slots=True)
class SplitPiece:
    """A slice cut out of the inputs by a column: the cuts that hold its rows, in input order,
    its number of rows, and their bytes of Arrow memory."""

    cuts: tuple[_Cut, ...]
    rows: int
    nbytes: float


# One slice's rows as a freeze was given them; every slice of one freeze is of the same kind.
Piece = WholePiece | SplitPiece


def _cut(
    inputs: list[_Input],
    schema: pa.Schema,
    slice: SliceKey | None,
    slice_by: SplitBy | None,
    kind: KeyType | None,
    reporter: _Reporter | None = None,
) -> dict[SliceKey, Piece]:
    """Each slice key's piece: its whole tables, or the ``_Cut``s of split batches with its rows."""
    if slice is None and slice_by is not None:
        cuts: dict[SliceKey, list[_Cut]] = defaultdict(list)
        rows: dict[SliceKey, int] = defaultdict(int)
        for cut in _split(inputs, slice_by, schema, reporter):
            for key, (start, end) in cut.spans.items():
                cuts[key].append(cut)
                rows[key] += end - start
        return {
            key: SplitPiece(tuple(found), rows[key], _nbytes(key, found))
            for key, found in cuts.items()
        }
    tables: dict[SliceKey, list[pa.Table]] = defaultdict(list)
    for item in inputs:
        table = _conform(item.table, schema)
        if slice is not None:
            key = parse_key(slice, kind) if isinstance(slice, str) and kind else slice
        else:
            assert item.key is not None
            key = item.key
        tables[key].append(table)
    return {key: WholePiece(tuple(found)) for key, found in tables.items()}


def _nbytes(key: SliceKey, cuts: Sequence[_Cut]) -> float:
    """The Arrow memory of ``key``'s rows in ``cuts``."""
    return sum(cut.rows(key) * cut.row_bytes for cut in cuts)


def _split(
    inputs: list[_Input],
    column: SplitBy,
    schema: pa.Schema,
    reporter: _Reporter | None = None,
) -> list[_Cut]:
    """Cut the inputs into batches whose rows are grouped by ``column`` (or the key a
    :class:`KeyFunction` computes), keeping input order, normalised and conformed to ``schema``.

    Each batch is grouped in one stable sort of its key codes and one ``take`` of its rows
    (in a thread pool: both let go of the GIL), while its columns are in cache. The inputs'
    tables are let go of (each ``_Input`` keeps an empty table of its schema), and each batch
    as given once it is grouped: a cut input is held once, as its grouped copy, not twice.
    """
    for item in inputs:
        _check_split_column(item, column)
    batches: list[tuple[_Input, Any] | None] = []
    for item in inputs:
        batches.extend((item, batch) for batch in item.table.to_batches(max_chunksize=_BATCH_ROWS))
        item.table = item.table.schema.empty_table()

    total = sum(batch.num_rows for _, batch in filter(None, batches))
    if reporter is not None:
        reporter.cutting(0, total)

    def cut(seq: int) -> _Cut:
        given = batches[seq]
        assert given is not None
        batches[seq] = None  # the grouped copy takes its place
        item, batch = given
        if not isinstance(column, str):
            keys = _computed_keys(column, batch, item)
        elif item.lazy:
            keys = normalize_batch(batch.select([column])).column(0)
        else:
            keys = batch.column(column)
        done = _group(seq, batch, item.lazy, schema, keys)
        if reporter is not None:
            reporter.cutting(batch.num_rows, total)
        return done

    with ThreadPoolExecutor(_WORKERS) as pool:
        return list(pool.map(cut, range(len(batches))))


def _check_split_column(item: _Input, column: SplitBy) -> None:
    import pyarrow as pa

    schema = item.schema
    if not isinstance(column, str):
        for name in column.columns:
            if name not in schema.names:
                hint = did_you_mean(name, schema.names)
                raise InputError(
                    f"slice key {column.text!r} reads column {name!r}, not found in {item.label}",
                    hint=hint or "available columns: " + ", ".join(schema.names),
                )
        return
    if column not in schema.names:
        hint = did_you_mean(column, schema.names)
        raise InputError(
            f"column {column!r} not found in {item.label}",
            hint=hint or "available columns: " + ", ".join(schema.names),
        )
    ctype = schema.field(column).type
    if not (pa.types.is_integer(ctype) or pa.types.is_date32(ctype) or pa.types.is_string(ctype)):
        raise InputError(
            f"cannot slice by column {column!r} of type {ctype}",
            hint="slice by an integer, date or string column; derive one (for example a "
            "'YYYY-MM' month) first",
        )
    nulls = item.table[column].null_count
    if nulls:
        raise InputError(
            f"column {column!r} has {nulls} null values in {item.label}; every row needs a slice key"
        )


def _computed_keys(key: KeyFunction, batch: pa.RecordBatch, item: _Input) -> pa.Array:
    """The slice keys ``key`` computes for ``batch``'s rows: integers, dates or strings, none
    null; raises InputError naming the key and the input otherwise."""
    import pyarrow as pa

    source = batch.select(list(key.columns))
    if item.lazy:
        source = normalize_batch(source)
    keys = key(source)
    if pa.types.is_integer(keys.type):
        keys = keys.cast(pa.int64())
    elif pa.types.is_large_string(keys.type) or pa.types.is_string_view(keys.type):
        keys = keys.cast(pa.string())
    elif not (pa.types.is_date32(keys.type) or pa.types.is_string(keys.type)):
        raise InputError(
            f"slice key {key.text!r} gives values of type {keys.type} in {item.label}",
            hint="a slice key is an integer, a date or a string: for example "
            "date(time_hour), year_month(l_shipdate) or cast(x, 'int')",
        )
    if keys.null_count:
        raise InputError(
            f"slice key {key.text!r} is null for {keys.null_count} rows of {item.label}; "
            "every row needs a slice key",
            hint="filter those rows out first, or wrap the key in coalesce(...)",
        )
    return keys


def _group(seq: int, batch: pa.RecordBatch, lazy: bool, schema: pa.Schema, keys: pa.Array) -> _Cut:
    """``batch``'s rows grouped by ``keys`` (one per row), normalised and conformed."""
    import numpy as np
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(keys)
    values = encoded.dictionary.to_pylist()
    if len(values) <= 1:
        grouped = batch
        spans = {v: (0, batch.num_rows) for v in values}
    else:
        # Arrow's stable sort counts small integer codes, and lets go of the GIL while it does,
        # so the batches are grouped in parallel (numpy's sorts hold the GIL).
        order = pc.array_sort_indices(encoded.indices)
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        ends = np.cumsum(np.bincount(codes, minlength=len(values))).tolist()
        spans = dict(zip(values, zip([0, *ends[:-1]], ends, strict=True), strict=True))
        grouped = _take_rows(batch, order)
    if lazy:
        grouped = normalize_batch(grouped)
    grouped = _conform(grouped, schema)
    row_bytes = grouped.nbytes / max(grouped.num_rows, 1)
    return _Cut(seq=seq, batch=grouped, spans=spans, row_bytes=row_bytes)


def _take_rows(batch: pa.RecordBatch, indices: pa.Array) -> pa.RecordBatch:
    """``batch.take(indices)``, also for view types, which have no take kernel."""
    import pyarrow as pa

    if not any(_is_view(t) for t in batch.schema.types):
        try:
            return _gather(batch, indices)
        except pa.ArrowNotImplementedError:  # a view type inside a list or struct
            pass
    columns = [_take_column(column, indices) for column in batch.columns]
    return pa.RecordBatch.from_arrays(
        columns,
        schema=pa.schema(
            [pa.field(f.name, c.type) for f, c in zip(batch.schema, columns, strict=True)]
        ),
    )


def _gather(data: Any, indices: pa.Array) -> Any:
    """``take`` without the bounds check: positions come from sorting the batch's own rows."""
    import pyarrow.compute as pc

    return pc.take(data, indices, boundscheck=False)


def _take_column(column: pa.Array, indices: pa.Array) -> pa.Array:
    import pyarrow as pa

    if _is_view(column.type):
        return _take_views(column, indices)
    try:
        return _gather(column, indices)
    except pa.ArrowNotImplementedError:  # a view type inside a list or struct: cast it first
        single = pa.RecordBatch.from_arrays([column], names=["column"])
        return _gather(normalize_batch(single).column(0), indices)


def _is_view(t: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_string_view(t) or pa.types.is_binary_view(t))


def _take_views(array: pa.Array, indices: pa.Array) -> pa.Array:
    """Take rows of a ``string_view`` or ``binary_view`` array: its 16-byte views are taken as
    fixed-size binaries, and keep pointing into the same data buffers, so no string is copied
    here (the cast to ``string`` that follows copies each one once)."""
    import pyarrow as pa

    validity, views, *data = array.buffers()
    fixed = pa.Array.from_buffers(
        pa.binary(16), len(array), [validity, views], array.null_count, array.offset
    )
    taken = _gather(fixed, indices)
    return pa.Array.from_buffers(
        array.type, len(taken), [*taken.buffers(), *data], taken.null_count
    )
