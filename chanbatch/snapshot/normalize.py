"""Column-type normalisation and the one place Parquet writer options are fixed.

A slice's bytes must not depend on how its frame was built: pandas or CSV, ``large_string`` or
``string_view``, naive or zoned timestamps, a pandas index or none. So before anything is
written, every table goes through :func:`normalize_table` (or, when freeze cuts it into slices,
a ``lazy`` :func:`normalize_table` and then :func:`normalize_batch` on each batch of rows it
takes out, which gives the same types and values):

- strings, binaries and lists use their 32-bit offset forms (``string``, ``binary``, ``list``);
- dictionary-encoded (categorical) columns are decoded to their value type;
- timestamps are UTC: naive ones are taken to be UTC already, zoned ones are converted. The unit
  is microseconds, or nanoseconds where microseconds would lose precision;
- ``date64`` becomes ``date32``;
- schema and field metadata (pandas index, Parquet field ids) are dropped.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

# Fixed writer options: changing any of them changes every object id, so it is a format change.
WRITE_OPTIONS: dict[str, Any] = {
    # snappy: the fastest codec every Parquet reader supports. zstd-1 makes objects about 22%
    # smaller but freezes 0.3-0.6x of a write_table slower (docs/performance.md).
    "compression": "snappy",
    "use_dictionary": True,
    "write_statistics": True,
    "version": "2.6",
    "data_page_version": "1.0",
    "row_group_size": 1 << 20,
    # Decimals of up to 18 digits as Parquet INT32/INT64 (the DECIMAL logical type over an
    # integer, which every Parquet reader supports) rather than big-endian fixed-size bytes:
    # reading them back is a widening, not a byte swap per value. A cold TPC-H Q1 on
    # decimal128(15,2) columns reads its slices in less than half the time (docs/performance.md).
    "store_decimal_as_integer": True,
}

# A slice larger than this is written as several objects (parts) of this many rows.
PART_ROWS = 1 << 23


def normalize_type(t: pa.DataType) -> pa.DataType:
    """The canonical form of an Arrow type (see the module docstring)."""
    import pyarrow as pa

    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_dictionary(t):
        return normalize_type(t.value_type)
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC")
    if pa.types.is_date64(t):
        return pa.date32()
    if pa.types.is_large_list(t) or pa.types.is_list(t) or pa.types.is_list_view(t):
        return pa.list_(normalize_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, normalize_type(f.type), f.nullable) for f in t.fields])
    return t


def normalize_table(table: pa.Table, *, lazy: bool = False) -> pa.Table:
    """``table`` with canonical column types and no metadata.

    With ``lazy``, only the columns whose canonical type depends on their values are cast here:
    timestamps, whose unit becomes microseconds or, where that would lose digits, nanoseconds.
    Every other column keeps its type, and :func:`normalize_batch` casts it batch by batch, to
    the type :func:`normalize_schema` names.
    """
    import pyarrow as pa

    def one(item: tuple[pa.Field, pa.ChunkedArray]) -> pa.ChunkedArray:
        field, column = item
        if lazy and not pa.types.is_timestamp(field.type):
            return column
        target = normalize_type(field.type)
        return _cast(column, field.type, target) if target != field.type else column

    items = list(zip(table.schema, table.columns, strict=True))
    casts = [f for f, _ in items if normalize_type(f.type) != f.type]
    if lazy:
        casts = [f for f in casts if pa.types.is_timestamp(f.type)]
    if len(casts) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max(2, min(8, os.cpu_count() or 2))) as pool:  # casts drop the GIL
            columns = list(pool.map(one, items))
    else:
        columns = [one(item) for item in items]
    fields = [
        pa.field(f.name, c.type, nullable=True) for (f, _), c in zip(items, columns, strict=True)
    ]
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def normalize_schema(schema: pa.Schema) -> pa.Schema:
    """The schema :func:`normalize_batch` gives the batches of a ``lazy`` :func:`normalize_table`."""
    import pyarrow as pa

    return pa.schema([pa.field(f.name, _batch_type(f.type), nullable=True) for f in schema])


def normalize_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A batch of a ``lazy`` :func:`normalize_table` with the rest of its columns cast: the same
    values and types a whole-table :func:`normalize_table` gives these rows."""
    import pyarrow as pa

    schema = normalize_schema(batch.schema)
    columns = [
        column if field.type == column.type else _cast(column, column.type, field.type)
        for field, column in zip(schema, batch.columns, strict=True)
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _batch_type(t: pa.DataType) -> pa.DataType:
    import pyarrow as pa

    return t if pa.types.is_timestamp(t) else normalize_type(t)


def _cast(column: pa.ChunkedArray, source: pa.DataType, target: pa.DataType) -> pa.ChunkedArray:
    import pyarrow as pa

    if pa.types.is_timestamp(source):
        if source.tz is None:  # naive timestamps are taken to be UTC: relabel, do not shift
            column = column.cast(pa.timestamp(source.unit, tz="UTC"))
        try:
            return column.cast(target, safe=True)
        except pa.ArrowInvalid:  # sub-microsecond values: keep every digit
            return column.cast(pa.timestamp("ns", tz="UTC"))
    return column.cast(target)


def type_name(t: pa.DataType) -> str:
    """The string form of a type used in manifests and messages."""
    return str(t)
