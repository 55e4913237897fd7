"""The expression language: what parses, how it renders, and everything it refuses."""

from __future__ import annotations

import pickle
import re

import pytest
from blueprintkit import expressions
from hypothesis import given, settings
from hypothesis import strategies as st

from chanbatch.blueprint import ExprError, parse_aggregate, parse_expr
from chanbatch.blueprint.nodes import Expr
from chanbatch.errors import UsageError

# (expression, the token the error must name)
HOSTILE = [
    ("__import__('os').system('id')", ".system"),
    ("__import__('os')", "__import__"),
    ("().__class__", ".__class__"),
    ("x.__class__.__mro__", ".__mro__"),
    ("x.__dict__", ".__dict__"),
    ("abs.__call__(1)", ".__call__"),
    ("x.y", ".y"),
    ("[c for c in x]", "[c for c in x]"),
    ("(c for c in x)", "(c for c in x)"),
    ("{k: 1 for k in x}", "{k: 1 for k in x}"),
    ("lambda: 1", "lambda"),
    ("(lambda: 0)()", "lambda"),
    ('f"{x}"', 'f"{x}"'),
    ("x[0]", "x[0]"),
    ("x[1:2]", "x[1:2]"),
    ("open('f')", "open"),
    ("eval('1 + 1')", "eval"),
    ("exec('x = 1')", "exec"),
    ("globals()", "globals"),
    ("getattr(x, 'y')", "getattr"),
    ("(x := 1)", "x := 1"),
    ("*x", "*"),
    ("abs(*x)", "*x"),
    ("abs(**x)", "**x"),
    ("abs(x=1)", "x="),
    ("a if b else c", "a if b else c"),
    ("{1: 2}", "{1: 2}"),
    ("{1}", "{1}"),
    ("[1, 2]", "[1, 2]"),
    ("(1, 2)", "(1, 2)"),
    ("...", "..."),
    ("yield x", "yield"),
    ("(yield x)", "yield"),
    ("await x", "await"),
    ("__builtins__", "__builtins__"),
    ("__file__ == 'x'", "__file__"),
    ("import os", "import"),
    ("x; y", ";"),
    ("a & b", "&"),
    ("a | b", "|"),
    ("a ^ b", "^"),
    ("a << 1", "<<"),
    ("a @ b", "@"),
    ("~a", "~"),
    ("x is None", "is"),
    ("x is not None", "is not"),
    ("b'abc'", "b'abc'"),
    ("1j", "1j"),
    ("1e999", "1e999"),
    ("x in y", "y"),
    ("x in [y]", "y"),
    ("sum(x) > 1", "sum"),
    ("cast(x, 'object')", "object"),
    ("round(x, 'a')", "'a'"),
    ("lower(x, y)", "lower"),
]


@pytest.mark.parametrize(("text", "token"), HOSTILE, ids=[t for t, _ in HOSTILE])
def test_hostile_expression_is_refused_naming_the_token(text: str, token: str) -> None:
    with pytest.raises(ExprError) as caught:
        parse_expr(text)
    error = caught.value
    assert error.token == token
    assert repr(token) in str(error) or f"near {token!r}" in str(error)
    assert 1 <= error.position <= len(text) + 1
    assert isinstance(error, UsageError) and error.exit_code == 2


def test_enough_hostile_cases() -> None:
    assert len(HOSTILE) >= 25


@pytest.mark.parametrize(
    ("text", "position"),
    [("x.y", 2), ("  a & b", 5), ("éé.attr", 3), ("round(x, lowr(y))", 10), ("1 +", 4)],
)
def test_error_position_is_one_based_characters(text: str, position: int) -> None:
    with pytest.raises(ExprError) as caught:
        parse_expr(text)
    assert caught.value.position == position
    assert str(caught.value).endswith(f"at position {position}")


def test_refusals_suggest_what_to_write() -> None:
    cases = {
        "lowr(x)": "did you mean 'lower'?",
        "a if b else c": "use if_else(condition, then, otherwise)",
        "x is None": "use is_null(x) or not_null(x)",
        "a & b": "use 'and'",
        "cast(x, 'flaot')": "did you mean 'float'?",
        "open('f')": "allowed: abs, between, cast",
    }
    for text, hint in cases.items():
        with pytest.raises(ExprError) as caught:
            parse_expr(text)
        assert caught.value.hint is not None and hint in caught.value.hint, text


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_empty_expression_is_refused(text: str) -> None:
    with pytest.raises(ExprError, match="empty expression"):
        parse_expr(text)


