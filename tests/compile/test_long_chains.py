"""A flat sum of hundreds of terms is type-checked, planned and run like a short one.

``distance + distance + ...`` is a left-nested tree as deep as the sum is long. The parser,
the renderer (and so the cache keys) and the plan-time type check follow such a chain in a
loop. So do the evaluators that run it on a slice (``engine/pandas_eval.py`` for pandas,
``engine/arrow_eval.py`` for Arrow), at Python's default recursion limit.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import chanbatch as cb
from chanbatch.blueprint.expr import parse_expr
from chanbatch.compile.types import TypeProblem, infer
from chanbatch.engine.arrow_eval import ArrowEvaluator
from chanbatch.engine.execute import StageFailed
from chanbatch.engine.pandas_eval import evaluate

TERMS = 500
SUM = " + ".join(["distance"] * TERMS)


def frames() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(7)
    return {
        month: pd.DataFrame(
            {
                "distance": rng.integers(100, 3000, 40).astype("float64"),
                "carrier": rng.choice(["AA", "B6", "DL"], 40),
            }
        )
        for month in ("2013-01", "2013-02", "2013-03")
    }


BLUEPRINT = f"""
name: long_sum
inputs:
  flights: flights
stages:
  summed:
    from: flights
    derive:
      total: "{SUM}"
  kept:
    from: summed
    filter: "{" and ".join(["distance > 0"] * 300)}"
outputs:
  kept: long_sum_out
"""


@pytest.fixture
def store(tmp_path: Path) -> cb.Store:
    store = cb.Store(str(tmp_path / "snapshots"))
    for month, frame in frames().items():
        store.freeze("flights", frame, slice=month)
    return store


@pytest.fixture
def deep_stack() -> Iterator[None]:
    """Room for the evaluators' recursion (see the module docstring)."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def test_a_long_chain_is_type_checked() -> None:
    assert infer(parse_expr(" + ".join(["x"] * 2499)), {"x": "number"}) == "number"
    assert infer(parse_expr(" + ".join(["c"] * 2499)), {"c": "string"}) == "string"
    terms = ["x"] * 2000
    terms[1500] = "flag"
    with pytest.raises(TypeProblem, match="cannot apply '\\+' to bool column 'flag'"):
        infer(parse_expr(" + ".join(terms)), {"x": "number", "flag": "bool"})


def test_a_500_term_sum_is_planned(store: cb.Store) -> None:
    blueprint = cb.Blueprint.from_yaml(BLUEPRINT)
    document = blueprint.plan(store).document()
    assert document["summary"]["compute"] == 6  # two stages on three slices
    again = cb.Blueprint.from_yaml(BLUEPRINT).plan(store).document()
    assert [t["key"] for t in again["tasks"]] == [t["key"] for t in document["tasks"]]


def run_and_check(store: cb.Store) -> None:
    result = cb.Blueprint.from_yaml(BLUEPRINT).run(store, scheduler="sync")
    got = store.read_pandas(result.snapshots["kept"]["dataset"])
    expected = pd.concat(frames().values(), ignore_index=True)
    # computed independently: 500 times the distance, with plain pandas
    pd.testing.assert_series_equal(
        got["total"].astype("float64"), (expected["distance"] * TERMS).rename("total")
    )


def no_recursion_error(work: Callable[[], object]) -> object:
    """``work()``, failing on a RecursionError (directly or as a failed stage) outside the
    ``except`` clause: pytest takes minutes to draw a traceback a thousand frames deep."""
    try:
        return work()
    except RecursionError:
        failure = "RecursionError"
    except StageFailed as exc:
        if "RecursionError" not in str(exc):
            raise
        failure = str(exc)
    pytest.fail(failure)


def test_a_500_term_sum_runs_and_equals_500_times_the_distance(
    store: cb.Store, deep_stack: None
) -> None:
    no_recursion_error(lambda: run_and_check(store))


def test_a_500_term_sum_runs_at_the_default_recursion_limit(store: cb.Store) -> None:
    no_recursion_error(lambda: run_and_check(store))


def test_the_pandas_evaluator_follows_a_2000_deep_chain() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    expr = parse_expr(" + ".join(["x"] * 2000))
    result = no_recursion_error(lambda: evaluate(expr, frame))
    assert result.tolist() == [2000.0, 4000.0]  # type: ignore[attr-defined]


def test_the_arrow_evaluator_follows_a_2000_deep_chain() -> None:
    table = pa.table({"x": [1.0, 2.0]})
    expr = parse_expr(" + ".join(["x"] * 2000))
    result = no_recursion_error(lambda: ArrowEvaluator(table).eval(expr))
    assert result.to_pylist() == [2000.0, 4000.0]  # type: ignore[attr-defined]
