"""Read snapshots back as Arrow tables or pandas frames, verified as they are read.

The dask DataFrame view (one partition per object, aligned to slices) is built on top of
:func:`slice_parts` and :func:`load_object` by :mod:`chanbatch.api`, because only the upper
layers import dask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

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
    out = []
    for entry in entries:
        manifest = get_slice(storage, entry.id)
        out.extend(
            PartRef(key=entry.key, slice_id=entry.id, object=p.object, rows=p.rows)
            for p in manifest.parts
        )
    return out


def load_object(
    storage: Storage, oid: str, columns: tuple[str, ...] | list[str] | None = None
) -> pa.Table:
    """The table in object ``oid`` (only ``columns``, if given), verified: the whole object is
    re-hashed first. Raises IntegrityError if it is missing or corrupt."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.read_table(
        pa.BufferReader(get_object(storage, oid)),
        columns=list(columns) if columns is not None else None,
    )


def read_table(storage: Storage, entries: list[SliceEntry]) -> pa.Table:
    """The rows of ``entries`` as one Arrow table, in slice order."""
    import pyarrow as pa

    tables = [load_object(storage, part.object) for part in slice_parts(storage, entries)]
    return pa.concat_tables(tables) if tables else pa.table({})


def read_pandas(storage: Storage, entries: list[SliceEntry]) -> pd.DataFrame:
    """The rows of ``entries`` as one pandas frame with a fresh RangeIndex."""
    return to_pandas(read_table(storage, entries))


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """``table`` as pandas, the one way chanbatch converts: dates stay Arrow dates.

    By default pyarrow turns ``date32`` into Python ``date`` objects, which neither compare
    with date literals nor survive dask's string conversion; an Arrow-backed date dtype does
    both, and round-trips to the same Parquet type.
    """
    return table.to_pandas(types_mapper=_pandas_type)


def _pandas_type(t: pa.DataType) -> object:
    import pandas as pd
    import pyarrow as pa

    return pd.ArrowDtype(t) if pa.types.is_date(t) else None


def read_footer(storage: Storage, oid: str) -> pq.FileMetaData:
    """The Parquet footer of object ``oid``, read without reading (or re-hashing) the data.

    Used for schemas and statistics only; ``verify`` is what checks integrity.
    """
    import pyarrow.parquet as pq

    rel = object_path(oid)
    local = storage.local_path(rel)
    try:
        if local is not None:
            return pq.read_metadata(local)
        with storage.fs.open(storage.full(rel), "rb") as handle:
            return pq.read_metadata(handle)
    except FileNotFoundError:
        raise IntegrityError(f"object {oid[:12]} is missing from the store") from None
    except OSError as exc:  # pyarrow reports an unreadable footer as an OSError
        raise IntegrityError(f"object {oid[:12]} has an unreadable footer: {exc}") from exc


def arrow_schema(storage: Storage, manifest: SnapshotManifest) -> pa.Schema:
    """The Arrow schema of a snapshot, read from the footer of its first object."""
    first = slice_parts(storage, list(manifest.slices[:1]))
    return read_footer(storage, first[0].object).schema.to_arrow_schema()


def _typed(key: SliceKey | str, manifest: SnapshotManifest) -> SliceKey:
    return parse_key(key, manifest.key_type) if isinstance(key, str) else key
