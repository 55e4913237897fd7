"""Snapshots as dask DataFrames: one partition per object, aligned to slices."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chanbatch.snapshot import read as _read
from chanbatch.snapshot.manifest import SliceEntry
from chanbatch.snapshot.storage import Storage

if TYPE_CHECKING:
    import dask.dataframe as dd
    import pandas as pd


def to_dask(
    storage: Storage, entries: list[SliceEntry], label: str = "chanbatch-read"
) -> dd.DataFrame:
    """The rows of ``entries`` as a dask DataFrame; each object is re-hashed as it is read.

    Raises ValueError when ``entries`` is empty.
    """
    import dask.dataframe as dd

    parts = _read.slice_parts(storage, entries)
    if not parts:
        raise ValueError("no slices selected")
    footers = _read.read_footers(storage, parts)
    schema = footers[0].schema.to_arrow_schema()
    # one dtype per column in every partition: an int or bool column is nullable (Int64,
    # boolean) in all of them if any slice has a null in it, as read_pandas gives it
    nullable = frozenset(_read.columns_with_nulls(footers))
    meta = _read.to_pandas(schema.empty_table(), nullable=nullable)
    return dd.from_map(
        _load_pandas,
        [p.object for p in parts],
        url=storage.url,
        nullable=nullable,
        meta=meta,
        label=label,
        enforce_metadata=False,
    )


def _load_pandas(oid: str, url: str, nullable: frozenset[str] = frozenset()) -> pd.DataFrame:
    from chanbatch.engine.graph import storage_for

    table = _read.load_object(storage_for(url), oid)
    return _read.to_pandas(table, nullable=nullable)
