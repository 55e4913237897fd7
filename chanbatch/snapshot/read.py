"""Read snapshots back as Arrow tables or pandas frames, verified as they are read.

The dask DataFrame view (one partition per object, aligned to slices) is built on top of
:func:`slice_parts` and :func:`load_object` by :mod:`chanbatch.api`, because only the upper
layers import dask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chanbatch.errors import IntegrityError, RefError
from chanbatch.ids import ObjectId
from chanbatch.snapshot.layout import object_path
from chanbatch.snapshot.manifest import SliceEntry, SnapshotManifest
from chanbatch.snapshot.names import SliceKey, parse_key, sort_token
from chanbatch.snapshot.objects import get_object, get_slice
from chanbatch.snapshot.storage import Storage

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq


@dataclass(frozen=True, slots=True, kw_only=True)
class PartRef:
    """One object to read, and the slice it belongs to."""

    key: SliceKey
    slice_id: str
    object: ObjectId
    rows: int
    bytes: int | None = None


def select_slices(
    manifest: SnapshotManifest,
    *,
    key: SliceKey | None = None,
    start: SliceKey | str | None = None,
    stop: SliceKey | str | None = None,
) -> list[SliceEntry]:
    """The slices of ``manifest`` with ``key``, or with ``start <= key <= stop`` (inclusive).

    Raises RefError when ``key`` names no slice.
    """
    if key is not None:
        entry = manifest.slice(_typed(key, manifest))
        if entry is None:
            raise RefError(f"no slice {key!r} in snapshot {manifest.id[:12]}")
        return [entry]
    lo = sort_token(_typed(start, manifest)) if start is not None else None
    hi = sort_token(_typed(stop, manifest)) if stop is not None else None
    return [
        e
        for e in manifest.slices
        if (lo is None or sort_token(e.key) >= lo) and (hi is None or sort_token(e.key) <= hi)
    ]


def slice_parts(storage: Storage, entries: list[SliceEntry]) -> list[PartRef]:
    """Every object of ``entries``, in slice order then part order."""
    out: list[PartRef] = []
    for entry in entries:
        manifest = get_slice(storage, entry.id)
        out.extend(
            PartRef(key=entry.key, slice_id=entry.id, object=p.object, rows=p.rows, bytes=p.bytes)
            for p in manifest.parts
        )
    return out


def load_object(
    storage: Storage,
    oid: str,
    columns: tuple[str, ...] | list[str] | None = None,
    size: int | None = None,
) -> pa.Table:
    """The table in object ``oid`` (only ``columns``, if given), verified: the whole object is
    re-hashed first. Raises IntegrityError if it is missing or corrupt. ``size`` (from its
    manifest) lets a small object be read from an object store in one request."""
    return parse_parquet(get_object(storage, oid, size), columns)


def parse_parquet(data: bytes, columns: tuple[str, ...] | list[str] | None = None) -> pa.Table:
    """The table in the Parquet bytes ``data`` (only ``columns``, if given).

    ``ParquetFile.read`` gives the table ``pq.read_table`` gives, at a third of its cost on a
    slice of a few thousand rows (no dataset machinery), and without importing pandas, which
    ``read_table`` does. One thread: a run reads many objects at once on its own threads.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    # ``ParquetReader``, which ``ParquetFile`` wraps, read directly: ``ParquetFile`` also maps
    # every column's path to its leaves in Python first (a fifth of the cost of reading a
    # small slice). A plain name (no dot) of a leaf column is that leaf, as ``ParquetFile``
    # maps it; any other name (a struct's, a list's, a nested path, one that is missing) is
    # left to ``ParquetFile``.
    reader = pq.ParquetReader()
    reader.open(pa.BufferReader(data), pre_buffer=False)
    if columns is None:
        return reader.read_all(use_threads=False)
    if not any("." in name for name in columns):
        try:
            indices = [reader.column_name_idx(name) for name in columns]
        except KeyError:
            pass
        else:
            return reader.read_all(column_indices=indices, use_threads=False)
    parquet = pq.ParquetFile(pa.BufferReader(data), pre_buffer=False)
    return parquet.read(columns=list(columns), use_threads=False)


