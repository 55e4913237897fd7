"""Every operation kind has every rule, in the planner and in the engine, and they agree.

A kind added to OPERATIONS without its rules fails here: the planner's table
(:data:`chanbatch.compile.operations.RULES`) lists every kind with every rule, the ``Operation``
union that the engine's ``match`` statements are checked against (``assert_never``) lists the
same classes, and one sample stage of each kind runs through every rule and both engine entry
points, whose result has the columns the planner's schema says.
"""

from __future__ import annotations

import typing

import pandas as pd
import pytest

from chanbatch.blueprint import parse_blueprint
from chanbatch.blueprint.model import OPERATIONS, Join, Operation, Stage
from chanbatch.blueprint.problems import Problem
from chanbatch.compile.operations import RULES, Rules, rules_of
from chanbatch.compile.schema import Schema, StageCheck
from chanbatch.engine import execute

BLUEPRINT = """\
name: every_kind
inputs:
  t: t
  u: u
stages:
  filter:
    from: t
    filter: "x > 1"
  derive:
    from: t
    derive: {y: "x * 2", s: "name"}
  select:
    from: t
    select: [name, k]
  rename:
    from: t
    rename: {x: ex}
  join:
    from: t
    join: {right: u, on: k, how: outer}
  aggregate:
    from: t
    group_by: [k]
    aggregate: {n: count(), top: max(x)}
  sort:
    from: t
    sort: [-x]
  limit:
    from: t
    limit: 2
  union:
    from: t
    union: [t]
  map:
    from: t
    map: {function: "pandas:DataFrame", version: "1"}
  window:
    from: t
    window: {partition_by: k, order_by: x, range: {preceding: 1}, columns: {near: count()}}
outputs:
  map: out
"""

T = Schema.of([("k", "string"), ("x", "number"), ("name", "string")])
U = Schema.of([("k", "string"), ("name", "string")])
T_FRAME = pd.DataFrame({"k": ["a", "b", None], "x": [1, 2, 3], "name": ["p", "q", "r"]})
U_FRAME = pd.DataFrame({"k": ["a", "c", None], "name": ["A", "C", "N"]})

# what each sample stage reads of its inputs when everything it produces is read
NEEDS = {
    "filter": [("t", {"k", "x", "name"})],
    "derive": [("t", {"k", "x", "name"})],
    "select": [("t", {"name", "k"})],
    "rename": [("t", {"k", "x", "name"})],
    "join": [("t", {"k", "x", "name"}), ("u", {"k", "name"})],
    "aggregate": [("t", {"k", "x"})],
    "sort": [("t", {"k", "x", "name"})],
    "limit": [("t", {"k", "x", "name"})],
    "union": [("t", {"k", "x", "name"}), ("t", {"k", "x", "name"})],
    "map": [("t", None)],
    "window": [("t", {"k", "x", "name"})],
}

# kinds that run per slice without ``per_slice: true`` (the sample join is an outer join, which
# must see every slice at once); with it, every kind but union does
ALWAYS_PER_SLICE = {"filter", "derive", "select", "rename", "map"}


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return parse_blueprint(BLUEPRINT).stages


def test_every_kind_has_planning_rules() -> None:
    assert set(RULES) == set(OPERATIONS)
    for kind, rules in RULES.items():
        assert rules.operation is OPERATIONS[kind]
        # each rule is the kind's own, none inherited from elsewhere
        for rule in Rules.__abstractmethods__:
            assert rule in type(rules).__dict__, f"{kind} lacks {rule}"


def test_the_engine_matches_on_every_kind() -> None:
    # the engine's ``match ... assert_never`` is exhaustive over this union, checked by mypy
    assert set(typing.get_args(Operation)) == set(OPERATIONS.values())


def test_the_samples_cover_every_kind(stages: dict[str, Stage]) -> None:
    assert {stage.operation.kind for stage in stages.values()} == set(OPERATIONS)
    assert set(NEEDS) == set(OPERATIONS)


def test_an_operation_without_rules_is_refused() -> None:
    class Pivot:
        kind = "pivot"

    with pytest.raises(TypeError, match=r"'pivot'.*no planning rules"):
        rules_of(Pivot())  # type: ignore[arg-type]


def _schema(stage: Stage) -> tuple[Schema | None, list[Problem]]:
    problems: list[Problem] = []
    blueprint = parse_blueprint(BLUEPRINT)
    at = StageCheck(blueprint=blueprint, stage=stage, schemas={"t": T, "u": U}, problems=problems)
    rules = rules_of(stage.operation)
    rules.check_columns(stage.operation, at, T)
    return rules.output(stage.operation, at, T), problems


@pytest.mark.parametrize("kind", list(OPERATIONS))
def test_every_rule_of_every_kind(kind: str, stages: dict[str, Stage]) -> None:
    stage = stages[kind]
    rules = rules_of(stage.operation)
    schema, problems = _schema(stage)
    assert problems == []
    assert rules.runs_per_slice(stage.operation, False) == (kind in ALWAYS_PER_SLICE)
    assert rules.runs_per_slice(stage.operation, True) == (kind != "union")
    assert rules.broadcast(stage.operation) == (("u",) if kind == "join" else ())
    out = set(schema.names) if schema is not None else {"anything"}
    needs = rules.needs(stage.operation, stage, out, {"t": T, "u": U})
    assert needs == NEEDS[kind]


@pytest.mark.parametrize("kind", list(OPERATIONS))
def test_the_engine_makes_the_planned_columns(kind: str, stages: dict[str, Stage]) -> None:
    stage = stages[kind]
    schema, _ = _schema(stage)
    allow = frozenset({"pandas"})
    broadcast = [U_FRAME]
    rowwise = execute.apply_rowwise(stage, T_FRAME, broadcast, allow)
    whole = execute.apply_whole(stage, [T_FRAME.iloc[:1], T_FRAME.iloc[1:]], broadcast, allow)
    if schema is None:  # a map: known only when it runs
        assert kind == "map"
        schema = Schema.of((c, None) for c in T_FRAME.columns)
    assert list(rowwise.columns) == list(schema.names)
    assert list(whole.columns) == list(schema.names)


def test_the_suffix_rule_names_unmatched_rows_too() -> None:
    op = Join(right="u", on=("k",), how="outer", suffixes=("_l", "_r"))
    left_names, right_names = op.output_names(T_FRAME.columns, U_FRAME.columns)
    assert left_names == {"k": "k", "x": "x", "name": "name_l"}
    assert right_names == {"name": "name_r"}
    got = execute.join(op, T_FRAME, U_FRAME)
    assert list(got.columns) == ["k", "x", "name_l", "name_r"]
    # the rows with a null key match nothing, and keep their values under the suffixed names
    assert sorted(got["name_l"].dropna()) == ["p", "q", "r"]
    assert sorted(got["name_r"].dropna()) == ["A", "C", "N"]
