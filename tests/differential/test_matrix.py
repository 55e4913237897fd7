"""The differential matrix: every function, operator and aggregate on every column type.

For each entry of the registries (``FUNCTIONS``, ``AGGREGATES``, the parser's operator tables)
and each column type (int64, float64, bool, string, date32, timestamp[us, UTC],
decimal128(15, 2)), with and without nulls, the tables below say what the cell is:

- ``Ok(expr, sql, result)``: the blueprint expression, the same computation in DuckDB SQL over
  the same raw rows, and the Arrow type of the result. The types are written from
  docs/blueprints.md and from what SQL gives (DuckDB, or Arrow's decimal rules where DuckDB
  narrows a decimal by its values), never copied from chanbatch's output. Where the docs give
  other semantics than DuckDB (round half to even, division by zero, floor division and
  modulo with the divisor's sign, ``cast`` to text in Python's text form) the SQL spells the
  documented rule, or a Python ``ref`` computes it, and a comment says so;
- ``Bad(expr)``: a type error, which ``plan`` must refuse before anything runs (exit 2).

One blueprint per (type, nulls) dataset computes all of its applicable cells (diffkit.Lab):
functions and operators in a per-slice derive; aggregates grouped by ``g`` and ungrouped over
the rows where ``x`` is null (all null, or none), each both through per-slice partials and on
the whole input (beside ``median``). Checks per cell:

- the value equals DuckDB's (test_value);
- the Arrow type is the table's, with and without nulls (test_type,
  test_type_does_not_depend_on_nulls);
- an incremental run and a run after one slice is replaced give the column of a cold run on a
  fresh store (test_incremental; per dataset, the snapshot ids: test_incremental_snapshots);
- Store.read and read_pandas give the stored values with the right pandas dtypes (test_read),
  and ``chanbatch snapshot inspect --json`` the stored Parquet schema (test_inspect_cli);
- a Bad cell is refused by ``plan`` (test_plan_refuses, and test_plan_refuses_cli for the CLI).

Cells that fail today are listed in KNOWN with the reason; each becomes a strict xfail, so it
turns into a failure the day it is fixed, and then its line is deleted.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import typing
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from diffkit import (
    ALL,
    CHANBATCH,
    NUMBERS,
    REPLACED,
    SAME,
    TYPES,
    Bad,
    Case,
    Cell,
    Lab,
    Ok,
    Outcome,
    Place,
    blueprint_yaml,
    column_values,
    expand,
    mismatches,
    pandas_problems,
    places,
    problem_fields,
    raw_table,
    show,
)

from chanbatch.blueprint import nodes
from chanbatch.blueprint.expr import parse_expr
from chanbatch.blueprint.functions import AGGREGATES, CAST_TYPES, FUNCTIONS

BOOL, INT64, F64, STR, DATE = pa.bool_(), pa.int64(), pa.float64(), pa.string(), pa.date32()
TS = pa.timestamp("us", tz="UTC")


def split(ok_types: tuple[str, ...], ok: list[Case], bad: list[Case]) -> dict[str, list[Case]]:
    """``ok`` for the column types in ``ok_types``, ``bad`` for every other type."""
    return {t: list(ok) if t in ok_types else list(bad) for t in ALL}


def every(cases: list[Case]) -> dict[str, list[Case]]:
    return {t: list(cases) for t in ALL}


def merge(*rows: dict[str, list[Case]]) -> dict[str, list[Case]]:
    out: dict[str, list[Case]] = {t: [] for t in ALL}
    for row in rows:
        for t, cases in row.items():
            out[t].extend(cases)
    return out


def _py_text(value: Any) -> str | None:
    """``cast(x, 'str')`` as docs/blueprints.md 5.8 defines it: Python's text form (``1.0`` for a
    float), timestamps as ``2013-01-01 05:00:00+00:00``, dates as ``2013-01-01``. DuckDB
    spells floats and booleans otherwise, so the reference is Python. An int column with nulls
    is still integers (``'12'``, not ``'12.0'``): a type must not depend on the data."""
    if value is None:
        return None
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dt.datetime):
        return str(value.astimezone(dt.UTC))
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


_BOOL_TEXT = (
    "CASE WHEN lower(trim(bool_text)) IN ('true', 't', 'yes', '1') THEN true"
    " WHEN lower(trim(bool_text)) IN ('false', 'f', 'no', '0') THEN false END"
)


def _casts(t: str) -> list[Case]:
    """``cast(x, target)`` for each target, as the cast table of docs/blueprints.md 5.8 says;
    a conversion the table does not list is a type error. Text casts parse helper columns of
    numbers, booleans and timestamps written as text."""
    cases: list[Case] = []
    # 'int': numbers truncate toward zero (DuckDB's CAST rounds, so trunc() first)
    if t == "int":
        cases.append(Ok("cast(x, 'int')", "x", INT64, "int"))
    elif t in ("float", "decimal"):
        cases.append(Ok("cast(x, 'int')", "CAST(trunc(x) AS BIGINT)", INT64, "int"))
    elif t == "bool":
        cases.append(Ok("cast(x, 'int')", "CAST(x AS BIGINT)", INT64, "int"))
    elif t == "string":
        sql = "CAST(trunc(CAST(trim(num_text) AS DOUBLE)) AS BIGINT)"
        cases.append(Ok("cast(num_text, 'int')", sql, INT64, "int"))
    else:
        cases.append(Bad("cast(x, 'int')", "int"))
    # 'float'
    if t in (*NUMBERS, "bool"):
        cases.append(Ok("cast(x, 'float')", "CAST(x AS DOUBLE)", F64, "float"))
    elif t == "string":
        cases.append(Ok("cast(num_text, 'float')", "CAST(trim(num_text) AS DOUBLE)", F64, "float"))
    else:
        cases.append(Bad("cast(x, 'float')", "float"))
    # 'str': every type, Python's text form
    cases.append(Ok("cast(x, 'str')", None, STR, "str", ref=lambda row: _py_text(row["x"])))
    # 'bool': numbers non-zero; text from a fixed set of words
    if t in NUMBERS:
        cases.append(Ok("cast(x, 'bool')", "x <> 0", BOOL, "bool"))
    elif t == "bool":
        cases.append(Ok("cast(x, 'bool')", "x", BOOL, "bool"))
    elif t == "string":
        cases.append(Ok("cast(bool_text, 'bool')", _BOOL_TEXT, BOOL, "bool"))
    else:
        cases.append(Bad("cast(x, 'bool')", "bool"))
    # 'date': timestamps give their UTC date, text is parsed as a timestamp
    if t == "timestamp":
        cases.append(Ok("cast(x, 'date')", "CAST(x AS DATE)", DATE, "date"))
    elif t == "date":
        cases.append(Ok("cast(x, 'date')", "x", DATE, "date"))
    elif t == "string":
        sql = "CAST(CAST(ts_text AS TIMESTAMPTZ) AS DATE)"
        cases.append(Ok("cast(ts_text, 'date')", sql, DATE, "date"))
    else:
        cases.append(Bad("cast(x, 'date')", "date"))
    # 'timestamp': UTC; a date is its midnight (SQL); text without a zone is UTC
    if t == "timestamp":
        cases.append(Ok("cast(x, 'timestamp')", "x", TS, "timestamp"))
    elif t == "date":
        cases.append(Ok("cast(x, 'timestamp')", "CAST(x AS TIMESTAMPTZ)", TS, "timestamp"))
    elif t == "string":
        sql = "CAST(ts_text AS TIMESTAMPTZ)"
        cases.append(Ok("cast(ts_text, 'timestamp')", sql, TS, "timestamp"))
    else:
        cases.append(Bad("cast(x, 'timestamp')", "timestamp"))
    return cases


def _date_part(name: str, on_date: bool) -> dict[str, list[Case]]:
    """year/month/day/hour read the time in UTC (docs 5.5); text is parsed as a timestamp."""
    row = split(
        ("date", "timestamp") if on_date else ("timestamp",),
        [Ok(f"{name}(x)", f"{name}(x)", INT64)],
        [Bad(f"{name}(x)")],
    )
    sql = f"{name}(CAST(ts_text AS TIMESTAMPTZ))"
    row["string"] = [Ok(f"{name}(ts_text)", sql, INT64, "text")]
    return row


_TEXT_ONLY = ("string",)

#: function -> column type -> cases. Must name every entry of FUNCTIONS and every column type.
ROWS_FUNCTIONS: dict[str, dict[str, list[Case]]] = {
    "is_null": every([Ok("is_null(x)", "x IS NULL", BOOL)]),
    "not_null": every([Ok("not_null(x)", "x IS NOT NULL", BOOL)]),
    "abs": split(NUMBERS, [Ok("abs(x)", "abs(x)", SAME)], [Bad("abs(x)")]),
    # Half to even (docs 5.8), which is DuckDB's round_even, not its round. Decimal results
    # keep the decimal with the new scale, as SQL does.
    "round": {
        "int": [
            Ok("round(x)", "round_even(x, 0)", INT64),
            Ok("round(x, -1)", "round_even(x, -1)", INT64, "digits-1"),
        ],
        "float": [
            Ok("round(x)", "round_even(x, 0)", F64),
            Ok("round(x, 1)", "round_even(x, 1)", F64, "digits1"),
            Ok("round(x, -2)", "round_even(x, -2)", F64, "digits-2"),
        ],
        "decimal": [
            Ok("round(x)", "round_even(x, 0)", pa.decimal128(15, 0)),
            Ok("round(x, 1)", "round_even(x, 1)", pa.decimal128(15, 1), "digits1"),
        ],
        **{t: [Bad("round(x)")] for t in ("bool", "string", "date", "timestamp")},
    },
    "lower": split(_TEXT_ONLY, [Ok("lower(x)", "lower(x)", STR)], [Bad("lower(x)")]),
    "upper": split(_TEXT_ONLY, [Ok("upper(x)", "upper(x)", STR)], [Bad("upper(x)")]),
    # characters, not bytes: 'e' + a combining accent is 2, '🎉' is 1 (DuckDB's length)
    "length": split(_TEXT_ONLY, [Ok("length(x)", "length(x)", INT64)], [Bad("length(x)")]),
    "starts_with": split(
        _TEXT_ONLY,
        [
            Ok("starts_with(x, 'a')", "starts_with(x, 'a')", BOOL, "a"),
            Ok("starts_with(x, 'Ün')", "starts_with(x, 'Ün')", BOOL, "unicode"),
            Ok("starts_with(x, '')", "starts_with(x, '')", BOOL, "empty"),
        ],
        [Bad("starts_with(x, 'a')")],
    ),
    # plain text, not a pattern (docs 5.8): '.' and '%' match only themselves
    "contains": split(
        _TEXT_ONLY,
        [
            Ok("contains(x, 'b')", "contains(x, 'b')", BOOL, "b"),
            Ok("contains(x, '.')", "contains(x, '.')", BOOL, "dot"),
            Ok("contains(x, '%')", "contains(x, '%')", BOOL, "percent"),
            Ok("contains(x, '🎉')", "contains(x, '🎉')", BOOL, "emoji"),
        ],
        [Bad("contains(x, 'a')")],
    ),
    "year": _date_part("year", on_date=True),
    "month": _date_part("month", on_date=True),
    "day": _date_part("day", on_date=True),
    "hour": _date_part("hour", on_date=False),  # docs 5.5: `hour` of a date is an error
    "date": {
        **split(("timestamp",), [Ok("date(x)", "CAST(x AS DATE)", DATE)], [Bad("date(x)")]),
        "date": [Ok("date(x)", "x", DATE)],
        "string": [Ok("date(ts_text)", "CAST(CAST(ts_text AS TIMESTAMPTZ) AS DATE)", DATE, "text")],
    },
    "year_month": {
        **split(
            ("date", "timestamp"),
            [Ok("year_month(x)", "strftime(x, '%Y-%m')", STR)],
            [Bad("year_month(x)")],
        ),
        "string": [
            Ok(
                "year_month(ts_text)",
                "strftime(CAST(ts_text AS TIMESTAMPTZ), '%Y-%m')",
                STR,
                "text",
            )
        ],
    },
    "coalesce": merge(
        every([Ok("coalesce(x, y)", "coalesce(x, y)", SAME), Bad("coalesce(x, {bad})", "mixed")]),
        # docs 5.3: an int mixed with a float (`coalesce(n, 0.5)`) is a float
        {"int": [Ok("coalesce(x, 0.5)", "coalesce(CAST(x AS DOUBLE), 0.5)", F64, "with-float")]},
    ),
    # a null condition takes `otherwise`, as SQL's CASE WHEN
    "if_else": merge(
        every(
            [
                Ok("if_else(flag, x, y)", "CASE WHEN flag THEN x ELSE y END", SAME),
                Ok("if_else(flag, x, null)", "CASE WHEN flag THEN x END", SAME, "null-else"),
                Bad("if_else(flag, x, {bad})", "mixed"),
            ]
        ),
        # the condition must be a condition, as for filter, `and`, `or` and `not`
        split(("bool",), [], [Bad("if_else(x, x, y)", "condition")]),
        {
            "int": [
                Ok("if_else(flag, x, 0.5)", "CASE WHEN flag THEN x ELSE 0.5 END", F64, "with-float")
            ]
        },
    ),
    "between": every(
        [
            Ok("between(x, {lo}, {hi})", "x BETWEEN {lo} AND {hi}", BOOL, "lit"),
            Ok("between(x, y, {hi})", "x BETWEEN y AND {hi}", BOOL, "col"),
            Bad("between(x, {bad}, {bad})", "mixed"),
        ]
    ),
    "cast": {t: _casts(t) for t in ALL},
}

# Division by zero as docs 5.3 say: `x / 0` is inf or -inf, `0 / 0` is null (DuckDB gives null).
_INF = "(CASE WHEN x > 0 THEN 'inf'::DOUBLE WHEN x < 0 THEN '-inf'::DOUBLE END)"
_DIV = f"CASE WHEN y = 0 THEN {_INF} ELSE CAST(x AS DOUBLE) / CAST(y AS DOUBLE) END"
# `//` is floor division (docs 5.3: -7 // 2 is -4; DuckDB's // truncates). By zero: inf, or
# null where the result is an integer column, which cannot hold inf.
_FLOORDIV = f"CASE WHEN y = 0 THEN {_INF} ELSE floor(CAST(x AS DOUBLE) / CAST(y AS DOUBLE)) END"
_FLOORDIV_INT = "CAST(floor(CAST(x AS DOUBLE) / CAST(NULLIF(y, 0) AS DOUBLE)) AS BIGINT)"
# `%` takes the sign of the divisor (docs 5.3: -7 % 3 is 2; DuckDB's takes the dividend's);
# by zero it is null.
_REM = "(x % NULLIF(y, 0))"
_MOD = f"CASE WHEN {_REM} <> 0 AND ({_REM} < 0) <> (y < 0) THEN {_REM} + y ELSE {_REM} END"
_POW = "pow(CAST(x AS DOUBLE), CAST(y AS DOUBLE))"  # docs 5.3: `**` is computed in floating point

_ARITH_SQL = {"+": "x + y", "-": "x - y", "*": "x * y", "/": _DIV, "%": _MOD, "**": _POW}
#: (column type, operator) -> the result type. Ints stay ints except `/` and `**` (docs 5.3);
#: decimals follow SQL/Arrow: + and - widen by one digit, * adds the scales, / // and ** are
#: floats, % keeps the type (DuckDB).
_ARITH_RESULT: dict[str, dict[str, pa.DataType]] = {
    "int": {"+": INT64, "-": INT64, "*": INT64, "/": F64, "//": INT64, "%": INT64, "**": F64},
    "float": dict.fromkeys(("+", "-", "*", "/", "//", "%", "**"), F64),
    "decimal": {
        "+": pa.decimal128(16, 2),
        "-": pa.decimal128(16, 2),
        "*": pa.decimal128(31, 4),
        "/": F64,
        "//": F64,
        "%": pa.decimal128(15, 2),
        "**": F64,
    },
}


#: Operands of two types (docs 5.3): an int with a float is a float, a decimal with a float is
#: a float, an int with an int literal stays an int, text with a number is refused.
_MIXED: dict[tuple[str, str], list[Case]] = {
    ("int", "+"): [Ok("x + 0.5", "x + 0.5", F64, "float-lit")],
    ("int", "*"): [Ok("x * 2", "x * 2", INT64, "int-lit")],
    ("float", "+"): [Ok("x + 1", "x + 1", F64, "int-lit")],
    ("decimal", "*"): [Ok("x * 1.5", "CAST(x AS DOUBLE) * 1.5", F64, "float-lit")],
    ("string", "+"): [Bad("x + 1", "number")],
}


def _arith(op: str) -> dict[str, list[Case]]:
    row: dict[str, list[Case]] = {}
    for t in ALL:
        if t in _ARITH_RESULT:
            sql = _ARITH_SQL.get(op) or (_FLOORDIV_INT if t == "int" else _FLOORDIV)
            row[t] = [Ok(f"x {op} y", sql, _ARITH_RESULT[t][op])]
        elif t == "string" and op == "+":
            row[t] = [Ok("x + y", "x || y", STR)]  # docs 5.3: `+` on two texts concatenates
        else:
            row[t] = [Bad(f"x {op} y")]
        row[t] += _MIXED.get((t, op), [])
    return row


def _compare(op: str) -> dict[str, list[Case]]:
    row = every(
        [
            Ok(f"x {op} y", f"x {op} y", BOOL, "col"),
            Ok(f"x {op} {{lit}}", f"x {op} {{lit}}", BOOL, "lit"),
            Bad(f"x {op} {{bad}}", "mixed"),
        ]
    )
    for t in ("date", "timestamp"):
        # docs 5.5: a text literal is read as a timestamp (as a date for a date column)
        row[t].append(Ok(f"x {op} {{text}}", f"x {op} {{text}}", BOOL, "text"))
    return row


def _in(negated: bool) -> dict[str, list[Case]]:
    word, sql = ("not in", "NOT IN") if negated else ("in", "IN")
    # docs 5.7: a null item makes a non-matching row null, as SQL's IN
    return every(
        [
            Ok(f"x {word} [{{items}}]", f"x {sql} ({{items}})", BOOL),
            Ok(f"x {word} [{{items}}, null]", f"x {sql} ({{items}}, NULL)", BOOL, "null-item"),
            Bad(f"x {word} [{{bad}}]", "mixed"),
        ]
    )


#: The operators of the language. Binary arithmetic and comparisons come from the parser's own
#: tables (nodes.ARITH_OPS, nodes.COMPARE_OPS) and `and`/`or` from nodes.LogicOp; the parser
#: has no table for `not`, `in`, `not in` and the unary signs, so they are listed here and
#: test_hand_listed_operators_parse checks each one.
HAND_LISTED_OPERATORS = ("not", "in", "not in", "unary -", "unary +")
OPERATORS = (
    *nodes.ARITH_OPS,
    *nodes.COMPARE_OPS,
    *typing.get_args(nodes.LogicOp),
    *HAND_LISTED_OPERATORS,
)
OPERATOR_LABELS = {
    "+": "add",
    "-": "sub",
    "*": "mul",
    "/": "div",
    "//": "floordiv",
    "%": "mod",
    "**": "pow",
    "==": "eq",
    "!=": "ne",
    "<": "lt",
    "<=": "le",
    ">": "gt",
    ">=": "ge",
    "and": "and",
    "or": "or",
    "not": "not",
    "in": "in",
    "not in": "notin",
    "unary -": "neg",
    "unary +": "pos",
}

#: operator -> column type -> cases. Must name every operator of OPERATORS and every type.
ROWS_OPERATORS: dict[str, dict[str, list[Case]]] = {
    **{op: _arith(op) for op in ("+", "-", "*", "/", "//", "%", "**")},
    **{op: _compare(op) for op in ("==", "!=", "<", "<=", ">", ">=")},
    # three-valued logic on conditions only (docs 5.6)
    "and": split(("bool",), [Ok("x and y", "x AND y", BOOL)], [Bad("x and y")]),
    "or": split(("bool",), [Ok("x or y", "x OR y", BOOL)], [Bad("x or y")]),
    "not": split(("bool",), [Ok("not x", "NOT x", BOOL)], [Bad("not x")]),
    "in": _in(negated=False),
    "not in": _in(negated=True),
    "unary -": split(NUMBERS, [Ok("-x", "-x", SAME)], [Bad("-x")]),
    # the parser drops a unary plus: `+x` is the column itself, passed through a derive
    "unary +": every([Ok("+x", "x", SAME)]),
}

_PRESENT = "list(CAST(x AS DOUBLE)) FILTER (WHERE x IS NOT NULL AND NOT isnan(CAST(x AS DOUBLE)))"
_UPPER_MEDIAN = f"list_sort({_PRESENT})[len({_PRESENT}) // 2 + 1]"
# a t-digest of one centroid per value gives the value at index floor(q * n)
_LOWER_QUARTILE = f"list_sort({_PRESENT})[CAST(floor(0.25 * len({_PRESENT})) AS INT) + 1]"

#: aggregate -> column type -> cases (docs section 4), grouped by `g`; every AGGREGATES entry.
ROWS_AGGREGATES: dict[str, dict[str, list[Case]]] = {
    "count": every(
        [Ok("count()", "count(*)", INT64, "rows"), Ok("count(x)", "count(x)", INT64, "x")]
    ),
    # an all-null group sums to null (SQL); the type stays the argument's (SQL: decimal(38, s))
    "sum": {
        "int": [Ok("sum(x)", "sum(x)", INT64)],
        "float": [Ok("sum(x)", "sum(x)", F64)],
        "decimal": [Ok("sum(x)", "sum(x)", pa.decimal128(38, 2))],
        **{t: [Bad("sum(x)")] for t in ("bool", "string", "date", "timestamp")},
    },
    "mean": split(NUMBERS, [Ok("mean(x)", "avg(x)", F64)], [Bad("mean(x)")]),
    "min": every([Ok("min(x)", "min(x)", SAME)]),
    "max": every([Ok("max(x)", "max(x)", SAME)]),
    "var": split(NUMBERS, [Ok("var(x)", "var_samp(x)", F64)], [Bad("var(x)")]),
    "std": split(NUMBERS, [Ok("std(x)", "stddev_samp(x)", F64)], [Bad("std(x)")]),
    "count_distinct": every([Ok("count_distinct(x)", "count(DISTINCT x)", INT64)]),
    # sketches: exact at these sizes (HLL keeps a list of hashes, a t-digest one centroid per
    # value, whose median is the upper middle value); their error bounds: tests/run/test_sketches.py
    "approx_count_distinct": every([Ok("approx_count_distinct(x)", "count(DISTINCT x)", INT64)]),
    "approx_quantile": split(
        NUMBERS,
        [Ok("approx_quantile(x, 0.25)", _LOWER_QUARTILE, F64)],
        [Bad("approx_quantile(x, 0.25)")],
    ),
    "quantile": split(
        NUMBERS,
        [Ok("quantile(x, 0.25)", "quantile_cont(CAST(x AS DOUBLE), 0.25)", F64)],
        [Bad("quantile(x, 0.25)")],
    ),
    "approx_median": split(
        NUMBERS, [Ok("approx_median(x)", _UPPER_MEDIAN, F64)], [Bad("approx_median(x)")]
    ),
    # exact, on the whole input; a decimal's median as a float, as its mean is
    "median": split(
        NUMBERS, [Ok("median(x)", "median(CAST(x AS DOUBLE))", F64)], [Bad("median(x)")]
    ),
}

CELLS: list[Cell] = [
    *expand("function", ROWS_FUNCTIONS),
    *expand("operator", ROWS_OPERATORS, OPERATOR_LABELS),
    *expand("aggregate", ROWS_AGGREGATES),
]
GOOD = [c for c in CELLS if not c.bad]
BAD = [c for c in CELLS if c.bad]
DATASETS = [(t, n) for t in TYPES for n in (False, True)]


# -- what fails today ---------------------------------------------------------------------------

#: The tests that look at a cell's column: a cell that fails to run fails each of them.
RUNS = (
    "test_value",
    "test_type",
    "test_type_does_not_depend_on_nulls",
    "test_incremental",
    "test_read",
)

#: (tests, test id patterns separated by '|', reason). Each match is a strict xfail: delete the
#: entry once its cause is fixed (until then the fixed cell fails as XPASS).
KNOWN: list[tuple[tuple[str, ...], str, str]] = []


#: Like KNOWN, for failures that come and go from run to run: a strict xfail cannot hold them,
#: so they are plain xfails, and a test of their own fails every time (test_deterministic).
FLAKY: list[tuple[tuple[str, ...], str, str]] = []


def _marks(test: str, cid: str) -> list[pytest.MarkDecorator]:
    marks = []
    for table, strict in ((KNOWN, True), (FLAKY, False)):
        reasons = [
            reason
            for tests, patterns, reason in table
            if test in tests and any(fnmatch(cid, p) for p in patterns.split("|"))
        ]
        if reasons:
            marks.append(pytest.mark.xfail(strict=strict, reason="; ".join(dict.fromkeys(reasons))))
    return marks[:1]


def _cell_params(test: str, cells: list[Cell]) -> list[Any]:
    return [
        pytest.param(cell, nulls, id=cell.id(nulls), marks=_marks(test, cell.id(nulls)))
        for cell in cells
        for nulls in (False, True)
    ]


def _dataset_params(test: str) -> list[Any]:
    out = []
    for t, n in DATASETS:
        cid = f"{t}-{'nulls' if n else 'nonull'}"
        out.append(pytest.param(t, n, id=cid, marks=_marks(test, cid)))
    return out


def _datasets_used(items: list[pytest.Item], fixture: str) -> list[tuple[str, bool]]:
    """The (type, nulls) datasets that the collected tests using ``fixture`` will ask for."""
    used = []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if fixture not in getattr(item, "fixturenames", ()) or item.get_closest_marker("skip"):
            continue
        tname = params["cell"].tname if "cell" in params else params.get("tname")
        if tname is not None:
            nulls = [params["nulls"]] if "nulls" in params else [False, True]
            used += [(tname, n) for n in nulls]
    return sorted(set(used), key=used.index)


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("matrix"), CELLS)
    lab.prefetch(_datasets_used(request.session.items, "lab"))
    yield lab
    lab.close()


def _where(cell: Cell, nulls: bool) -> str:
    return (
        f"`{cell.expr}` on a {cell.tname} column ({TYPES[cell.tname]}, "
        f"{'with' if nulls else 'without'} nulls)"
    )


def _ran(out: Outcome, cell: Cell, nulls: bool) -> str:
    """The cell's column; fails the test with the plan's or the run's message if it did not run."""
    column = out.column_of(cell)
    if column in out.failed:
        pytest.fail(f"{_where(cell, nulls)}: {out.failed[column]}", pytrace=False)
    return column


