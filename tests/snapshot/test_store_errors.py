"""Contract: every bad input gives a clear chanbatch error and leaves the store as it was."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from storekit import files, flights

import chanbatch
from chanbatch.errors import (
    ChanbatchError,
    InputError,
    InvalidNameError,
    RefError,
    RefNotFoundError,
    SchemaConflictError,
    UsageError,
)


@pytest.fixture
def seeded(store: chanbatch.Store) -> chanbatch.Store:
    """A store holding two versions of ``flights`` (months 2013-01..03)."""
    df = flights(60)
    store.freeze("flights", df, slice_by="month")
    store.freeze("flights", df.assign(dep_delay=df["dep_delay"] * 2), slice_by="month")
    return store


@contextmanager
def unchanged(store: chanbatch.Store) -> Iterator[None]:
    """Assert that the block changes no file of the store, and that the store still verifies."""
    before = files(store.url)
    yield
    assert files(store.url) == before, "a failed operation changed the store"
    report = store.verify()
    assert report.ok, report.document()


def raises(error: type[Exception], store: chanbatch.Store, *must_name: str):
    """pytest.raises for ``error``, checked to name each of ``must_name`` in its message."""

    @contextmanager
    def check() -> Iterator[pytest.ExceptionInfo[Exception]]:
        with unchanged(store), pytest.raises(error) as caught:
            yield caught
        assert isinstance(caught.value, ChanbatchError)
        for thing in must_name:
            assert thing in str(caught.value), f"{thing!r} not named in: {caught.value}"

    return check()


BAD_NAMES = ["a/b", "..", "a b", "", "../x", "/abs", ".hidden", "-x", "a..b", "x" * 129, "ds\n"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_dataset_name_on_freeze(seeded: chanbatch.Store, name: str) -> None:
    with raises(InvalidNameError, seeded, repr(name)) as caught:
        seeded.freeze(name, flights(10), slice_by="month")
    assert caught.value.exit_code == 2
    assert caught.value.hint


@pytest.mark.parametrize("name", ["a/b", "..", "a b", "../x", "../flights"])
def test_bad_dataset_name_in_a_ref(seeded: chanbatch.Store, name: str) -> None:
    with raises(UsageError, seeded, name):
        seeded.read_pandas(name)


def test_empty_ref(seeded: chanbatch.Store) -> None:
    with raises(UsageError, seeded, "''"):
        seeded.resolve("")


def test_missing_file(seeded: chanbatch.Store, tmp_path: Path) -> None:
    good = tmp_path / "2013-05.csv"
    flights(10).to_csv(good, index=False)
    missing = tmp_path / "2013-06.csv"
    with raises(InputError, seeded, str(missing)):
        seeded.freeze("flights", [good, missing])


def test_csv_that_does_not_parse(seeded: chanbatch.Store, tmp_path: Path) -> None:
    bad = tmp_path / "2013-04.csv"
    bad.write_text("month,day\n2013-04,1\n2013-04,2,99\n")
    with raises(InputError, seeded, str(bad)) as caught:
        seeded.freeze("flights", bad)
    assert caught.value.exit_code == 2


def test_unknown_file_type(seeded: chanbatch.Store, tmp_path: Path) -> None:
    odd = tmp_path / "2013-04.txt"
    odd.write_text("hello\n")
    with raises(InputError, seeded, str(odd)):
        seeded.freeze("flights", odd)


def test_empty_frame(seeded: chanbatch.Store) -> None:
    with raises(InputError, seeded, "flights"):
        seeded.freeze("flights", flights(5).iloc[0:0], slice_by="month")


def test_slice_by_missing_column(seeded: chanbatch.Store) -> None:
    with raises(InputError, seeded, "'mnth'") as caught:
        seeded.freeze("flights", flights(10), slice_by="mnth")
    assert "did you mean 'month'" in (caught.value.hint or "")


def test_slice_by_missing_column_in_a_file(seeded: chanbatch.Store, tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    flights(10).to_parquet(path)
    with raises(InputError, seeded, "'carier'", str(path)) as caught:
        seeded.freeze("flights", path, slice_by="carier")
    assert "did you mean 'carrier'" in (caught.value.hint or "")


def test_slice_by_column_with_nulls(seeded: chanbatch.Store) -> None:
    with raises(InputError, seeded, "'carrier'"):
        seeded.freeze("other", flights(40), slice_by="carrier")


def test_slice_and_slice_by_together(seeded: chanbatch.Store) -> None:
    with raises(UsageError, seeded):
        seeded.freeze("flights", flights(10), slice="x", slice_by="month")


def test_frame_without_a_slice(seeded: chanbatch.Store) -> None:
    with raises(UsageError, seeded):
        seeded.freeze("flights", flights(10))


def test_unknown_dataset(seeded: chanbatch.Store) -> None:
    with raises(RefNotFoundError, seeded, "'flight'") as caught:
        seeded.read_pandas("flight")
    assert "flights" in (caught.value.hint or "")


def test_unknown_snapshot_prefix(seeded: chanbatch.Store) -> None:
    taken = {e.snapshot[:8] for e in seeded.history("flights")}
    prefix = next(p for p in ("00000000", "ffffffff", "12345678") if p not in taken)
    with raises(RefNotFoundError, seeded, prefix, "flights"):
        seeded.resolve(f"flights@{prefix}")


def test_unknown_slice(seeded: chanbatch.Store) -> None:
    with raises(RefNotFoundError, seeded, "2013-07", "flights"):
        seeded.read_pandas("flights[2013-07]")


def test_slice_key_of_the_wrong_type(store: chanbatch.Store) -> None:
    store.freeze("ints", pd.DataFrame({"k": [1, 2]}), slice_by="k")
    with raises(RefError, store, "abc"):
        store.resolve("ints[abc]")


def test_schema_conflict_names_column_and_slice(seeded: chanbatch.Store) -> None:
    """The issue: "a column changing from int to string. Say which column and which slices"."""
    df = flights(20, months=4)
    df = df[df["month"] == "2013-04"].assign(flight=lambda d: d["flight"].astype(str))
    with raises(SchemaConflictError, seeded, "'flight'", "2013-04") as caught:
        seeded.freeze("flights", df, slice_by="month")
    assert caught.value.exit_code == 2


def test_schema_conflict_with_a_given_slice_key(seeded: chanbatch.Store) -> None:
    df = flights(10).assign(day=lambda d: d["day"].astype(str))
    with raises(SchemaConflictError, seeded, "'day'", "2013-09"):
        seeded.freeze("flights", df, slice="2013-09")


def test_schema_conflict_between_files(seeded: chanbatch.Store, tmp_path: Path) -> None:
    df = flights(20)
    a, b = tmp_path / "2013-05.parquet", tmp_path / "2013-06.parquet"
    df.to_parquet(a)
    df.assign(flight=df["flight"].astype(str)).to_parquet(b)
    with raises(SchemaConflictError, seeded, "'flight'", "2013-06"):
        seeded.freeze("flights", [a, b])


def test_missing_column_is_a_schema_conflict(seeded: chanbatch.Store) -> None:
    df = flights(10).drop(columns="carrier")
    with raises(SchemaConflictError, seeded, "'carrier'"):
        seeded.freeze("flights", df, slice_by="month")


def test_mixed_key_types(seeded: chanbatch.Store) -> None:
    with raises(InputError, seeded, "flights"):
        seeded.freeze("flights", flights(10), slice=5)
