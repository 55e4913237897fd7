"""A literal-only call on the Arrow path has the value the pandas evaluator folds it to, and
the common one, ``date('YYYY-MM-DD')``, is folded without importing pandas."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pyarrow as pa
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


def test_the_arrow_path_imports_no_pandas_module_of_its_own() -> None:
    """Importing the task functions and the Arrow kernels loads no pandas: only a task that
    falls back to the pandas kernels does. (pyarrow itself imports pandas the first time it
    converts a Python value, a literal in a comparison say, through ``pa.scalar``; that is
    pyarrow's doing, measured in docs/performance.md.)"""
    code = (
        "import sys, chanbatch.engine.graph, chanbatch.engine.columnar; "
        "print('pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]


def test_an_iso_date_literal_is_folded_without_the_pandas_evaluator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chanbatch.engine import pandas_eval

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("folded by pandas")

    monkeypatch.setattr(pandas_eval, "fold", refuse)
    days = pa.array([dt.date(1998, 9, 1), dt.date(1998, 9, 3), None], pa.date32())
    stage_filter = parse_expr("d <= date('1998-09-02')")
    from chanbatch.blueprint.model import Filter, Stage
    from chanbatch.engine import columnar

    stage = Stage(name="s", from_="t", operation=Filter(expr=stage_filter))
    out = columnar.apply_rowwise(stage, pa.table({"d": days}))
    assert out.column("d").to_pylist() == [dt.date(1998, 9, 1)]