def _row_context(out: Outcome, cell: Cell) -> Any:
    """How a failure names a row of the derive: its id and the inputs the expression reads."""
    assert out.raw is not None
    by_rid = {row["rid"]: row for row in out.raw.to_pylist()}
    columns = [c for c in ("x", "y", "flag", "num_text", "bool_text", "ts_text") if c in cell.expr]

    def describe(rid: Any) -> str:
        row = by_rid.get(rid, {})
        inputs = ", ".join(f"{c}={show(row.get(c))}" for c in columns)
        return f"rid {rid} ({inputs})"

    return describe


# -- the registries cannot outgrow the matrix ---------------------------------------------------


def test_every_function_has_a_row() -> None:
    assert set(ROWS_FUNCTIONS) == set(FUNCTIONS), "functions without a row (or rows without one)"
    for name, row in ROWS_FUNCTIONS.items():
        assert set(row) == set(TYPES), f"function {name!r}: a case for every column type"
        assert all(row.values()), f"function {name!r}: a type without a case"
    casts = {c.variant for c in CELLS if c.entry == "cast"}
    assert casts == set(CAST_TYPES), "every cast target has cells"


def test_every_aggregate_has_a_row() -> None:
    assert set(ROWS_AGGREGATES) == set(AGGREGATES)
    for name, row in ROWS_AGGREGATES.items():
        assert set(row) == set(TYPES) and all(row.values()), f"aggregate {name!r}"


