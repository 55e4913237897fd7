"""The Python API of DESIGN.md section 4: ``chanbatch.Store`` returns dask DataFrames.

This module sits in the top layer, beside the CLI, because a dask DataFrame is what users get
back, and only the upper layers import dask. It imports dask lazily, inside ``read``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chanbatch.snapshot import SnapshotStore
from chanbatch.snapshot import read as _read
from chanbatch.snapshot.names import SliceKey

if TYPE_CHECKING:
    import dask.dataframe as dd


class Store(SnapshotStore):
    """A snapshot store whose ``read`` returns a dask DataFrame aligned to slices."""

    def read(
        self, ref: str, *, start: SliceKey | None = None, stop: SliceKey | None = None
    ) -> dd.DataFrame:
        """A REF as a dask DataFrame: one partition per object, so at least one per slice.

        Partitions are in slice order and every partition holds rows of one slice only. Each
        object is re-hashed as it is read; a corrupt one raises IntegrityError.
        """
        import dask.dataframe as dd

        storage = self.storage
        parts = _read.slice_parts(storage, self.slices(ref, start=start, stop=stop))
        if not parts:
            raise ValueError(f"{ref} selects no slices")
        schema = _read.read_footer(storage, parts[0].object).schema.to_arrow_schema()
        meta = schema.empty_table().to_pandas()
        return dd.from_map(
            _load_pandas,
            [p.object for p in parts],
            storage=storage,
            meta=meta,
            label="chanbatch-read",
            enforce_metadata=False,
        )


def _load_pandas(oid: str, storage: object) -> object:
    return _read.load_object(storage, oid).to_pandas()  # type: ignore[arg-type]
