"""The Python API of DESIGN.md section 4: ``chanbatch.Store`` and ``chanbatch.Blueprint``.

This module sits in the top layer, beside the CLI, because what users get back are dask
DataFrames, and only the upper layers import dask. It imports dask lazily, inside ``read``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chanbatch.snapshot import SnapshotStore
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
        from chanbatch.run.frames import to_dask

        return to_dask(self.storage, self.slices(ref, start=start, stop=stop))