def test_every_operator_has_a_row() -> None:
    assert set(ROWS_OPERATORS) == set(OPERATORS)
    assert set(OPERATOR_LABELS) == set(OPERATORS)
    for name, row in ROWS_OPERATORS.items():
        assert set(row) == set(TYPES) and all(row.values()), f"operator {name!r}"


def test_hand_listed_operators_parse() -> None:
    """The operators with no table in the parser are what this file thinks they are."""
    assert parse_expr("not x") == nodes.Not(operand=nodes.Column(name="x"))
    assert parse_expr("x in [1]") == nodes.InList(operand=nodes.Column(name="x"), values=(1,))
    assert parse_expr("x not in [1]") == nodes.InList(
        operand=nodes.Column(name="x"), values=(1,), negated=True
    )
    assert parse_expr("-x") == nodes.Negate(operand=nodes.Column(name="x"))
    assert parse_expr("+x") == nodes.Column(name="x")
    for op in typing.get_args(nodes.LogicOp):
        assert isinstance(parse_expr(f"x {op} y"), nodes.BoolOp)


def test_no_unlisted_expression_node() -> None:
    """A new kind of node (a new operator) must get rows here: this list names every kind."""
    kinds = {
        name
        for name, value in vars(nodes).items()
        if isinstance(value, type) and issubclass(value, nodes.Expr) and value is not nodes.Expr
    }
    assert kinds == {
        "Column",
        "Literal",
        "Negate",
        "BinOp",
        "Compare",
        "InList",
        "BoolOp",
        "Not",
        "Call",
    }


