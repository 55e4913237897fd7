"""Co-sliced right and outer joins, and slices with no partner (issue 18, items 5 and 7).

Both sides of the join are sliced by ``k``, one of its ``on`` columns, so it runs once per slice
key: the left and the right slice of that key, or, where one side has no slice of it, the
other side's slice against zero rows of that side's first slice. The answers must be DuckDB's
over the raw rows, and the very rows and column types of the same join over the same data
frozen as one slice (the whole-input join); a new, replaced or inserted slice of either side
must recompute only its own key's join, with a reason that names it, and end with a cold run's
snapshot.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any

import duckdb
import fsspec
import pandas as pd
import pytest
from hypokit import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chanbatch as cb
from chanbatch.snapshot.freeze import freeze as freeze_slices

HOWS = ("inner", "left", "right", "outer")

BLUEPRINT = """
name: cosliced_{how}
inputs: {{orders: orders, shipments: shipments}}
stages:
  kept: {{from: orders, filter: "a >= {cut}"}}
  sent: {{from: shipments, filter: "w >= {cut}"}}
  joined: {{from: kept, join: {{right: sent, on: [k, j], how: {how}}}}}
outputs: {{joined: joined_{how}}}
"""

SQL_JOIN = {"inner": "JOIN", "left": "LEFT JOIN", "right": "RIGHT JOIN", "outer": "FULL JOIN"}

SQL = """
SELECT coalesce(o.k, s.k) AS k, coalesce(o.j, s.j) AS j, o.a, o.v, o.s, s.w, s.v AS v_right, s.t
FROM (SELECT * FROM orders WHERE a >= {cut}) o
{join} (SELECT * FROM shipments WHERE w >= {cut}) s ON o.k = s.k AND o.j = s.j
"""

COLUMNS = ["k", "j", "a", "v", "s", "w", "v_right", "t"]


def blueprint(how: str, cut: int = 0) -> cb.Blueprint:
    return cb.Blueprint.from_yaml(BLUEPRINT.format(how=how, cut=cut))


def orders(keys: dict[int, list[tuple[Any, ...]]]) -> pd.DataFrame:
    """Rows (j, a, v, s) by slice key ``k``; ``v`` shares its name with a shipments column."""
    rows = [(k, *row) for k, part in keys.items() for row in part]
    frame = pd.DataFrame(rows, columns=["k", "j", "a", "v", "s"])
    return frame.astype({"k": "int64", "j": "Int64", "a": "int64", "v": "float64", "s": "str"})


def shipments(keys: dict[int, list[tuple[Any, ...]]]) -> pd.DataFrame:
    """Rows (j, w, v, t) by slice key ``k``."""
    rows = [(k, *row) for k, part in keys.items() for row in part]
    frame = pd.DataFrame(rows, columns=["k", "j", "w", "v", "t"])
    return frame.astype({"k": "int64", "j": "Int64", "w": "int64", "v": "float64", "t": "str"})


def duck(left: pd.DataFrame, right: pd.DataFrame, how: str, cut: int = 0) -> list[tuple]:
    con = duckdb.connect()
    con.register("orders", left).register("shipments", right)
    return rows_of(con.execute(SQL.format(join=SQL_JOIN[how], cut=cut)).df())


def rows_of(frame: pd.DataFrame) -> list[tuple]:
    """The rows as a sorted multiset, every null (None, NaN, NA) as None."""

    def plain(value: Any) -> Any:
        if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            return None
        return value.item() if hasattr(value, "item") else value

    rows = [tuple(plain(v) for v in row) for row in frame[COLUMNS].itertuples(index=False)]
    return sorted(rows, key=lambda row: [(v is None, v if v is not None else 0) for v in row])


def freeze(store: cb.Store, left: pd.DataFrame, right: pd.DataFrame, *, sliced: bool) -> None:
    if sliced:
        store.freeze("orders", left, slice_by="k")
        store.freeze("shipments", right, slice_by="k")
    else:  # one slice each: the whole-input join
        store.freeze("orders", left, slice=0)
        store.freeze("shipments", right, slice=0)


def join_plan(store: cb.Store, how: str, cut: int = 0) -> dict[Any, str]:
    """Each join task the plan computes: its slice -> why."""
    plan = blueprint(how, cut).plan(store).document()
    return {
        t["slice"]: t["reason"]
        for t in plan["tasks"]
        if t["stage"] == "joined" and t["action"] == "compute"
    }


def joins_computed(store: cb.Store, result: Any) -> list[Any]:
    record = json.loads(store.storage.read_bytes(f"runs/{result.run_id}.json"))
    return sorted(
        t["slice"]
        for t in record["tasks"]
        if t["stage"] == "joined" and t.get("outcome") == "computed"
    )


@pytest.fixture
def memory_stores() -> Any:
    """A factory of fresh ``memory://`` stores, emptied afterwards."""
    made: list[str] = []

    def make() -> cb.Store:
        made.append(f"memory://cosliced-{uuid.uuid4().hex}")
        return cb.Store(made[-1])

    yield make
    fs = fsspec.filesystem("memory")
    for url in made:
        if fs.exists(url):
            fs.rm(url, recursive=True)


