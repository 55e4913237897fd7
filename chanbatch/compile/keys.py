"""Cache keys (DESIGN.md section 1): what a stage's result on a slice depends on, hashed.

``H(engine salt, task kind, canonical stage spec, upstream keys or slice ids, broadcast ids)``.
The UDF version is part of a ``map`` stage's canonical spec. Execution settings (scheduler,
workers, threads, retries) never enter a key, and no DataFrame is ever hashed: inputs enter
through the ids computed when they were frozen.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence
from typing import Any

from chanbatch.hashing import canonical_json, digest, digest_json
from chanbatch.ids import CacheKey, cache_key
from chanbatch.version import ENGINE_VERSION, FORMAT_VERSION


@functools.cache
def engine_salt() -> dict[str, Any]:
    """What, besides the inputs and the spec, can change a result's bytes."""
    return {
        "format": FORMAT_VERSION,
        "engine": ENGINE_VERSION,
        "pandas": installed_major("pandas"),
        "pyarrow": installed_major("pyarrow"),
    }


@functools.cache
def installed_major(dist: str) -> str:
    """The major version of installed distribution ``dist`` ("none" if it is not installed),
    without importing it.

    Read from the name of its ``<dist>-<version>.dist-info`` directory, the first on
    ``sys.path`` as ``importlib.metadata`` finds it: importing ``importlib.metadata`` costs a
    run that has nothing to compute a tenth of its time. Installs without such a directory
    (an egg, a zip) are asked of ``importlib.metadata``.
    """
    prefix = f"{dist}-"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.startswith(prefix) and name.endswith(".dist-info"):
                return name[len(prefix) :].split(".")[0]
    from importlib import metadata

    try:
        return metadata.version(dist).split(".")[0]
    except metadata.PackageNotFoundError:
        return "none"


def task_key(
    kind: str,
    spec: dict[str, Any],
    upstream: Sequence[str],
    broadcast: Sequence[str] = (),
) -> CacheKey:
    """The cache key (and Dask key) of one task: the digest of the canonical JSON of
    ``{salt, kind, spec, upstream, broadcast}``.

    A plan computes one key per task, tens of thousands for a big input, so the canonical
    JSON is assembled from pieces: the salt, kind and spec once per spec, and the ids (which
    are plain hex, needing no escaping) joined as they are. The bytes are exactly those of
    :func:`~chanbatch.hashing.canonical_json` on the whole document.
    """
    text = f'{{"broadcast":{_ids(broadcast)},{_head(kind, spec)},"upstream":{_ids(upstream)}}}'
    return cache_key(digest(text.encode("utf-8")))


_HEADS: dict[int, tuple[dict[str, Any], str, str]] = {}


def _head(kind: str, spec: dict[str, Any]) -> str:
    """``"kind":...,"salt":...,"spec":...`` for ``spec``, memoised per spec object (specs are
    built fresh by ``Stage.canonical()`` and never changed afterwards)."""
    memo = _HEADS.get(id(spec))
    if memo is not None and memo[0] is spec and memo[1] == kind:
        return memo[2]
    head = (
        f'"kind":{canonical_json(kind).decode()},"salt":{canonical_json(engine_salt()).decode()},'
        f'"spec":{canonical_json(spec).decode()}'
    )
    if len(_HEADS) > 4096:
        _HEADS.clear()
    _HEADS[id(spec)] = (spec, kind, head)  # holding ``spec`` keeps its id from being reused
    return head


def _ids(ids: Sequence[str]) -> str:
    """A JSON list of ids. Ids are hex, or ``pending:`` and hex: nothing in them to escape."""
    if not ids:
        return "[]"
    return '["' + '","'.join(ids) + '"]'


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
