"""Types survive every path (issue 15, items 1-4): an incremental run gives the cold run's
schema and snapshot id, what a user reads back is what the store holds, text ``+`` joins text,
and a CSV that is not UTF-8 is refused, or read in the encoding the user names.

Every expected value comes from DuckDB or pandas on the raw data, never from chanbatch; every
expected type is the one SQL gives (``year()`` of a timestamp is an integer, ``x > 0`` a bool).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import chanbatch as cb

CHANBATCH = Path(sys.executable).with_name("chanbatch")


@dataclass(frozen=True)
class _Result:
    code: int
    stdout: str
    stderr: str

    @property
    def err_lines(self) -> list[str]:
        return self.stderr.splitlines()

    def json(self) -> Any:
        return json.loads(self.stdout)


def cli(*args: str) -> _Result:
    """The installed ``chanbatch`` script, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k != "CHANBATCH_STORE"}
    done = subprocess.run(
        [str(CHANBATCH), *args], capture_output=True, text=True, env=env, timeout=300
    )
    return _Result(done.returncode, done.stdout, done.stderr)


MONTHS = 4

BLUEPRINT = """\
name: kinds
inputs:
  flights: flights
stages:
  d:
    from: flights
    derive:
      y: "year(time_hour)"
      h: "hour(time_hour)"
      l: "length(tailnum)"
      c: "cast(dep_delay, 'int')"
      late: "dep_delay > 0"
      n9: "starts_with(tailnum, 'N9')"
      q: "dep_delay_int // 7"
      r: "if_else(dep_delay > 0, dep_delay_int, null)"
      t: "'#' + carrier + '-' + tailnum"
    per_slice: true
  s:
    from: d
    select: [month, y, h, l, c, late, n9, q, r, t]
    per_slice: true
outputs:
  s: out
"""

# What SQL gives each derived column: an integer stays an integer, a condition is a bool.
EXPECTED_TYPES = {
    "month": pa.int64(),
    "y": pa.int64(),
    "h": pa.int64(),
    "l": pa.int64(),
    "c": pa.int64(),
    "late": pa.bool_(),
    "n9": pa.bool_(),
    "q": pa.int64(),
    "r": pa.int64(),
    "t": pa.string(),
}


def _flights(month: int, seed: int = 0) -> pa.Table:
    """One month of flights with nulls in every column that can have them, as the real
    nycflights13 data does (dep_delay, tailnum)."""
    rng = np.random.default_rng(month * 100 + seed)
    n = 300
    delay = rng.integers(-20, 120, n).astype(float)
    delay[rng.random(n) < 0.1] = np.nan
    delay_int = pd.array(np.where(np.isnan(delay), 0, delay).astype("int64"), dtype="Int64")
    delay_int[np.isnan(delay)] = pd.NA
    tails = rng.choice(["N14228", "N9XX1", "N24211", "N901AA", ""], n).astype(object)
    tails[rng.random(n) < 0.1] = None
    start = dt.datetime(2013, month, 1, tzinfo=dt.UTC)
    hours = rng.integers(0, 24 * 27, n)
    return pa.table(
        {
            "month": pa.array([month] * n, pa.int64()),
            "carrier": pa.array(rng.choice(["UA", "AA", "B6"], n)),
            "tailnum": pa.array(tails, pa.string()),
            "dep_delay": pa.array(delay, pa.float64(), from_pandas=True),
            "dep_delay_int": pa.array(delay_int, pa.int64()),
            "time_hour": pa.array(
                [start + dt.timedelta(hours=int(h)) for h in hours], pa.timestamp("us", "UTC")
            ),
        }
    )


def _freeze(store: cb.Store, tables: dict[int, pa.Table]) -> None:
    for month, table in tables.items():
        store.freeze("flights", table, slice=month)


def _snapshot_id(store: cb.Store) -> str:
    return store.snapshot("out").id


def _schema(store: cb.Store) -> dict[str, pa.DataType]:
    table = store.read_table("out")
    return {f.name: f.type for f in table.schema}


def _run(store: cb.Store) -> None:
    cb.Blueprint.from_yaml(BLUEPRINT).run(store, scheduler="sync")


@pytest.fixture(scope="module")
def months() -> dict[int, pa.Table]:
    return {m: _flights(m) for m in range(1, MONTHS + 1)}


@pytest.fixture(scope="module")
def cold(tmp_path_factory: pytest.TempPathFactory, months: dict[int, pa.Table]) -> cb.Store:
    store = cb.Store(str(tmp_path_factory.mktemp("cold") / "store"))
    _freeze(store, months)
    _run(store)
    return store


def test_the_cold_run_has_the_types_sql_gives(cold: cb.Store) -> None:
    assert _schema(cold) == EXPECTED_TYPES