def test_overlong_and_deeply_nested_expressions_are_refused_cleanly() -> None:
    with pytest.raises(ExprError, match="longer than"):
        parse_expr("x + " * 5000 + "x")
    with pytest.raises(ExprError):
        parse_expr("(" * 500 + "x" + ")" * 500)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("dep_delay>0 and origin in ['JFK','LGA']", "dep_delay > 0 and origin in ['JFK', 'LGA']"),
        ("distance / air_time * 60", "distance / air_time * 60"),
        ("((a))+(b*c)", "a + b * c"),
        ("(a + b) * c", "(a + b) * c"),
        ("a - (b - c)", "a - (b - c)"),
        ("(a - b) - c", "a - b - c"),
        ("a ** b ** c", "a ** b ** c"),
        ("(a ** b) ** c", "(a ** b) ** c"),
        ("-2 ** 2", "-2 ** 2"),
        ("(-2) ** 2", "(-2) ** 2"),
        ("2 ** -1", "2 ** (-1)"),
        ("- -x", "--x"),
        ("+x", "x"),
        ("0<x<=5", "0 < x <= 5"),
        ("(a < b) == c", "(a < b) == c"),
        ("(a and b) and c", "a and b and c"),
        ("a and (b or c)", "a and (b or c)"),
        ("not (a == b)", "not a == b"),
        ("(not a) == b", "(not a) == b"),
        ("x not in (1, None, -2.5)", "x not in [1, null, -2.5]"),
        ('x == "it\'s"', 'x == "it\'s"'),
        ("true or null", "true or null"),
        ("if_else(is_null(x), 0, x)", "if_else(is_null(x), 0, x)"),
        ("cast( x , 'int' )", "cast(x, 'int')"),
        ("x\n  and y", "x and y"),
        ("  x + 1", "x + 1"),
    ],
)
def test_render_is_canonical(text: str, canonical: str | None) -> None:
    if canonical is None:
        with pytest.raises(ExprError):
            parse_expr(text)
        return
    rendered = parse_expr(text).render()
    assert rendered == canonical
    assert parse_expr(rendered).render() == canonical


def test_columns_lists_every_column_read() -> None:
    expr = parse_expr("if_else(a > 0, lower(b), coalesce(c, 'x')) in ['y'] or not_null(d)")
    assert expr.columns() == {"a", "b", "c", "d"}
    assert parse_expr("1 + 2").columns() == set()
    assert parse_expr("null == true").columns() == set()


def test_trees_are_immutable_hashable_and_picklable() -> None:
    expr = parse_expr("a + 1 > b and c in ['x', null]")
    assert pickle.loads(pickle.dumps(expr)) == expr
    assert hash(expr) == hash(parse_expr("(a + 1 > b) and c in ['x', None]"))
    with pytest.raises(AttributeError):
        expr.op = "or"  # type: ignore[misc]


def test_parse_aggregate() -> None:
    assert parse_aggregate("count()").render() == "count()"
    assert parse_aggregate("count( x )").render() == "count(x)"
    assert parse_aggregate("sum(a*b)").render() == "sum(a * b)"
    assert parse_aggregate("mean(dep_delay)").columns() == {"dep_delay"}
    for text, message in [
        ("avg(x)", "unknown aggregate 'avg'"),
        ("meen(x)", "unknown aggregate 'meen'"),
        ("count(*)", "'count(*)' is not allowed"),
        ("mean()", "takes 1 argument, got 0"),
        ("count(a, b)", "takes 0 or 1 arguments, got 2"),
        ("sum(mean(x))", "aggregate 'mean' cannot be nested"),
        ("round(mean(x))", "'round' is a function, not an aggregate"),
        ("x + 1", "expected an aggregate"),
        ("max(x.__class__)", "attribute access '.__class__'"),
    ]:
        with pytest.raises(ExprError, match=re.escape(message)):
            parse_aggregate(text)


# -- round trip on generated trees ------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(expressions)
def test_render_parse_round_trip(expr: Expr) -> None:
    text = expr.render()
    reparsed = parse_expr(text)
    assert reparsed.render() == text
    # A parsed tree is a fixed point: its text parses back to the very same tree.
    assert parse_expr(reparsed.render()) == reparsed
    assert reparsed.columns() == expr.columns()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab1 +-*/()<>=!andortifx_',[]", max_size=30))
def test_arbitrary_text_parses_or_raises_expr_error(text: str) -> None:
    try:
        expr = parse_expr(text)
    except ExprError:
        return
    assert parse_expr(expr.render()).render() == expr.render()
