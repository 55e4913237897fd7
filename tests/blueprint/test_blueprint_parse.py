"""Parsing good blueprints: the DESIGN.md example, every operation, and canonical specs."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chanbatch.blueprint import (
    Aggregate,
    Blueprint,
    BlueprintError,
    Derive,
    Filter,
    Join,
    Limit,
    Map,
    Problem,
    Rename,
    Select,
    Sort,
    SortKey,
    Union,
    load_blueprint,
    parse_blueprint,
)
from chanbatch.blueprint.graph import find_cycles, topological_order
from chanbatch.errors import InputError, UsageError
from chanbatch.hashing import digest_json

HERE = Path(__file__).parent
REPO = HERE.parent.parent
EXAMPLE = HERE / "good" / "carrier_delays.yaml"

# The canonical stage specs of the DESIGN.md section 5 example. They feed cache keys: if this
# test has to change, every cached result of every user is invalidated, so change it on purpose.
EXAMPLE_CANONICAL = {
    "late": {
        "op": "filter",
        "expr": "dep_delay > 0 and origin in ['JFK', 'LGA']",
        "per_slice": False,
    },
    "fast": {
        "op": "derive",
        "columns": [["speed", "distance / air_time * 60"]],
        "per_slice": False,
    },
    "named": {
        "op": "join",
        "on": ["carrier"],
        "how": "left",
        "suffixes": ["", "_right"],
        "per_slice": False,
    },
    "by_carrier": {
        "op": "aggregate",
        "group_by": ["carrier", "name"],
        "aggregates": [
            ["flights", "count()"],
            ["mean_delay", "mean(dep_delay)"],
            ["worst", "max(dep_delay)"],
            ["miles", "sum(distance)"],
        ],
        "per_slice": False,
    },
}

# The same blueprint written differently: flow style, other spacing, redundant parentheses,
# comments, keys in another order, and `on` as a one-item list.
EXAMPLE_RESTYLED = """
name: carrier_delays
stages:
  late: {filter: "(dep_delay>0) and (origin in ('JFK','LGA'))", from: flights}
  fast:
    derive:
      speed: >-
        (distance / air_time)
        * 60
    from: late
  named:
    join: {how: left, on: [carrier], right: airlines}   # same join
    from: fast
  by_carrier:
    aggregate: {flights: "count( )", mean_delay: "mean( dep_delay )",
                worst: max(dep_delay), miles: sum(distance)}
    group_by: [carrier, name]
    from: named
inputs: {airlines: airlines, flights: flights}
outputs: {by_carrier: carrier_delays}
"""


def _canonical(blueprint: Blueprint) -> dict[str, dict]:
    return {name: stage.canonical() for name, stage in blueprint.stages.items()}


def test_design_example_parses() -> None:
    blueprint = load_blueprint(str(EXAMPLE))
    assert blueprint.name == "carrier_delays"
    assert blueprint.inputs == {"flights": "flights", "airlines": "airlines"}
    assert blueprint.outputs == {"by_carrier": "carrier_delays"}
    assert blueprint.source == str(EXAMPLE)
    assert list(blueprint.stages) == ["late", "fast", "named", "by_carrier"]
    late, fast, named, by_carrier = blueprint.stages.values()
    assert (late.from_, late.line, late.per_slice) == ("flights", 6, False)
    assert isinstance(late.operation, Filter)
    assert late.operation.expr.columns() == {"dep_delay", "origin"}
    assert isinstance(fast.operation, Derive) and list(fast.operation.columns) == ["speed"]
    assert isinstance(named.operation, Join)
    assert named.operation == Join(right="airlines", on=("carrier",), how="left")
    assert named.upstream == ("fast", "airlines")
    assert isinstance(by_carrier.operation, Aggregate)
    assert by_carrier.operation.group_by == ("carrier", "name")
    assert by_carrier.operation.decomposable
    assert blueprint.topological_order() == ["late", "fast", "named", "by_carrier"]


def test_design_example_canonical_specs_are_stable() -> None:
    blueprint = load_blueprint(EXAMPLE)
    assert _canonical(blueprint) == EXAMPLE_CANONICAL
    # Canonical specs must be hashable as canonical JSON (no NaN, no non-JSON types).
    assert digest_json(EXAMPLE_CANONICAL) == digest_json(_canonical(load_blueprint(EXAMPLE)))


def test_canonical_ignores_formatting() -> None:
    assert _canonical(parse_blueprint(EXAMPLE_RESTYLED)) == EXAMPLE_CANONICAL


def test_canonical_changes_with_the_filter_and_only_for_that_stage() -> None:
    text = EXAMPLE.read_text().replace("dep_delay > 0 and", "dep_delay > 15 and")
    changed = _canonical(parse_blueprint(text))
    assert changed["late"] != EXAMPLE_CANONICAL["late"]
    assert changed["late"]["expr"] == "dep_delay > 15 and origin in ['JFK', 'LGA']"
    assert {k: v for k, v in changed.items() if k != "late"} == {
        k: v for k, v in EXAMPLE_CANONICAL.items() if k != "late"
    }


def test_canonical_ignores_stage_names_but_not_per_slice() -> None:
    renamed = EXAMPLE.read_text().replace("late", "delayed")
    assert _canonical(parse_blueprint(renamed))["delayed"] == EXAMPLE_CANONICAL["late"]
    per_slice = EXAMPLE.read_text().replace(
        "    from: flights\n", "    from: flights\n    per_slice: true\n"
    )
    assert _canonical(parse_blueprint(per_slice))["late"]["per_slice"] is True


def test_blueprint_pickles() -> None:
    blueprint = load_blueprint(EXAMPLE)
    assert pickle.loads(pickle.dumps(blueprint)) == blueprint


def test_every_operation() -> None:
    blueprint = parse_blueprint(
        """
