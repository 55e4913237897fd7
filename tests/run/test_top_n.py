"""Top-N (issue 18, item 3): a sort read only by a limit keeps each slice's first n rows and
merges them up the combine tree. Exactly a whole-input stable sort + limit (nulls last, ties in
slice order then row order): checked against DuckDB ordering by the same keys and then by
(slice, row), over random data, slicings and arrival orders; a new slice costs its own top rows
and the merges on its path."""

from __future__ import annotations

import json
import random
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from hypokit import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chanbatch as cb

BLUEPRINT = """
name: top
inputs: {{t: t}}
stages:
  ranked: {{from: t, sort: [{keys}]}}
  first: {{from: ranked, limit: {n}}}
outputs: {{first: top_rows}}
"""

SQL = "SELECT id FROM frame ORDER BY {order}, day, pos LIMIT {n}"

rows = st.fixed_dictionaries(
    {
        "day": st.integers(0, 9),
        "x": st.one_of(st.none(), st.integers(0, 4)),
        "y": st.one_of(st.none(), st.sampled_from([-1.5, 0.0, 2.25, 7.0])),
        "s": st.one_of(st.none(), st.sampled_from(["a", "b", "é"])),
    }
)
keys = st.lists(
    st.tuples(st.sampled_from(["x", "y", "s"]), st.booleans()),
    min_size=1,
    max_size=3,
    unique_by=lambda k: k[0],
)


def frame_of(records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records, columns=["day", "x", "y", "s"])
    frame = frame.astype({"day": "int64", "x": "Int64", "y": "float64", "s": "string"})
    frame["id"] = range(len(frame))
    return frame


def want_ids(frame: pd.DataFrame, order: list[tuple[str, bool]], n: int) -> list[int]:
    """DuckDB, with the rows' slice and position as the last keys: a stable order by hand."""
    frame = frame.assign(pos=frame.groupby("day").cumcount())
    sql = ", ".join(f"{c} {'ASC' if asc else 'DESC'} NULLS LAST" for c, asc in order)
    con = duckdb.connect().register("frame", frame)
    return [r[0] for r in con.execute(SQL.format(order=sql, n=n)).fetchall()]


def blueprint(order: list[tuple[str, bool]], n: int) -> str:
    return BLUEPRINT.format(keys=", ".join(c if asc else f"-{c}" for c, asc in order), n=n)


def run(store: cb.Store, text: str) -> cb.run.runner.RunResult:
    return cb.Blueprint.from_yaml(text).run(store, scheduler="sync")


@settings(max_examples=examples(30), deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(rows, min_size=0, max_size=60),
    keys,
    st.integers(1, 12),
    st.randoms(use_true_random=False),
)
def test_top_n_is_the_whole_sort_and_limit_in_any_order_of_arrival(
    tmp_path_factory: pytest.TempPathFactory,
    records: list[dict],
    order: list[tuple[str, bool]],
    n: int,
    rng: random.Random,
) -> None:
    tmp_path = tmp_path_factory.mktemp("top")
    frame = frame_of(records)
    if frame.empty:
        return
    text = blueprint(order, n)
    cold = cb.Store(tmp_path / "cold")
    cold.freeze("t", frame, slice_by="day")
    first = run(cold, text)
    assert cold.read_pandas("top_rows")["id"].tolist() == want_ids(frame, order, n)

    days = sorted(frame["day"].unique())
    rng.shuffle(days)
    grown = cb.Store(tmp_path / "grown")
    for day in days:
        grown.freeze("t", frame[frame["day"] == day], slice_by="day")
        last = run(grown, text)
    assert last.snapshots == first.snapshots