def test_every_cell_parses() -> None:
    from chanbatch.blueprint.expr import parse_aggregate

    for cell in CELLS:
        (parse_aggregate if cell.aggregate else parse_expr)(cell.expr)


# -- (a) values ---------------------------------------------------------------------------------


def _value_problems(out: Outcome, cell: Cell, column: str, limit: int = 6) -> list[str]:
    problems = []
    for place in places(cell):
        got = column_values(out.cold[place.stage].table, place.key, column)
        context = _row_context(out, cell) if place.key == "rid" else _group_context(place)
        bad = mismatches(out.reference[place.stage, column], got, context, limit)
        if bad:
            problems.append(f"{place.what}:\n" + "\n".join(bad))
    return problems


def _group_context(place: Place) -> Any:
    return (lambda g: f"group g={g}") if place.key else (lambda _: "the one row")


@pytest.mark.parametrize(("cell", "nulls"), _cell_params("test_value", GOOD))
def test_value(lab: Lab, cell: Cell, nulls: bool) -> None:
    out = lab.outcome(cell.tname, nulls)
    column = _ran(out, cell, nulls)
    problems = _value_problems(out, cell, column)
    source = "DuckDB" if cell.sql is not None else "the documented rule (Python)"
    sql = f"\n  SQL: {cell.sql}" if cell.sql else ""
    assert not problems, f"{_where(cell, nulls)} differs from {source}:{sql}\n" + "\n".join(
        problems
    )


