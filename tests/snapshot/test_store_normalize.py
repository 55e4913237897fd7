"""Contract: the same data built differently is the same slice (DESIGN.md section 1)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from storekit import files

import chanbatch


def base_frame() -> pd.DataFrame:
    """The reference: pandas' default Arrow strings, naive timestamps, a RangeIndex."""
    return pd.DataFrame(
        {
            "carrier": pd.Series(["AA", "B6", "DL", "AA", "UA"], dtype="str"),
            "origin": pd.Series(["JFK", "LGA", "EWR", "JFK", "LGA"], dtype="str"),
            "dep_delay": [1.5, float("nan"), -3.0, 12.25, 0.0],
            "dep_time": pd.to_datetime(
                [
                    "2013-01-01 05:17:00",
                    "2013-01-01 06:00:00",
                    "2013-01-02 23:59:59",
                    "2013-01-03 00:00:00",
                    "2013-01-31 12:30:00",
                ]
            ).as_unit("us"),
            "day": pd.array([1, 1, 2, 3, 31], dtype="int64"),
            "date": [dt.date(2013, 1, d) for d in (1, 1, 2, 3, 31)],
        }
    )


def object_strings(tmp_path: Path) -> pd.DataFrame:
    df = base_frame()
    for name in ("carrier", "origin"):
        df[name] = pd.Series(df[name].tolist(), dtype=object)
    return df


def arrow_large_strings(tmp_path: Path) -> pa.Table:
    table = pa.Table.from_pandas(base_frame(), preserve_index=False)
    schema = pa.schema(
        [pa.field(f.name, pa.large_string()) if f.type == pa.string() else f for f in table.schema]
    )
    return table.cast(schema)


def arrow_string_views(tmp_path: Path) -> pa.Table:
    table = pa.Table.from_pandas(base_frame(), preserve_index=False)
    schema = pa.schema(
        [pa.field(f.name, pa.string_view()) if f.type == pa.string() else f for f in table.schema]
    )
    return table.cast(schema)


def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "flights.csv"
    path.write_text(
        "carrier,origin,dep_delay,dep_time,day,date\n"
        "AA,JFK,1.5,2013-01-01 05:17:00,1,2013-01-01\n"
        "B6,LGA,,2013-01-01 06:00:00,1,2013-01-01\n"
        "DL,EWR,-3.0,2013-01-02 23:59:59,2,2013-01-02\n"
        "AA,JFK,12.25,2013-01-03 00:00:00,3,2013-01-03\n"
        "UA,LGA,0.0,2013-01-31 12:30:00,31,2013-01-31\n"
    )
    return path


def utc_timestamps(tmp_path: Path) -> pd.DataFrame:
    df = base_frame()
    df["dep_time"] = df["dep_time"].dt.tz_localize("UTC")
    return df


def other_zone_timestamps(tmp_path: Path) -> pd.DataFrame:
    """The same instants, written in New York time."""
    df = base_frame()
    df["dep_time"] = df["dep_time"].dt.tz_localize("UTC").dt.tz_convert("America/New_York")
    return df


def nanosecond_timestamps(tmp_path: Path) -> pd.DataFrame:
    df = base_frame()
    df["dep_time"] = df["dep_time"].astype("datetime64[ns]")
    return df


def categorical_strings(tmp_path: Path) -> pd.DataFrame:
    df = base_frame()
    df["carrier"] = df["carrier"].astype("category")
    df["origin"] = pd.Categorical(df["origin"], categories=["LGA", "JFK", "EWR", "SFO"])
    return df


def custom_index(tmp_path: Path) -> pd.DataFrame:
    df = base_frame()
    df.index = pd.Index([50, 40, 30, 20, 10], name="row")
    return df


def multi_index(tmp_path: Path) -> pd.DataFrame:
    return base_frame().set_index(["carrier", "origin"], drop=False)


def parquet_file(tmp_path: Path) -> Path:
    path = tmp_path / "flights.parquet"
    base_frame().to_parquet(path)  # a RangeIndex lives in the pandas metadata only
    return path


VARIANTS: dict[str, Callable[[Path], object]] = {
    "object strings": object_strings,
    "pyarrow large_string": arrow_large_strings,
    "pyarrow string_view": arrow_string_views,
    "csv file": csv_file,
    "utc timestamps": utc_timestamps,
    "new york timestamps": other_zone_timestamps,
    "nanosecond timestamps": nanosecond_timestamps,
    "categorical strings": categorical_strings,
    "non-default index": custom_index,
    "multiindex": multi_index,
    "parquet file": parquet_file,
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_same_data_built_differently_is_the_same_slice(
    store: chanbatch.Store, store_url: str, tmp_path: Path, variant: str
) -> None:
    reference = store.freeze("reference", base_frame(), slice="2013-01")
    other = store.freeze("other", VARIANTS[variant](tmp_path), slice="2013-01")

    assert [s.id for s in other.slices] == [s.id for s in reference.slices]
    assert other.snapshot == reference.snapshot
    objects = [p for p in files(store_url) if p.startswith("objects/")]
    assert len(objects) == 1, "equal data must dedupe to one object"


def test_pandas_index_in_a_parquet_file_is_not_data(store: chanbatch.Store, tmp_path: Path) -> None:
    """DESIGN.md: "no pandas index". A frame's index is dropped at freeze; the same frame saved
    with ``to_parquet`` stores its index as a column named in the pandas metadata, and freezing
    that file must drop it too, or the same data gives different slices.
    """
    path = tmp_path / "flights.parquet"
    custom_index(tmp_path).to_parquet(path)
    reference = store.freeze("reference", base_frame(), slice="2013-01")
    from_file = store.freeze("from_file", path, slice="2013-01")
    assert store.read_table("from_file").schema.names == list(base_frame().columns)
    assert from_file.slices[0].id == reference.slices[0].id


def test_categorical_split_column_gives_string_keys(store: chanbatch.Store) -> None:
    df = base_frame()
    plain = store.freeze("plain", df, slice_by="carrier")
    cat = df.assign(carrier=df["carrier"].astype("category"))
    categorical = store.freeze("categorical", cat, slice_by="carrier")
    assert [s.key for s in categorical.slices] == ["AA", "B6", "DL", "UA"]
    assert [s.id for s in categorical.slices] == [s.id for s in plain.slices]


def test_utc_instants_are_kept_across_zones(store: chanbatch.Store) -> None:
    """Zoned timestamps are converted to UTC (the instant is kept), naive ones are labelled."""
    df = other_zone_timestamps(Path("."))
    store.freeze("zoned", df, slice="x")
    got = store.read_pandas("zoned")["dep_time"]
    expected = base_frame()["dep_time"].dt.tz_localize("UTC")
    assert got.tolist() == expected.tolist()
    assert str(got.dt.tz) == "UTC"


def test_different_data_is_a_different_slice(store: chanbatch.Store) -> None:
    df = base_frame()
    a = store.freeze("a", df, slice="k")
    b = store.freeze("b", df.assign(dep_delay=df["dep_delay"] + 1), slice="k")
    c = store.freeze("c", df.iloc[::-1], slice="k")  # row order is part of the data
    ids = {a.slices[0].id, b.slices[0].id, c.slices[0].id}
    assert len(ids) == 3