def test_an_appended_slice_gives_the_cold_run(
    tmp_path: Path, cold: cb.Store, months: dict[int, pa.Table]
) -> None:
    store = cb.Store(str(tmp_path / "store"))
    _freeze(store, {m: t for m, t in months.items() if m < MONTHS})
    _run(store)
    _freeze(store, {MONTHS: months[MONTHS]})
    _run(store)
    assert _schema(store) == EXPECTED_TYPES
    assert _snapshot_id(store) == _snapshot_id(cold)


def test_a_replaced_slice_gives_the_cold_run_over_the_same_data(
    tmp_path: Path, months: dict[int, pa.Table]
) -> None:
    replacement = _flights(2, seed=7)
    incremental = cb.Store(str(tmp_path / "incremental"))
    _freeze(incremental, months)
    _run(incremental)
    _freeze(incremental, {2: replacement})
    _run(incremental)
    fresh = cb.Store(str(tmp_path / "fresh"))
    _freeze(fresh, {**months, 2: replacement})
    _run(fresh)
    assert _schema(incremental) == EXPECTED_TYPES
    assert _snapshot_id(incremental) == _snapshot_id(fresh)


def test_a_changed_downstream_stage_over_cached_results_keeps_types(
    tmp_path: Path, months: dict[int, pa.Table]
) -> None:
    """A stage computed over results read back from the cache sees the types a fresh run
    gives it: an integer column with nulls stays an integer column."""
    store = cb.Store(str(tmp_path / "store"))
    _freeze(store, months)
    _run(store)
    changed = BLUEPRINT.replace(", r, t]", ", r]")
    cb.Blueprint.from_yaml(changed).run(store, scheduler="sync")
    fresh = cb.Store(str(tmp_path / "fresh"))
    _freeze(fresh, months)
    cb.Blueprint.from_yaml(changed).run(fresh, scheduler="sync")
    assert _schema(store)["c"] == pa.int64()
    assert _snapshot_id(store) == _snapshot_id(fresh)


def test_values_equal_duckdb(cold: cb.Store, months: dict[int, pa.Table]) -> None:
    flights = pa.concat_tables(months.values())  # noqa: F841 (read by DuckDB)
    want = (
        duckdb.sql(
            """
        SELECT month, year(time_hour) AS y, hour(time_hour) AS h, length(tailnum) AS l,
               CAST(trunc(dep_delay) AS BIGINT) AS c, dep_delay > 0 AS late,
               starts_with(tailnum, 'N9') AS n9,
               CAST(floor(dep_delay_int / 7.0) AS BIGINT) AS q,
               CASE WHEN dep_delay > 0 THEN dep_delay_int END AS r,
               '#' || carrier || '-' || tailnum AS t
        FROM flights
        """
        )
        .arrow()
        .read_all()
    )
    got = cold.read_table("out")
    for name in EXPECTED_TYPES:
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name


def test_reads_agree_with_the_stored_schema(cold: cb.Store) -> None:
    stored = cold.read_table("out")
    eager = cold.read_pandas("out")
    lazy = cold.read("out").compute().reset_index(drop=True)
    for name, kind in EXPECTED_TYPES.items():
        nulls = stored.column(name).null_count
        values = stored.column(name).to_pylist()
        for frame in (eager, lazy):
            column = frame[name]
            assert int(column.isna().sum()) == nulls, name
            if pa.types.is_boolean(kind):
                assert pd.api.types.is_bool_dtype(column.dtype), (name, column.dtype)
            if pa.types.is_integer(kind):
                assert pd.api.types.is_integer_dtype(column.dtype), (name, column.dtype)
            back = [None if pd.isna(v) else v for v in column.tolist()]
            assert back == values, name
    # dask keeps text as its own string dtype (pd.NA for null); every other dtype is the same
    text = [n for n, kind in EXPECTED_TYPES.items() if pa.types.is_string(kind)]
    for name in text:
        assert pd.api.types.is_string_dtype(eager[name]) and pd.api.types.is_string_dtype(
            lazy[name]
        )
    assert eager.drop(columns=text).dtypes.to_dict() == lazy.drop(columns=text).dtypes.to_dict()


def test_inspect_names_the_stored_types(cold: cb.Store) -> None:
    result = cli("snapshot", "inspect", "out", "--json", "--store", cold.url)
    assert result.code == 0, result
    schema = {c["name"]: c["type"] for c in result.json()["schema"]}
    assert schema == {name: str(kind) for name, kind in EXPECTED_TYPES.items()}


