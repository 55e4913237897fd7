"""Where each kind of file lives in a store (DESIGN.md section 2), in one place.

::

    objects/ab/cdef...           Parquet objects, named by the blake3 of their bytes
    manifests/ab/cdef....json    slice and snapshot manifests, canonical JSON
    refs/<dataset>/000000000042.json   the ref log, one file per version
    pins/<snapshot id>.json      pinned snapshots (gc roots)
    cache/<key>.json             stage results, by cache key
    runs/<run id>.json           run records
    pruned/<dataset>/<last version>-<tag>.json   ref-log versions gc removed (--keep-versions)
    memo/<hash of a blueprint name>.json   key -> content id of its last run's stored results
    tmp/                         files being written; gc removes stale ones
"""

from __future__ import annotations

from chanbatch.snapshot.names import check_dataset_name

OBJECTS = "objects"
MANIFESTS = "manifests"
REFS = "refs"
PINS = "pins"
CACHE = "cache"
PACKS = "cache/packs"  # one index per pack of small cached results (chanbatch.cache.packs)
RUNS = "runs"
PRUNED = "pruned"  # per dataset: the ref-log versions gc removed, so verify sees no gap
MEMO = "memo"  # per blueprint: the content ids of its last run's stored results
REF_DIGITS = 12


def object_path(object_id: str) -> str:
    return f"{OBJECTS}/{object_id[:2]}/{object_id[2:]}"


def manifest_path(manifest_id: str) -> str:
    return f"{MANIFESTS}/{manifest_id[:2]}/{manifest_id[2:]}.json"


def ref_dir(dataset: str) -> str:
    return f"{REFS}/{check_dataset_name(dataset)}"


def ref_path(dataset: str, version: int) -> str:
    return f"{ref_dir(dataset)}/{version:0{REF_DIGITS}d}.json"


def ref_version(name: str) -> int | None:
    """The version number in a ref file's name, or None for anything that is not a ref."""
    stem, dot, ext = name.partition(".")
    if ext != "json" or not dot or len(stem) != REF_DIGITS or not stem.isdigit():
        return None
    return int(stem)


def pruned_path(dataset: str, last: int, tag: str) -> str:
    """Where a gc that removed old versions of ``dataset`` (up to ``last``) records them."""
    return f"{PRUNED}/{check_dataset_name(dataset)}/{last:0{REF_DIGITS}d}-{tag}.json"


def pin_path(snapshot_id: str) -> str:
    return f"{PINS}/{snapshot_id}.json"


def id_from_path(rel: str, prefix: str, suffix: str = "") -> str | None:
    """Recover the id from ``objects/ab/cdef...`` or ``manifests/ab/cdef....json``."""
    parts = rel.split("/")
    if len(parts) != 3 or parts[0] != prefix or len(parts[1]) != 2:
        return None
    name = parts[2]
    if suffix:
        if not name.endswith(suffix):
            return None
        name = name[: -len(suffix)]
    candidate = parts[1] + name
    if len(candidate) != 64 or any(c not in "0123456789abcdef" for c in candidate):
        return None
    return candidate
