"""chanbatch: batch dataframes on Dask over immutable, content-hashed Parquet snapshots.

``import chanbatch`` stays light: it imports neither dask nor pandas, so that ``--help``,
``validate`` and a fully cached run start fast. ``Store`` and ``Blueprint`` load on first use.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from chanbatch.version import FORMAT_VERSION, __version__

# The library only logs; the application decides where records go. Without a handler of its
# own, Python's last-resort handler would print chanbatch's warnings in a user's program.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["FORMAT_VERSION", "Blueprint", "Snapshot", "Store", "__version__"]

# public name -> (module, attribute). ``Blueprint`` is the API's RunnableBlueprint, which
# wraps the data model ``chanbatch.blueprint.model.Blueprint`` (see chanbatch.api).
_LAZY = {
    "Store": ("chanbatch.api", "Store"),
    "Blueprint": ("chanbatch.api", "RunnableBlueprint"),
    "Snapshot": ("chanbatch.snapshot.describe", "Snapshot"),
}


def __getattr__(name: str) -> Any:
    # A dynamic import keeps the package root out of the layer graph: the root re-exports the
    # top layer, and every module below would otherwise appear to depend on it.
    found = _LAZY.get(name)
    if found is None:
        raise AttributeError(f"module 'chanbatch' has no attribute {name!r}")
    module, attribute = found
    return getattr(importlib.import_module(module), attribute)