def test_a_bool_column_with_nulls_reads_back_as_booleans(tmp_path: Path) -> None:
    store = cb.Store(str(tmp_path / "store"))
    store.freeze("b", pa.table({"k": [1, 1, 2], "v": [True, None, False]}), slice_by="k")
    lazy = store.read("b").compute()
    assert lazy["v"].dtype == "boolean"
    assert [None if pd.isna(v) else v for v in lazy["v"]] == [True, None, False]
    assert store.read_pandas("b")["v"].dtype == "boolean"


# -- text + text --------------------------------------------------------------------------------


def test_text_plus_a_number_is_refused_at_plan_time_with_the_cast(cold: cb.Store) -> None:
    text = BLUEPRINT.replace("\"'#' + carrier + '-' + tailnum\"", '"carrier + month"')
    with pytest.raises(cb.errors.ChanbatchError, match=r"cast\(month, 'str'\)"):
        cb.Blueprint.from_yaml(text).plan(cold)


# -- decimals -----------------------------------------------------------------------------------


def test_decimal_sums_are_exact_and_typed_as_duckdb_types_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n = 2000
    cents = rng.integers(-(10**9), 10**9, n)
    price = [
        None if i % 17 == 0 else decimal.Decimal(int(c)).scaleb(-2) for i, c in enumerate(cents)
    ]
    disc = [decimal.Decimal(int(d)).scaleb(-2) for d in rng.integers(0, 11, n)]
    lineitem = pa.table(
        {
            "part": pa.array(np.arange(n) % 5, pa.int64()),
            "flag": pa.array(rng.choice(["A", "N", "R"], n)),
            "price": pa.array(price, pa.decimal128(15, 2)),
            "disc": pa.array(disc, pa.decimal128(15, 2)),
        }
    )
    store = cb.Store(str(tmp_path / "store"))
    store.freeze("lineitem", lineitem, slice_by="part")
    blueprint = """\
name: dec
inputs: {lineitem: lineitem}
stages:
  g:
    from: lineitem
    group_by: [flag]
    aggregate:
      s: sum(price)
      c: sum(price * (1 - disc))
      lo: min(price)
      m: mean(price)
outputs: {g: dec_out}
"""
    cb.Blueprint.from_yaml(blueprint).run(store, scheduler="sync")
    got = store.read_table("dec_out").sort_by("flag")
    want = (
        duckdb.sql(
            "SELECT flag, sum(price) AS s, sum(price * (1 - disc)) AS c, min(price) AS lo, "
            "avg(price) AS m FROM lineitem GROUP BY flag ORDER BY flag"
        )
        .arrow()
        .read_all()
    )
    for name in ("s", "c", "lo"):
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name
        assert pa.types.is_decimal(got.schema.field(name).type), name
    assert got.schema.field("s").type.scale == 2 and got.schema.field("c").type.scale == 4
    assert np.allclose(got.column("m").to_pylist(), want.column("m").to_pylist(), rtol=1e-12)


# -- CSV encodings ------------------------------------------------------------------------------


def test_a_latin1_csv_is_refused_naming_the_file_or_read_with_encoding(tmp_path: Path) -> None:
    frame = pd.DataFrame({"name": ["Zürich", "café", "plain"], "n": [1, 2, 3]})
    path = tmp_path / "places.csv"
    frame.to_csv(path, index=False, encoding="latin-1")
    store = tmp_path / "store"
    refused = cli("snapshot", "freeze", "places", str(path), "--store", str(store))
    assert refused.code == 2, refused
    assert refused.err_lines[0].startswith("Error: ") and len(refused.err_lines) == 1, refused
    assert str(path) in refused.stderr and "'name'" in refused.stderr
    assert "--encoding latin-1" in refused.stderr
    assert not (store / "refs" / "places").exists()
    taken = cli(
        "snapshot", "freeze", "places", str(path), "--encoding", "latin-1", "--store", str(store)
    )
    assert taken.code == 0, taken
    back = cb.Store(str(store)).read_pandas("places")
    want = pd.read_csv(path, encoding="latin-1")
    assert back["name"].tolist() == want["name"].tolist()
    assert back["n"].tolist() == want["n"].tolist()


def test_an_unknown_encoding_is_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a\n1\n")
    result = cli(
        "snapshot",
        "freeze",
        "x",
        str(path),
        "--encoding",
        "klingon",
        "--store",
        str(tmp_path / "store"),
    )
    assert result.code == 2, result
    assert result.err_lines == [result.err_lines[0]] and "'klingon'" in result.stderr


# -- joins --------------------------------------------------------------------------------------


