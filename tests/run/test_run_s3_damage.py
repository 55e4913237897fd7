"""A run on S3 that finds the cached results it needs damaged recomputes them (issue 20).

On an object store, planning looks up and verifies a computed task's cached inputs together, on
threads (``CacheView.prefetch``): a combine's siblings on a new slice's path. This holds that
what it finds damaged is recomputed, as one at a time would, and that the answer is pandas'
over the raw rows.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from s3kit import clear_s3fs_cache

import chanbatch as cb

pytest.importorskip("s3fs")

BLUEPRINT = """\
name: damaged
inputs:
  t: t
stages:
  kept:
    from: t
    filter: "v > 10"
  per_g:
    from: kept
    group_by: [g]
    aggregate: {n: count(), total: sum(v)}
outputs:
  per_g: per_g
"""
DAYS, MIDDLE = 120, 57


def rows(days: list[int]) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    n = 6 * len(days)
    return pd.DataFrame(
        {
            "day": np.repeat(np.array(days, dtype="int64"), 6),
            "g": rng.integers(0, 3, n),
            "v": rng.integers(0, 100, n),
        }
    )


def expected(frame: pd.DataFrame) -> list[tuple[int, int, int]]:
    kept = frame[frame.v > 10]
    out = kept.groupby("g").agg(n=("v", "size"), total=("v", "sum")).reset_index()
    return sorted(tuple(int(x) for x in r) for r in out.itertuples(index=False))


def answer(store: cb.Store, snapshot: str) -> list[tuple[int, int, int]]:
    got = store.read_pandas(f"per_g@{snapshot}")
    return sorted(tuple(int(x) for x in r) for r in got[["g", "n", "total"]].itertuples(False))


def cached_objects(url: str) -> set[str]:
    """The object ids the cache's entries and pack indexes name, read from S3 directly."""
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
    root = url.removeprefix("s3://")
    out = set()
    for path in fs.find(f"{root}/cache"):
        if path.endswith(".json"):
            doc = json.loads(fs.cat_file(path))
            out.update(doc.get("objects", []))
            if "object" in doc:
                out.add(doc["object"])
    return out


def damage(url: str, oids: set[str]) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
    root = url.removeprefix("s3://")
    for oid in oids:
        fs.pipe_file(f"{root}/objects/{oid[:2]}/{oid[2:]}", b"not what was stored")


def test_damaged_cached_inputs_found_together_are_recomputed(
    s3_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chanbatch.cache.view import CacheView

    together: list[int] = []  # how many keys each prefetch was given
    prefetch = CacheView.prefetch

    def counted(self: CacheView, keys: list[str]) -> None:
        together.append(len(keys))
        prefetch(self, keys)

    monkeypatch.setattr(CacheView, "prefetch", counted)
    clear_s3fs_cache()
    store = cb.Store(s3_store_url)
    blueprint = cb.Blueprint.from_yaml(BLUEPRINT)
    everything = rows(list(range(DAYS)))
    before = everything[everything.day != MIDDLE]
    store.freeze("t", before, slice_by="day")
    cold = blueprint.run(store)
    assert answer(store, cold.snapshots["per_g"]["snapshot"]) == expected(before)

    damaged = cached_objects(s3_store_url)
    assert damaged  # partials, packs and combines: what the next run reuses
    damage(s3_store_url, damaged)
    clear_s3fs_cache()

    store.freeze("t", everything[everything.day == MIDDLE], slice_by="day")
    after = blueprint.run(store)
    assert answer(store, after.snapshots["per_g"]["snapshot"]) == expected(everything)
    # nothing damaged was reused: the slices below the new one's path were computed again
    assert after.stats["computed"] > 3
    assert max(together) >= 2  # damaged siblings were looked up together

    again = blueprint.run(store)
    assert again.stats["computed"] == 0
    assert again.snapshots["per_g"]["snapshot"] == after.snapshots["per_g"]["snapshot"]