# -- (d) types ----------------------------------------------------------------------------------


def _types(out: Outcome, cell: Cell, column: str) -> dict[str, list[pa.DataType]]:
    """Output stage -> the distinct types of the cell's column across that output's objects."""
    return {p.stage: out.cold[p.stage].types_of(column) for p in places(cell)}


def _show_types(types: list[pa.DataType]) -> str:
    if len(types) == 1:
        return str(types[0])
    return " and ".join(map(str, types)) + " (differs between slices)"


@pytest.mark.parametrize(("cell", "nulls"), _cell_params("test_type", GOOD))
def test_type(lab: Lab, cell: Cell, nulls: bool) -> None:
    out = lab.outcome(cell.tname, nulls)
    column = _ran(out, cell, nulls)
    wrong = [
        f"{place.what}: {_show_types(types)}"
        for place, types in zip(places(cell), _types(out, cell, column).values(), strict=True)
        if types != [cell.result]
    ]
    assert not wrong, f"{_where(cell, nulls)}: expected Arrow type {cell.result}, got " + "; ".join(
        wrong
    )


@pytest.mark.parametrize(
    "cell",
    [
        pytest.param(c, id=c.id(), marks=_marks("test_type_does_not_depend_on_nulls", c.id()))
        for c in GOOD
    ],
)
def test_type_does_not_depend_on_nulls(lab: Lab, cell: Cell) -> None:
    types = {}
    for nulls in (False, True):
        out = lab.outcome(cell.tname, nulls)
        types[nulls] = _types(out, cell, _ran(out, cell, nulls))
    assert types[False] == types[True], (
        f"`{cell.expr}` on {cell.tname}: without nulls "
        + ", ".join(f"{stage} {_show_types(t)}" for stage, t in types[False].items())
        + "; with nulls "
        + ", ".join(f"{stage} {_show_types(t)}" for stage, t in types[True].items())
    )


