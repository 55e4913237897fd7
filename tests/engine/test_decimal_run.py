"""TPC-H Q1 on decimal(15, 2) columns, as a whole ``chanbatch run`` process: every stage stays on
Arrow (the process never imports pandas), cold and with a new slice, and the answer is DuckDB's
decimal answer: sums exactly, means as the exact sum's nearest float over the count."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import random
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa

import chanbatch as cb

ROOT = Path(__file__).resolve().parents[2]
BLUEPRINT = ROOT / "tests" / "benchmark" / "q1.yaml"

PROBE = """
import contextlib, io, json, sys
from chanbatch.cli import main
sys.argv = ["chanbatch", "run", sys.argv[1], "--store", sys.argv[2], "--json"]
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main()
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "doc": json.loads(out.getvalue()),
                  "pandas": "pandas" in sys.modules}))
"""

Q1 = """
SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty,
       sum(l_extendedprice) AS sum_base_price,
       sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price,
       sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge,
       sum(l_quantity)::VARCHAR AS qty_text, sum(l_extendedprice)::VARCHAR AS price_text,
       sum(l_discount)::VARCHAR AS disc_text, count(*) AS count_order
FROM lineitem WHERE l_shipdate <= DATE '1998-09-02'
GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus
"""


def _lineitem(months: list[tuple[int, int]], rows: int, seed: int) -> pa.Table:
    """Rows shaped like tpchgen-cli's lineitem: decimal(15, 2) money, a ship date in one of
    ``months``, and the int key ``month`` (year * 100 + month) to slice by."""
    rng = random.Random(seed)
    money = pa.decimal128(15, 2)
    days = [dt.date(y, m, rng.randrange(1, 29)) for y, m in rng.choices(months, k=rows)]
    cents = [rng.randrange(90_000, 10_500_000) for _ in range(rows)]
    return pa.table(
        {
            "l_quantity": pa.array([decimal.Decimal(rng.randrange(1, 51)) for _ in days], money),
            "l_extendedprice": pa.array([decimal.Decimal(c).scaleb(-2) for c in cents], money),
            "l_discount": pa.array(
                [decimal.Decimal(rng.randrange(0, 11)).scaleb(-2) for _ in days], money
            ),
            "l_tax": pa.array(
                [decimal.Decimal(rng.randrange(0, 9)).scaleb(-2) for _ in days], money
            ),
            "l_returnflag": [rng.choice("ANR") for _ in days],
            "l_linestatus": [rng.choice("FO") for _ in days],
            "l_shipdate": pa.array(days, pa.date32()),
            "month": [d.year * 100 + d.month for d in days],
        }
    )


def _probe(store: cb.Store) -> dict:
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(BLUEPRINT), store.url],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(probe.stdout.strip().splitlines()[-1])


def _check(store: cb.Store, snapshot: str, lineitem: pa.Table) -> None:
    got = store.read_table(f"tpch_q1@{snapshot}")
    want = duckdb.sql(Q1).arrow().read_all()
    for name in ("l_returnflag", "l_linestatus", "count_order"):
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name
    for name in ("sum_qty", "sum_base_price", "sum_disc_price", "sum_charge"):
        assert got.schema.field(name).type == want.schema.field(name).type, name
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name
    counts = want.column("count_order").to_pylist()
    for name, text in (
        ("avg_qty", "qty_text"),
        ("avg_price", "price_text"),
        ("avg_disc", "disc_text"),
    ):
        exact = [
            float(decimal.Decimal(s)) / n
            for s, n in zip(want.column(text).to_pylist(), counts, strict=True)
        ]
        assert got.column(name).to_pylist() == exact, name


def test_q1_on_decimals_runs_on_arrow_as_a_process(tmp_path: Path) -> None:
    months = [(1998, m) for m in range(5, 11)]  # the cutoff (1998-09-02) cuts one month
    lineitem = _lineitem(months, 6000, 17)
    store = cb.Store(tmp_path / "store")
    store.freeze("lineitem", lineitem, slice_by="month")
    cold = _probe(store)
    assert cold["code"] == 0 and cold["doc"]["stats"]["computed"] > 0
    assert cold["pandas"] is False
    _check(store, cold["doc"]["outputs"]["q1"]["snapshot"], lineitem)

    more = _lineitem([(1998, 4)], 700, 18)  # a new first slice, before the others
    store.freeze("lineitem", more, slice_by="month")
    lineitem = pa.concat_tables([lineitem, more])
    again = _probe(store)
    assert again["code"] == 0 and again["doc"]["stats"]["computed"] > 0
    assert again["pandas"] is False
    _check(store, again["doc"]["outputs"]["q1"]["snapshot"], lineitem)
