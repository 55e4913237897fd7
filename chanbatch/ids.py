"""Identifier types, each built only by a validating constructor.

An id is 64 lowercase hex characters: a blake3 digest. The types are distinct so that a
function taking a ``SliceId`` cannot silently be handed an ``ObjectId``; they cost nothing at
run time (``NewType``), and the constructors below are the one place that makes them.

- ``ObjectId``: digest of one Parquet object's bytes.
- ``SliceId``: digest of a slice's canonical manifest (key + ordered parts).
- ``SnapshotId``: digest of a snapshot's canonical manifest (ordered slices, schema, counts).
- ``CacheKey``: digest of a stage's inputs and spec on one slice (DESIGN.md section 1).

It also holds the rule for dataset names (:data:`DATASET_NAME`), the one name the store, the
blueprint checks and the Kubernetes CRD all validate: it lives here, in the lowest layer, so
that ``snapshot`` and ``blueprint`` (which do not import each other) share one definition.
"""

from __future__ import annotations

import re
from typing import Any, NewType

ObjectId = NewType("ObjectId", str)
SliceId = NewType("SliceId", str)
SnapshotId = NewType("SnapshotId", str)
CacheKey = NewType("CacheKey", str)

ID_LENGTH = 64
SHORT_LENGTH = 12
MIN_PREFIX = 8
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PREFIX = re.compile(r"^[0-9a-f]{8,64}$")

#: A dataset name: 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit.
#: (The store also refuses '..' in a name: see ``chanbatch.snapshot.names.check_dataset_name``.)
DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _checked(value: str, kind: str) -> str:
    if not isinstance(value, str) or not _HEX64.match(value):
        raise ValueError(f"not a valid {kind}: {value!r} (expected 64 lowercase hex characters)")
    return value


def object_id(value: str) -> ObjectId:
    """Validate ``value`` as an object id; raises ValueError if it is not 64 hex characters."""
    return ObjectId(_checked(value, "object id"))


_HEX_DIGITS = b"0123456789abcdef"


def slice_ids(values: list[Any]) -> list[SliceId]:
    """Validate every one of ``values`` as a slice id, at once (a manifest of 100,000 slices
    checks them in one pass); raises ValueError naming the first that is not 64 hex
    characters."""
    try:
        lengths = set(map(len, values))
        joined = "".join(values)  # raises TypeError for anything but text
    except TypeError:
        lengths, joined = {0}, ""  # not all text: the one by one check below names it
    # each 64 characters long, every character one of the 16 (the ASCII bytes with those
    # deleted are none)
    if (
        lengths <= {64}
        and joined.isascii()
        and not joined.encode("ascii").translate(None, _HEX_DIGITS)
    ):
        return values  # each is a str of 64 hex characters: a SliceId
    for value in values:
        slice_id(value)  # raises, naming it
    raise AssertionError("unreachable: a slice id failed the pattern but passed alone")


def slice_id(value: str) -> SliceId:
    """Validate ``value`` as a slice id; raises ValueError if it is not 64 hex characters."""
    return SliceId(_checked(value, "slice id"))


def snapshot_id(value: str) -> SnapshotId:
    """Validate ``value`` as a snapshot id; raises ValueError if it is not 64 hex characters."""
    return SnapshotId(_checked(value, "snapshot id"))


def cache_key(value: str) -> CacheKey:
    """Validate ``value`` as a cache key; raises ValueError if it is not 64 hex characters."""
    return CacheKey(_checked(value, "cache key"))


def is_id_prefix(value: str) -> bool:
    """True if ``value`` can stand for an id: 8 to 64 lowercase hex characters."""
    return bool(_PREFIX.match(value))


def short(value: str | None) -> str:
    """The 12-character form of an id that the CLI, messages and reports show; ``-`` for a
    missing id (None or empty)."""
    return value[:SHORT_LENGTH] if value else "-"
