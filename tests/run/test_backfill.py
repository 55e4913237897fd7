"""A backfill (issue 17): a slice frozen into the middle of a dataset that has already been run.

The combine tree's boundaries are content-defined (chanbatch/compile/plan.py), so a slice
inserted first, in the middle or last recomputes its partial, the combines on its path to the
root and the finish, like an append, and gives exactly the output of a cold run over the same
slices. The output is checked against pandas on the raw rows, never against chanbatch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import chanbatch as cb
from chanbatch.run.results import RunResult

BLUEPRINT = """
name: backfill
inputs:
  events: events
stages:
  totals:
    from: events
    group_by: [kind]
    aggregate:
      n: count()
      total: sum(v)
      mean_v: mean(v)
      low: min(v)
      high: max(v)
outputs:
  totals: event_totals
"""
DAYS = list(range(1, 61))


def events() -> pd.DataFrame:
    rng = np.random.default_rng(17)
    rows = 30 * len(DAYS)
    return pd.DataFrame(
        {
            "day": np.repeat(DAYS, 30),
            "kind": rng.choice(["a", "b", "c"], rows),
            "v": rng.normal(100, 40, rows),
        }
    )


def expected(frame: pd.DataFrame) -> pd.DataFrame:
    grouped = frame.groupby("kind")["v"]
    return pd.DataFrame(
        {
            "n": grouped.size(),
            "total": grouped.sum(),
            "mean_v": grouped.mean(),
            "low": grouped.min(),
            "high": grouped.max(),
        }
    ).reset_index()


def output(store: cb.Store) -> pd.DataFrame:
    frame = store.read("event_totals").compute()
    return frame.sort_values("kind").reset_index(drop=True)


def depth(store: cb.Store) -> int:
    """The combine levels above the partials, from the plan (nothing run)."""
    plan = cb.Blueprint.from_yaml(BLUEPRINT).plan(store).plan

    def height(key: str) -> int:
        task = plan.tasks[key]
        return 0 if task.kind != "combine" else 1 + max(height(d) for d in task.deps)

    (finish,) = (t for t in plan.tasks.values() if t.kind == "finish")
    return height(finish.deps[0])


@pytest.fixture(scope="module")
def cold(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """One cold run over every day, the same for each backfill (built once for this module)."""
    store = cb.Store(str(tmp_path_factory.mktemp("cold")))
    store.freeze("events", events(), slice_by="day")
    return cb.Blueprint.from_yaml(BLUEPRINT).run(store, scheduler="sync")


@pytest.mark.parametrize("missing", [DAYS[0], DAYS[len(DAYS) // 2], DAYS[-2], DAYS[-1]])
def test_a_backfill_recomputes_its_path_and_matches_a_cold_run(
    tmp_path: Path, missing: int, cold: RunResult
) -> None:
    frame = events()
    blueprint = cb.Blueprint.from_yaml(BLUEPRINT)
    store = cb.Store(str(tmp_path / "warm"))
    store.freeze("events", frame[frame["day"] != missing], slice_by="day")
    blueprint.run(store, scheduler="sync")

    store.freeze("events", frame[frame["day"] == missing], slice_by="day")
    warm = blueprint.run(store, scheduler="sync")
    combines_and_finish = warm.stats["stages"]["totals"]["computed"] - 1  # minus the partial
    assert 2 <= combines_and_finish <= depth(store) + 1

    assert cold.stats["computed"] > warm.stats["computed"]
    # the same slices give the same tree, so the sums add in the same order: the same bytes
    assert warm.snapshots == cold.snapshots

    got, want = output(store), expected(frame)
    assert got["kind"].tolist() == want["kind"].tolist()
    assert got["n"].tolist() == want["n"].tolist()
    for column in ("total", "mean_v", "low", "high"):
        np.testing.assert_allclose(got[column], want[column], rtol=1e-12)