def test_a_left_join_keeps_the_right_sides_types_whether_or_not_rows_match(tmp_path: Path) -> None:
    """Month 1 matches every carrier, month 2 has one the right side lacks: both slices, and
    the output, keep int64 and bool for the right side's columns, with nulls for no match."""
    orders = pa.table({"m": [1, 1, 2, 2], "carrier": ["UA", "AA", "UA", "ZZ"], "x": [1, 2, 3, 4]})
    carriers = pa.table({"carrier": ["UA", "AA"], "seats": [180, 150], "big": [True, False]})
    store = cb.Store(str(tmp_path / "store"))
    store.freeze("orders", orders, slice_by="m")
    store.freeze("carriers", carriers, slice="all")
    text = """\
name: j
inputs: {orders: orders, carriers: carriers}
stages:
  named:
    from: orders
    join: {right: carriers, on: carrier, how: left}
    per_slice: true
outputs: {named: joined}
"""
    cb.Blueprint.from_yaml(text).run(store, scheduler="sync")
    got = store.read_table("joined")
    assert got.schema.field("seats").type == pa.int64()
    assert got.schema.field("big").type == pa.bool_()
    want = (
        duckdb.sql(
            "SELECT o.m, o.carrier, o.x, c.seats, c.big FROM orders o "
            "LEFT JOIN carriers c USING (carrier) ORDER BY o.m, o.x"
        )
        .arrow()
        .read_all()
    )
    got = got.sort_by([("m", "ascending"), ("x", "ascending")])
    for name in ("m", "carrier", "x", "seats", "big"):
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name


# -- a run that fails while freezing its outputs ------------------------------------------------


def test_a_run_failing_at_its_output_freeze_leaves_no_running_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    store = cb.Store(str(tmp_path / "store"))
    store.freeze("t", pa.table({"s": [1, 1, 2], "x": [1.0, 2.0, 3.0]}), slice_by="s")
    text = """\
name: mixed
inputs: {t: t}
stages:
  m:
    from: t
    map: {function: 'udfs:text_on_slice_two', version: '1'}
    per_slice: true
outputs: {m: mixed_out}
"""
    with pytest.raises(cb.errors.ChanbatchError, match="'v'"):
        cb.Blueprint.from_yaml(text).run(store, scheduler="sync", allow_modules=("udfs",))
    runs = tmp_path / "store" / "runs"
    records = [json.loads(p.read_text()) for p in runs.glob("*.json")] if runs.exists() else []
    assert [r for r in records if r.get("status") == "running"] == []
    assert not (tmp_path / "store" / "refs" / "mixed_out").exists()


# -- TPC-H Q1 on decimals as tpchgen-cli writes them --------------------------------------------


def test_q1_on_decimal_lineitem_equals_duckdb_exactly(tmp_path: Path) -> None:
    """The benchmark's Q1 on lineitem with its decimal(15, 2) columns (scale factor 0.01):
    every sum exact and typed as DuckDB types it (decimal(38, 2), (38, 4), (38, 6)), though
    ``disc_price * (1 + l_tax)`` needs more than 38 digits in Arrow's own typing."""
    import shutil as sh

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tool = Path(sys.executable).with_name("tpchgen-cli")
    generator = str(tool) if tool.exists() else sh.which("tpchgen-cli")
    if generator is None:
        pytest.skip("tpchgen-cli is not installed (pip install tpchgen-cli)")
    subprocess.run(
        [generator, "parquet", "-s", "0.01", "--tables=lineitem", f"--output-dir={tmp_path}"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    lineitem = pq.read_table(tmp_path / "lineitem.parquet")
    assert lineitem.schema.field("l_extendedprice").type == pa.decimal128(15, 2)
    sliced = lineitem.append_column("m", pc.strftime(lineitem["l_shipdate"], format="%Y-%m"))
    store = cb.Store(str(tmp_path / "store"))
    store.freeze("lineitem", sliced, slice_by="m")
    q1 = Path(__file__).resolve().parents[1] / "benchmark" / "q1.yaml"
    cb.Blueprint.from_yaml(q1.read_text()).run(store, scheduler="sync")
    got = store.read_table("tpch_q1")
    want = (
        duckdb.sql(
            """
        SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty,
               sum(l_extendedprice) AS sum_base_price,
               sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price,
               sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge,
               avg(l_quantity) AS avg_qty, avg(l_extendedprice) AS avg_price,
               avg(l_discount) AS avg_disc, count(*) AS count_order
        FROM lineitem WHERE l_shipdate <= DATE '1998-09-02'
        GROUP BY ALL ORDER BY l_returnflag, l_linestatus
        """
        )
        .arrow()
        .read_all()
    )
    assert got.column_names == want.column_names
    for name in want.column_names:
        assert got.schema.field(name).type == want.schema.field(name).type, name
        if pa.types.is_floating(want.schema.field(name).type):
            assert np.allclose(got.column(name).to_pylist(), want.column(name).to_pylist())
        else:
            assert got.column(name).to_pylist() == want.column(name).to_pylist(), name
