"""Sealed documents (run records, cache entries, memos): what ``seal`` writes, ``unseal`` reads
back, and any changed byte is refused, whether the checksum is checked on the bytes as read (the
fast path) or on the document encoded again (files not in seal's exact layout)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chanbatch.hashing import seal, unseal

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=12,
)
documents = st.dictionaries(st.text(max_size=6), values, max_size=6)


@given(documents)
def test_unseal_reads_what_seal_wrote(document: dict) -> None:
    document.pop("checksum", None)
    assert unseal(seal(document)) == json.loads(json.dumps(document))


@given(documents, st.data())
def test_any_changed_byte_is_refused(document: dict, data: st.DataObject) -> None:
    document.pop("checksum", None)
    sealed = bytearray(seal(document))
    at = data.draw(st.integers(0, len(sealed) - 1))
    flipped = data.draw(st.integers(1, 255))
    sealed[at] ^= flipped
    with pytest.raises(ValueError):
        unseal(bytes(sealed))


def test_the_layout_is_part_of_the_seal() -> None:
    sealed = seal({"a": [1, 2], "b": "x"})
    spaced = sealed.replace(b'"a":', b'"a": ')  # same JSON, other bytes
    with pytest.raises(ValueError, match="layout"):
        unseal(spaced)
    with pytest.raises(ValueError, match="no checksum"):
        unseal(b'{"a":1}\n')
    assert unseal(b'{"a":1}\n', legacy=lambda doc: doc == {"a": 1}) == {"a": 1}


@given(documents)
def test_seal_writes_the_canonical_json_of_plain_documents(document: dict) -> None:
    """orjson writes what ``seal`` writes, where it can: for JSON's own types but floats, the
    same bytes as the canonical JSON of the document (big ints and non-text keys go to the
    canonical encoder itself), so a sealed file is as it was before orjson wrote it."""
    from chanbatch.hashing import canonical_json, digest

    document.pop("checksum", None)
    encoded = canonical_json(document)
    want = (
        encoded[:-1]
        + (b"," if document else b"")
        + b'"checksum":"%s"}\n' % (digest(encoded).encode())
    )
    assert seal(document) == want


@given(
    st.dictionaries(
        st.text(max_size=6),
        st.floats(allow_nan=False, allow_infinity=False) | st.integers() | st.text(max_size=4),
        max_size=6,
    )
)
def test_sealed_floats_and_big_ints_read_back_as_they_were(document: dict) -> None:
    """A float may be written in orjson's shortest form (``1e-6``); an int beyond 64 bits
    is written by json. Either reads back to the same value. ``loads`` reads what
    ``json.loads`` reads, but for an int beyond 64 bits, which it reads as the nearest float
    (as its docstring says: the manifests read such a document again with ``json``)."""
    from chanbatch.hashing import loads

    document.pop("checksum", None)
    data = seal(document)
    assert unseal(data) == document

    def beyond_64_bits(value: object) -> bool:
        return type(value) is int and not -(2**63) <= value < 2**64

    want = {k: float(v) if beyond_64_bits(v) else v for k, v in json.loads(data).items()}
    got = loads(data)
    assert got == want
    assert [type(v) for v in got.values()] == [type(v) for v in want.values()]


def test_values_json_has_no_type_for_go_to_default() -> None:
    """A path, a NumPy scalar and a date in a sealed document are written as ``json`` with
    the caller's ``default`` writes them (a NumPy float as a number, not as text)."""
    import datetime as dt
    from pathlib import Path

    import numpy as np

    document = {
        "path": Path("/a/b"),
        "x": np.float64(0.5),
        "n": np.int64(3),
        "day": dt.date(2024, 1, 2),
    }
    doc = unseal(seal(document, default=str))
    assert doc == {"path": "/a/b", "x": 0.5, "n": "3", "day": "2024-01-02"}
