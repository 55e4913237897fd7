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
    schema = _read.read_footer(storage, parts[0].object).schema.to_arrow_schema()
    meta = schema.empty_table().to_pandas(types_mapper=_types)
    return dd.from_map(
        _load_pandas,
        [p.object for p in parts],
        url=storage.url,
        meta=meta,
        label=label,
        enforce_metadata=False,
    )


def _load_pandas(oid: str, url: str) -> pd.DataFrame:
    from chanbatch.compile.graph import storage_for

    return _read.load_object(storage_for(url), oid).to_pandas(types_mapper=_types)


def _types(t: object) -> object:
    """Arrow dates as pandas Arrow dtypes: as objects, dask would turn them into strings."""
    import pandas as pd
    import pyarrow as pa

    return pd.ArrowDtype(t) if pa.types.is_date(t) else None