def test_a_new_slice_costs_its_top_rows_and_its_path(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "day": [d for d in range(84) for _ in range(5)],
            "x": [(d * 7 + i) % 23 for d in range(84) for i in range(5)],
        }
    ).assign(y=0.5, s="a", id=lambda f: range(len(f)))
    text = blueprint([("x", False)], 10)
    store = cb.Store(tmp_path / "store")
    store.freeze("t", frame, slice_by="day")
    plan = cb.Blueprint.from_yaml(text).plan(store).document()
    kinds = {t["kind"] for t in plan["tasks"] if t["stage"] == "ranked"}
    assert kinds == {"partial", "combine"}  # not one task over every slice
    run(store, text)
    new = pd.DataFrame({"day": [84], "x": [99], "y": [0.5], "s": ["a"], "id": [10_000]})
    store.freeze("t", new, slice_by="day")
    result = run(store, text)
    record = json.loads((tmp_path / "store" / "runs" / f"{result.run_id}.json").read_text())
    done = [
        t["kind"]
        for t in record["tasks"]
        if t["stage"] == "ranked" and t.get("outcome") == "computed"
    ]
    assert done.count("partial") == 1 and done.count("combine") <= 7
    everything = pd.concat([frame, new], ignore_index=True)
    got = store.read_pandas("top_rows")["id"].tolist()
    assert got == want_ids(everything, [("x", False)], 10)
    assert got[0] == 10_000


def test_a_sort_read_by_more_than_a_limit_sorts_everything(tmp_path: Path) -> None:
    store = cb.Store(tmp_path / "store")
    store.freeze(
        "t",
        frame_of([{"day": d, "x": d % 3, "y": None, "s": "a"} for d in range(6)]),
        slice_by="day",
    )
    text = blueprint([("x", True)], 2).replace(
        "outputs: {first: top_rows}", "outputs: {first: top_rows, ranked: all_ranked}"
    )
    plan = cb.Blueprint.from_yaml(text).plan(store).document()
    assert {t["kind"] for t in plan["tasks"] if t["stage"] == "ranked"} == {"whole"}


def test_a_limit_without_sort_reads_only_the_slices_it_needs(tmp_path: Path) -> None:
    """limit: 7 over slices of 5 rows reads the first two (their rows are known from the
    manifest); a slice appended later does not touch it. A limit after a filter, whose rows
    are known only once it has run, still reads everything."""
    frame = pd.DataFrame({"day": [d for d in range(10) for _ in range(5)], "x": range(50)})
    store = cb.Store(tmp_path / "store")
    store.freeze("t", frame, slice_by="day")
    text = "name: first\ninputs: {t: t}\nstages:\n  head: {from: t, limit: 7}\noutputs: {head: first_rows}\n"
    plan = cb.Blueprint.from_yaml(text).plan(store)
    (whole,) = [t for t in plan.plan.tasks.values() if t.stage == "head"]
    assert len(whole.deps) == 2
    run(store, text)
    assert store.read_pandas("first_rows")["x"].tolist() == list(range(7))
    store.freeze("t", pd.DataFrame({"day": [10], "x": [-1]}), slice_by="day")
    again = run(store, text)
    assert again.stats["stages"]["head"]["computed"] == 0
    assert store.read_pandas("first_rows")["x"].tolist() == list(range(7))

    filtered = text.replace(
        "head: {from: t, limit: 7}",
        "odd: {from: t, filter: 'x % 2 == 1'}\n  head: {from: odd, limit: 7}",
    )
    plan = cb.Blueprint.from_yaml(filtered).plan(store)
    (whole,) = [t for t in plan.plan.tasks.values() if t.stage == "head"]
    assert len(whole.deps) == 11