# -- property: any slicing, any data ----------------------------------------------------------

js = st.sampled_from([None, 0, 1, 2])  # few values: duplicate keys; None: a null key
vs = st.sampled_from([None, 0.5, 1.5, -2.0])
texts = st.sampled_from([None, "x", "y", "z"])
order_rows = st.lists(st.tuples(js, st.integers(0, 3), vs, texts), min_size=1, max_size=4)
shipment_rows = st.lists(st.tuples(js, st.integers(0, 3), vs, texts), min_size=1, max_size=4)
slicings = st.dictionaries(st.integers(0, 6), order_rows, min_size=1, max_size=5)
shipment_slicings = st.dictionaries(st.integers(0, 6), shipment_rows, min_size=1, max_size=5)


@settings(
    max_examples=examples(30),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    left=slicings,
    right=shipment_slicings,
    how=st.sampled_from(HOWS),
    cut=st.integers(0, 2),  # filters that empty some slices, or all of them
)
def test_a_cosliced_join_is_the_whole_input_join(
    memory_stores: Any, left: dict, right: dict, how: str, cut: int
) -> None:
    """Keys on one side only, slices emptied by a filter, null and duplicate join keys: the
    co-sliced join has DuckDB's rows, and the whole-input join's rows and column types."""
    left_rows, right_rows = orders(left), shipments(right)
    sliced, whole = memory_stores(), memory_stores()
    freeze(sliced, left_rows, right_rows, sliced=True)
    freeze(whole, left_rows, right_rows, sliced=False)
    plan = blueprint(how, cut).plan(sliced).document()
    assert {t["kind"] for t in plan["tasks"] if t["stage"] == "joined"} == {"apply"}
    kept = {"inner": left, "left": left, "right": right, "outer": left | right}[how]
    assert [t["slice"] for t in plan["tasks"] if t["stage"] == "joined"] == sorted(kept)

    blueprint(how, cut).run(sliced, scheduler="sync")
    blueprint(how, cut).run(whole, scheduler="sync")
    got = sliced.read_pandas(f"joined_{how}")
    want = whole.read_pandas(f"joined_{how}")
    assert list(got.columns) == COLUMNS == list(want.columns)
    assert got.dtypes.to_dict() == want.dtypes.to_dict()
    assert rows_of(got) == rows_of(want) == duck(left_rows, right_rows, how, cut)
    # each slice holds the rows of its key, in key order
    assert list(got.k) == sorted(got.k)


# -- incremental: one slice at a time -------------------------------------------------------

LEFT = {
    1: [(0, 1, 0.5, "x"), (1, 2, 1.5, "y")],
    2: [(0, 3, 2.5, "z"), (None, 1, 3.5, "x")],
    3: [(1, 2, 4.5, None), (1, 0, 5.5, "y")],
    5: [(2, 1, 6.5, "x")],
    6: [(0, 1, 7.5, "y")],
}
RIGHT = {
    2: [(0, 1, 9.5, "a"), (0, 2, 8.5, None)],
    3: [(1, 1, 7.5, "b"), (None, 3, 6.5, "c")],
    4: [(2, 2, 5.5, "d")],
    6: [(1, 1, 4.5, "e")],
    7: [(0, 1, 3.5, "f")],
}