# -- (b) incremental runs -----------------------------------------------------------------------


@pytest.mark.parametrize(("cell", "nulls"), _cell_params("test_incremental", GOOD))
def test_incremental(lab: Lab, cell: Cell, nulls: bool) -> None:
    out = lab.outcome(cell.tname, nulls)
    column = _ran(out, cell, nulls)
    problems = []
    for what, got_of, want_of in (
        ("incremental (8 slices, then the 9th)", out.incremental, out.cold),
        (f"slice {REPLACED} replaced", out.replaced, out.replaced_cold),
    ):
        if not got_of:
            error = out.errors.get("incremental") or out.errors.get("replaced")
            problems.append(f"{what}: the run failed: {error}")
            continue
        for place in places(cell):
            got, want = got_of[place.stage], want_of[place.stage]
            if got.types_of(column) != want.types_of(column):
                problems.append(
                    f"{what}, {place.what}: type {_show_types(got.types_of(column))}, a cold run "
                    f"gives {_show_types(want.types_of(column))}"
                )
            bad = mismatches(
                column_values(want.table, place.key, column),
                column_values(got.table, place.key, column),
                lambda k, key=place.key: f"{key or 'row'} {k}",
                exact=True,
            )
            if bad:
                problems.append(
                    f"{what}, {place.what}: values differ from a cold run:\n" + "\n".join(bad)
                )
    assert not problems, f"{_where(cell, nulls)}:\n" + "\n".join(problems)


@pytest.mark.parametrize(("tname", "nulls"), _dataset_params("test_incremental_snapshots"))
def test_incremental_snapshots(lab: Lab, tname: str, nulls: bool) -> None:
    """The output snapshot (its id: every byte) and Arrow schema of an incremental run, and of a
    run after a slice is replaced, are those of a cold run over the same data on a fresh store."""
    out = lab.outcome(tname, nulls)
    assert not out.errors, out.errors
    problems = []
    for what, got_of, want_of in (
        ("incremental", out.incremental, out.cold),
        ("replaced", out.replaced, out.replaced_cold),
    ):
        for stage, want in want_of.items():
            got = got_of[stage]
            if got.schemas[0] != want.schemas[0]:
                diff = [
                    f"{f.name}: {f.type} (cold {want.schemas[0].field(f.name).type})"
                    for f in got.schemas[0]
                    if f.name in want.schemas[0].names
                    and f.type != want.schemas[0].field(f.name).type
                ]
                problems.append(f"{what} {stage}: schema differs: {', '.join(diff)}")
            elif got.snapshot != want.snapshot:
                problems.append(
                    f"{what} {stage}: snapshot {got.snapshot[:12]}, cold {want.snapshot[:12]}"
                )
    assert not problems, "\n".join(problems)


# -- (c) readers --------------------------------------------------------------------------------


@pytest.mark.parametrize(("cell", "nulls"), _cell_params("test_read", GOOD))
def test_read(lab: Lab, cell: Cell, nulls: bool) -> None:
    out = lab.outcome(cell.tname, nulls)
    column = _ran(out, cell, nulls)
    problems = []
    for place in places(cell):
        stored = out.cold[place.stage].table[column]
        for how in ("read", "read_pandas"):
            frame = lab.frame(cell.tname, nulls, place.stage, how)
            problems += [
                f"Store.{how}, {place.what} (stored as {stored.type}): {p}"
                for p in pandas_problems(frame[column], stored)
            ]
    assert not problems, f"{_where(cell, nulls)}:\n" + "\n".join(problems)


@pytest.mark.parametrize(("tname", "nulls"), _dataset_params("test_read_raw"))
def test_read_raw(lab: Lab, tname: str, nulls: bool) -> None:
    """The frozen raw data reads back as it was given (an int column with nulls as Int64...)."""
    import chanbatch as cb

    lab.outcome(tname, nulls)
    store = cb.Store(str(lab.cold))
    raw = raw_table(tname, nulls)
    ref = f"raw_{tname}_{'nulls' if nulls else 'nonull'}"
    problems = []
    for how, frame in (
        ("read", store.read(ref).compute().reset_index(drop=True)),
        ("read_pandas", store.read_pandas(ref)),
    ):
        for name in ("flag", "x", "y"):
            problems += [
                f"Store.{how} {name}: {p}" for p in pandas_problems(frame[name], raw[name])
            ]
    assert not problems, f"raw {tname} data ({TYPES[tname]}):\n" + "\n".join(problems)


@pytest.mark.parametrize(("tname", "nulls"), _dataset_params("test_inspect_cli"))
def test_inspect_cli(lab: Lab, tname: str, nulls: bool) -> None:
    """`chanbatch snapshot inspect --json` (a real process, for the per-slice output) and
    Store.inspect (for the aggregates) give the stored Parquet schema and null counts."""
    import chanbatch as cb

    out = lab.outcome(tname, nulls)
    problems = []
    for stage, stored in out.cold.items():
        if stage == "d":
            done = lab.inspect_cli(tname, nulls, stage)
            assert done.returncode == 0, done.stderr
            document = json.loads(done.stdout)
        else:
            document = cb.Store(str(lab.cold)).inspect(f"{stage}_{out.suffix}").document()
        schema = stored.schemas[0]
        shown = [(c["name"], c["type"]) for c in document["schema"]]
        want = [(f.name, str(f.type)) for f in schema]
        if shown != want:
            problems.append(
                f"{stage}: inspect shows {[s for s in shown if s not in want]}, stored "
                f"{[w for w in want if w not in shown]}"
            )
        for column in document.get("columns", []):
            name = column["name"]
            if "nulls" in column and column["nulls"] != stored.table[name].null_count:
                problems.append(
                    f"{stage}.{name}: inspect counts {column['nulls']} nulls, the Parquet holds "
                    f"{stored.table[name].null_count}"
                )
        assert document["rows"] == stored.table.num_rows
    assert not problems, "\n".join(problems)


