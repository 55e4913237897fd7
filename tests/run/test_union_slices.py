"""Unions of inputs sliced the same way run slice by slice (issue 18, item 4): the output is
sliced like its inputs, a new or replaced slice of any input recomputes only that slice's
union (and what reads it), and a grown store ends with the snapshot id of a cold run."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

import chanbatch as cb

BLUEPRINT = """
name: both_years
inputs: {a: flights_a, b: flights_b}
stages:
  late: {from: b, filter: "delay > 30"}
  all: {from: a, union: [b, late]}
  per_month: {from: all, group_by: [month], aggregate: {n: count(), total: sum(delay)}}
outputs: {all: all_flights, per_month: all_per_month}
"""


def flights(months: range, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = 20 * len(months)
    return pd.DataFrame(
        {
            "month": np.repeat(np.array(list(months)), 20),
            "carrier": rng.choice(["AA", "B6", "DL"], rows),
            "delay": rng.integers(-10, 90, rows),
        }
    )


def run(store: cb.Store, tmp_path: Path) -> cb.run.runner.RunResult:
    path = tmp_path / "union.yaml"
    path.write_text(BLUEPRINT)
    return cb.Blueprint.from_yaml(path).run(store, scheduler="sync")


def computed(store: Path, result: cb.run.runner.RunResult, stage: str) -> int:
    record = json.loads((store / "runs" / f"{result.run_id}.json").read_text())
    return sum(1 for t in record["tasks"] if t["stage"] == stage and t.get("outcome") == "computed")


def expected(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple]]:
    late = b[b.delay > 30]
    rows = pd.concat(
        [
            part
            for m in sorted(set(a.month) | set(b.month))
            for part in (a[a.month == m], b[b.month == m], late[late.month == m])
        ],
        ignore_index=True,
    )
    per_month = duck(
        a,
        b,
        "SELECT month, count(*), sum(delay) FROM (SELECT * FROM a UNION ALL SELECT * FROM b"
        " UNION ALL SELECT * FROM b WHERE delay > 30) GROUP BY month ORDER BY month",
    )
    return rows, per_month


def duck(a: pd.DataFrame, b: pd.DataFrame, sql: str) -> list[tuple]:
    """DuckDB's answer to ``sql`` over the frames ``a`` and ``b``."""
    con = duckdb.connect()
    con.register("a", a).register("b", b)
    return con.execute(sql).fetchall()


def check(store: cb.Store, a: pd.DataFrame, b: pd.DataFrame) -> None:
    rows, per_month = expected(a, b)
    got = store.read_pandas("all_flights")[["month", "carrier", "delay"]]
    pd.testing.assert_frame_equal(got, rows, check_dtype=False)
    months = sorted(set(a.month) | set(b.month))
    assert [s["key"] for s in store.inspect("all_flights").document()["slices"]] == months
    agg = store.read_pandas("all_per_month").sort_values("month")
    assert [tuple(int(v) for v in r) for r in agg.itertuples(index=False)] == per_month


def test_a_new_slice_of_either_input_recomputes_only_its_union(tmp_path: Path) -> None:
    a, b = flights(range(1, 13), seed=1), flights(range(7, 19), seed=2)  # overlapping months
    store = cb.Store(tmp_path / "store")
    store.freeze("flights_a", a, slice_by="month")
    store.freeze("flights_b", b[b.month < 18], slice_by="month")
    run(store, tmp_path)

    store.freeze("flights_b", b[b.month == 18], slice_by="month")  # a new month of b
    grown = run(store, tmp_path)
    assert computed(tmp_path / "store", grown, "all") == 1
    check(store, a, b)

    replaced = a[a.month == 9].assign(delay=lambda f: f.delay + 1)  # a month of a replaced
    store.freeze("flights_a", replaced, slice_by="month")
    again = run(store, tmp_path)
    assert computed(tmp_path / "store", again, "all") == 1
    a = pd.concat([a[a.month != 9], replaced]).sort_values("month", kind="stable")
    check(store, a.reset_index(drop=True), b)

    cold = cb.Store(tmp_path / "cold")
    cold.freeze("flights_a", a, slice_by="month")
    cold.freeze("flights_b", b, slice_by="month")
    assert run(cold, tmp_path).snapshots == again.snapshots


