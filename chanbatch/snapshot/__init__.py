"""The content-addressed snapshot store: objects, manifests, refs; freeze, read, verify, gc.

Nothing here imports dask, and pyarrow and pandas load only inside the functions that need
them, so listing and resolving stay fast.
"""

from chanbatch.snapshot.store import SnapshotStore, default_store_url

__all__ = ["SnapshotStore", "default_store_url"]
