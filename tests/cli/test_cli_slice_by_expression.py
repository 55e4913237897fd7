"""Slicing on an expression (issue 19, item 5): ``--slice-by "date(time_hour)"`` cuts rows by
the value an expression of the blueprint language computes from each row. The slices are those
a column holding that value would give (computed here with plain pandas), the rows are kept
as they were (no key column is added), and a bad key is one ``Error:`` line."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from clikit import assert_one_error_line, ok_json, run

import chanbatch as cb


@pytest.fixture(scope="module")
def stamped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    rng = np.random.default_rng(11)
    n = 2_000
    start = pd.Timestamp("2013-12-30", tz="UTC")
    frame = pd.DataFrame(
        {
            "time_hour": start + pd.to_timedelta(rng.integers(0, 5 * 24 * 60, n), unit="min"),
            "x": rng.normal(size=n),
            "id": np.arange(n),
        }
    )
    path = tmp_path_factory.mktemp("data") / "stamped.parquet"
    frame.to_parquet(path, index=False)
    return path, frame


def test_a_date_of_a_timestamp_slices_by_day(tmp_path: Path, stamped: tuple) -> None:
    path, frame = stamped
    store = tmp_path / "store"
    doc = ok_json("snapshot", "freeze", "t", path, "--slice-by", "date(time_hour)", store=store)
    want = frame.groupby(frame["time_hour"].dt.date).size()
    assert [s["key"] for s in doc["slices"]] == [d.isoformat() for d in want.index]
    assert [s["rows"] for s in doc["slices"]] == want.tolist()
    inspected = ok_json("snapshot", "inspect", "t", store=store)
    assert inspected["slice_by"] == "date(time_hour)"
    assert [c["name"] for c in inspected["schema"]] == ["time_hour", "x", "id"]
    one = cb.Store(store).read_pandas("t[2014-01-01]")
    expected = frame[frame["time_hour"].dt.date == dt.date(2014, 1, 1)]
    assert sorted(one["id"]) == sorted(expected["id"])


def test_year_month_and_arithmetic_keys_and_appending(tmp_path: Path, stamped: tuple) -> None:
    path, frame = stamped
    store = tmp_path / "store"
    doc = ok_json(
        "snapshot", "freeze", "m", path, "--slice-by", "year_month(time_hour)", store=store
    )
    months = frame["time_hour"].dt.strftime("%Y-%m")
    assert [s["key"] for s in doc["slices"]] == sorted(months.unique())
    assert [s["rows"] for s in doc["slices"]] == months.value_counts().sort_index().tolist()
    numeric = "year(time_hour) * 100 + month(time_hour)"
    doc = ok_json("snapshot", "freeze", "n", path, "--slice-by", numeric, store=store)
    assert [s["key"] for s in doc["slices"]] == [201312, 201401]

    # a later file with more days appends them, by the same expression
    later = frame.assign(
        time_hour=frame["time_hour"] + pd.Timedelta(days=40), id=frame["id"] + 10**6
    )
    later_path = tmp_path / "later.parquet"
    later.to_parquet(later_path, index=False)
    doc = ok_json(
        "snapshot", "freeze", "m", later_path, "--slice-by", "year_month(time_hour)", store=store
    )
    assert [s["key"] for s in doc["slices"] if s["new"]] == ["2014-02"]
    everything = cb.Store(store).read_pandas("m")
    assert len(everything) == 2 * len(frame)


@pytest.mark.parametrize(
    ("expression", "needles"),
    [
        ("x * 2", ["slice key 'x * 2' gives values of type double", "cast(x, 'int')"]),
        ("date(time_hours)", ["reads column 'time_hours'", "time_hour"]),
        ("if_else(x > 0, 'up', null)", ["is null for", "every row needs a slice key"]),
        ("date(time_hour", ["cannot slice by 'date(time_hour'", "never closed"]),
    ],
)
def test_a_bad_key_is_one_error_line_and_nothing_is_written(
    tmp_path: Path, stamped: tuple, expression: str, needles: list[str]
) -> None:
    path, _ = stamped
    store = tmp_path / "store"
    result = run("snapshot", "freeze", "t", path, "--slice-by", expression, store=store)
    line = assert_one_error_line(result, result.code)
    assert result.code in (1, 2)
    for needle in needles:
        assert needle in line or needle in result.stderr, result
    assert not (store / "refs" / "t").exists()
