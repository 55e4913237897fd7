"""Early cutoff on S3, where a run stores its results behind its tasks and skips the look for
a provisional key that had no entry file when planning listed the cache
(``chanbatch.cache.behind.may_have_entry``): an equivalent filter still ends in the same
output, cut off where the entry is listed, and the next run reuses everything. Expected values
come from plain pandas on the same frame (test_early_cutoff's helpers)."""

from __future__ import annotations

import pandas as pd
import pytest
from opskit import base_frame
from test_early_cutoff import blueprint, check, kinds, result_of

import chanbatch as cb

pytest.importorskip("s3fs")


def test_an_equivalent_filter_on_s3_gives_the_same_output_and_cuts_off(
    s3_store_url: str,
) -> None:
    frame: pd.DataFrame = base_frame(rows=60, seed=3)
    store = cb.Store(s3_store_url)
    store.freeze("t", frame, slice_by="s")
    first = blueprint("x > 1").run(store)
    check(result_of(first), frame)

    # ``x >= 1.5`` keeps the same rows (x is a whole number or a half): another spec
    again = blueprint("x >= 1.5").run(store)
    slices = frame.s.nunique()
    assert kinds(again, "kept")["computed"] == slices
    stage = kinds(again, "per_group")
    # the partials come out as before; what is above them is computed again (a combine packed
    # with others has no entry file to look at) or cut off (the finish's entry is listed)
    assert stage["computed"] >= slices
    assert again.stats["cutoff"] >= 1
    assert again.snapshots == first.snapshots
    check(result_of(again), frame)
    assert blueprint("x >= 1.5").run(store).stats["computed"] == 0


def test_a_changed_filter_on_s3_is_not_cut_off(s3_store_url: str) -> None:
    frame: pd.DataFrame = base_frame(rows=60, seed=3)
    store = cb.Store(s3_store_url)
    store.freeze("t", frame, slice_by="s")
    blueprint("x > 1").run(store)
    again = blueprint("x > 2").run(store)
    assert again.stats["cutoff"] == 0
    got = result_of(again)
    kept = frame[frame.x > 2]
    assert sorted(got.rows) == sorted(kept.groupby("g", dropna=False).size())