def read_table(storage: Storage, entries: list[SliceEntry]) -> pa.Table:
    """The rows of ``entries`` as one Arrow table, in slice order."""
    import pyarrow as pa

    tables = [
        load_object(storage, part.object, size=part.bytes) for part in slice_parts(storage, entries)
    ]
    return pa.concat_tables(tables) if tables else pa.table({})


def read_pandas(storage: Storage, entries: list[SliceEntry]) -> pd.DataFrame:
    """The rows of ``entries`` as one pandas frame with a fresh RangeIndex."""
    return to_pandas(read_table(storage, entries))


def to_pandas(table: pa.Table, *, nullable: frozenset[str] | None = None) -> pd.DataFrame:
    """``table`` as pandas, the one way chanbatch converts stored rows to pandas.

    - dates and decimals stay Arrow-backed (``pd.ArrowDtype``): by default pyarrow turns
      ``date32`` into Python ``date`` objects, which neither compare with date literals nor
      survive dask's string conversion, and decimals into Python ``Decimal`` objects, whose
      type after arithmetic would follow their values;
    - an integer or bool column with nulls becomes pandas' nullable ``Int64`` (``Int32``, ...)
      or ``boolean``, not float64 or Python objects, so that its type survives a round trip
      through pandas: without this an int column with one null comes back as double and a bool
      column as text. Without nulls they stay numpy ``int64`` and ``bool``.

    ``nullable`` names columns to convert to the nullable form even where this table has no
    nulls (a dask partition of a dataset whose other slices have them).
    """
    frame = table.to_pandas(types_mapper=_pandas_type)
    for index, field in enumerate(table.schema):
        if not _has_nullable_form(field.type):
            continue
        column = table.column(index)
        if column.null_count or (nullable is not None and field.name in nullable):
            frame.isetitem(index, column.to_pandas(types_mapper=_nullable_type))
    return frame


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the dtypes :func:`to_pandas` would give it after a round trip through
    Arrow (as a result stored in the cache makes it), so that a consumer sees the same frame
    whether its input was computed in this run or read back from the store.

    Nullable integers and booleans without nulls become numpy ``int64``/``bool``, nullable
    floats become float64 (null as NaN), and an object column goes through Arrow and back.
    """
    import pandas as pd
    import pyarrow as pa
    from pandas.api import types as ptypes

    changes: dict[int, pd.Series] = {}
    for index, dtype in enumerate(frame.dtypes):
        if isinstance(dtype, pd.BooleanDtype) or (
            isinstance(dtype, pd.api.extensions.ExtensionDtype) and ptypes.is_integer_dtype(dtype)
        ):
            column = frame.iloc[:, index]
            if not column.hasnans:
                changes[index] = column.astype(dtype.numpy_dtype)
        elif isinstance(dtype, pd.Float32Dtype | pd.Float64Dtype):
            changes[index] = frame.iloc[:, index].astype(dtype.numpy_dtype)
        elif isinstance(dtype, pd.ArrowDtype) and not _keeps_arrow_dtype(dtype.pyarrow_dtype):
            column = frame.iloc[:, index]
            table = pa.table({"c": pa.chunked_array([column.array.__arrow_array__()])})
            changes[index] = to_pandas(table).iloc[:, 0].set_axis(column.index)
        elif ptypes.is_object_dtype(dtype):
            column = frame.iloc[:, index]
            try:
                array = pa.chunked_array([pa.array(column, from_pandas=True)])
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                continue  # mixed Python objects: left for the writer to refuse, naming them
            if pa.types.is_null(array.type):
                continue
            converted = to_pandas(pa.table({"c": array})).iloc[:, 0]
            changes[index] = converted.set_axis(column.index)
    if not changes:
        return frame
    out = frame.copy(deep=False)
    for index, column in changes.items():
        out.isetitem(index, column)
    return out


def nullable_dtype(dtype: Any) -> Any:
    """The pandas type that holds nulls for values of ``dtype``: nullable ``Int64`` for a numpy
    int, ``boolean`` for a numpy bool, ``dtype`` itself otherwise. Where a step may bring
    nulls into a column (an unmatched join row, a group with no values), converting first keeps
    the column's type from depending on whether it did; :func:`canonical` undoes it where no
    null came."""
    import numpy as np

    if isinstance(dtype, np.dtype) and dtype.kind in "iub":
        return "boolean" if dtype.kind == "b" else "Int64"
    return dtype


def _keeps_arrow_dtype(t: pa.DataType) -> bool:
    import pyarrow as pa

    return pa.types.is_date(t) or pa.types.is_decimal(t)


def _has_nullable_form(t: pa.DataType) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(t) or pa.types.is_boolean(t)


def _nullable_type(t: pa.DataType) -> object:
    import pandas as pd
    import pyarrow as pa

    if pa.types.is_boolean(t):
        return pd.BooleanDtype()
    if pa.types.is_integer(t):
        return pd.api.types.pandas_dtype(str(t).replace("u", "U").replace("i", "I", 1))
    return _pandas_type(t)


def _pandas_type(t: pa.DataType) -> object:
    import pandas as pd

    return pd.ArrowDtype(t) if _keeps_arrow_dtype(t) else None


#: A remote object of at most this many bytes (by its manifest) is read whole for its footer:
#: one request, where a file opened for ranges costs a HEAD and two ranged GETs.
WHOLE_FOOTER_BYTES = 2 * 2**20


def read_footer(storage: Storage, oid: str, size: int | None = None) -> pq.FileMetaData:
    """The Parquet footer of object ``oid``, read without reading (or re-hashing) the data
    (``size``: the object's, from its manifest, when known).

    Used for schemas and statistics only; ``verify`` is what checks integrity.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rel = object_path(oid)
    local = storage.local_path(rel)
    try:
        if local is not None:
            return pq.read_metadata(local)
        if size is not None and size <= WHOLE_FOOTER_BYTES:
            return pq.read_metadata(pa.BufferReader(storage.read_bytes(rel, small=True)))
        with storage.fs.open(storage.full(rel), "rb") as handle:
            return pq.read_metadata(handle)
    except FileNotFoundError:
        storage.distrust(rel)
        raise IntegrityError(f"object {oid[:12]} is missing from the store") from None
    except (OSError, ValueError) as exc:  # pyarrow: OSError, or ArrowInvalid (a ValueError)
        storage.distrust(rel)
        detail = " ".join(str(exc).split())
        raise IntegrityError(f"object {oid[:12]} has an unreadable footer: {detail}") from exc


def read_footers(storage: Storage, parts: list[PartRef]) -> list[pq.FileMetaData]:
    """The Parquet footers of ``parts``, in order, read several at a time (each is one small
    read, a round trip on an object store)."""
    from concurrent.futures import ThreadPoolExecutor

    if len(parts) < 2:
        return [read_footer(storage, p.object, p.bytes) for p in parts]
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda p: read_footer(storage, p.object, p.bytes), parts))


def columns_with_nulls(footers: list[pq.FileMetaData]) -> set[str]:
    """The top-level columns that hold a null in any of these objects, from their statistics
    (a column without statistics counts as holding one)."""
    out: set[str] = set()
    for footer in footers:
        for group in range(footer.num_row_groups):
            row_group = footer.row_group(group)
            for index in range(row_group.num_columns):
                chunk = row_group.column(index)
                name = chunk.path_in_schema.split(".", 1)[0]
                stats = chunk.statistics
                if stats is None or not stats.has_null_count or stats.null_count:
                    out.add(name)
    return out


def arrow_schema(storage: Storage, manifest: SnapshotManifest) -> pa.Schema:
    """The Arrow schema of a snapshot, read from the footer of its first object."""
    first = slice_parts(storage, list(manifest.slices[:1]))
    return read_footer(storage, first[0].object, first[0].bytes).schema.to_arrow_schema()


def _typed(key: SliceKey | str, manifest: SnapshotManifest) -> SliceKey:
    return parse_key(key, manifest.key_type) if isinstance(key, str) else key
