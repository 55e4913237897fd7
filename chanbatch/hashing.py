"""Canonical bytes and their blake3 digests.

Only canonical bytes are ever hashed: JSON with sorted keys, no insignificant whitespace, UTF-8,
and no floats that JSON cannot round-trip (NaN, infinities). Timestamps, authors and other
metadata never enter these documents; they live beside them in the ref log.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from typing import Any

import blake3
import orjson

# Above this size, blake3 hashes with several threads; below it, the thread start costs more.
_PARALLEL_THRESHOLD = 1 << 20


def canonical_json(document: Any, *, default: Callable[[Any], Any] | None = None) -> bytes:
    """Serialise ``document`` to canonical JSON bytes; raises ValueError on NaN or infinity.

    ``default`` turns values JSON has no type for into ones it has (as in ``json.dumps``)."""
    return json.dumps(
        document,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=default,
    ).encode("utf-8")


def digest(data: bytes | bytearray | memoryview, *more: bytes | memoryview) -> str:
    """The blake3 hex digest of ``data`` (64 characters); with ``more``, of ``data`` and
    those pieces one after the other, without joining them."""
    threads = blake3.blake3.AUTO if len(data) >= _PARALLEL_THRESHOLD else 1
    hasher = blake3.blake3(data, max_threads=threads)
    for piece in more:
        hasher.update(piece)
    return hasher.hexdigest()


def digest_file(path: str) -> tuple[str, int]:
    """The blake3 hex digest of a local file, memory-mapped, and its size in bytes."""
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    with contextlib.suppress(ValueError):  # an empty file cannot be memory-mapped
        hasher.update_mmap(path)
    return hasher.hexdigest(), os.path.getsize(path)


def digest_json(document: Any) -> str:
    """The blake3 hex digest of ``document``'s canonical JSON."""
    return digest(canonical_json(document))


# -- sealed documents ----------------------------------------------------------------------------
#
# Ref-log entries, cache entries, memos and run records are not named by their hash, so nothing
# else would catch a flipped byte in them. Each carries a ``checksum`` of its own contents, and
# is written in one exact layout (canonical JSON, the checksum last), so that a change to any
# byte (a value, a key, or only the whitespace around them) is found on read.

CHECKSUM = "checksum"


def seal(document: dict[str, Any], *, default: Callable[[Any], Any] | None = None) -> bytes:
    """``document`` as one line of canonical JSON, with a ``checksum`` of that JSON added as
    its last member. ``default`` turns values JSON has no type for into ones it has."""
    body = {k: v for k, v in document.items() if k != CHECKSUM}
    encoded = _sealable(body, default)
    return _with_checksum(encoded, digest(encoded))


def _sealable(body: dict[str, Any], default: Callable[[Any], Any] | None) -> bytes:
    """``body``'s canonical JSON, made by orjson where it can: a run record or chain memo of
    100,000 slices is 10 to 20 MB, which orjson writes ten times faster than ``json``. For
    JSON's own types orjson writes the same bytes, but for its shortest form of a float's
    exponent (``1e-6`` for ``1e-06``) and a NaN or infinity, which it writes as null where
    :func:`canonical_json` refuses it: neither matters here, as a sealed document's checksum
    is of the bytes written, and its reader parses them. Anything else (a path, a big int, a
    key that is no text, a NumPy scalar) goes to :func:`canonical_json` and ``default``."""
    try:
        return orjson.dumps(body, option=_SEAL_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError is one
        return canonical_json(body, default=default)


# sorted keys; a dataclass, date or time is not orjson's to write but ``default``'s, as json's
_SEAL_OPTIONS = (
    orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """The JSON document ``data``, as orjson reads it (twice as fast as ``json`` on a manifest
    of 100,000 slices), and through ``json`` for what orjson refuses and ``json`` takes (a NaN,
    a lone surrogate), or to raise the error ``json`` raises (a ValueError).

    One difference remains: orjson reads an integer beyond 64 bits as a float, where ``json``
    reads it exactly. A caller whose document may hold one checks where it expects integers
    and reads a document with a float there again with ``json.loads``, as the manifests do.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data if not isinstance(data, memoryview) else bytes(data))


def _with_checksum(encoded: bytes, checksum: str) -> bytes:
    # one encoding serves both the checksum and the file: the slowest part of sealing a run
    # record of thousands of tasks is encoding it
    # joined in one copy: each ``+`` would copy the whole document (20 MB for a chain memo of
    # 100,000 slices) into a new buffer
    joint = b"," if encoded != b"{}" else b""
    tail = b'%s"%s":"%s"}\n' % (joint, CHECKSUM.encode(), checksum.encode())
    return b"".join((memoryview(encoded)[:-1], tail))


def unseal(
    data: bytes, *, legacy: Callable[[dict[str, Any]], bool] | None = None
) -> dict[str, Any]:
    """The document sealed in ``data``.

    A document without a checksum is refused unless ``legacy`` accepts it: what a reader of
    files written before checksums existed uses, with a check as strict as it can make.
    Raises ValueError when ``data`` is not a JSON object, when its checksum does not match its
    contents, or when its bytes are not exactly what :func:`seal` writes for those contents.

    The checksum is checked against the bytes as read: :func:`seal` hashed exactly the bytes
    before its ``"checksum"`` member (with the closing brace), so when their digest matches, the
    file is byte for byte what it wrote, and nothing needs encoding again (for a run record of
    thousands of tasks, that was two thirds of reading it).
    """
    suffix = _sealed_suffix(data)
    if suffix is not None:
        end = len(data) - len(suffix)
        if data[end - 1 : end] == b",":
            end -= 1
        checksum = suffix[len(_SEAL_MARK) : len(_SEAL_MARK) + 64].decode("ascii")
        # the digest of the bytes before the checksum with the closing brace, hashed where
        # they lie: a copy of a 20 MB memo costs more than hashing it
        if digest(memoryview(data)[:end], b"}") == checksum:
            document = json.loads(data)
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")
            document.pop(CHECKSUM, None)
            return document
    document = json.loads(data)
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    if CHECKSUM not in document:
        if legacy is not None and legacy(document):
            return document
        raise ValueError("it has no checksum")
    checksum = document.pop(CHECKSUM)
    encoded = canonical_json(document)
    if checksum != digest(encoded):
        raise ValueError("its checksum does not match its contents")
    if _with_checksum(encoded, checksum) != bytes(data):
        raise ValueError("its bytes are not in the layout chanbatch writes")
    return document


_SEAL_MARK = b'"' + CHECKSUM.encode() + b'":"'


def _sealed_suffix(data: bytes) -> bytes | None:
    """The ``"checksum":"<64 hex>"}`` + newline that :func:`seal` ends a document with, or
    None when ``data`` does not end so."""
    size = len(_SEAL_MARK) + 64 + 3  # mark, digest, closing quote, brace and newline
    if len(data) < size + 1:
        return None
    suffix = bytes(data[-size:])
    if not (suffix.startswith(_SEAL_MARK) and suffix.endswith(b'"}\n')):
        return None
    before = bytes(data[-size - 1 : -size])
    return suffix if before in (b",", b"{") else None
