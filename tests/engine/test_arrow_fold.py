"""A literal-only call on the Arrow path has the value the pandas evaluator folds it to, and
the common one, ``date('YYYY-MM-DD')``, is folded without importing pandas."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chanbatch.blueprint.expr import parse_expr
from chanbatch.engine.arrow_eval import Unsupported, _fold
from chanbatch.engine.pandas_eval import fold


@settings(max_examples=200, deadline=None)
@given(st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31)))
def test_an_iso_date_folds_to_the_day_pandas_gives(day: dt.date) -> None:
    node = parse_expr(f"date('{day.isoformat()}')")
    # pandas' timestamps end in 2262: beyond that it refuses, and so must the Arrow path
    try:
        want = fold(node)
    except Exception:
        with pytest.raises(Unsupported):
            _fold(node)
        return
    assert _fold(node) == want == day


@pytest.mark.parametrize("text", ["2023-02-30", "2013-13-01", "1999-04-31"])
def test_a_date_that_does_not_exist_is_left_to_pandas(text: str) -> None:
    node = parse_expr(f"date('{text}')")
    with pytest.raises(Unsupported):
        _fold(node)


def test_a_filter_on_a_date_literal_runs_on_arrow_without_pandas(tmp_path: Path) -> None:
    days = pa.array([dt.date(1998, 9, 1), dt.date(1998, 9, 3), None], pa.date32())
    pq.write_table(pa.table({"d": days}), tmp_path / "t.parquet")
    # the rows are read from Parquet, as a run reads them: building them from Python objects
    # would import pandas by itself (pyarrow looks for pandas types), and so does
    # pq.read_table (through pyarrow.dataset), unlike ParquetFile.read
    code = f"""
import sys
import pyarrow.parquet as pq
from chanbatch.blueprint.model import Filter, Stage
from chanbatch.blueprint.expr import parse_expr
from chanbatch.engine import columnar
table = pq.ParquetFile({str(tmp_path / "t.parquet")!r}).read()
stage = Stage(name="s", from_="t", operation=Filter(expr=parse_expr("d <= date('1998-09-02')")))
out = columnar.apply_rowwise(stage, table)
imported = "pandas" in sys.modules
print(out.column("d").to_pylist(), imported)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[datetime.date(1998,", "9,", "1)]", "False"]
