"""Contract: unchanged data dedupes; a changed slice makes a new snapshot; old ones stay."""

from __future__ import annotations

import pandas as pd
from storekit import assert_same_rows, files, flights, in_slice_order

import chanbatch

MONTHS = ["2013-01", "2013-02", "2013-03"]


def test_refreeze_unchanged_creates_nothing(store: chanbatch.Store, store_url: str) -> None:
    df = flights(90)
    first = store.freeze("flights", df, slice_by="month")
    before = files(store_url)

    again = store.freeze("flights", df, slice_by="month")
    assert again.snapshot == first.snapshot
    assert again.version == 1 and not again.created
    assert [s.new for s in again.slices] == [False, False, False]
    assert [s.id for s in again.slices] == [s.id for s in first.slices]
    assert files(store_url) == before
    assert len(store.history("flights")) == 1


def test_refreeze_one_unchanged_slice_creates_nothing(
    store: chanbatch.Store, store_url: str
) -> None:
    df = flights(90)
    first = store.freeze("flights", df, slice_by="month")
    before = files(store_url)

    again = store.freeze("flights", df[df["month"] == "2013-02"], slice="2013-02")
    assert again.snapshot == first.snapshot and not again.created
    assert [(s.key, s.new) for s in again.slices] == [("2013-02", False)]
    assert files(store_url) == before


def test_changed_slice_replaces_only_that_slice(store: chanbatch.Store, store_url: str) -> None:
    old = flights(90)
    first = store.freeze("flights", old, slice_by="month")
    old_files = files(store_url)

    changed = old[old["month"] == "2013-02"].assign(dep_delay=lambda d: d["dep_delay"] + 100)
    second = store.freeze("flights", changed, slice_by="month")

    assert second.created and second.version == 2
    assert second.snapshot != first.snapshot
    assert [(s.key, s.new, s.replaced) for s in second.slices] == [("2013-02", False, True)]
    before = {s.key: s.id for s in first.slices}
    after = {e.key: e.id for e in store.slices("flights")}
    assert after["2013-01"] == before["2013-01"]
    assert after["2013-03"] == before["2013-03"]
    assert after["2013-02"] != before["2013-02"]
    entry = store.history("flights")[-1]
    assert list(entry.replaced) == ["2013-02"] and not entry.added
    assert entry.parent == first.snapshot

    # nothing of the old snapshot was touched
    now = files(store_url)
    assert all(now.get(rel) == data for rel, data in old_files.items())

    new = pd.concat([old[old["month"] != "2013-02"], changed])
    assert_same_rows(store.read_pandas("flights"), in_slice_order(new, "month"))
    assert_same_rows(
        store.read_pandas(f"flights@{first.snapshot[:8]}"), in_slice_order(old, "month")
    )
    assert_same_rows(
        store.read_pandas(f"flights@{first.snapshot[:8]}[2013-02]"), old[old["month"] == "2013-02"]
    )
    assert_same_rows(
        store.read(f"flights@{first.snapshot[:12]}").compute().drop(columns="date"),
        in_slice_order(old, "month").drop(columns="date"),
    )

    diff = store.diff(f"flights@{first.snapshot[:8]}", "flights")
    assert [c.key for c in diff.changed] == ["2013-02"]
    assert not diff.added and not diff.removed and diff.unchanged == 2


def test_new_key_is_added(store: chanbatch.Store) -> None:
    df = flights(90, months=4)
    first = store.freeze("flights", df[df["month"] != "2013-04"], slice_by="month")
    second = store.freeze("flights", df[df["month"] == "2013-04"], slice="2013-04")
    assert second.version == 2
    assert [e.key for e in store.slices("flights")] == [*MONTHS, "2013-04"]
    assert list(store.history("flights")[-1].added) == ["2013-04"]
    assert [e.id for e in store.slices("flights")][:3] == [s.id for s in first.slices]
    assert_same_rows(store.read_pandas("flights"), in_slice_order(df, "month"))


def test_reverting_to_old_data_reuses_the_old_snapshot(store: chanbatch.Store) -> None:
    df = flights(60)
    first = store.freeze("flights", df, slice_by="month")
    store.freeze("flights", df.assign(day=df["day"] + 1), slice_by="month")
    third = store.freeze("flights", df, slice_by="month")

    assert third.created and third.version == 3
    assert third.snapshot == first.snapshot
    # the same snapshot twice in history is not an ambiguous prefix
    assert store.resolve(f"flights@{first.snapshot[:8]}").snapshot == first.snapshot
