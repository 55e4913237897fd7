"""Property: freezing then reading gives, per slice, exactly pandas' groupby of the input."""

from __future__ import annotations

import uuid

import fsspec
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from storekit import assert_same_rows

import chanbatch

INT_KEYS = st.integers(-(10**12), 10**12)
STR_KEYS = st.text(st.characters(exclude_categories=("Cs",)), max_size=6)
REF_SAFE_KEYS = st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=6)


@st.composite
def frames(
    draw: st.DrawFn, str_keys: st.SearchStrategy[str] = STR_KEYS
) -> tuple[pd.DataFrame, str]:
    """A frame with an int and a string key column drawn from small pools, and a split column."""
    n = draw(st.integers(1, 30))
    ints = draw(st.lists(INT_KEYS, min_size=1, max_size=5, unique=True))
    strs = draw(st.lists(str_keys, min_size=1, max_size=5, unique=True))

    def column(strategy: st.SearchStrategy) -> list:
        return draw(st.lists(strategy, min_size=n, max_size=n))

    df = pd.DataFrame(
        {
            "i": pd.array(column(st.sampled_from(ints)), dtype="int64"),
            "s": pd.Series(column(st.sampled_from(strs)), dtype="str"),
            "x": pd.array(column(st.floats(allow_nan=True, allow_infinity=True)), dtype="float64"),
            "note": pd.Series(column(st.none() | st.text(max_size=4)), dtype="str"),
            "flag": pd.array(column(st.booleans()), dtype="bool"),
        }
    )
    return df, draw(st.sampled_from(["i", "s"]))


def fresh_store() -> chanbatch.Store:
    return chanbatch.Store(f"memory://prop-{uuid.uuid4().hex}")


def drop(store: chanbatch.Store) -> None:
    fs = fsspec.filesystem("memory")
    fs.rm(store.storage.root, recursive=True)


@settings(max_examples=40, deadline=None)
@given(frames())
def test_slices_are_pandas_groups(case: tuple[pd.DataFrame, str]) -> None:
    df, column = case
    store = fresh_store()
    try:
        info = store.freeze("ds", df, slice_by=column)
        keys = sorted(df[column].unique().tolist())
        assert [s.key for s in info.slices] == keys
        assert [e.key for e in store.slices("ds")] == keys
        groups = dict(tuple(df.groupby(column, sort=False)))
        for s in info.slices:
            assert s.rows == len(groups[s.key])
            assert_same_rows(store.read_pandas("ds", start=s.key, stop=s.key), groups[s.key])
        ordered = pd.concat([groups[k] for k in keys])
        assert_same_rows(store.read_pandas("ds"), ordered)
    finally:
        drop(store)


@settings(max_examples=25, deadline=None)
@given(frames(str_keys=REF_SAFE_KEYS))
def test_every_slice_is_reachable_by_ref(case: tuple[pd.DataFrame, str]) -> None:
    df, column = case
    store = fresh_store()
    try:
        store.freeze("ds", df, slice_by=column)
        for key, group in df.groupby(column, sort=False):
            assert_same_rows(store.read_pandas(f"ds[{key}]"), group)
    finally:
        drop(store)
