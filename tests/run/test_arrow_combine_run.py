"""A run whose combines go through the Arrow combine stores what the pandas combine stores.

Each blueprint runs over many small day slices on two identical stores: as it runs now, and with
the Arrow combine made to decline every stage (as it did before it existed). Output snapshot
ids and every cached object must be the same.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import chanbatch as cb
from chanbatch.engine import arrow_combine


def days(rows: int = 1500, seed: int = 11) -> pd.DataFrame:
    """Rows over 90 days, with NaN, huge and tiny values, so that the order of sums shows."""
    rng = np.random.default_rng(seed)
    day = [dt.date(2021, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 90, rows)]
    value = rng.choice([1e16, -1e16, 1.0, 0.1, 3e-17, 2.5], rows) * rng.uniform(0.5, 2, rows)
    value[rng.random(rows) < 0.05] = np.nan
    return pd.DataFrame(
        {
            "day": pd.array(day, dtype="date32[pyarrow]"),
            "flag": rng.choice(["A", "N", "R"], rows),
            "status": rng.choice(["F", "O"], rows),
            "value": value,
            "price": rng.uniform(1, 1e5, rows),
        }
    )


BLUEPRINTS = {
    "grouped": """
  summary:
    from: t
    group_by: [flag, status]
    aggregate:
      total: sum(value)
      avg: mean(price)
      low: min(value)
      high: max(price)
      n: count()
      n_value: count(value)
""",
    "q1_like": """
  summary:
    from: t
    group_by: [flag, status]
    aggregate:
      total: sum(value)
      avg: mean(price)
      n: count()
      n_value: count(value)
""",
    "global": """
  summary:
    from: t
    aggregate:
      total: sum(price)
      avg: mean(price)
      n: count()
""",
    "by_day": """
  summary:
    from: t
    group_by: [day]
    aggregate:
      total: sum(price)
      n: count()
""",
}


def _run(path: Path, name: str) -> str:
    text = f"name: {name}\ninputs:\n  t: t\nstages:{BLUEPRINTS[name]}outputs:\n  summary: {name}\n"
    result = cb.Blueprint.from_yaml(text).run(cb.Store(path), scheduler="sync")
    return str(result.snapshots["summary"]["snapshot"])


def _cache(path: Path) -> dict[str, str]:
    return {
        entry.stem: json.loads(entry.read_text())["objects"][0]
        for entry in (path / "cache").glob("*.json")
    }


@pytest.fixture(scope="module")
def frozen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding :func:`days` in day slices, frozen once; each test runs on copies."""
    path = tmp_path_factory.mktemp("days") / "store"
    cb.Store(path).freeze("t", days(), slice_by="day")
    return path


@pytest.mark.parametrize("name", sorted(BLUEPRINTS))
def test_arrow_combine_keeps_output_ids(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, frozen: Path
) -> None:
    for store in ("arrow", "pandas"):
        shutil.copytree(frozen, tmp_path / store)
    taken: list[int] = []
    original = arrow_combine.combine

    def spy(spec: object, tables: list) -> object:  # type: ignore[type-arg]
        result = original(spec, tables)  # type: ignore[arg-type]
        taken.append(len(tables))
        return result

    monkeypatch.setattr(arrow_combine, "combine", spy)
    arrow_id = _run(tmp_path / "arrow", name)
    # partials of min/max or global ones are computed on pandas, and so are a cold run's
    # combines of them; the others must have run here
    assert taken or name in ("grouped", "global"), "no combine ran on Arrow"

    def decline(spec: object, tables: object) -> object:
        raise arrow_combine.Unsupported("switched off")

    monkeypatch.setattr(arrow_combine, "combine", decline)
    pandas_id = _run(tmp_path / "pandas", name)
    assert arrow_id == pandas_id
    assert _cache(tmp_path / "arrow") == _cache(tmp_path / "pandas")
