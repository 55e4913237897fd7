"""Cut: the inputs of a freeze as slices, each a :data:`Piece`.

A slice is given whole (a file keyed by its stem, a frame with a slice key, an entry of a
mapping) or is cut out of the inputs by the values of a column. The rows of a cut slice are not
copied out here: each input batch is grouped by key (:class:`_Cut`), and the rows of a few
slices at a time (a wave) are taken out of every batch when the slices are written.
"""

from __future__ import annotations

import os
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from chanbatch.errors import InputError, did_you_mean
from chanbatch.snapshot.freeze.load import _Input
from chanbatch.snapshot.freeze.progress import _Reporter
from chanbatch.snapshot.freeze.schema import _conform
from chanbatch.snapshot.names import KeyType, SliceKey, parse_key
from chanbatch.snapshot.normalize import normalize_batch

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import numpy as np
    import pyarrow as pa

# Threads of the pools that group input batches (here) and take and write slices (write.py).
_WORKERS = max(2, min(8, os.cpu_count() or 2))
# A split works on input batches of this many rows, so that one batch's columns stay in cache
# while its rows are cast, grouped by key and taken out.
_BATCH_ROWS = 1 << 17
# Split slices are taken out and written in waves of about this many bytes (of Arrow memory, as
# the input holds them): one or two waves' copies are all the memory a freeze adds to its input,
# and each wave reads every input batch once, so fewer, bigger waves read the input less often.
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
    """One input batch with its rows grouped by slice key, not yet copied out or normalised."""

    seq: int  # position among all batches of the freeze, so that rows keep the input order
    batch: Any  # pa.RecordBatch, as given (normalised only if not ``lazy``)
    lazy: bool  # the batch's columns still need normalize_batch
    row_bytes: float  # Arrow memory per row of the input this batch is from
    order: np.ndarray | None  # row positions grouped by key, in input order; None: one key
    spans: dict[SliceKey, tuple[int, int]]  # key -> [start, end) in ``order``

    def rows(self, key: SliceKey) -> int:
        start, end = self.spans[key]
        return end - start


@dataclass(frozen=True, slots=True)
class WholePiece:
    """A slice given whole: the tables that hold it, in input order, conformed to the schema."""

    tables: tuple[pa.Table, ...]


@dataclass(frozen=True, slots=True)
class SplitPiece:
    """A slice cut out of the inputs by a column: the cuts that hold its rows, in input order."""

    cuts: tuple[_Cut, ...]


# One slice's rows as a freeze was given them; every slice of one freeze is of the same kind.
Piece = WholePiece | SplitPiece

# The rows of a wave taken out of one cut: the taken batch, and where each key's rows are in it.
_Taken = tuple[Any, dict[SliceKey, tuple[int, int]]]


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
        for cut in _split(inputs, slice_by, reporter):
            for key in cut.spans:
                cuts[key].append(cut)
        return {key: SplitPiece(tuple(found)) for key, found in cuts.items()}
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


def _split(inputs: list[_Input], column: SplitBy, reporter: _Reporter | None = None) -> list[_Cut]:
    """Cut the inputs into batches whose rows are grouped by ``column`` (or the key a
    :class:`KeyFunction` computes), keeping input order.

    Only the key column is read here (a stable sort of its codes, per batch, in a thread pool).
    Rows are copied out, normalised and conformed later, a wave of slices at a time, when the
    slices are written: a normalised or sorted copy of the whole input up front would add as
    much fresh memory as the input takes, and fresh memory is what costs most.
    """
    for item in inputs:
        _check_split_column(item, column)
    batches = []
    for item in inputs:
        row_bytes = item.table.nbytes / max(item.table.num_rows, 1)
        for batch in item.table.to_batches(max_chunksize=_BATCH_ROWS):
            batches.append((item, row_bytes, batch))

    total = sum(batch.num_rows for _, _, batch in batches)
    if reporter is not None:
        reporter.cutting(0, total)

    def cut(seq: int) -> _Cut:
        item, row_bytes, batch = batches[seq]
        if isinstance(column, str):
            done = _group(seq, batch, item.lazy, row_bytes, column)
        else:
            done = _group(seq, batch, item.lazy, row_bytes, _computed_keys(column, batch, item))
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


