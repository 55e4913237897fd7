"""Cache keys (DESIGN.md section 1): what a stage's result on a slice depends on, hashed.

``H(engine salt, task kind, canonical stage spec, upstream keys or slice ids, broadcast ids)``.
The UDF version is part of a ``map`` stage's canonical spec. Execution settings (scheduler,
workers, threads, retries) never enter a key, and no DataFrame is ever hashed: inputs enter
through the ids computed when they were frozen.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from chanbatch.hashing import digest_json
from chanbatch.ids import CacheKey, cache_key
from chanbatch.version import FORMAT_VERSION


@functools.cache
def engine_salt() -> dict[str, Any]:
    """What, besides the inputs and the spec, can change a result's bytes."""

    def major(dist: str) -> str:
        try:
            return metadata.version(dist).split(".")[0]
        except metadata.PackageNotFoundError:
            return "none"

    return {"format": FORMAT_VERSION, "pandas": major("pandas"), "pyarrow": major("pyarrow")}


def task_key(
    kind: str,
    spec: dict[str, Any],
    upstream: Sequence[str],
    broadcast: Sequence[str] = (),
) -> CacheKey:
    """The cache key (and Dask key) of one task."""
    return cache_key(
        digest_json(
            {
                "salt": engine_salt(),
                "kind": kind,
                "spec": spec,
                "upstream": list(upstream),
                "broadcast": list(broadcast),
            }
        )
    )


def blueprint_digest(blueprint: Any) -> str:
    """The hash of what a blueprint computes (its stages, wiring and outputs), for lineage."""
    return digest_json(
        {
            "name": blueprint.name,
            "inputs": dict(sorted(blueprint.inputs.items())),
            "stages": {
                name: {"from": list(stage.upstream), "spec": stage.canonical()}
                for name, stage in blueprint.stages.items()
            },
            "outputs": dict(sorted(blueprint.outputs.items())),
        }
    )