# -- type errors at plan time -------------------------------------------------------------------


@pytest.fixture(scope="session")
def plan_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One raw dataset per column type, for planning the cells that must be refused."""
    import chanbatch as cb

    path = tmp_path_factory.mktemp("plans") / "store"
    store = cb.Store(str(path))
    for t in TYPES:
        store.freeze(f"raw_{t}", raw_table(t, nulls=True, rows=27), slice_by="part")
    return path


@pytest.mark.parametrize(
    "cell", [pytest.param(c, id=c.id(), marks=_marks("test_plan_refuses", c.id())) for c in BAD]
)
def test_plan_refuses(plan_store: Path, cell: Cell) -> None:
    """A type error is refused by `plan`, before anything runs: a UsageError (exit 2) that
    names the field, never an error on a worker at run time."""
    import chanbatch as cb
    from chanbatch.errors import ChanbatchError

    column = "a000" if cell.aggregate else "c000"
    text = blueprint_yaml(
        f"bad_{cell.tname}", f"raw_{cell.tname}", f"bad_{cell.tname}", {column: cell}
    )
    try:
        cb.Blueprint.from_yaml(text).plan(cb.Store(str(plan_store)))
    except ChanbatchError as exc:
        assert exc.exit_code == 2, f"{type(exc).__name__} (exit {exc.exit_code}): {exc}"
        field = f"{'aggregate' if cell.aggregate else 'derive'}.{column}"
        assert field in problem_fields(exc) or field in str(exc), str(exc)
        return
    pytest.fail(
        f"plan accepted `{cell.expr}` on a {cell.tname} column ({TYPES[cell.tname]}); "
        "expected a plan-time type error",
        pytrace=False,
    )


def test_plan_refuses_cli(plan_store: Path, tmp_path: Path) -> None:
    """`chanbatch plan` on one blueprint holding every type error (that the plan catches today):
    exit 2, one `Error:` line, every bad field named, no traceback."""
    refused = [c for c in BAD if not _marks("test_plan_refuses", c.id())]
    lines = ["name: bad_cells", "inputs:"]
    lines += [f"  raw_{t}: raw_{t}" for t in TYPES]
    lines.append("stages:")
    fields = []
    for t in TYPES:
        derive = [c for c in refused if c.tname == t and not c.aggregate]
        aggs = [c for c in refused if c.tname == t and c.aggregate]
        if derive:
            lines += [f"  d_{t}:", f"    from: raw_{t}", "    derive:"]
            for i, c in enumerate(derive):
                lines.append(f"      c{i:03d}: {json.dumps(c.expr, ensure_ascii=False)}")
                fields.append((c, f"stage 'd_{t}', field 'derive.c{i:03d}'"))
        if aggs:
            lines += [f"  a_{t}:", f"    from: raw_{t}", "    group_by: [g]", "    aggregate:"]
            for i, c in enumerate(aggs):
                lines.append(f"      a{i:03d}: {json.dumps(c.expr, ensure_ascii=False)}")
                fields.append((c, f"stage 'a_{t}', field 'aggregate.a{i:03d}'"))
    lines.append("outputs:")
    lines += [f"  d_{t}: out_d_{t}" for t in TYPES if f"  d_{t}:" in lines]
    lines += [f"  a_{t}: out_a_{t}" for t in TYPES if f"  a_{t}:" in lines]
    path = tmp_path / "bad_cells.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = subprocess.run(
        [str(CHANBATCH), "plan", str(path), "--store", str(plan_store)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    missing = [f"`{c.expr}` on {c.tname} ({where})" for c, where in fields if where not in output]
    assert not missing, "not reported:\n" + "\n".join(missing) + "\n" + output


# -- determinism --------------------------------------------------------------------------------

_AGGREGATES_TWICE = """
name: det_{t}
inputs: {{raw: raw_{t}}}
stages:
  agg: {{from: raw, group_by: [g], aggregate: {{m: mean(x), v: var(x), s: std(x), t: sum(x)}}}}
  aggw:
    from: raw
    group_by: [g]
    aggregate: {{m: mean(x), v: var(x), s: std(x), t: sum(x), d: median(x)}}
