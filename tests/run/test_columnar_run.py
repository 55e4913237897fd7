"""Runs on the Arrow path store exactly what runs on the pandas path store.

Each blueprint runs twice on identical stores: as it runs now (per-slice chains on Arrow), and
with the Arrow path switched off, which is how every result was computed before it existed.
The output snapshots, every cache key and every cached object must be the same, byte for byte:
an existing cache stays valid, and no key needs to change.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from opskit import assert_same, sql

import chanbatch as cb
from chanbatch.engine import columnar


def lineitem(rows: int = 400, seed: int = 5) -> pd.DataFrame:
    """A small TPC-H-like table with nulls in every kind of column, in four month slices."""
    rng = np.random.default_rng(seed)
    flag = rng.choice(np.array(["A", "N", "R", None], dtype=object), rows, p=[0.3, 0.3, 0.3, 0.1])
    qty = rng.integers(1, 50, rows).astype("float64")
    qty[rng.random(rows) < 0.1] = np.nan
    order = pd.array(rng.integers(1, 9, rows), dtype="Int64")
    order[rng.random(rows) < 0.1] = pd.NA
    ship = [dt.date(2020, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 120, rows)]
    return pd.DataFrame(
        {
            "month": [d.month for d in ship],
            "flag": pd.Series(flag, dtype=object),
            "status": rng.choice(["F", "O"], rows),
            "qty": qty,
            "price": rng.uniform(900, 105_000, rows).round(2),
            "discount": rng.choice([0.0, 0.04, 0.1], rows),
            "order": order,
            "ship": pd.array(ship, dtype=pd.ArrowDtype(pa.date32())),
        }
    )


BLUEPRINTS = {
    "q1": """
  shipped:
    from: t
    filter: "ship <= date('2020-03-15')"
  priced:
    from: shipped
    derive:
      disc_price: "price * (1 - discount)"
      charge: "disc_price * (1 + order / 10)"
  summary:
    from: priced
    group_by: [flag, status]
    aggregate:
      sum_qty: sum(qty)
      sum_charge: sum(charge)
      avg_qty: mean(qty)
      avg_order: mean(order)
      n: count()
      n_qty: count(qty)
  out:
    from: summary
    sort: [flag, status]
""",
    # a selective filter: its per-slice results are kept as checkpoints
    "selective": """
  few:
    from: t
    filter: "flag in ['A', null] and qty > 30 or is_null(order)"
  out:
    from: few
    group_by: [status, month]
    aggregate:
      total: sum(price * qty)
      n: count()
""",
    # the same checkpoints read back from the cache by an edited aggregate
    "selective_edited": """
  few:
    from: t
    filter: "flag in ['A', null] and qty > 30 or is_null(order)"
  out:
    from: few
    group_by: [status, month]
    aggregate:
      total: sum(price * qty)
      mean_qty: mean(qty)
""",
    # a per-slice output of row-wise stages: every slice stored, and frozen slice by slice
    "rowwise": """
  picked:
    from: t
    select: [month, flag, qty, order, ship]
  named:
    from: picked
    rename: {qty: quantity}
  out:
    from: named
    derive:
      double: "quantity * 2 + order"
      later: "ship"
""",
}


def _store(path: Path) -> cb.Store:
    store = cb.Store(path)
    store.freeze("t", lineitem(), slice_by="month")
    return store


def _cache(path: Path) -> dict[str, tuple[str, list[dict[str, object]]]]:
    """Cache key -> the identity of every cached result (its object id, or for a packed
    partial the id of its rows, since a pack holds whatever was computed beside it) and its
    rows as stored, read back with pyarrow: from entry files, and from pack indexes."""
    found: dict[str, tuple[str, str, int | None, int | None]] = {}
    for entry in (path / "cache").glob("*.json"):
        doc = json.loads(entry.read_text())
        first, rows = doc.get("range", (None, None))
        found[entry.stem] = (doc["objects"][0], doc.get("content", ""), first, rows)
    for index in (path / "cache" / "packs").glob("*.json"):
        doc = json.loads(index.read_text())
        for key, first, rows, content in doc["members"]:
            found[key] = (doc["object"], content, first, rows)
    out = {}
    for key, (oid, content, first, rows) in found.items():
        table = pq.read_table(path / "objects" / oid[:2] / oid[2:])
        if first is not None:
            table = table.slice(first, rows)
        out[key] = (content or oid, table.to_pylist())
    return out


def _run(path: Path, name: str) -> tuple[str, pd.DataFrame]:
    text = f"name: {name}\ninputs:\n  t: t\nstages:{BLUEPRINTS[name]}outputs:\n  out: {name}\n"
    result = cb.Blueprint.from_yaml(text).run(cb.Store(path), scheduler="sync")
    return result.snapshots["out"]["snapshot"], result.outputs["out"].compute()


@pytest.mark.parametrize("name", sorted(BLUEPRINTS))
def test_arrow_and_pandas_paths_store_the_same_bytes(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _store(tmp_path / "arrow")
    _store(tmp_path / "pandas")
    used: list[str] = []
    for function in ("apply_rowwise", "apply_tagged", "partial", "partials"):
        original = getattr(columnar, function)

        def spy(*args: object, _original: object = original, _name: str = function) -> object:
            result = _original(*args)  # type: ignore[operator]
            used.append(_name)
            return result

        monkeypatch.setattr(columnar, function, spy)
    before = ["selective"] if name == "selective_edited" else []  # its checkpoints, cached
    for path in ("arrow", "pandas"):
        for earlier in before:
            _run(tmp_path / path, earlier)
    used.clear()
    arrow_id, arrow_out = _run(tmp_path / "arrow", name)
    assert used, "the Arrow path ran no stage"
    monkeypatch.setattr(columnar, "arrow_input", lambda table: None)
    pandas_id, pandas_out = _run(tmp_path / "pandas", name)
    assert arrow_id == pandas_id
    pd.testing.assert_frame_equal(arrow_out, pandas_out, check_exact=True)
    assert _cache(tmp_path / "arrow") == _cache(tmp_path / "pandas")


def test_q1_shape_matches_duckdb(tmp_path: Path) -> None:
    _store(tmp_path / "s")
    _id, got = _run(tmp_path / "s", "q1")
    frame = lineitem()
    frame["order"] = frame["order"].astype("float64")
    frame["ship"] = frame["ship"].astype(object)
    want = sql(
        """
        SELECT flag, status, sum(qty) AS sum_qty,
               sum(price * (1 - discount) * (1 + "order" / 10)) AS sum_charge,
               avg(qty) AS avg_qty, avg("order") AS avg_order, count(*) AS n,
               count(qty) AS n_qty
        FROM t WHERE ship <= DATE '2020-03-15'
        GROUP BY flag, status ORDER BY flag NULLS LAST, status
        """,
        t=frame,
    )
    assert_same(got.reset_index(drop=True), want, ordered=True)


def test_a_failing_stage_on_the_arrow_path_names_stage_and_slice(tmp_path: Path) -> None:
    """An expression the Arrow path declines still fails as the pandas path reports it."""
    store = _store(tmp_path / "s")
    text = (
        "name: bad\ninputs:\n  t: t\nstages:\n  x:\n    from: t\n"
        "    derive: {y: \"cast(flag, 'int')\"}\noutputs:\n  x: bad\n"
    )
    with pytest.raises(
        cb.errors.ChanbatchError,
        match=r"stage 'x' failed on slice \d: ExprEvalError: cannot read '[A-Z]' as a number",
    ):
        cb.Blueprint.from_yaml(text).run(store, scheduler="sync")