name: all_ops
inputs: {a: a, b: "b@0123abcd", c: "c[2013-01]"}
stages:
  f: {from: a, filter: "x > 1", per_slice: true}
  d: {from: f, derive: {y: "x * 2", z: "y + 1"}}
  s: {from: d, select: [x, z]}
  s1: {from: d, select: x}
  r: {from: s, rename: {x: ex, z: zed}}
  j: {from: r, join: {right: b, on: [k1, k2], how: outer, suffixes: [_l, _r]}}
  g: {from: j, aggregate: {n: count(), u: count_distinct(k1), v: var(x), md: median(x)}}
  o: {from: g, sort: [n, -u]}
  o1: {from: g, sort: -n}
  l: {from: o, limit: 0}
  u: {from: l, union: [o1, c]}
  u1: {from: l, union: o1}
  m: {from: u, map: {function: "my_pkg.steps:clean", version: 3}}
outputs: {m: all_ops_out, s1: s1.out}
"""
    )
    ops = {name: stage.operation for name, stage in blueprint.stages.items()}
    assert blueprint.stages["f"].per_slice
    assert isinstance(ops["d"], Derive) and list(ops["d"].columns) == ["y", "z"]
    assert ops["s"] == Select(columns=("x", "z")) and ops["s1"] == Select(columns=("x",))
    assert ops["r"] == Rename(mapping={"x": "ex", "z": "zed"})
    assert ops["j"] == Join(right="b", on=("k1", "k2"), how="outer", suffixes=("_l", "_r"))
    assert isinstance(ops["g"], Aggregate) and ops["g"].group_by == ()
    assert not ops["g"].decomposable  # median needs the whole input
    assert ops["o"] == Sort(by=(SortKey(column="n"), SortKey(column="u", ascending=False)))
    assert ops["o1"] == Sort(by=(SortKey(column="n", ascending=False),))
    assert ops["l"] == Limit(n=0)
    assert ops["u"] == Union(others=("o1", "c")) and ops["u1"] == Union(others=("o1",))
    assert ops["m"] == Map(function="my_pkg.steps:clean", version="3")
    assert blueprint.stages["u"].upstream == ("l", "o1", "c")
    assert ops["o"].canonical() == {"op": "sort", "by": [["n", "asc"], ["u", "desc"]]}
    assert ops["u"].canonical() == {"op": "union", "inputs": 3}
    assert ops["r"].canonical() == {"op": "rename", "mapping": {"x": "ex", "z": "zed"}}
    assert ops["m"].canonical() == {"op": "map", "function": "my_pkg.steps:clean", "version": "3"}
    order = blueprint.topological_order()
    for name, stage in blueprint.stages.items():
        for upstream in stage.upstream:
            if upstream in blueprint.stages:
                assert order.index(upstream) < order.index(name)


def test_topological_order_puts_readers_after_what_they_read() -> None:
    blueprint = parse_blueprint(
        """
