"""Contract: REF resolution (DATASET, DATASET@prefix, DATASET[slice]) and key order."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from storekit import assert_same_rows

import chanbatch
from chanbatch.errors import ChanbatchError, RefError


def keyed(keys: list[object], rows: int = 3) -> pd.DataFrame:
    """``rows`` rows per key, in the order given, with a value that encodes key and row."""
    return pd.DataFrame(
        {
            "key": [k for k in keys for _ in range(rows)],
            "value": [f"{k}/{i}" for k in keys for i in range(rows)],
        }
    )


def rows_of(df: pd.DataFrame, *keys: object) -> pd.DataFrame:
    return pd.concat([df[df["key"] == k] for k in keys])


def values(frame: pd.DataFrame) -> list[str]:
    return frame["value"].tolist()


def test_int_keys_sort_numerically(store: chanbatch.Store) -> None:
    df = keyed([10, 2, 33, 1, -5])
    store.freeze("ints", df, slice_by="key")
    assert [e.key for e in store.slices("ints")] == [-5, 1, 2, 10, 33]
    assert_same_rows(store.read_pandas("ints"), rows_of(df, -5, 1, 2, 10, 33))
    assert_same_rows(store.read_pandas("ints[10]"), rows_of(df, 10))
    assert_same_rows(store.read_pandas("ints[-5]"), rows_of(df, -5))


def test_date_keys_sort_by_time(store: chanbatch.Store) -> None:
    days = [dt.date(2024, 1, 10), dt.date(2023, 12, 31), dt.date(2024, 1, 2), dt.date(2024, 2, 1)]
    df = keyed(days)
    store.freeze("days", df, slice_by="key")
    ordered = sorted(days)
    assert [e.key for e in store.slices("days")] == ordered
    assert_same_rows(store.read_pandas("days"), rows_of(df, *ordered))
    assert_same_rows(store.read_pandas("days[2024-01-02]"), rows_of(df, dt.date(2024, 1, 2)))


def test_string_keys_sort_as_text(store: chanbatch.Store) -> None:
    keys = ["2013-10", "2013-02", "9", "10", "b", "B"]
    df = keyed(keys)
    store.freeze("months", df, slice_by="key")
    ordered = ["10", "2013-02", "2013-10", "9", "B", "b"]  # text order, not numeric
    assert [e.key for e in store.slices("months")] == ordered
    assert_same_rows(store.read_pandas("months[2013-02]"), rows_of(df, "2013-02"))
    # in a dataset of string keys, "10" is the string "10"
    assert_same_rows(store.read_pandas("months[10]"), rows_of(df, "10"))


@pytest.mark.parametrize(
    ("start", "stop", "expected"),
    [
        (2, 10, [2, 10]),
        ("2", "10", [2, 10]),
        (3, 9, []),
        (None, 2, [1, 2]),
        (10, None, [10, 33]),
        (1, 33, [1, 2, 10, 33]),
    ],
)
def test_int_range_is_inclusive(
    store: chanbatch.Store, start: object, stop: object, expected: list[int]
) -> None:
    df = keyed([33, 10, 2, 1])
    store.freeze("ints", df, slice_by="key")
    assert [e.key for e in store.slices("ints", start=start, stop=stop)] == expected
    if expected:
        assert_same_rows(store.read_pandas("ints", start=start, stop=stop), rows_of(df, *expected))


def test_date_range(store: chanbatch.Store) -> None:
    days = [dt.date(2024, 1, d) for d in (1, 5, 9, 20, 31)]
    df = keyed(days)
    store.freeze("days", df, slice_by="key")
    lo, hi = dt.date(2024, 1, 5), dt.date(2024, 1, 20)
    assert_same_rows(store.read_pandas("days", start=lo, stop=hi), rows_of(df, *days[1:4]))
    as_text = store.read_pandas("days", start="2024-01-05", stop="2024-01-20")
    assert_same_rows(as_text, rows_of(df, *days[1:4]))
    ddf = store.read("days", start=lo, stop=hi)
    assert ddf.npartitions >= 3
    assert values(ddf.compute()) == values(rows_of(df, *days[1:4]))


def test_string_range(store: chanbatch.Store) -> None:
    keys = ["2013-01", "2013-02", "2013-03", "2013-04"]
    df = keyed(keys)
    store.freeze("months", df, slice_by="key")
    got = store.read_pandas("months", start="2013-02", stop="2013-03")
    assert_same_rows(got, rows_of(df, "2013-02", "2013-03"))


@pytest.mark.parametrize("length", [8, 9, 12, 64])
def test_snapshot_prefix(store: chanbatch.Store, length: int) -> None:
    first = store.freeze("ds", keyed([1, 2]), slice_by="key")
    store.freeze("ds", keyed([3]), slice_by="key")
    resolved = store.resolve(f"ds@{first.snapshot[:length]}")
    assert resolved.snapshot == first.snapshot
    assert resolved.entry.version == 1
    assert [e.key for e in store.slices(f"ds@{first.snapshot[:length]}")] == [1, 2]
    assert values(store.read_pandas(f"ds@{first.snapshot[:length]}[2]")) == ["2/0", "2/1", "2/2"]


def test_snapshot_prefix_is_case_insensitive(store: chanbatch.Store) -> None:
    first = store.freeze("ds", keyed([1]), slice_by="key")
    assert store.resolve(f"ds@{first.snapshot[:10].upper()}").snapshot == first.snapshot


def test_dataset_alone_is_the_head(store: chanbatch.Store) -> None:
    store.freeze("ds", keyed([1]), slice_by="key")
    second = store.freeze("ds", keyed([2]), slice_by="key")
    resolved = store.resolve("ds")
    assert resolved.snapshot == second.snapshot
    assert resolved.entry.version == 2
    assert resolved.slice_key is None
    assert store.resolve("ds[2]").slice_key == 2


def test_heads_read_at_once_are_the_heads_read_one_by_one(store: chanbatch.Store) -> None:
    """On an object store ``refs.heads`` reads several datasets' heads at once (on a local
    disk nothing: each caller reads its own). It gives what ``refs.head`` gives: the newest
    version, None for a dataset never frozen; a name that is no dataset name, and a damaged
    head, are left out, for the caller's own read to refuse."""
    from chanbatch.errors import IntegrityError
    from chanbatch.snapshot import layout, refs

    store.freeze("a", keyed([1]), slice_by="key")
    newest = store.freeze("a", keyed([2]), slice_by="key")
    only = store.freeze("b", keyed([3]), slice_by="key")
    store.freeze("c", keyed([4]), slice_by="key")
    storage = store.storage
    storage.write_atomic(layout.ref_path("c", 1), b"{not json")
    got = refs.heads(storage, ["a", "b", "missing", "no such name!", "a", "c"])
    if storage.is_local:
        assert got == {}
        return
    assert set(got) == {"a", "b", "missing"}
    assert (got["a"].version, got["a"].snapshot) == (2, newest.snapshot)
    assert (got["b"].version, got["b"].snapshot) == (1, only.snapshot)
    assert got["missing"] is None
    assert got == {name: refs.head(storage, name) for name in ("a", "b", "missing")}
    with pytest.raises(IntegrityError):
        refs.head(storage, "c")


