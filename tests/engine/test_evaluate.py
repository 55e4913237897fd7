"""Evaluating expressions on pandas, checked against independent computations.

Most expectations come from a row-by-row reference written in plain Python with SQL's null
rules spelled out, so they share no code path with the vectorised evaluator; a few compare
with the obvious pandas call directly.
"""

from __future__ import annotations

import builtins
import datetime as dt
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from blueprintkit import expressions_over
from hypokit import examples
from hypothesis import HealthCheck, given, settings

from chanbatch.blueprint import ExprEvalError, parse_expr
from chanbatch.blueprint.nodes import Expr
from chanbatch.engine import evaluate, evaluate_mask

NULL = None


def _frame() -> pd.DataFrame:
    # A non-default index: results must align with it, not with 0..n-1.
    index = pd.Index([10, 11, 12, 13, 14, 15], name="row")
    return pd.DataFrame(
        {
            "f": [1.5, -2.0, 0.0, np.nan, 4.25, 10.0],
            "i": [1, 2, 0, 3, -4, 5],
            "n": pd.array([1, None, 0, 7, 2, -1], dtype="Int64"),
            "s": pd.array(["JFK", "lga", None, "EWR", "jfk", ""], dtype="str"),
            "b": pd.array([True, False, None, True, False, True], dtype="boolean"),
            "t": pd.to_datetime(
                [
                    "2013-01-01 05:30",
                    "2013-06-15 23:59",
                    None,
                    "2014-12-31 00:00",
                    "2013-02-28 12:00",
                    "2016-02-29 01:00",
                ],
                utc=True,
            ),
            "d": pd.array(["2013-01-02", None, "2013-03-04", "x", "2013-05-06", "2013-07-08"]),
        },
        index=index,
    )


FRAME = _frame()
ROWS = FRAME.to_dict("records")


def _null(value: Any) -> bool:
    return (
        value is None
        or value is pd.NA
        or value is pd.NaT
        or (isinstance(value, float) and math.isnan(value))
    )


def _same(actual: Any, expected: Any) -> bool:
    if _null(expected) or _null(actual):
        return _null(expected) and _null(actual)
    if isinstance(expected, float) or isinstance(actual, float):
        if math.isinf(expected):
            return actual == expected
        return math.isclose(float(actual), float(expected), rel_tol=1e-12, abs_tol=1e-12)
    if isinstance(expected, bool):
        return bool(actual) is expected
    return actual == expected


def _check(text: str, reference: Callable[[dict[str, Any]], Any]) -> pd.Series:
    result = evaluate(parse_expr(text), FRAME)
    assert isinstance(result, pd.Series)
    assert result.index.equals(FRAME.index), text
    expected = [reference(row) for row in ROWS]
    actual = list(result)
    mismatches = [
        (row, a, e)
        for row, (a, e) in enumerate(zip(actual, expected, strict=True))
        if not _same(a, e)
    ]
    assert not mismatches, f"{text}: (row, got, expected) {mismatches}"
    return result


# -- SQL's rules, written out one row at a time -------------------------------------------------