name: x
inputs: {a: a}
stages:
  last: {from: middle, limit: 1}
  middle: {from: first, limit: 2}
  first: {from: a, limit: 3}
  other: {from: a, limit: 4}
outputs: {last: out}
"""
    )
    assert blueprint.topological_order() == ["first", "middle", "last", "other"]


def test_yaml_1_1_booleans_stay_text() -> None:
    blueprint = parse_blueprint(
        "name: x\ninputs: {no: flights, on: airlines}\n"
        "stages: {s: {from: no, join: {right: on, on: yes}}}\noutputs: {s: out}\n"
    )
    assert blueprint.inputs == {"no": "flights", "on": "airlines"}
    assert blueprint.stages["s"].operation == Join(right="on", on=("yes",))


def test_load_from_path_text_and_pathlike(tmp_path: Path) -> None:
    copy = tmp_path / "bp.yml"
    copy.write_text(EXAMPLE.read_text())
    by_path = load_blueprint(copy)
    by_str = load_blueprint(str(copy))
    by_text = load_blueprint(EXAMPLE.read_text())
    assert by_path.stages == by_str.stages == by_text.stages
    assert by_path.source == str(copy) and by_text.source == "<string>"


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="blueprint file not found"):
        load_blueprint(str(tmp_path / "nope.yaml"))
    with pytest.raises(InputError):
        load_blueprint(tmp_path / "nope")


def test_problem_text_and_error_shape() -> None:
    problem = Problem(
        file="blueprints/x.yaml",
        line=12,
        stage="late",
        field="filter",
        message="unknown function 'lowr' at position 1",
        hint="did you mean 'lower'?",
    )
    assert str(problem) == (
        "blueprints/x.yaml:12: stage 'late', field 'filter': "
        "unknown function 'lowr' at position 1 (did you mean 'lower'?)"
    )
    assert (
        str(Problem(file="x.yaml", line=3, message="missing 'name'")) == "x.yaml:3: missing 'name'"
    )
    later = Problem(file="x.yaml", line=9, message="b")
    error = BlueprintError([later, problem], source="x.yaml")
    assert isinstance(error, UsageError) and error.exit_code == 2
    assert error.problems == [later, problem]  # sorted by line
    assert str(error).splitlines()[0] == "blueprint x.yaml has 2 problems:"


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(BlueprintError) as caught:
        parse_blueprint(
            "name: x\ninputs: {a: a}\nstages:\n  s: {from: b, filter: 'x.y'}\n"
            "  t: {from: s, limit: -1}\noutputs: {u: 'bad name'}\n"
        )
    fields = [(p.line, p.stage, p.field) for p in caught.value.problems]
    assert fields == [
        (4, "s", "filter"),
        (4, "s", "from"),
        (5, "t", "limit"),
        (6, None, "outputs"),
        (6, None, "outputs.u"),
    ]


def test_graph_helpers() -> None:
    edges = {"a": ["c"], "b": ["a"], "c": ["b", "input"], "d": ["d"], "e": []}
    assert find_cycles(edges) == [["a", "b", "c", "a"], ["d", "d"]]
    with pytest.raises(ValueError, match="cycle"):
        topological_order(edges)
    assert topological_order({"x": ["y"], "y": [], "z": ["x", "y"]}) == ["y", "x", "z"]


def _blueprint_files() -> list[Path]:
    return sorted((REPO / "blueprints").glob("*.y*ml"))


@pytest.mark.parametrize("path", _blueprint_files(), ids=lambda p: p.name)
def test_every_shipped_blueprint_parses(path: Path) -> None:
    load_blueprint(path)


_EDITS = st.lists(
    st.tuples(
        st.sampled_from(["delete", "insert", "swap"]),
        st.integers(min_value=0),
        st.integers(min_value=0),
        st.sampled_from(list("abc:-[]{}, \n'\"#&*!|>019_.()")),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(_EDITS)
def test_mangled_blueprints_fail_only_with_located_problems(edits: list) -> None:
    text = list(EXAMPLE.read_text())
    for kind, i, j, char in edits:
        i, j = i % len(text), j % len(text)
        if kind == "delete":
            del text[i]
        elif kind == "insert":
            text.insert(i, char)
        else:
            text[i], text[j] = text[j], text[i]
    try:
        parse_blueprint("".join(text), source="mangled.yaml")
    except BlueprintError as error:
        assert error.problems
        assert all(p.file == "mangled.yaml" and (p.line or 1) >= 1 for p in error.problems)
