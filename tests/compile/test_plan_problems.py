"""Plan-time problems: all of them at once, each at the line of its own field.

A stage with a mistake still has the columns it means to produce, so the stages after it are
checked as well, and a misspelt rename does not make every later use of the new name a second
problem.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import chanbatch as cb
from chanbatch.blueprint import BlueprintError
from chanbatch.blueprint.problems import Problem

BLUEPRINT = """\
name: problems
inputs:
  flights: flights
  airlines: airlines
stages:
  renamed:
    from: flights
    rename: {carier: airline}
  late:
    from: renamed
    filter: "airline == 'AA' and dep_delay > 0"
  named:
    from: late
    join:
      right: airlines
      on: [code]
  texts:
    from: named
    derive:
      fine: "dep_delay * 2"
      wrong: "name * 2"
  sorted:
    from: texts
    sort:
      - -dep_delay
      - -distanse
outputs:
  sorted: problems_out
"""


def line_of(needle: str) -> int:
    return next(i for i, line in enumerate(BLUEPRINT.splitlines(), 1) if needle in line)


@pytest.fixture
def problems(tmp_path: Path) -> list[Problem]:
    store = cb.Store(str(tmp_path / "snapshots"))
    store.freeze(
        "flights",
        pd.DataFrame(
            {"carrier": ["AA", "B6"], "dep_delay": [3.0, -1.0], "distance": [100.0, 200.0]}
        ),
        slice="2013-01",
    )
    store.freeze("airlines", pd.DataFrame({"carrier": ["AA"], "name": ["American"]}), slice="all")
    with pytest.raises(BlueprintError) as caught:
        cb.Blueprint.from_yaml(BLUEPRINT).plan(store)
    return caught.value.problems


def test_every_problem_is_found_at_once(problems: list[Problem]) -> None:
    found = [(p.stage, p.field, p.line) for p in problems]
    assert found == [
        ("renamed", "rename", line_of("carier: airline")),
        ("named", "join.on", line_of("on: [code]")),  # missing on the left
        ("named", "join.on", line_of("on: [code]")),  # and on the right side
        ("texts", "derive.wrong", line_of("wrong:")),
        ("sorted", "sort", line_of("- -distanse")),
    ]
    messages = " | ".join(p.message for p in problems)
    assert "unknown column 'carier'" in messages
    assert "unknown column 'distanse'" in messages
    assert "'*' to string column 'name'" in messages  # a stage after problems is type-checked
    assert "'airline'" not in messages  # the rename's new name is not a problem of its own


def test_problems_are_in_file_order(problems: list[Problem]) -> None:
    lines = [p.line for p in problems]
    assert lines == sorted(lines)  # type: ignore[type-var]