def test_inputs_sliced_by_other_columns_are_read_whole(tmp_path: Path) -> None:
    a, b = flights(range(1, 4), seed=3), flights(range(1, 4), seed=4)
    store = cb.Store(tmp_path / "store")
    store.freeze("flights_a", a, slice_by="month")
    store.freeze("flights_b", b, slice_by="carrier")
    plan = cb.Blueprint.from_yaml(BLUEPRINT).plan(store).document()
    kinds = {t["kind"] for t in plan["tasks"] if t["stage"] == "all"}
    assert kinds == {"whole"}
    run(store, tmp_path)
    got = store.read_pandas("all_flights")[["month", "carrier", "delay"]]
    b_read = b.sort_values("carrier", kind="stable")  # b as read: slice by slice (carrier)
    want = pd.concat([a, b_read, b_read[b_read.delay > 30]], ignore_index=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_a_union_read_by_an_aggregate_reads_only_the_columns_it_needs(tmp_path: Path) -> None:
    """The plan loads only the columns the aggregate after the union reads; each slice of the
    union must take those (it asked for every column of ``from``: KeyError)."""
    store = cb.Store(tmp_path / "store")
    a, b = flights(range(1, 4), seed=5), flights(range(2, 6), seed=6)
    store.freeze("flights_a", a.assign(extra=1), slice_by="month")
    store.freeze("flights_b", b.assign(extra=2), slice_by="month")
    text = """
name: both_totals
inputs: {a: flights_a, b: flights_b}
stages:
  all: {from: a, union: [b]}
  totals: {from: all, group_by: [carrier], aggregate: {n: count(), total: sum(delay)}}
outputs: {totals: union_totals}
"""
    cb.Blueprint.from_yaml(text).run(store, scheduler="sync")
    got = store.read_pandas("union_totals").sort_values("carrier")
    con = duckdb.connect().register("a", a).register("b", b)
    want = con.execute(
        "SELECT carrier, count(*), sum(delay) FROM (SELECT * FROM a UNION ALL SELECT * FROM b)"
        " GROUP BY carrier ORDER BY carrier"
    ).fetchall()
    assert [tuple(r) for r in got[["carrier", "n", "total"]].itertuples(index=False)] == want


MANY_DAYS = """
name: shops
inputs: {a: shop_a, b: shop_b}
stages:
  a_cols: {from: a, select: [day, shop, amount]}
  b_twice: {from: b, derive: {amount: "amount * 2"}}
  b_cols: {from: b_twice, select: [amount, shop, day]}
  both: {from: a_cols, union: [b_cols]}
  big: {from: both, filter: "amount > 0"}
  per_shop: {from: big, group_by: [shop], aggregate: {n: count(), value: sum(amount)}}
outputs: {per_shop: shop_totals}
"""


@pytest.mark.parametrize("b_amounts", ["float64", "int64"])
def test_many_days_unioned_in_batches_store_what_each_day_alone_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, b_amounts: str
) -> None:
    """A union by slice over many small day slices runs in batches with the stages before and
    after it: each batch reads its days of both inputs, puts each side through its own stages
    and each day's rows of ``a`` before its rows of ``b``. Days of one input only, columns in
    another order in ``b``. Every cache entry is what each day computed alone stores, and the
    answer is DuckDB's. With amounts of another type in ``b`` the union takes pandas' way,
    day by day inside the batch, and still stores the same."""
    from chanbatch.engine import batch

    rng = np.random.default_rng(7)

    def days_of(days: list[int]) -> pd.DataFrame:
        sizes = rng.integers(1, 7, len(days))
        n = int(sizes.sum())
        return pd.DataFrame(
            {
                "day": np.repeat(days, sizes).astype("int64"),
                "shop": rng.choice(["north", "south", "east"], n),
                "amount": rng.choice([1e16, 1.0, -1e16, 0.25, 3.5, -2.0], n),
                "note": rng.choice(["x", "y"], n),
            }
        )

    a = days_of([d for d in range(120) if d % 10 != 3])
    b = days_of(list(range(40, 150)))[["amount", "note", "shop", "day"]]
    b["amount"] = b["amount"].round().astype(b_amounts) if b_amounts == "int64" else b["amount"]

    def cold(root: Path) -> tuple[dict, dict[str, tuple[str, int]], int]:
        store = cb.Store(root)
        store.freeze("shop_a", a, slice_by="day")
        store.freeze("shop_b", b, slice_by="day")
        result = cb.Blueprint.from_yaml(MANY_DAYS).run(store, scheduler="threads")
        entries = {e.key: (e.ident, e.rows) for e in store.cache_entries()}
        partials = {e.object for e in store.cache_entries(stage="per_shop") if e.kind == "partial"}
        want = duck(
            a,
            b,
            "SELECT shop, count(*), sum(amount) FROM (SELECT day, shop, amount FROM a UNION ALL"
            " SELECT day, shop, amount * 2 FROM b) WHERE amount > 0 GROUP BY shop ORDER BY shop",
        )
        got = store.read_pandas("shop_totals").sort_values("shop")
        assert [(s, int(n)) for s, n, _ in want] == list(zip(got["shop"], got["n"], strict=True))
        # float sums of positive amounts in another order
        assert np.allclose(got["value"], [float(v) for *_, v in want], rtol=1e-12, atol=0)
        return result.snapshots, entries, len(partials)

    together, entries, packs = cold(tmp_path / "together")
    assert packs < 10  # the days' partials share a few packs
    monkeypatch.setattr(batch, "BATCH_SLICES", 1)  # no batches: every task alone
    alone, entries_alone, packs_alone = cold(tmp_path / "alone")
    assert packs_alone > 100  # one per day (days whose partials are equal share one)
    assert entries == entries_alone
    assert together == alone