class Steps:
    """A store grown one slice at a time, checked after each step against a cold run."""

    def __init__(self, store: cb.Store, how: str) -> None:
        self.store, self.how = store, how
        self.left, self.right = orders(LEFT), shipments(RIGHT)
        freeze(store, self.left, self.right, sliced=True)
        self.last = blueprint(how).run(store, scheduler="sync")

    def add(
        self, side: str, key: int, rows: list[tuple], *, at_most: int | None = 3
    ) -> tuple[dict[Any, str], list[Any]]:
        """Freeze ``rows`` as slice ``key`` of ``side`` (new or replacing one); the join's
        planned tasks with their reasons, and the slices the run then computes. The plan
        computes ``at_most`` tasks in all: by default one join, and the two filters it reads
        (they are not kept)."""
        frame = (orders if side == "orders" else shipments)({key: rows})
        self.store.freeze(side, frame, slice_by="k")
        if side == "orders":
            self.left = pd.concat([self.left[self.left.k != key], frame], ignore_index=True)
        else:
            self.right = pd.concat([self.right[self.right.k != key], frame], ignore_index=True)
        planned = join_plan(self.store, self.how)
        if at_most is not None:
            assert blueprint(self.how).plan(self.store).summary()["compute"] <= at_most
        self.last = blueprint(self.how).run(self.store, scheduler="sync")
        got = self.store.read_pandas(f"joined_{self.how}")
        assert rows_of(got) == duck(self.left, self.right, self.how)
        return planned, joins_computed(self.store, self.last)

    def same_as_cold(self, cold: cb.Store) -> None:
        freeze(cold, self.left, self.right, sliced=True)
        assert blueprint(self.how).run(cold, scheduler="sync").snapshots == self.last.snapshots


@pytest.mark.parametrize("how", HOWS)
def test_one_new_or_replaced_slice_recomputes_one_join(memory_stores: Any, how: str) -> None:
    steps = Steps(memory_stores(), how)
    keeps_right = how in ("right", "outer")
    keeps_left = how != "right"

    # a new shipments slice with no orders of its key (a right-only key)
    planned, computed = steps.add("shipments", 8, [(0, 2, 1.5, "g")])
    if keeps_right:
        assert planned == {8: "shipments's slice 8 is new; no partner in orders"}
        assert computed == [8]
    else:
        assert planned == {} and computed == []

    # a new orders slice with no shipments of its key (a left-only key)
    planned, computed = steps.add("orders", 9, [(1, 2, 0.5, "z")])
    if keeps_left:
        assert planned == {9: "new slice 9; no partner in shipments"}
        assert computed == [9]
    else:
        assert planned == {} and computed == []

    # a shipments slice in the middle, with a partner, corrected
    planned, computed = steps.add("shipments", 3, [(1, 1, 0.5, "b"), (1, 2, 1.0, None)])
    assert planned == {3: "shipments's partner slice 3 changed"}
    assert computed == [3]

    # a right-only shipments slice in the middle corrected
    planned, computed = steps.add("shipments", 4, [(2, 3, 5.0, "d")])
    if keeps_right:
        assert planned == {4: "shipments's slice 4 changed; no partner in orders"}
        assert computed == [4]
    else:
        assert planned == {} and computed == []

    # an orders slice inserted in the middle, where shipments had one alone
    planned, computed = steps.add("orders", 4, [(2, 1, 2.0, "w")])
    assert planned == {4: "new slice 4"}
    assert computed == [4]

    # a left-only orders slice in the middle corrected
    planned, computed = steps.add("orders", 5, [(2, 2, 6.0, None), (0, 0, 1.0, "x")])
    if keeps_left:
        assert planned == {5: "changed slice 5; no partner in shipments"}
        assert computed == [5]
    else:
        assert planned == {} and computed == []

    steps.same_as_cold(memory_stores())


