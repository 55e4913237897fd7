"""Windows across slices (issue 18, item 6): every result equals DuckDB's ``... OVER (PARTITION
BY ... ORDER BY ... RANGE|ROWS BETWEEN ...)`` on the same raw rows, over random data, frames and
arrival orders; a range frame over the slicing column runs slice by slice with a halo, so a new,
replaced or inserted slice recomputes only the slices whose frames reach it, and the output id
is a cold run's."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import random
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypokit import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chanbatch as cb
from chanbatch.blueprint import parse_blueprint
from chanbatch.engine.window import window

FUNCS = {
    "n": ("count()", "count(*)"),
    "nx": ("count(x)", "count(x)"),
    "sx": ("sum(x)", "sum(x)"),
    "my": ("mean(y)", "avg(y)"),
    "lo": ("min(y)", "min(y)"),
    "hi": ("max(x)", "max(x)"),
    "top": ("max(s)", "max(s)"),
}
POSITIONAL = {
    "prev": ("lag(x)", "lag(x)"),
    "ahead": ("lead(y, 2)", "lead(y, 2)"),
    "rn": ("row_number()", "row_number()"),
}

rows = st.fixed_dictionaries(
    {
        "day": st.integers(0, 9),
        "g": st.one_of(st.none(), st.sampled_from(["a", "b"])),
        "x": st.one_of(st.none(), st.integers(-5, 5)),
        "y": st.one_of(st.none(), st.sampled_from([-1.5, 0.0, 2.25, 7.0, 1e6])),
        "s": st.one_of(st.none(), st.sampled_from(["p", "q", "é"])),
    }
)
offsets = st.one_of(st.just("unbounded"), st.integers(0, 3))


def frame_of(records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records, columns=["day", "g", "x", "y", "s"])
    frame = frame.astype({"day": "int64", "g": "string", "x": "Int64", "y": "float64"})
    frame["s"] = frame["s"].astype("string")
    frame["id"] = np.arange(len(frame), dtype="int64")
    return frame


def blueprint(unit: str, before: object, after: object, funcs: dict, order: str) -> str:
    columns = ", ".join(f"{name}: '{ours}'" for name, (ours, _) in funcs.items())
    return f"""
name: windows
inputs: {{t: t}}
stages:
  rolled:
    from: t
    window:
      partition_by: g
      order_by: {order}
      {unit}: {{preceding: {before}, following: {after}}}
      columns: {{{columns}}}
outputs: {{rolled: rolled}}
"""


def duck(frame: pd.DataFrame, unit: str, before: object, after: object, funcs: dict, order: str):
    def bound(value: object, side: str) -> str:
        if value == "unbounded":
            return f"UNBOUNDED {side}"
        return "CURRENT ROW" if value == 0 else f"{value} {side}"

    spec = (
        f"PARTITION BY g ORDER BY {order} "
        f"{unit.upper()} BETWEEN {bound(before, 'PRECEDING')} AND {bound(after, 'FOLLOWING')}"
    )
    framed = [f"{sql} OVER w AS {name}" for name, (_, sql) in funcs.items() if name in FUNCS]
    positional = [
        f"{sql} OVER (PARTITION BY g ORDER BY {order}) AS {name}"
        for name, (_, sql) in funcs.items()
        if name in POSITIONAL
    ]
    sql = f"SELECT id, {', '.join(framed + positional)} FROM frame WINDOW w AS ({spec}) ORDER BY id"
    con = duckdb.connect()
    con.register("frame", frame)
    return con.execute(sql).df()


def assert_same(got: pd.DataFrame, want: pd.DataFrame, names: list[str]) -> None:
    got = got.sort_values("id").reset_index(drop=True)
    assert got["id"].tolist() == want["id"].tolist()
    for name in names:
        ours, theirs = got[name], want[name]
        if pd.api.types.is_float_dtype(theirs) and not pd.api.types.is_string_dtype(ours):
            a = ours.astype("float64").to_numpy()
            b = theirs.astype("float64").to_numpy()
            assert np.allclose(a, b, rtol=1e-12, atol=1e-9, equal_nan=True), name
        else:
            assert [None if pd.isna(v) else v for v in ours] == [
                None if pd.isna(v) else v for v in theirs
            ], name


@settings(max_examples=examples(30), deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(rows, min_size=1, max_size=50),
    st.sampled_from(["range", "rows"]),
    offsets,
    offsets,
    st.lists(st.sampled_from(sorted({**FUNCS, **POSITIONAL})), min_size=1, max_size=4, unique=True),
    st.randoms(use_true_random=False),
)
def test_windows_equal_duckdb_in_any_order_of_arrival(
    tmp_path_factory: pytest.TempPathFactory,
    records: list[dict],
    unit: str,
    before: object,
    after: object,
    names: list[str],
    rng: random.Random,
) -> None:
    tmp_path = tmp_path_factory.mktemp("windows")
    frame = frame_of(records)
    funcs = {n: {**FUNCS, **POSITIONAL}[n] for n in names}
    # a range frame measures by ``day`` (the slicing column); rows and positions need a total
    # order, so ``id`` (arrival order) breaks ties as chanbatch's stable order does
    order = "day" if unit == "range" and not set(names) & set(POSITIONAL) else "day, id"
    ours_order = "day" if order == "day" else "[day, id]"
    if unit == "range" and order != "day" and (before, after) != ("unbounded", 0):
        before, after = "unbounded", 0  # a range frame with an offset needs one order column
    text = blueprint(unit, before, after, funcs, ours_order)
    want = duck(frame, unit, before, after, funcs, order)

    cold = cb.Store(tmp_path / "cold")
    cold.freeze("t", frame, slice_by="day")
    first = cb.Blueprint.from_yaml(text).run(cold, scheduler="sync")
    assert_same(cold.read_pandas("rolled"), want, names)

    days = sorted(frame["day"].unique())
    rng.shuffle(days)
    grown = cb.Store(tmp_path / "grown")
    for day in days:
        grown.freeze("t", frame[frame["day"] == day], slice_by="day")
        last = cb.Blueprint.from_yaml(text).run(grown, scheduler="sync")
    assert last.snapshots == first.snapshots


def _engine(text: str, frame: pd.DataFrame) -> pd.DataFrame:
    op = parse_blueprint(text).stages["w"].operation
    return window(op, frame)  # type: ignore[arg-type]


ENGINE = """
name: e
inputs: {{t: t}}
stages:
  w:
    from: t
    window:
      partition_by: g
      order_by: {order}
      range: {{preceding: {before}, following: {after}}}
      columns: {{{columns}}}
