"""Issue 7, item 9: expression injection is refused at validate time.

Each attempt below is put in every place a blueprint holds an expression (a ``filter``, a
``derive`` column, an aggregate's argument) of an otherwise valid blueprint. Each must give a
:class:`BlueprintError` with exactly one problem, located at that stage, field and line, whose
message names the offending token; and ``chanbatch validate`` must exit 2 with that problem as its
one ``Error:`` line. Expressions never run at validate time; the payloads that would write a
marker file show it did not appear. A control set of allowed expressions passes in the same
places, so the harness does not refuse everything.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml
from hostilekit import assert_clean_error, case, record_counts, run_many

from chanbatch.blueprint import BlueprintError, load_blueprint, parse_blueprint
from chanbatch.cli.main import format_error

#: (expression, text the message must contain: the offending token, or what is wrong; or
#: several such texts, one of which it must contain). The deep ones stay under 10,000 characters
#: inside ``sum(...)`` so that they reach the parser.
INJECTIONS: list[tuple[str, str | tuple[str, ...]]] = [
    # attribute access and dunders
    ("x.__class__", "attribute access '.__class__'"),
    ("x.real", "attribute access '.real'"),
    ("().__class__.__bases__[0].__subclasses__()", "'.__subclasses__'"),
    ("''.__class__.__mro__[1].__subclasses__()", "'.__subclasses__'"),
    ("x.__class__.__init__.__globals__['os'].system('id')", "'.system'"),
    ("__class__", "name '__class__' is not allowed"),
    ("__builtins__", "name '__builtins__' is not allowed"),
    ("__import__('os').system('touch {marker}')", "'.system'"),
    ("__import__('os')", "name '__import__' is not allowed"),
    ("x.__dict__", "'.__dict__'"),
    ("(1).__class__", "'.__class__'"),
    ("lower(x).__len__()", "'.__len__'"),
    ("x or __import__", "name '__import__' is not allowed"),
    # builtins
    ("eval('1+1')", "function 'eval' is not allowed"),
    ("exec('import os')", "function 'exec' is not allowed"),
    ("open('{marker}', 'w')", "function 'open' is not allowed"),
    ("getattr(x, '__class__')", "function 'getattr' is not allowed"),
    ("globals()", "function 'globals' is not allowed"),
    ("locals()", "'locals'"),
    ("vars(x)", "function 'vars' is not allowed"),
    ("compile('1', 'f', 'eval')", "function 'compile' is not allowed"),
    ("breakpoint()", "function 'breakpoint' is not allowed"),
    ("input()", "function 'input' is not allowed"),
    ("setattr(x, 'y', 1)", "function 'setattr' is not allowed"),
    ("type(x)", "function 'type' is not allowed"),
    # lambdas, comprehensions, walrus, conditionals
    ("lambda: 1", "'lambda' is not allowed"),
    ("(lambda: __import__('os'))()", "'lambda' is not allowed"),
    ("[y for y in x]", "comprehension '[y for y in x]'"),
    ("{y for y in x}", "comprehension '{y for y in x}'"),
    ("{y: 1 for y in x}", "comprehension '{y: 1 for y in x}'"),
    ("(y for y in x)", "generator expression '(y for y in x)'"),
    ("(y := 1)", "assignment expression 'y := 1'"),
    ("x if x else y", "conditional expression 'x if x else y'"),
    # subscripts and slices
    ("x[0]", "subscript 'x[0]'"),
    ("x[1:2]", "subscript 'x[1:2]'"),
    ("lower(x)[0]", "subscript 'lower(x)[0]'"),
    # format strings
    ("f'{x}'", "f-string \"f'{x}'\""),
    ("f'{x.__class__}'", "f-string"),
    ("'{0.__class__}'.format(x)", "attribute access '.format'"),
    ("'%s' % x", "operator '%' on text"),
    ("'%(a)s' % x", "operator '%' on text"),
    ("lower('%s') % x", "operator '%' on text"),
    ("cast(x, 'str') * 100000", "operator '*' on text"),
    ("'a' * 1000000000", "operator '*' on text"),
    ("b'x'", "bytes literal \"b'x'\""),
    # starred, await, yield, keywords, operators outside the language
    ("lower(*x)", "starred expression '*x'"),
    ("round(**x)", "argument '**x'"),
    ("await x", "'await' is not allowed"),
    ("(yield x)", "'yield' is not allowed"),
    ("(yield from x)", "'yield from' is not allowed"),
    ("round(x, ndigits=__import__('os'))", "keyword argument 'ndigits='"),
    ("x @ y", "operator '@'"),
    ("~x", "operator '~'"),
    ("x is None", "'is' is not allowed"),
    # statements
    ("import os", "near 'import'"),
    ("x; import os", "near ';'"),
    ("x\nimport os", "near 'import'"),
    ("x = 1", ("near '='", "keyword argument 'x='")),  # an aggregate reads it as keyword
    # unicode look-alikes (Python folds some identifiers to ASCII: the folded name is refused)
    ("ｅｖａｌ('1')", "function 'eval' is not allowed"),
    ("＿＿import＿＿('os')", "invalid character '＿' (U+FF3F)"),
    ("x．__class__", "invalid character '．' (U+FF0E)"),
    ("x\u2024__class__", "(U+2024)"),
    ("еval('1')", "'еval'"),  # Cyrillic е: an unknown function, not eval
    # NUL, very long, deeply nested
    ("x\x00 > 1", "NUL character is not allowed"),
    ("x" * 100_000, "expression is longer than 10000 characters"),
    ("(" * 10_000 + "x" + ")" * 10_000, "expression is longer than 10000 characters"),
    ("(" * 4_990 + "x" + ")" * 4_990, "too many nested parentheses near '('"),
    ("-" * 9_990 + "x", "nested too deeply"),
    ("not " * 2_400 + "x", "nested too deeply"),
    ("x+(" * 150 + "x" + ")" * 150, "nested too deeply"),  # a flat sum is allowed, below
    ("0x" + "f" * 4_000, "number '0xffff"),
    ("9" * 5_000, "number '9999"),
]

#: Allowed expressions, in the same places: the harness must accept these.
ALLOWED = [
    "x > 1",
    "lower(carrier) == 'aa'",
    "'a' + carrier",
    "round(x, 2) + 1",
    "x % 2 == 0",
    "is_null(x) or x in [1, 2, 3]",
    "+".join(["x"] * 4_990),  # as long as allowed, but flat: one level however many terms
]

#: Where an expression goes: the stage body, and the field the problem names.
PLACES = {
    "filter": ({"filter": "{expr}"}, "filter"),
    "derive": ({"derive": {"y": "{expr}"}}, "derive.y"),
    "aggregate": ({"group_by": ["k"], "aggregate": {"n": "sum({expr})"}}, "aggregate.n"),
    "count": ({"aggregate": {"n": "count({expr})"}}, "aggregate.n"),
}


def blueprint_text(place: str, expr: str) -> str:
    body, _field = PLACES[place]

    def fill(value: object) -> object:
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value.replace("{expr}", expr) if isinstance(value, str) else value

    document = {
        "name": "injection",
        "inputs": {"a": "flights"},
        "stages": {"s": {"from": "a", **fill(body)}},
        "outputs": {"s": "out"},
    }
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False, width=10**9)


def test_there_are_enough_attempts() -> None:
    assert len(INJECTIONS) >= 50
    assert len({expr for expr, _ in INJECTIONS}) == len(INJECTIONS)


@pytest.mark.parametrize("place", sorted(PLACES))
@pytest.mark.parametrize("expr", ALLOWED)
def test_allowed_expressions_pass(place: str, expr: str) -> None:
    blueprint = parse_blueprint(blueprint_text(place, expr))
    assert list(blueprint.stages) == ["s"]


@pytest.fixture(scope="module")
def marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("injection") / "marker"


def attempts(marker: Path) -> list[tuple[str, str, str | tuple[str, ...]]]:
    """(place, expression, needle) for every attempt in every place."""
    return [
        (place, expr.replace("{marker}", str(marker)), needle)
        for place in sorted(PLACES)
        for expr, needle in INJECTIONS
    ]


def test_every_attempt_is_refused_where_it_stands(
    marker: Path, request: pytest.FixtureRequest
) -> None:
    counts: Counter[str] = Counter()
    failures = []
    for place, expr, needle in attempts(marker):
        text = blueprint_text(place, expr)
        try:
            parse_blueprint(text, source="inj.yaml")
        except BlueprintError as error:
            problems = error.problems
        else:
            failures.append(f"{place}: accepted {expr[:60]!r}")
            continue
        counts[place] += 1
        if len(problems) != 1:
            failures.append(f"{place}: {len(problems)} problems for {expr[:60]!r}: {problems}")
            continue
        (problem,) = problems
        field = PLACES[place][1]
        line = text.splitlines()[problem.line - 1] if problem.line else ""
        if not (
            problem.stage == "s"
            and problem.field == field
            and any(
                n in problem.message for n in ((needle,) if isinstance(needle, str) else needle)
            )
            and line.lstrip().startswith(field.split(".")[-1] + ":")
        ):
            failures.append(f"{place}: {expr[:60]!r} -> {problem} (wanted {needle!r})")
    assert not failures, "\n".join(failures)
    assert not marker.exists()
    record_counts(request, {"attempts": len(INJECTIONS), **counts})


def test_validate_refuses_every_attempt(
    marker: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """``chanbatch validate``: exit 2 and exactly the library's problem as one ``Error:`` line.
    Each attempt goes through the CLI once, the places taking turns (every attempt in every
    place is checked in-process above, through the same parser)."""
    places = sorted(PLACES)
    chosen = [
        (places[i % len(places)], expr.replace("{marker}", str(marker)))
        for i, (expr, _needle) in enumerate(INJECTIONS)
    ]
    cases, paths = [], []
    for index, (place, expr) in enumerate(chosen):
        path = tmp_path / f"{place}-{index}.yaml"
        path.write_text(blueprint_text(place, expr), encoding="utf-8")
        paths.append(path)
        cases.append(case("validate", path, cwd=tmp_path))
    results = run_many(cases)
    for path, result in zip(paths, results, strict=True):
        line = assert_clean_error(result, 2)
        with pytest.raises(BlueprintError) as caught:
            load_blueprint(path)
        assert result.err_lines == [format_error(caught.value)], str(result)
        assert line.startswith(f"Error: {path}:"), line
    assert not marker.exists()
    record_counts(request, {"validate_runs": len(results)})