outputs: {{agg: det_agg_{t}, aggw: det_aggw_{t}}}
"""


@pytest.mark.parametrize(
    "tname",
    [pytest.param(t, marks=_marks("test_deterministic", t)) for t in NUMBERS],
)
def test_deterministic(tmp_path: Path, tname: str) -> None:
    """The same blueprint over the same data gives the same snapshot on fresh stores, every time
    (DESIGN.md section 1): five cold runs of the float-summing aggregates, partials and whole."""
    import chanbatch as cb

    raw = raw_table(tname, nulls=False)
    seen: dict[str, set[str]] = {}
    values: dict[str, set[tuple[Any, ...]]] = {}
    for attempt in range(5):
        store = cb.Store(str(tmp_path / f"s{attempt}"))
        store.freeze(f"raw_{tname}", raw, slice_by="part")
        result = cb.Blueprint.from_yaml(_AGGREGATES_TWICE.format(t=tname)).run(
            store, scheduler="sync"
        )
        for stage, info in result.snapshots.items():
            seen.setdefault(stage, set()).add(info["snapshot"])
            table = store.read_table(info["dataset"])
            values.setdefault(stage, set()).add(
                tuple(tuple(table[c].to_pylist()) for c in ("v", "s"))
            )
    varied = {stage: ids for stage, ids in seen.items() if len(ids) > 1}
    assert not varied, "\n".join(
        f"{stage}: {len(ids)} different snapshots in 5 runs; var, std: "
        + " / ".join(repr(v) for v in sorted(values[stage], key=repr))
        for stage, ids in varied.items()
    )


# -- the table of result types in docs/blueprints.md --------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "blueprints.md"
DOC_BEGIN = "<!-- result types: generated from tests/differential/test_matrix.py -->"
DOC_END = "<!-- end of result types -->"


def _doc_label(cell: Cell) -> str:
    if cell.entry == "round":
        return "round(x, digits)" if cell.variant else "round(x)"
    if cell.entry == "cast":
        return f"cast(x, '{cell.variant}')"
    if cell.entry == "if_else":
        return "if_else(c, x, null)" if cell.variant == "null-else" else "if_else(c, x, y)"
    if cell.entry in ("starts_with", "contains", "coalesce", "between"):
        return FUNCTIONS[cell.entry].usage.replace("text", "x").replace("y, ...", "y")
    return f"{cell.entry}(x)"


def docs_table() -> str:
    """The result type of every function by column type, from ROWS_FUNCTIONS and KNOWN."""
    labels: dict[str, dict[str, str]] = {}
    for cell in CELLS:
        if cell.kind != "function" or cell.variant in ("mixed", "condition", "with-float"):
            continue
        row = labels.setdefault(_doc_label(cell), {})
        ids = (cell.id(), cell.id(False), cell.id(True))
        if cell.bad:
            late = any(_marks("test_plan_refuses", i) for i in ids)
            row.setdefault(cell.tname, "— ²" if late else "—")
            continue
        late = any(_marks("test_type", i) for i in ids)
        text = f"{cell.result}" + (" ¹" if late else "")
        assert row.get(cell.tname, text) == text, (cell, row)
        row[cell.tname] = text
    head = "| function | " + " | ".join(f"{t} `{TYPES[t]}`" for t in TYPES) + " |"
    lines = [head, "|---" * (len(TYPES) + 1) + "|"]
    for label, row in labels.items():
        lines.append(f"| `{label}` | " + " | ".join(row.get(t, "—") for t in TYPES) + " |")
    notes = {
        "¹": "¹ Not yet: today the result has another type, or the run fails.",
        "²": "² Not yet refused by `plan`: today the run fails, or runs.",
    }
    used = [note for mark, note in notes.items() if any(mark in line for line in lines)]
    return "\n".join(lines + (["", *used] if used else []))


def test_docs_table_of_result_types() -> None:
    """docs/blueprints.md 5.8 shows this matrix's result types; regenerate it when a row changes."""
    text = DOCS.read_text(encoding="utf-8")
    assert DOC_BEGIN in text and DOC_END in text, f"{DOCS} has no generated table of result types"
    shown = text.split(DOC_BEGIN, 1)[1].split(DOC_END, 1)[0].strip()
    assert shown == docs_table(), (
        "docs/blueprints.md 5.8 is stale; the table is now:\n" + docs_table()
    )


# -- exhaustive variants ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def big_lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("matrix-big"), CELLS, rows=2700, seed=7)
    lab.prefetch(_datasets_used(request.session.items, "big_lab"))
    yield lab
    lab.close()


#: The sketches, and the quantile each estimates (None: a distinct count). Exact in the quick
#: matrix, whose groups hold a few dozen values; at the exhaustive size (some 540 values a
#: group) they are estimates, checked against the bounds docs/blueprints.md states: a distinct
#: count within 4.9% of the exact one, a quantile whose rank among the group's values is within
#: 1% of the fraction asked for (and one value's share, for ties and the upper middle).
SKETCH_QUANTILES: dict[str, float | None] = {
    "approx_count_distinct": None,
    "approx_median": 0.5,
    "approx_quantile": 0.25,
}


def _sketch_problems(out: Outcome, cell: Cell, column: str, limit: int = 6) -> list[str]:
    """As :func:`_value_problems`, for a sketch's estimates per group: within their bounds of
    the exact value (the reference). A null, a missing group and the ungrouped result (over
    the rows where ``x`` is null: nothing to estimate) must match exactly."""
    q = SKETCH_QUANTILES[cell.entry]
    problems = []
    for place in places(cell):
        got = column_values(out.cold[place.stage].table, place.key, column)
        want = out.reference[place.stage, column]
        bad = []
        for key in sorted(set(want) | set(got), key=lambda k: (k is None, k)):
            estimate, exact = got.get(key, "missing"), want.get(key, "missing")
            if place.key is None or None in (estimate, exact) or "missing" in (estimate, exact):
                if estimate != exact:
                    bad.append(f"  key {key}: expected {exact}, got {estimate}")
            elif q is None:
                if abs(estimate - exact) > 0.049 * exact:
                    bad.append(f"  group g={key}: {estimate} is not within 4.9% of {exact}")
            else:
                present = _present(out, key)
                rank = sum(v < estimate for v in present) / len(present)
                if abs(rank - q) > 0.01 + 1 / len(present):
                    bad.append(f"  group g={key}: {estimate} has rank {rank:.4f}, not {q} ± 1%")
        if bad:
            problems.append(f"{place.what}:\n" + "\n".join(bad[:limit]))
    return problems


def _present(out: Outcome, group: Any) -> list[float]:
    """The values of ``x`` in group ``group`` that a t-digest reads: not null, not NaN, as
    float64 (a decimal's too)."""
    assert out.raw is not None
    pairs = zip(out.raw.column("g").to_pylist(), out.raw.column("x").to_pylist(), strict=True)
    values = [float(x) for g, x in pairs if g == group and x is not None]
    return [v for v in values if v == v]


@pytest.mark.slow
@pytest.mark.parametrize(("tname", "nulls"), _dataset_params("test_exhaustive"))
def test_exhaustive(big_lab: Lab, tname: str, nulls: bool) -> None:
    """Ten times the rows and other random values: every cell that passes in the quick matrix
    still gives DuckDB's values, the table's type, and a cold run's column incrementally."""
    out = big_lab.outcome(tname, nulls)
    problems = []
    for column, cell in out.cells.items():
        cid = cell.id(nulls)
        if any(_marks(test, cid) for test in RUNS) or column in out.failed:
            continue
        check = _sketch_problems if cell.entry in SKETCH_QUANTILES else _value_problems
        problems += [f"{cid}: `{cell.expr}`: {p}" for p in check(out, cell, column, 3)]
        for stage, types in _types(out, cell, column).items():
            if types != [cell.result]:
                problems.append(f"{cid}: `{cell.expr}` has type {types} in {stage}")
            if out.incremental and out.incremental[stage].types_of(column) != types:
                problems.append(
                    f"{cid}: incremental type {out.incremental[stage].types_of(column)} in {stage}"
                )
    assert not problems, "\n".join(problems)
