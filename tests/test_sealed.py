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