def _group(
    seq: int, batch: pa.RecordBatch, lazy: bool, row_bytes: float, column: str | pa.Array
) -> _Cut:
    """``batch``'s rows grouped by the values of ``column``, or by the keys given for them."""
    import numpy as np
    import pyarrow.compute as pc

    if isinstance(column, str):
        keys = batch.select([column])
        if lazy:
            keys = normalize_batch(keys)
        key_values = keys.column(0)
    else:
        key_values = column
    encoded = pc.dictionary_encode(key_values)
    values = encoded.dictionary.to_pylist()
    if len(values) <= 1:
        spans = {v: (0, batch.num_rows) for v in values}
        return _Cut(seq=seq, batch=batch, lazy=lazy, row_bytes=row_bytes, order=None, spans=spans)
    # Arrow's stable sort counts small integer codes, and lets go of the GIL while it does, so
    # the batches are grouped in parallel (numpy's sorts hold the GIL).
    order = pc.array_sort_indices(encoded.indices).to_numpy()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    ends = np.cumsum(np.bincount(codes, minlength=len(values))).tolist()
    starts = [0, *ends[:-1]]
    return _Cut(
        seq=seq,
        batch=batch,
        lazy=lazy,
        row_bytes=row_bytes,
        order=order,
        spans={v: (s, e) for v, s, e in zip(values, starts, ends, strict=True)},
    )


def _waves(keys: list[SliceKey], cuts: Mapping[SliceKey, Sequence[_Cut]]) -> list[list[SliceKey]]:
    """``keys`` in order, grouped into runs of about ``_WAVE_BYTES`` (a bigger slice alone)."""
    waves: list[list[SliceKey]] = []
    size = 0.0
    for key in keys:
        n = sum(cut.rows(key) * cut.row_bytes for cut in cuts[key])
        if not waves or size + n > _WAVE_BYTES:
            waves.append([])
            size = 0.0
        waves[-1].append(key)
        size += n
    return waves


def _take_wave(
    pool: ThreadPoolExecutor,
    wave: list[SliceKey],
    cuts: Mapping[SliceKey, Sequence[_Cut]],
    schema: pa.Schema,
) -> list[Future[_Taken]]:
    """Start taking the rows of ``wave`` out of every cut that has some, in input order."""
    having = {cut.seq: cut for key in wave for cut in cuts[key]}
    return [pool.submit(_take, having[seq], wave, schema) for seq in sorted(having)]


def _take(cut: _Cut, wave: list[SliceKey], schema: pa.Schema) -> _Taken:
    """``cut``'s rows of the keys in ``wave``, copied out, grouped by key in wave order,
    normalised and conformed to ``schema``."""
    import numpy as np

    keys = [k for k in wave if k in cut.spans]
    if cut.order is None:  # one key: the batch itself
        taken, spans = cut.batch, {keys[0]: (0, cut.batch.num_rows)}
    else:
        spans = {}
        positions = []
        at = 0
        for key in keys:
            start, end = cut.spans[key]
            positions.append(cut.order[start:end])
            spans[key] = (at, at + end - start)
            at += end - start
        taken = _take_rows(cut.batch, np.concatenate(positions))
    if cut.lazy:
        taken = normalize_batch(taken)
    return _conform(taken, schema), spans


def _take_rows(batch: pa.RecordBatch, positions: np.ndarray) -> pa.RecordBatch:
    """``batch.take(positions)``, also for view types, which have no take kernel."""
    import pyarrow as pa

    indices = pa.array(positions)
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
