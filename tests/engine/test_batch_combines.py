"""A batch's combines, run in waves (``engine/batch.py``, ``arrow_combine.combine_many``).

Many small slices make batches whose combine trees are merged a wave at a time. The output
must be what DuckDB computes over the same rows, and every result stored (output snapshot,
cache files, packs and their members' content ids) must be the same, to the bit, as when each
combine is merged alone (``combine_many`` declining, so that each runs as before).
"""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

import chanbatch as cb
from chanbatch.engine import arrow_combine

BLUEPRINT = """
name: waves
inputs:
  events: events
stages:
  kept:
    from: events
    filter: "v > -1e15"
  priced:
    from: kept
    derive:
      w: "v * (1 - d)"
  totals:
    from: priced
    group_by: [kind, m]
    aggregate:
      n: count()
      total: sum(w)
      avg: mean(v)
      base: sum(v)
      some: count(w)
outputs:
  totals: wave_totals
"""

SQL = """
SELECT kind, m, count(*) AS n, sum(v * (1 - d)) AS total, avg(v) AS avg, sum(v) AS base,
       count(v * (1 - d)) AS some
FROM events WHERE v > -1e15 GROUP BY kind, m
"""


def events() -> pd.DataFrame:
    """300 day slices of 2-9 rows; values of far-apart magnitudes, so that the order and the
    compensation of float sums show; a null key now and then."""
    rng = np.random.default_rng(17)
    sizes = rng.integers(2, 10, 300)
    rows = int(sizes.sum())
    kind = rng.choice(["a", "b", "c"], rows).astype(object)
    kind[rng.random(rows) < 0.05] = None
    return pd.DataFrame(
        {
            "day": np.repeat(np.arange(300), sizes),
            "kind": kind,
            "m": rng.integers(0, 3, rows),
            "v": rng.choice([1e16, 1.0, -1e16, 0.1, 2.5, 3e-17, -2e15], rows),
            "d": rng.random(rows) * 0.1,
        }
    )


def run(root: Path, frame: pd.DataFrame) -> str:
    store = cb.Store(str(root))
    store.freeze("events", frame, slice_by="day")
    result = cb.Blueprint.from_yaml(BLUEPRINT).run(store, scheduler="sync")
    return str(result.snapshots["totals"]["snapshot"])


def stored(root: Path) -> dict[str, bytes]:
    """Every cache file and object a run left, by path (pack indexes by their members)."""
    out: dict[str, bytes] = {}
    for path in sorted((root / "cache").rglob("*")):
        if path.is_file():
            text = path.read_bytes()
            # an index names when it was written: compare what it says of its members
            out[str(path.relative_to(root))] = b"" if b"created_at" in text else text
    for path in (root / "objects").rglob("*"):
        out[str(path.relative_to(root))] = b""
    return out


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return events()


def test_waves_answer_as_duckdb(tmp_path: Path, frame: pd.DataFrame, monkeypatch) -> None:
    merged: list[int] = []
    many = arrow_combine.combine_many

    def counted(spec, groups):  # type: ignore[no-untyped-def]
        out = many(spec, groups)
        merged.append(len(groups))
        return out

    monkeypatch.setattr(arrow_combine, "combine_many", counted)
    run(tmp_path / "store", frame)
    assert any(n > 1 for n in merged)  # some waves merged several combines at once
    got = cb.Store(str(tmp_path / "store")).read_pandas("wave_totals")
    with duckdb.connect() as con:
        con.register("events", frame)
        want = con.execute(SQL).df()
    key = lambda f: {(r["kind"], r["m"]): r for r in f.to_dict("records")}  # noqa: E731
    got_rows = key(got.astype({"kind": object}).where(got.notna(), None))
    want_rows = key(want.astype({"kind": object}).where(want.notna(), None))
    assert set(got_rows) == set(want_rows)
    for k, want_row in want_rows.items():
        row = got_rows[k]
        assert row["n"] == want_row["n"] and row["some"] == want_row["some"]
        for column in ("total", "avg", "base"):  # sums of values 1e16 apart: close, not equal
            assert math.isclose(row[column], want_row[column], rel_tol=1e-6, abs_tol=1.0)


def test_waves_store_what_combines_alone_store(
    tmp_path: Path, frame: pd.DataFrame, monkeypatch
) -> None:
    together = run(tmp_path / "together", frame)

    def declined(spec, groups):  # type: ignore[no-untyped-def]
        raise arrow_combine.Unsupported("each alone")

    monkeypatch.setattr(arrow_combine, "combine_many", declined)
    monkeypatch.setattr(arrow_combine, "combine", lambda spec, tables: _alone(spec, tables))
    alone = run(tmp_path / "alone", frame)
    assert together == alone
    assert stored(tmp_path / "together") == stored(tmp_path / "alone")


_MANY = arrow_combine.combine_many


def _alone(spec, tables):  # type: ignore[no-untyped-def]
    return _MANY(spec, [tables])[0]