outputs: {{w: o}}
"""


def test_a_timestamp_range_counts_a_duration_and_null_orders_are_peers() -> None:
    rng = np.random.default_rng(3)
    n = 300
    start = pd.Timestamp("2013-01-01", tz="UTC")
    stamps = start + pd.to_timedelta(rng.integers(0, 72 * 60, n), unit="min")
    frame = pd.DataFrame(
        {
            "g": rng.choice(["a", "b", "c"], n),
            "t": pd.Series(stamps).where(rng.random(n) > 0.05),
            "x": rng.normal(size=n),
            "id": np.arange(n),
        }
    )
    text = ENGINE.format(
        order="t", before="'6 hours'", after="'30 minutes'", columns="s: sum(x), n: count()"
    )
    got = _engine(text, frame)
    con = duckdb.connect()
    con.register("frame", frame)
    want = con.execute(
        "SELECT id, sum(x) OVER w AS s, count(*) OVER w AS n FROM frame WINDOW w AS ("
        "PARTITION BY g ORDER BY t RANGE BETWEEN INTERVAL 6 HOURS PRECEDING AND "
        "INTERVAL 30 MINUTES FOLLOWING) ORDER BY id"
    ).df()
    assert_same(got, want, ["s", "n"])
    assert got["n"].dtype == "int64" and (got.loc[frame["t"].isna(), "n"] > 0).all()


def test_dates_count_days_and_decimals_sum_exactly() -> None:
    days = [dt.date(2013, 1, 1) + dt.timedelta(days=d) for d in [0, 1, 1, 3, 7, 8, 30, 31]]
    prices = ["1.10", "2.20", "0.01", None, "5.55", "1.00", "9.99", "0.10"]
    frame = pd.DataFrame(
        {
            "g": ["a"] * 8,
            "d": pd.array(days, dtype="date32[pyarrow]"),
            "p": pd.array(
                [decimal.Decimal(v) if v else None for v in prices],
                dtype=pd.ArrowDtype(pa.decimal128(12, 2)),
            ),
            "id": range(8),
        }
    )
    text = ENGINE.format(order="d", before=6, after=0, columns="s: sum(p), m: mean(p), lo: min(d)")
    got = _engine(text, frame)
    con = duckdb.connect()
    con.register("frame", frame)
    want = con.execute(
        "SELECT sum(p) OVER w AS s, avg(p) OVER w AS m, min(d) OVER w AS lo FROM frame "
        "WINDOW w AS (PARTITION BY g ORDER BY d RANGE BETWEEN INTERVAL 6 DAYS PRECEDING "
        "AND CURRENT ROW) ORDER BY id"
    ).fetchall()
    assert got["s"].tolist() == [row[0] for row in want]  # Decimals, exactly
    assert str(got["s"].dtype) == "decimal128(38, 2)[pyarrow]"
    assert np.allclose(got["m"].to_numpy(float), [float(row[1]) for row in want])
    assert got["lo"].tolist() == [row[2] for row in want]


def _run(store: cb.Store, text: str) -> cb.run.runner.RunResult:
    return cb.Blueprint.from_yaml(text).run(store, scheduler="sync")


def _computed(root: Path, result: cb.run.runner.RunResult, stage: str) -> list:
    record = json.loads((root / "runs" / f"{result.run_id}.json").read_text())
    return sorted(
        t["slice"]
        for t in record["tasks"]
        if t["stage"] == stage and t.get("outcome") == "computed"
    )


ROLLING = """
name: rolling
inputs: {t: t}
stages:
  rolled:
    from: t
    window:
      partition_by: g
      order_by: day
      range: {preceding: 2, following: 1}
      columns: {near: sum(x), n: count()}