@pytest.mark.parametrize("prefix", ["abc", "1234567", "zzzzzzzz", "12345678-"])
def test_short_or_non_hex_prefix_is_rejected(store: chanbatch.Store, prefix: str) -> None:
    store.freeze("ds", keyed([1]), slice_by="key")
    with pytest.raises(RefError) as caught:
        store.resolve(f"ds@{prefix}")
    assert prefix in str(caught.value)


def test_datasets_lists_every_dataset(store: chanbatch.Store) -> None:
    assert store.datasets() == []
    store.freeze("b", keyed([1]), slice_by="key")
    store.freeze("a", keyed([1]), slice_by="key")
    assert sorted(store.datasets()) == ["a", "b"]


def test_empty_range_keeps_the_columns(store: chanbatch.Store) -> None:
    """A range between two slices selects no rows, but the columns are still the dataset's."""
    store.freeze("ints", keyed([1, 10]), slice_by="key")
    table = store.read_table("ints", start=3, stop=9)
    assert table.num_rows == 0
    assert table.schema.names == ["key", "value"]
    assert list(store.read_pandas("ints", start=3, stop=9).columns) == ["key", "value"]


def test_dask_read_of_an_empty_range(store: chanbatch.Store) -> None:
    """Either an empty frame with the dataset's columns, or a chanbatch error the CLI can map."""
    store.freeze("ints", keyed([1, 10]), slice_by="key")
    try:
        ddf = store.read("ints", start=3, stop=9)
    except ChanbatchError as exc:
        assert "ints" in str(exc)
        return
    assert list(ddf.columns) == ["key", "value"]
    assert len(ddf.compute()) == 0
