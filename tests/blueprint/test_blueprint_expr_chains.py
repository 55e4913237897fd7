"""Long flat chains of one operator work up to the length limit; real nesting is still refused.

Python parses ``a + b + c`` as ((a + b) + c), so a sum of 2,000 terms is a tree 2,000 levels
deep. Such a chain counts as one level of nesting: it parses, renders, compares, hashes and
pickles like a short one. Nesting that the text spells out (parentheses on the right, calls in
calls, ``not not ...``) is refused past MAX_NESTING levels, so hostile input still fails fast.
"""

from __future__ import annotations

import copy
import pickle
import threading

import pytest

from chanbatch.blueprint import ExprError, parse_aggregate, parse_expr
from chanbatch.blueprint.convert import MAX_NESTING
from chanbatch.blueprint.expr import MAX_LENGTH
from chanbatch.blueprint.model import Derive, Filter, Stage
from chanbatch.blueprint.nodes import BinOp
from chanbatch.compile.keys import task_key


def longest(separator: str, term: str = "x") -> str:
    """``term separator term ...`` with as many terms as fit in MAX_LENGTH characters."""
    count = (MAX_LENGTH + len(separator)) // (len(term) + len(separator))
    return separator.join([term] * count)


# Canonical spelling (one space around each operator), so each renders to itself.
CHAINS = {
    "sum": longest(" + "),
    "difference": longest(" - "),
    "product": longest(" * "),
    "quotient": longest(" / "),
    "mixed sum": longest(" + ", "x - y"),
    "products summed": longest(" + ", "x * y"),
    "and": longest(" and ", "x > 0"),
    "or": longest(" or ", "x > 0"),
    "comparisons": longest(" < "),
    "equalities": longest(" == "),
}


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_a_flat_chain_as_long_as_allowed_parses_and_renders_to_itself(name: str) -> None:
    text = CHAINS[name]
    assert MAX_LENGTH - 10 <= len(text) <= MAX_LENGTH
    expr = parse_expr(text, strict=True)
    assert expr.render() == text
    assert parse_expr(expr.render()) == expr


def test_a_compact_sum_of_5000_terms_parses() -> None:
    text = "+".join(["x"] * 5000)  # 9,999 characters: one level of the tree per '+'
    expr = parse_expr(text, strict=True)
    assert isinstance(expr, BinOp)
    first, links = expr.chain()
    assert len(links) == 4999 and first.render() == "x"
    assert expr.columns() == frozenset({"x"})


def test_a_500_term_sum_is_planned_like_a_short_one() -> None:
    expr = parse_expr(" + ".join(["distance"] * 500))
    assert expr.render().count("distance") == 500
    assert sum(1 for _ in expr.walk()) == 999
    assert parse_aggregate(f"sum({expr.render()})").arg == expr


def test_a_deep_chain_compares_hashes_pickles_and_copies() -> None:
    text = CHAINS["sum"]
    expr, again = parse_expr(text), parse_expr(text)
    assert expr == again and hash(expr) == hash(again)
    assert expr != parse_expr(text[: -len(" + x")])
    assert expr != parse_expr(text[: -len("x")] + "y")
    for copied in (pickle.loads(pickle.dumps(expr)), copy.deepcopy(expr)):
        assert copied == expr and hash(copied) == hash(expr)
        assert copied.render() == text


def test_a_deep_chain_has_a_stable_cache_key() -> None:
    expr = parse_expr(CHAINS["sum"])
    shorter = parse_expr(CHAINS["sum"][: -len(" + x")])

    def key(e: object) -> str:
        stage = Stage(name="s", from_="a", operation=Derive(columns={"total": e}))
        return task_key("apply", stage.canonical(), ["0" * 64])

    assert key(expr) == key(parse_expr(CHAINS["sum"]))
    assert key(expr) != key(shorter)
    condition = parse_expr(CHAINS["and"])
    stage = Stage(name="s", from_="a", operation=Filter(expr=condition))
    assert stage.canonical()["expr"] == CHAINS["and"]


def test_chains_parse_in_threads_at_once() -> None:
    """Parsing raises the interpreter's recursion limit for a moment: threads must not see
    each other's limit restored under them."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                parse_expr(CHAINS["product"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


def test_an_error_in_a_long_chain_names_its_token() -> None:
    terms = ["x"] * 1000
    terms[700] = "x.__class__"
    with pytest.raises(ExprError) as caught:
        parse_expr(" + ".join(terms))
    assert caught.value.token == ".__class__"
    assert caught.value.position == 700 * 4 + 2
    with pytest.raises(ExprError, match=r"operator '\|' is not allowed"):
        parse_expr(" + ".join(["x"] * 1000) + " | y")
    with pytest.raises(ExprError, match=r"operator '%' on text is not allowed"):
        parse_expr(" + ".join(["x"] * 1000) + " % 'a'", strict=True)


NESTED = {
    "parentheses on the right": "x+(" * (MAX_NESTING + 10) + "x" + ")" * (MAX_NESTING + 10),
    "calls in calls": "abs(" * (MAX_NESTING + 10) + "x" + ")" * (MAX_NESTING + 10),
    "unary minus": "-" * 4000 + "x",
    "not": "not " * 2000 + "x",
    "powers": "**".join(["x"] * 3000),
    "deep unary minus": "-" * 9990 + "x",
}


@pytest.mark.parametrize("name", sorted(NESTED))
def test_genuine_nesting_is_still_refused(name: str) -> None:
    with pytest.raises(ExprError, match=r"nested too deeply|too many nested parentheses"):
        parse_expr(NESTED[name])


def test_nesting_within_the_limit_is_accepted() -> None:
    depth = MAX_NESTING - 5
    text = "x + (" * depth + "x + x" + ")" * depth
    assert parse_expr(text).render() == text
    assert parse_expr("abs(" * depth + "x" + ")" * depth).columns() == frozenset({"x"})
