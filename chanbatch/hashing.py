"""Canonical bytes and their blake3 digests.

Only canonical bytes are ever hashed: JSON with sorted keys, no insignificant whitespace, UTF-8,
and no floats that JSON cannot round-trip (NaN, infinities). Timestamps, authors and other
metadata never enter these documents; they live beside them in the ref log.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import blake3

# Above this size, blake3 hashes with several threads; below it, the thread start costs more.
_PARALLEL_THRESHOLD = 1 << 20


def canonical_json(document: Any) -> bytes:
    """Serialise ``document`` to canonical JSON bytes; raises ValueError on NaN or infinity."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def digest(data: bytes | bytearray | memoryview) -> str:
    """The blake3 hex digest of ``data`` (64 characters)."""
    threads = blake3.blake3.AUTO if len(data) >= _PARALLEL_THRESHOLD else 1
    return blake3.blake3(data, max_threads=threads).hexdigest()


def digest_file(path: str) -> tuple[str, int]:
    """The blake3 hex digest of a local file, memory-mapped, and its size in bytes."""
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    with contextlib.suppress(ValueError):  # an empty file cannot be memory-mapped
        hasher.update_mmap(path)
    return hasher.hexdigest(), os.path.getsize(path)


def digest_json(document: Any) -> str:
    """The blake3 hex digest of ``document``'s canonical JSON."""
    return digest(canonical_json(document))
