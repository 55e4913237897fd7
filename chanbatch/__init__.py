"""chanbatch: batch dataframes on Dask over immutable, content-hashed Parquet snapshots.

``import chanbatch`` stays light: it imports neither dask nor pandas, so that ``--help``,
``validate`` and a fully cached run start fast. The public names below load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chanbatch.version import FORMAT_VERSION, __version__

__all__ = ["FORMAT_VERSION", "Store", "__version__"]

if TYPE_CHECKING:
    from chanbatch.api import Store


def __getattr__(name: str) -> Any:
    if name == "Store":
        from chanbatch.api import Store

        return Store
    raise AttributeError(f"module 'chanbatch' has no attribute {name!r}")
