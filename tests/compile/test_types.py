"""Plan-time type checks: a mismatch is a BlueprintError naming the stage, field and column."""

from __future__ import annotations

import pandas as pd
import pytest

import chanbatch as cb
from chanbatch.blueprint.problems import BlueprintError


@pytest.fixture
def store(tmp_path) -> cb.Store:
    store = cb.Store(tmp_path / "store")
    frame = pd.DataFrame(
        {
            "k": [1, 1, 2],
            "name": ["a", "b", "c"],
            "x": [1.5, 2.5, None],
            "day": pd.to_datetime(["2013-01-01", "2013-01-02", "2013-01-03"]).date,
        }
    )
    store.freeze("t", frame, slice_by="k")
    return store


def plan(store: cb.Store, stages: str) -> dict:
    text = f"name: types\ninputs: {{t: t}}\nstages:\n{stages}\noutputs: {{out: types_out}}\n"
    return cb.Blueprint.from_yaml(text).plan(store).document()


@pytest.mark.parametrize(
    ("stage", "needles"),
    [
        (
            "  out: {from: t, filter: 'name > 1'}",
            ["'out'", "filter", "string column 'name'", "number 1"],
        ),
        ("  out: {from: t, derive: {y: 'name * 2'}}", ["derive.y", "'*'", "string column 'name'"]),
        ("  out: {from: t, derive: {y: 'upper(x)'}}", ["derive.y", "upper()", "number column 'x'"]),
        (
            "  out: {from: t, aggregate: {s: sum(name)}}",
            ["aggregate.s", "sum()", "string column 'name'"],
        ),
        ("  out: {from: t, filter: 'x + 1'}", ["filter", "condition"]),
        ("  out: {from: t, filter: 'day > 5'}", ["date column 'day'", "number 5"]),
    ],
)
def test_type_mismatch_is_reported_at_plan_time(
    store: cb.Store, stage: str, needles: list[str]
) -> None:
    with pytest.raises(BlueprintError) as caught:
        plan(store, stage)
    message = str(caught.value)
    for needle in needles:
        assert needle in message, message


@pytest.mark.parametrize(
    "stage",
    [
        "  out: {from: t, filter: \"day > '2013-01-01' and name in ['a', 'c']\"}",
        "  out: {from: t, derive: {y: 'x * 2 + k', z: 'lower(name)', w: 'year(day)'}}",
        "  out: {from: t, group_by: [name], aggregate: {m: max(name), s: sum(x), n: count()}}",
        "  out: {from: t, derive: {y: \"cast(name, 'int')\"}}",
    ],
)
def test_well_typed_stages_plan(store: cb.Store, stage: str) -> None:
    assert plan(store, stage)["summary"]["compute"] > 0