def strict1(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Null in, null out."""
    return lambda *values: NULL if any(_null(v) for v in values) else fn(*values)


def k_and(*values: Any) -> Any:
    if any(v is False for v in values):
        return False
    return NULL if any(_null(v) for v in values) else True


def k_or(*values: Any) -> Any:
    if any(v is True for v in values):
        return True
    return NULL if any(_null(v) for v in values) else False


def k_not(value: Any) -> Any:
    return NULL if _null(value) else not value


def divide(a: float, b: float) -> float:
    if b == 0:
        return math.nan if a == 0 else math.copysign(math.inf, a)
    return a / b


def py_bool(value: Any) -> Any:
    return NULL if _null(value) else bool(value)


ARITHMETIC = [
    ("f + i", strict1(lambda r: r["f"] + r["i"])),
    ("f - n", lambda r: strict1(lambda f, n: f - n)(r["f"], r["n"])),
    ("f * i", lambda r: strict1(lambda f, i: f * i)(r["f"], r["i"])),
    ("f / i", lambda r: strict1(divide)(r["f"], r["i"])),
    ("i // 3", lambda r: r["i"] // 3),
    ("i % 3", lambda r: r["i"] % 3),
    ("n // 2", lambda r: strict1(lambda n: n // 2)(r["n"])),
    ("f ** 2", lambda r: strict1(lambda f: f**2)(r["f"])),
    ("2 ** i", lambda r: 2.0 ** r["i"]),
    ("-f", lambda r: strict1(lambda f: -f)(r["f"])),
    ("-(i - 1)", lambda r: -(r["i"] - 1)),
    ("f + null", lambda r: NULL),
    ("1 + 2 * 3", lambda r: 7),
    ("s + '!'", lambda r: strict1(lambda s: s + "!")(r["s"])),
]
COMPARISONS = [
    ("f > i", lambda r: strict1(lambda f, i: f > i)(r["f"], r["i"])),
    ("f >= 0", lambda r: strict1(lambda f: f >= 0)(r["f"])),
    ("f < n", lambda r: strict1(lambda f, n: f < n)(r["f"], r["n"])),
    ("i <= 1", lambda r: r["i"] <= 1),
    ("n == 0", lambda r: strict1(lambda n: n == 0)(r["n"])),
    ("f != 0", lambda r: strict1(lambda f: f != 0)(r["f"])),
    ("s == 'JFK'", lambda r: strict1(lambda s: s == "JFK")(r["s"])),
    ("s != 'JFK'", lambda r: strict1(lambda s: s != "JFK")(r["s"])),
    ("s < 'b'", lambda r: strict1(lambda s: s < "b")(r["s"])),
    (
        "0 <= f < 5",
        lambda r: k_and(*(strict1(lambda f: f >= 0)(r["f"]), strict1(lambda f: f < 5)(r["f"]))),
    ),
    ("f == null", lambda r: NULL),
    (
        "t > '2013-06-01'",
        lambda r: strict1(lambda t: t > pd.Timestamp("2013-06-01", tz="UTC"))(r["t"]),
    ),
    ("s in ['JFK', 'EWR']", lambda r: strict1(lambda s: s in ("JFK", "EWR"))(r["s"])),
    ("s not in ['JFK']", lambda r: strict1(lambda s: s != "JFK")(r["s"])),
    ("n in [1, null]", lambda r: NULL if _null(r["n"]) else (True if r["n"] == 1 else NULL)),
    ("i in []", lambda r: False),
    ("i in [-4, 5]", lambda r: r["i"] in (-4, 5)),
]
LOGIC = [
    ("b and f > 0", lambda r: k_and(r["b"], strict1(lambda f: f > 0)(r["f"]))),
    ("b or f > 0", lambda r: k_or(r["b"], strict1(lambda f: f > 0)(r["f"]))),
    ("not b", lambda r: k_not(r["b"])),
    ("not (f > 0)", lambda r: k_not(strict1(lambda f: f > 0)(r["f"]))),
    ("b and null", lambda r: k_and(r["b"], NULL)),
    ("b or null", lambda r: k_or(r["b"], NULL)),
    ("true and b or false", lambda r: k_or(k_and(True, r["b"]), False)),
]
FUNCTIONS = [
    ("is_null(f)", lambda r: _null(r["f"])),
    ("is_null(s)", lambda r: _null(r["s"])),
    ("is_null(b)", lambda r: _null(r["b"])),
    ("is_null(t)", lambda r: _null(r["t"])),
    ("is_null(null)", lambda r: True),
    ("not_null(n)", lambda r: not _null(r["n"])),
    ("abs(f)", lambda r: strict1(abs)(r["f"])),
    ("abs(i - 3)", lambda r: abs(r["i"] - 3)),
    ("round(f)", lambda r: strict1(lambda f: float(round(f)))(r["f"])),
    ("round(f / 3, 2)", lambda r: strict1(lambda f: round(f / 3, 2))(r["f"])),
    ("lower(s)", lambda r: strict1(str.lower)(r["s"])),
    ("upper(s)", lambda r: strict1(str.upper)(r["s"])),
    ("length(s)", lambda r: strict1(len)(r["s"])),
    ("starts_with(s, 'J')", lambda r: strict1(lambda s: s.startswith("J"))(r["s"])),
    ("contains(s, 'f')", lambda r: strict1(lambda s: "f" in s)(r["s"])),
    ("contains(s, '')", lambda r: strict1(lambda s: True)(r["s"])),
    ("year(t)", lambda r: strict1(lambda t: t.year)(r["t"])),
    ("month(t)", lambda r: strict1(lambda t: t.month)(r["t"])),
    ("day(t)", lambda r: strict1(lambda t: t.day)(r["t"])),
    ("hour(t)", lambda r: strict1(lambda t: t.hour)(r["t"])),
    ("date(t)", lambda r: strict1(lambda t: t.date())(r["t"])),
    ("year_month(t)", lambda r: strict1(lambda t: f"{t.year:04}-{t.month:02}")(r["t"])),
    ("year('2013-07-04')", lambda r: 2013),
    ("coalesce(f, i)", lambda r: r["i"] if _null(r["f"]) else r["f"]),
    ("coalesce(n, null, 99)", lambda r: 99 if _null(r["n"]) else r["n"]),
    ("coalesce(s, 'none')", lambda r: "none" if _null(r["s"]) else r["s"]),
    ("coalesce(null, null)", lambda r: NULL),
    ("if_else(b, i, -1)", lambda r: r["i"] if r["b"] is True else -1),
    (
        "if_else(f > 1, 'big', 'small')",
        lambda r: "big" if strict1(lambda f: f > 1)(r["f"]) is True else "small",
    ),
    ("if_else(b, f, null)", lambda r: r["f"] if r["b"] is True else NULL),
    ("if_else(b, null, i)", lambda r: NULL if r["b"] is True else r["i"]),
    ("between(f, 0, 4.25)", lambda r: strict1(lambda f: 0 <= f <= 4.25)(r["f"])),
    (
        "between(i, n, 3)",
        lambda r: k_and(strict1(lambda i, n: i >= n)(r["i"], r["n"]), r["i"] <= 3),
    ),
    ("cast(f, 'int')", lambda r: strict1(lambda f: int(f))(r["f"])),
    ("cast(i, 'float')", lambda r: float(r["i"])),
    ("cast(i, 'str')", lambda r: str(r["i"])),
    ("cast(n, 'str')", lambda r: strict1(str)(r["n"])),
    ("cast(n, 'bool')", lambda r: strict1(lambda n: n != 0)(r["n"])),
    ("cast(b, 'int')", lambda r: strict1(int)(r["b"])),
    ("cast(t, 'date')", lambda r: strict1(lambda t: t.date())(r["t"])),
    ("cast(t, 'timestamp')", lambda r: r["t"]),
    ("cast('2013-01-02', 'date')", lambda r: dt.date(2013, 1, 2)),
    ("cast(' 42 ', 'int') + 1", lambda r: 43),
    ("cast('TRUE', 'bool')", lambda r: True),
    ("cast(cast(i, 'str'), 'int')", lambda r: r["i"]),
]


@pytest.mark.parametrize(("text", "reference"), ARITHMETIC, ids=[t for t, _ in ARITHMETIC])
def test_arithmetic(text: str, reference: Callable[[dict[str, Any]], Any]) -> None:
    _check(text, reference)


@pytest.mark.parametrize(("text", "reference"), COMPARISONS, ids=[t for t, _ in COMPARISONS])
def test_comparisons_are_null_when_an_operand_is(text: str, reference: Callable[..., Any]) -> None:
    _check(text, reference)


@pytest.mark.parametrize(("text", "reference"), LOGIC, ids=[t for t, _ in LOGIC])
def test_three_valued_logic(text: str, reference: Callable[[dict[str, Any]], Any]) -> None:
    _check(text, reference)


@pytest.mark.parametrize(("text", "reference"), FUNCTIONS, ids=[t for t, _ in FUNCTIONS])
def test_functions(text: str, reference: Callable[[dict[str, Any]], Any]) -> None:
    _check(text, reference)


def test_every_allowed_function_is_covered() -> None:
    from chanbatch.blueprint.functions import FUNCTIONS as ALLOWED

    covered = {text.split("(")[0] for text, _ in FUNCTIONS}
    assert set(ALLOWED) <= covered


def test_matches_plain_pandas() -> None:
    f, i, s = FRAME["f"], FRAME["i"], FRAME["s"]
    with np.errstate(all="ignore"):
        pd.testing.assert_series_equal(
            evaluate(parse_expr("f / i"), FRAME), f / i, check_names=False
        )
        # integer // by zero is null, as in SQL (pandas would give inf, a float)
        by_zero = evaluate(parse_expr("i // 0"), FRAME)
        assert str(by_zero.dtype) == "Int64" and by_zero.isna().all()
        assert len(by_zero) == len(i)
    pd.testing.assert_series_equal(
        evaluate(parse_expr("f * 2 + i"), FRAME), f * 2 + i, check_names=False
    )
    pd.testing.assert_series_equal(
        evaluate(parse_expr("lower(s)"), FRAME), s.str.lower(), check_names=False
    )
    pd.testing.assert_series_equal(
        evaluate(parse_expr("is_null(f)"), FRAME), f.isna(), check_names=False
    )
    pd.testing.assert_series_equal(
        evaluate(parse_expr("round(f, 1)"), FRAME), f.round(1), check_names=False
    )


def test_mask_treats_null_as_false() -> None:
    mask = evaluate_mask(parse_expr("f > 0"), FRAME)
    assert mask.dtype == bool
    assert mask.index.equals(FRAME.index)
    assert mask.tolist() == [True, False, False, False, True, True]
    assert evaluate_mask(parse_expr("null"), FRAME).tolist() == [False] * len(FRAME)
    assert evaluate_mask(parse_expr("true"), FRAME).tolist() == [True] * len(FRAME)
    assert evaluate_mask(parse_expr("not (f > 0)"), FRAME).tolist() == [
        False,
        True,
        True,
        False,
        False,
        False,
    ]


def test_literal_only_expressions_broadcast() -> None:
    assert evaluate(parse_expr("'x'"), FRAME).tolist() == ["x"] * 6
    assert evaluate(parse_expr("1 / 0"), FRAME).tolist() == [math.inf] * 6
    empty = FRAME.iloc[:0]
    assert len(evaluate(parse_expr("f + 1"), empty)) == 0
    assert len(evaluate_mask(parse_expr("f > 1"), empty)) == 0


def test_strict_mode_raises_on_division_by_zero() -> None:
    with pytest.raises(ExprEvalError, match=r"division by zero in 'f / i' on 1 row"):
        evaluate(parse_expr("f / i"), FRAME, strict=True)
    with pytest.raises(ExprEvalError, match="division by zero"):
        evaluate(parse_expr("i % 0"), FRAME, strict=True)
    # Null divided by zero is null, not an error; nonzero divisors are fine.
    frame = pd.DataFrame({"a": [np.nan, 1.0], "z": [0, 2]})
    assert evaluate(parse_expr("a / z"), frame, strict=True).tolist()[1] == 0.5
    # Without strict, pandas' inf/NaN.
    assert evaluate(parse_expr("f / i"), FRAME).isna().sum() == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ff + 1", "unknown column 'ff'"),
        ("s + 1", "cannot compute 's + 1'"),
        ("s > 1", "cannot compare"),
        ("f and b", "'f' is not a condition"),
        ("upper(f)", "upper() needs text"),
        ("year(f)", "year() needs a date or timestamp"),
        ("hour(date(t))", "cannot compute 'hour(date(t))'"),
        ("cast(s, 'int')", "cannot read 'JFK' as a number"),
        ("cast(d, 'date')", "cannot read 'x' as a timestamp"),
        ("cast(s, 'bool')", "cannot read 'JFK' as true or false"),
        ("cast(f / 0, 'int')", "cannot cast an infinite value"),
        ("t > 'soon'", "cannot read 'soon'"),
    ],
)
def test_evaluation_errors_name_the_expression(text: str, message: str) -> None:
    with pytest.raises(ExprEvalError) as caught:
        evaluate(parse_expr(text), FRAME)
    assert message in str(caught.value)
    assert caught.value.exit_code == 1


def test_unknown_column_suggests_the_closest() -> None:
    with pytest.raises(ExprEvalError) as caught:
        evaluate(parse_expr("dep_dealy > 0"), pd.DataFrame({"dep_delay": [1]}))
    assert caught.value.hint == "did you mean 'dep_delay'?"


def test_evaluation_never_calls_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("eval was called")

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    monkeypatch.setattr(pd, "eval", refuse)
    monkeypatch.setattr(pd.DataFrame, "eval", refuse)
    monkeypatch.setattr(pd.DataFrame, "query", refuse)
    text = "if_else(f > 0 and s in ['JFK'], lower(s), cast(i * 2, 'str')) == 'jfk'"
    evaluate(parse_expr(text), FRAME)


# -- generated expressions: a result or an ExprEvalError, nothing else ------------------------


@settings(max_examples=examples(250), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions_over(list(FRAME.columns)))
def test_any_expression_evaluates_or_raises_expr_eval_error(expr: Expr) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pandas warnings would mean an unchecked case
        try:
            result = evaluate(expr, FRAME)
        except ExprEvalError:
            return
    assert isinstance(result, pd.Series)
    assert result.index.equals(FRAME.index), expr.render()