@pytest.mark.parametrize("how", ["left", "outer"])
def test_a_replaced_first_slice_recomputes_the_keys_it_stands_in_for(
    memory_stores: Any, how: str
) -> None:
    """A key with no shipments reads zero rows of shipments' first slice (for its columns), so
    replacing that slice, or inserting one before it, recomputes those keys too, and says so."""
    steps = Steps(memory_stores(), how)
    planned, computed = steps.add("shipments", 2, [(0, 1, 9.0, "a")], at_most=None)
    lone_orders = [k for k in LEFT if k not in RIGHT]  # 1 and 5
    stand_in = "no partner in shipments; its first slice 2, read in its place, changed"
    assert planned == {2: "shipments's partner slice 2 changed"} | dict.fromkeys(
        lone_orders, stand_in
    )
    assert computed == sorted([2, *lone_orders])

    planned, computed = steps.add("shipments", 0, [(0, 1, 1.0, "h")], at_most=None)
    moved = "no partner in shipments; its first slice, read in its place, is now 0"
    new = {0: "shipments's slice 0 is new; no partner in orders"} if how == "outer" else {}
    assert planned == new | dict.fromkeys(lone_orders, moved)
    steps.same_as_cold(memory_stores())


def test_a_removed_partner_slice_is_named(memory_stores: Any) -> None:
    store = memory_stores()
    freeze(store, orders(LEFT), shipments(RIGHT), sliced=True)
    blueprint("outer").run(store, scheduler="sync")
    fewer = shipments({k: rows for k, rows in RIGHT.items() if k != 3})
    freeze_slices(store.storage, "shipments", fewer, slice_by="k", replace=True)
    assert join_plan(store, "outer") == {3: "shipments's partner slice 3 was removed"}


def test_the_order_of_a_cosliced_outer_join(tmp_path: Path) -> None:
    """Slice by slice in key order; within a slice, as the join orders that slice's rows."""
    store = cb.Store(tmp_path / "store")
    freeze(store, orders(LEFT), shipments(RIGHT), sliced=True)
    blueprint("outer").run(store, scheduler="sync")
    got = store.read_pandas("joined_outer")
    assert list(got.k) == sorted(got.k)
    assert sorted(set(got.k)) == sorted(LEFT.keys() | RIGHT.keys())


def test_an_aggregate_after_a_cosliced_outer_join(memory_stores: Any) -> None:
    """The join's slices feed an aggregate's partials: a new right-only slice adds one join and
    one partial, and the totals are DuckDB's."""
    text = BLUEPRINT.format(how="outer", cut=0).replace(
        "outputs: {joined: joined_outer}",
        "  totals: {from: joined, group_by: [j], aggregate: {n: count(), w: sum(w), a: sum(a)}}\n"
        "outputs: {totals: joined_totals}",
    )
    store = memory_stores()
    left, right = orders(LEFT), shipments(RIGHT)
    freeze(store, left, right, sliced=True)
    cb.Blueprint.from_yaml(text).run(store, scheduler="sync")
    more = shipments({8: [(1, 2, 0.5, "g")]})
    store.freeze("shipments", more, slice_by="k")
    plan = cb.Blueprint.from_yaml(text).plan(store).document()
    partials = [t for t in plan["tasks"] if t["kind"] == "partial" and t["action"] == "compute"]
    assert [(t["slice"], t["reason"]) for t in partials] == [
        (8, "shipments's slice 8 is new; no partner in orders")
    ]
    cb.Blueprint.from_yaml(text).run(store, scheduler="sync")
    right = pd.concat([right, more], ignore_index=True)
    con = duckdb.connect().register("orders", left).register("shipments", right)
    want = con.execute(
        f"SELECT j, count(*), sum(w), sum(a) FROM ({SQL.format(join='FULL JOIN', cut=0)})"
        " GROUP BY j ORDER BY j NULLS LAST"
    ).fetchall()
    got = store.read_pandas("joined_totals").sort_values("j", na_position="last")
    assert rows_of_totals(got) == [tuple(None if v is None else int(v) for v in r) for r in want]


def rows_of_totals(frame: pd.DataFrame) -> list[tuple]:
    return [
        tuple(None if pd.isna(v) else int(v) for v in row)
        for row in frame[["j", "n", "w", "a"]].itertuples(index=False)
    ]