outputs: {rolled: rolled}
"""
SQL_ROLLING = (
    "SELECT id, sum(x) OVER w AS near, count(*) OVER w AS n FROM frame WINDOW w AS "
    "(PARTITION BY g ORDER BY day RANGE BETWEEN 2 PRECEDING AND 1 FOLLOWING) ORDER BY id"
)


@pytest.mark.parametrize("slices", [84, pytest.param(2526, marks=pytest.mark.slow)])
def test_a_new_replaced_or_inserted_slice_recomputes_only_the_slices_its_frames_reach(
    tmp_path: Path, slices: int
) -> None:
    days = [d for d in range(slices) if d != slices // 3]  # one day missing, inserted later
    frame = pd.DataFrame(
        {
            "day": np.repeat(days, 3),
            "g": ["a", "b", "a"] * len(days),
            "x": np.arange(3 * len(days)) % 17,
        }
    ).assign(id=lambda f: np.arange(len(f)))
    root = tmp_path / "store"
    store = cb.Store(root)
    store.freeze("t", frame, slice_by="day")
    _run(store, ROLLING)

    def check(everything: pd.DataFrame, result: cb.run.runner.RunResult) -> None:
        con = duckdb.connect()
        con.register("frame", everything)
        assert_same(store.read_pandas("rolled"), con.execute(SQL_ROLLING).df(), ["near", "n"])
        cold = cb.Store(tmp_path / f"cold{len(everything)}")
        cold.freeze("t", everything, slice_by="day")
        assert _run(cold, ROLLING).snapshots == result.snapshots

    # appended: the new day and the two before it, whose frames reach 1 day ahead
    new = pd.DataFrame({"day": [slices] * 2, "g": ["a", "b"], "x": [100, 200]}).assign(
        id=[10**6, 10**6 + 1]
    )
    store.freeze("t", new, slice_by="day")
    appended = _run(store, ROLLING)
    assert _computed(root, appended, "rolled") == [slices - 1, slices]
    everything = pd.concat([frame, new], ignore_index=True)
    check(everything, appended)

    # inserted in the middle: itself, the day before (1 ahead) and the two after (2 back)
    gap = slices // 3
    inserted = pd.DataFrame({"day": [gap], "g": ["a"], "x": [7], "id": [2 * 10**6]})
    store.freeze("t", inserted, slice_by="day")
    result = _run(store, ROLLING)
    assert _computed(root, result, "rolled") == [gap - 1, gap, gap + 1, gap + 2]
    everything = pd.concat([everything, inserted], ignore_index=True)
    check(everything, result)

    # replaced: the same four
    replaced = everything[everything["day"] == 10].assign(x=-1)
    store.freeze("t", replaced, slice_by="day")
    result = _run(store, ROLLING)
    assert _computed(root, result, "rolled") == [9, 10, 11, 12]
    everything = pd.concat([everything[everything["day"] != 10], replaced], ignore_index=True)
    check(everything, result)


def _window(order: str, frame: str, columns: str) -> str:
    return (
        "name: w\ninputs: {t: t}\nstages:\n  rolled:\n    from: t\n    window:\n"
        f"      order_by: {order}\n      {frame}\n      columns: {{{columns}}}\n"
        "outputs: {rolled: rolled}\n"
    )


@pytest.mark.parametrize(
    ("order", "frame", "columns", "reason"),
    [
        ("day", "range: {preceding: 2}", "prev: lag(x)", "lag read rows by position"),
        ("day", "rows: {preceding: 2}", "s: sum(x)", "a rows frame counts rows"),
        ("day", "range: {preceding: unbounded}", "s: sum(x)", "its frame is unbounded"),
        (
            "x",
            "range: {preceding: 2}",
            "s: sum(x)",
            "order column 'x' is not the column its input is sliced by ('day')",
        ),
    ],
)
def test_plan_says_why_a_window_reads_its_whole_input(
    tmp_path: Path, order: str, frame: str, columns: str, reason: str
) -> None:
    store = cb.Store(tmp_path / "store")
    data = pd.DataFrame({"day": [1, 2, 3], "x": [1, 2, 3]})
    store.freeze("t", data, slice_by="day")
    plan = cb.Blueprint.from_yaml(_window(order, frame, columns)).plan(store).plan
    notes = " ".join(plan.notes)
    assert reason in notes and "not incremental" in notes, notes
    assert {t.kind for t in plan.tasks.values() if t.stage == "rolled"} == {"whole"}


def test_explain_blames_a_halo_slice(tmp_path: Path) -> None:
    frame = pd.DataFrame({"day": range(6), "g": "a", "x": range(6), "id": range(6)})
    store = cb.Store(tmp_path / "store")
    store.freeze("t", frame, slice_by="day")
    _run(store, ROLLING)
    store.freeze("t", pd.DataFrame({"day": [6], "g": ["a"], "x": [9], "id": [6]}), slice_by="day")
    plan = cb.Blueprint.from_yaml(ROLLING).plan(store).document()
    reasons = {
        t["slice"]: t["reason"]
        for t in plan["tasks"]
        if t["stage"] == "rolled" and t["action"] == "compute"
    }
    assert reasons[6] == "new slice 6"
    assert reasons[5] == "window halo: slice 5 is within 1 of new slice 6"
    assert set(reasons) == {5, 6}


def test_text_order_columns_and_several_order_columns_frame_by_peers() -> None:
    """The default frame (to the current row's last peer) over a text order column, or over
    two order columns, and positions within ties, as DuckDB with the same total order."""
    frame = pd.DataFrame(
        {
            "g": ["a", "a", "a", "b", "b", "a", "b"],
            "name": pd.array(["x", "y", "x", None, "z", None, "z"], dtype="string"),
            "n": [1, 2, 3, 4, 5, 6, 7],
            "id": range(7),
        }
    )
    text = (
        "name: e\ninputs: {{t: t}}\nstages:\n  w:\n    from: t\n    window:\n"
        "      partition_by: g\n      order_by: {order}\n"
        "      columns: {{run: sum(n), rows: count(), first: min(name), pos: row_number()}}\n"
        "outputs: {{w: o}}\n"
    )
    con = duckdb.connect()
    con.register("frame", frame)
    for ours, sql in (("name", "name"), ("[name, n]", "name, n")):
        got = _engine(text.format(order=ours), frame)
        want = con.execute(
            f"SELECT id, sum(n) OVER w AS run, count(*) OVER w AS rows, "
            f"min(name) OVER w AS first, row_number() OVER (PARTITION BY g ORDER BY {sql}, id) "
            f"AS pos FROM frame WINDOW w AS (PARTITION BY g ORDER BY {sql}) ORDER BY id"
        ).df()
        got["id"] = frame["id"]
        assert_same(got, want, ["run", "rows", "first", "pos"])


def test_a_sliced_output_freezes_only_its_changed_slices(tmp_path: Path, monkeypatch) -> None:
    """A new day recomputes the window slices its frames reach, and only those are frozen into
    the output, merged into the last run's snapshot: the same snapshot as a whole freeze of a
    cold run (a sliced output of 2,525 days was frozen whole after every run)."""
    from chanbatch.run import outputs

    frame = pd.DataFrame({"day": range(30), "g": "a", "x": range(30), "id": range(30)})
    store = cb.Store(tmp_path / "store")
    store.freeze("t", frame, slice_by="day")
    _run(store, ROLLING)
    frozen: list[tuple[list, bool]] = []
    real = outputs.freeze

    def spy(storage, dataset, data, **options):
        frozen.append((sorted(data), options["replace"]))
        return real(storage, dataset, data, **options)

    monkeypatch.setattr(outputs, "freeze", spy)
    new = pd.DataFrame({"day": [30], "g": ["a"], "x": [99], "id": [30]})
    store.freeze("t", new, slice_by="day")
    appended = _run(store, ROLLING)
    assert frozen == [([29, 30], False)]
    cold = cb.Store(tmp_path / "cold")
    cold.freeze("t", pd.concat([frame, new], ignore_index=True), slice_by="day")
    assert _run(cold, ROLLING).snapshots == appended.snapshots
    rows = appended.snapshots["rolled"]["rows"]
    assert rows == 31 == len(store.read_pandas("rolled"))

    # a slice removed from the input: the output is frozen whole again, without it
    from chanbatch.snapshot.freeze import freeze

    frozen.clear()
    kept = pd.concat([frame, new], ignore_index=True).query("day != 3")
    freeze(store.storage, "t", kept, slice_by="day", replace=True)
    removed = _run(store, ROLLING)
    assert len(frozen) == 1 and frozen[0][1] is True and 3 not in frozen[0][0]
    fresh = cb.Store(tmp_path / "fresh")
    fresh.freeze("t", kept, slice_by="day")
    assert _run(fresh, ROLLING).snapshots == removed.snapshots


DAILY_ROLLING = """
name: daily_rolling
inputs: {t: t}
stages:
  daily:
    from: t
    per_slice: true
    group_by: [day, g]
    aggregate: {qty: sum(x), value: sum(y), n: count()}
  weekly:
    from: daily
    window:
      partition_by: g
      order_by: day
      range: {preceding: 6, following: 0}
      columns: {week_qty: sum(qty), week_value: sum(value), week_n: sum(n), low: min(qty)}
outputs: {weekly: weekly}
"""
SQL_DAILY_ROLLING = """
WITH daily AS (
    SELECT day, g, sum(x) AS qty, sum(y) AS value, count(*) AS n FROM frame GROUP BY day, g
)
SELECT day, g, sum(qty) OVER w AS week_qty, sum(value) OVER w AS week_value,
       sum(n) OVER w AS week_n, min(qty) OVER w AS low
FROM daily WINDOW w AS (PARTITION BY g ORDER BY day RANGE BETWEEN 6 PRECEDING AND CURRENT ROW)
ORDER BY day, g
"""


def test_many_days_rolled_in_batches_store_what_each_day_alone_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rolling window over a per-day aggregate of many small day slices: the days' windows
    are computed many at once, and every cache entry (each day's aggregate, each day's window)
    is what each day computed alone stores; the answer is DuckDB's."""
    from chanbatch.engine import batch, execute

    rng = np.random.default_rng(3)
    days = [d for d in range(60) if d % 9 != 4]  # some days missing: halos of other sizes
    sizes = rng.integers(1, 12, len(days))
    n = int(sizes.sum())
    frame = pd.DataFrame(
        {
            "day": np.repeat(days, sizes).astype("int64"),
            "g": rng.choice(["a", "b", "c"], n),
            "x": rng.integers(-50, 50, n),
            "y": rng.choice([1e16, -1e16, 0.1, 2.5, -3.75], n),
        }
    )
    alone_calls = []
    slice_alone = execute.window_slice

    def counted(*args: object, **kwargs: object) -> pd.DataFrame:
        alone_calls.append(1)
        return slice_alone(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(execute, "window_slice", counted)

    def cold(root: Path) -> tuple[dict, dict[str, tuple[str, int]], int]:
        alone_calls.clear()
        store = cb.Store(root)
        store.freeze("t", frame, slice_by="day")
        result = cb.Blueprint.from_yaml(DAILY_ROLLING).run(store, scheduler="threads")
        entries = {e.key: (e.ident, e.rows) for e in store.cache_entries()}
        got = store.read_pandas("weekly").sort_values(["day", "g"]).reset_index(drop=True)
        con = duckdb.connect()
        con.register("frame", frame)
        want = con.execute(SQL_DAILY_ROLLING).df()
        assert (
            got[["day", "g"]].astype(object).values.tolist()
            == want[["day", "g"]].astype(object).values.tolist()
        )
        assert got["week_qty"].tolist() == want["week_qty"].tolist()
        assert got["week_n"].tolist() == want["week_n"].tolist()
        assert got["low"].tolist() == want["low"].tolist()
        # float sums in another order: within 64 units in the last place of 1e16
        assert np.allclose(got["week_value"], want["week_value"], rtol=0, atol=64 * 2.0)
        return result.snapshots, entries, len(alone_calls)

    together, entries, windows_alone = cold(tmp_path / "together")
    assert windows_alone == 0  # every day's window computed with others
    monkeypatch.setattr(batch, "BATCH_SLICES", 1)  # no batches: every task alone
    alone, entries_alone, windows_alone = cold(tmp_path / "alone")
    assert windows_alone == len(days)
    assert entries == entries_alone
    assert together == alone
