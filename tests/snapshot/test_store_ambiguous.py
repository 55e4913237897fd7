"""Contract: a snapshot prefix that matches two snapshots is an AmbiguousRefError.

Two real snapshots whose ids share their first 8 hex characters are built honestly, without
touching the code under test:

1. Freeze 20 one-row slices (keys 0..19) twice, once with ``v = 0`` and once with ``v = 1``.
   That gives two slice ids per key, and every one of the 2**20 mixes of them is a snapshot
   that one freeze of the right frame produces.
2. The snapshot id of a mix is blake3 of its canonical manifest, which this test renders
   itself from the two real manifests (checked byte for byte against both), so a birthday
   search over mixes finds two whose ids share 8 characters after ~80k tries, in about a second.
3. Freeze those two mixes as versions 1 and 2 of one dataset; their ids are checked to be the
   predicted ones before the prefix is resolved.
"""

from __future__ import annotations

import functools
import json

import pandas as pd
import pytest
from storekit import b3, canonical, files, manifest_rel

import chanbatch
from chanbatch.errors import AmbiguousRefError

KEYS = 20


def mix(mask: int) -> pd.DataFrame:
    """One row per key; key ``i`` has ``v = 1`` where bit ``i`` of ``mask`` is set."""
    return pd.DataFrame({"k": range(KEYS), "v": [(mask >> i) & 1 for i in range(KEYS)]})


def render(doc_a: dict, doc_b: dict, mask: int) -> bytes:
    """The canonical snapshot manifest of a mix, built as plain JSON."""
    slices = [doc_b["slices"][i] if (mask >> i) & 1 else doc_a["slices"][i] for i in range(KEYS)]
    doc = {
        **doc_a,
        "slices": slices,
        "rows": sum(s["rows"] for s in slices),
        "bytes": sum(s["bytes"] for s in slices),
    }
    return canonical(doc)


@functools.lru_cache(maxsize=4)
def find_collision(manifest_a: bytes, manifest_b: bytes) -> tuple[int, int]:
    """Two masks whose snapshot ids share their first 8 hex characters."""
    doc_a, doc_b = json.loads(manifest_a), json.loads(manifest_b)
    # the same rendering, fast: a template with sentinels, filled per mask
    template = canonical({**doc_a, "rows": -7_777_777, "bytes": -8_888_888, "slices": ["@@"]})
    head, tail = template.split(b'"@@"')
    pieces = [
        (canonical(a), canonical(b), a["rows"], b["rows"], a["bytes"], b["bytes"])
        for a, b in zip(doc_a["slices"], doc_b["slices"], strict=True)
    ]
    seen: dict[str, int] = {}
    for mask in range(1 << KEYS):
        chosen = [p[1::2] if (mask >> i) & 1 else p[0::2] for i, p in enumerate(pieces)]
        rows = sum(c[1] for c in chosen)
        size = sum(c[2] for c in chosen)
        body = b",".join(c[0] for c in chosen)
        data = (head + body + tail).replace(b"-7777777", str(rows).encode())
        data = data.replace(b"-8888888", str(size).encode())
        prefix = b3(data)[:8]
        if prefix in seen:
            return seen[prefix], mask
        seen[prefix] = mask
    raise AssertionError("no 8-character collision among 2**20 snapshots (odds ~ e**-128)")


def test_ambiguous_prefix(store: chanbatch.Store) -> None:
    a = store.freeze("scratch-a", mix(0), slice_by="k")
    b = store.freeze("scratch-b", mix((1 << KEYS) - 1), slice_by="k")
    stored = files(store.url)
    manifest_a = stored[manifest_rel(a.snapshot)]
    manifest_b = stored[manifest_rel(b.snapshot)]
    doc_a, doc_b = json.loads(manifest_a), json.loads(manifest_b)
    # the renderer reproduces both real manifests byte for byte
    assert render(doc_a, doc_b, 0) == manifest_a
    assert render(doc_a, doc_b, (1 << KEYS) - 1) == manifest_b

    first, second = find_collision(manifest_a, manifest_b)
    id1 = b3(render(doc_a, doc_b, first))
    id2 = b3(render(doc_a, doc_b, second))
    assert id1 != id2 and id1[:8] == id2[:8]

    v1 = store.freeze("amb", mix(first), slice_by="k")
    v2 = store.freeze("amb", mix(second), slice_by="k")
    assert (v1.snapshot, v2.snapshot) == (id1, id2), "the store made other snapshots"

    before = files(store.url)
    with pytest.raises(AmbiguousRefError) as caught:
        store.resolve(f"amb@{id1[:8]}")
    message = str(caught.value)
    assert "amb" in message and id1[:12] in message and id2[:12] in message
    assert caught.value.exit_code == 2
    with pytest.raises(AmbiguousRefError):
        store.read_pandas(f"amb@{id1[:8]}[3]")
    assert files(store.url) == before

    # one more character than they share resolves each of them
    n = next(i for i in range(64) if id1[i] != id2[i]) + 1
    assert store.resolve(f"amb@{id1[:n]}").snapshot == id1
    assert store.resolve(f"amb@{id2[:n]}").snapshot == id2
    got = store.read_pandas(f"amb@{id2[:n]}")
    assert got["v"].tolist() == mix(second)["v"].tolist()
    assert store.verify().ok