def test_plan_blames_what_union_parts_limits_and_top_n_read(tmp_path: Path) -> None:
    """A union slice whose other part changed, a limit over the first slices and the limit
    after a top-N are blamed on the input slices below them, named with their input when it is
    not the stage's driving one."""
    store = cb.Store(tmp_path / "store")
    rows = pd.DataFrame({"day": [1, 2, 3], "x": [1, 2, 3]})
    store.freeze("a", rows, slice_by="day")
    store.freeze("b", rows, slice_by="day")
    text = """
name: reasons
inputs: {a: a, b: b}
stages:
  both: {from: a, union: [b]}
  ranked: {from: both, sort: [-x]}
  top: {from: ranked, limit: 2}
  head: {from: a, limit: 2}
outputs: {both: both_out, top: top_out, head: head_out}
"""
    bp = cb.Blueprint.from_yaml(text)
    bp.run(store, scheduler="sync")
    store.freeze("b", pd.DataFrame({"day": [2, 4], "x": [9, 7]}), slice_by="day")
    store.freeze("a", pd.DataFrame({"day": [1], "x": [5]}), slice_by="day")
    reasons = {
        (t["stage"], t["slice"], t["kind"]): t["reason"].split("; reused if")[0]
        for t in bp.plan(store).document()["tasks"]
        if t["action"] == "compute"
    }
    assert reasons[("both", 1, "apply")] == "changed slice 1"
    assert reasons[("both", 2, "apply")] == "b's changed slice 2"
    assert reasons[("ranked", 2, "partial")] == "b's changed slice 2"
    assert reasons[("top", None, "whole")] == (
        "b's new slice 4; changed slice 1; b's changed slice 2"
    )
    assert reasons[("head", None, "whole")] == "changed slice 1"
    assert not any("not in the cache" in r for r in reasons.values())


def test_many_slices_top_rows_are_computed_together_as_each_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold run over many small slices computes their top rows in batches (one sort per
    batch, one pack of results per batch), and stores, key by key, what each slice computed
    alone stores; the answer is DuckDB's. The columns are those a top-N keeps and a generator
    writes: an int32 with nulls, a timestamp, a date, text, and a price with ties and nulls."""
    import numpy as np
    import pyarrow as pa

    from chanbatch.engine import batch

    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 13, 120)
    n = int(sizes.sum())
    line = rng.integers(1, 8, n).astype(object)
    line[rng.random(n) < 0.1] = None
    price = rng.choice([10.0, 99.5, 250.0, 1e6], n).astype(object)
    price[rng.random(n) < 0.05] = None
    table = pa.table(
        {
            "day": pa.array(np.repeat(np.arange(120), sizes)),
            "line": pa.array(line, pa.int32()),
            "price": pa.array(price, pa.float64()),
            "at": pa.array(rng.integers(0, 10**15, n), pa.timestamp("us", tz="UTC")),
            "shipped": pa.array(rng.integers(8000, 9000, n).astype("int32"), pa.date32()),
            "note": pa.array([f"n{i}" for i in range(n)]),
        }
    )
    text = """
name: priciest
inputs: {t: t}
stages:
  ranked: {from: t, sort: [-price, line]}
  first: {from: ranked, limit: 9}
outputs: {first: top_rows}
"""

    def cold(root: Path) -> tuple[str, dict[str, tuple[str, int]], set[str]]:
        store = cb.Store(str(root))
        store.freeze("t", table, slice_by="day")
        result = cb.Blueprint.from_yaml(text).run(store, scheduler="threads")
        partials = [e for e in store.cache_entries(stage="ranked") if e.kind == "partial"]
        assert len(partials) == 120
        entries = {e.key: (e.ident, e.rows) for e in store.cache_entries()}
        return str(result.snapshots["first"]["snapshot"]), entries, {e.object for e in partials}

    together, entries, objects = cold(tmp_path / "together")
    assert len(objects) < 10  # the partials of a batch share one pack
    monkeypatch.setattr(batch, "BATCH_SLICES", 1)  # no batches: every task alone
    alone, entries_alone, objects_alone = cold(tmp_path / "alone")
    assert len(objects_alone) == 120
    assert together == alone
    assert entries == entries_alone

    got = cb.Store(str(tmp_path / "together")).read_pandas("top_rows")
    frame = table.to_pandas().assign(pos=lambda f: f.groupby("day").cumcount())
    with duckdb.connect() as con:
        con.register("frame", frame)
        want = con.execute(
            "SELECT note FROM frame ORDER BY price DESC NULLS LAST, line ASC NULLS LAST, day, pos"
            " LIMIT 9"
        ).fetchall()
    assert got["note"].tolist() == [r[0] for r in want]
