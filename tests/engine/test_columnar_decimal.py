"""Decimals on the Arrow path, against the pandas path, which defines the meaning.

As in tests/engine/test_columnar.py (whose helpers this reuses): every filter, derive and
partial the Arrow path runs on decimal columns must give, after ``to_pandas``, exactly the frame
the pandas path gives (dtypes and values included), and a partial must be stored as the same
bytes; what it declines, pandas decides. Sums are also checked against DuckDB, and TPC-H Q1 on
decimal lineitem must run its per-slice chain on Arrow.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import random
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
from enginekit import tables_of
from hypothesis import assume, given
from hypothesis import strategies as st

from chanbatch.blueprint.expr import parse_aggregate, parse_expr
from chanbatch.blueprint.model import Aggregate, Derive, Filter, Stage
from chanbatch.blueprint.nodes import BinOp, Column, Compare, Expr, Literal, Negate
from chanbatch.engine import aggregate, arrow_eval, columnar, execute
from chanbatch.engine.pandas_values import decimal_arith
from chanbatch.snapshot.freeze import encode_parquet
from chanbatch.snapshot.read import canonical, to_pandas
from tests.engine.test_columnar import SETTINGS, _same, _spec, _stage, _stored_bytes

# -- tables -------------------------------------------------------------------------------------


def _decimals(precision: int, scale: int, nulls: bool = True) -> st.SearchStrategy[object]:
    """Values of decimal(precision, scale): small ones, and ones near the type's limit."""
    top = 10**precision - 1
    unscaled = st.one_of(
        st.integers(-10_000, 10_000),
        st.integers(-top, top),
        st.sampled_from([0, top, -top, 10**scale, -(10**scale)]),
    )
    values = unscaled.map(lambda u: decimal.Decimal(f"{u}E-{scale}"))  # exact: no context
    return st.one_of(st.none(), values) if nulls else values


_floats = st.one_of(
    st.none(),
    st.just(math.nan),
    st.sampled_from([0.0, -0.0, 0.05, 1.5, 1e16, math.inf, -math.inf]),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
)
_ints = st.one_of(st.integers(-5, 9), st.sampled_from([2**62, -(2**62), 2**63 - 1]))

COLUMNS = {
    "p": (pa.decimal128(15, 2), _decimals(15, 2)),  # as tpchgen-cli writes lineitem's
    "q": (pa.decimal128(12, 2), _decimals(12, 2)),
    "c": (pa.decimal128(15, 2), _decimals(15, 2, nulls=False)),
    "w": (pa.decimal128(38, 10), _decimals(38, 10)),
    "i": (pa.int64(), _ints),  # no nulls: numpy int64 in pandas
    "n": (pa.int64(), st.one_of(st.none(), _ints)),  # nulls: pandas' nullable Int64
    "f": (pa.float64(), _floats),
    "k": (pa.string(), st.one_of(st.none(), st.sampled_from(["x", "y", "é"]))),
    "m": (pa.int64(), st.integers(0, 3)),
    "d": (pa.date32(), st.one_of(st.none(), st.dates(dt.date(1992, 1, 1), dt.date(1998, 12, 31)))),
}


def tables(min_rows: int = 0) -> st.SearchStrategy[pa.Table]:
    """A table of decimal and other columns, sometimes in two chunks, as loads give."""
    return tables_of(COLUMNS, max_rows=30, min_rows=min_rows)


# -- expressions --------------------------------------------------------------------------------

_decimal_columns = st.sampled_from([Column(name=c) for c in ("p", "q", "c", "w")])
_numbers = st.one_of(
    _decimal_columns,
    _decimal_columns,
    st.sampled_from([Column(name="i"), Column(name="n"), Column(name="f")]),
    st.one_of(st.integers(-3, 3), st.sampled_from([100, 2**62, 0.5])).map(
        lambda v: Literal(value=v)
    ),
)


def _arith(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    return st.one_of(
        st.builds(
            lambda op, a, b: BinOp(op=op, left=a, right=b),
            st.sampled_from(["+", "-", "*", "*", "/"]),
            children,
            children,
        ),
        children.map(lambda a: Negate(operand=a)),
    )


numeric = st.recursive(_numbers, _arith, max_leaves=4)
_ops = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])
conditions = st.builds(lambda op, a, b: Compare(operands=(a, b), ops=(op,)), _ops, numeric, numeric)


@SETTINGS
@given(tables(), conditions)
def test_decimal_filter_matches_pandas(table: pa.Table, condition: Expr) -> None:
    _same(_stage(Filter(expr=condition)), table)


@SETTINGS
@given(tables(), st.lists(numeric, min_size=1, max_size=3), st.booleans())
def test_decimal_derive_matches_pandas(table: pa.Table, exprs: list[Expr], replace: bool) -> None:
    names = ["p" if replace else "new0", "new1", "new2"]
    _same(_stage(Derive(columns=dict(zip(names, exprs, strict=False)))), table)


def _table(rows: dict[str, list[object]]) -> pa.Table:
    return pa.table(
        {name: pa.array(values, type=COLUMNS[name][0]) for name, values in rows.items()}
    )


D = decimal.Decimal
SMALL = _table(
    {
        "p": [D("901.00"), None, D("12345678901.99"), D("-0.01")],
        "q": [D("0.05"), D("0.10"), None, D("0.00")],
        "c": [D("0.02"), D("0.08"), D("0.00"), D("1.00")],
        "w": [D("1.0000000001"), None, D("-99999999999999999999999999.9999999999"), D("0")],
        "i": [1, 2, 3, -4],
        "n": [1, None, 3, 2**62],
        "f": [0.05, math.nan, None, -0.0],
        "k": ["x", None, "y", "x"],
        "m": [0, 1, 2, 0],
        "d": [dt.date(1998, 9, 1), None, dt.date(1998, 9, 3), dt.date(1995, 1, 1)],
    }
)


@pytest.mark.parametrize(
    "text",
    [
        "p * (1 - q)",  # Q1's disc_price: decimal(38, 4)
        "p * (1 - q) * (1 + c)",  # Q1's charge: narrowed to fit 38 digits, decimal(38, 6)
        "p + q - c",
        "-p + 1",
        "w + p",  # narrowed
        "q * c + w",  # narrowed
        "i * p - n",
        "100 - p",
    ],
)
def test_the_q1_arithmetic_is_covered(text: str) -> None:
    assert _same(_stage(Derive(columns={"out": parse_expr(text)})), SMALL), text


@pytest.mark.parametrize(
    "text",
    [
        "w * w",  # narrowed, and still a value too wide: pandas raises
        "w * q",  # narrowed to decimal(34, 10), which a value of w does not fit
        "w * 3",  # the literal is not narrowed: decimal(36, 10) * decimal(19, 0) is too wide
    ],
)
def test_arithmetic_pandas_refuses_is_declined(text: str) -> None:
    stage = _stage(Derive(columns={"out": parse_expr(text)}))
    with pytest.raises(Exception, match=r"precision|fit"):
        execute.apply_rowwise(stage, to_pandas(SMALL), (), frozenset())
    with pytest.raises(columnar.Unsupported):
        columnar.apply_rowwise(stage, SMALL)


@pytest.mark.parametrize(
    "text",
    [
        "q <= 0.05",  # a decimal and a float compare as floats, in both paths
        "q < 1",
        "p > q",
        "w >= p",
        "f < q",
        "n != p",
        "p * (1 - q) > 100",
        "0.01 <= q <= 0.07",
    ],
)
def test_decimal_comparisons_are_covered(text: str) -> None:
    assert _same(_stage(Filter(expr=parse_expr(text))), SMALL), text


def test_mixes_left_to_pandas() -> None:
    for text in ["p * f", "p / q", "p + 0.5", "p // 2", "p % 2"]:
        with pytest.raises(columnar.Unsupported):
            columnar.apply_rowwise(_stage(Derive(columns={"out": parse_expr(text)})), SMALL)
    for text in ["p == 'a'", "p in [1, 2]"]:
        with pytest.raises(columnar.Unsupported):
            columnar.apply_rowwise(_stage(Filter(expr=parse_expr(text))), SMALL)


# -- the narrowing rule, against pandas_values.decimal_arith -------------------------------------

_TYPES = [
    (p, s) for p in (1, 3, 12, 15, 18, 19, 20, 22, 28, 34, 37, 38) for s in (0, 2, 10, 38) if s <= p
]


def _series(precision: int, scale: int) -> pd.Series:
    t = pa.decimal128(precision, scale)
    return pd.Series(pd.arrays.ArrowExtensionArray(pa.array([D(0)], t)))


@pytest.mark.parametrize("op", ["+", "-", "*"])
def test_narrowing_is_decimal_arith(op: str) -> None:
    """The result type of every pair of types (an int counts as decimal(19, 0)), and where
    narrowing applies, the same types for the operands: a value at each operand's limit must
    fail or pass the same way in both."""
    for p1, s1 in [*_TYPES, (19, 0)]:
        for p2, s2 in _TYPES:
            try:
                theirs = decimal_arith(op, _series(p1, s1), _series(p2, s2))
            except ValueError:  # no decimal type holds an operand or the result: declined
                table = pa.table(
                    {
                        "a": pa.array([D(0)], pa.decimal128(p1, s1)),
                        "b": pa.array([D(0)], pa.decimal128(p2, s2)),
                    }
                )
                product = BinOp(op=op, left=Column(name="a"), right=Column(name="b"))
                with pytest.raises(columnar.Unsupported):
                    columnar.apply_rowwise(_stage(Derive(columns={"out": product})), table)
                continue
            mine = arrow_eval.decimal_narrowing(op, pa.decimal128(p1, s1), pa.decimal128(p2, s2))
            if theirs is None:
                assert mine is None, (op, p1, s1, p2, s2)
                continue
            assert mine is not None, (op, p1, s1, p2, s2)
            assert pd.ArrowDtype(mine[2]) == theirs.dtype
            for target, (p, s) in zip(mine[:2], [(p1, s1), (p2, s2)], strict=True):
                assert target.scale == s and target.precision <= p


@pytest.mark.parametrize("op", ["+", "-", "*"])
def test_narrowed_operands_at_their_limits(op: str) -> None:
    """Where an operand is narrowed, the largest values of its type and of the narrowed type:
    both paths agree (a value or an error) on each."""
    for p1, s1 in [(38, 4), (38, 10), (22, 2), (37, 2)]:
        for p2, s2 in [(3, 2), (15, 2), (22, 2), (38, 0)]:
            narrowing = arrow_eval.decimal_narrowing(
                op, pa.decimal128(p1, s1), pa.decimal128(p2, s2)
            )
            if narrowing is None:
                continue
            for left_digits in {p1, narrowing[0].precision}:
                for right_digits in {p2, narrowing[1].precision}:
                    table = pa.table(
                        {
                            "a": pa.array(
                                [D(f"{10**left_digits - 1}E-{s1}"), D(1)], pa.decimal128(p1, s1)
                            ),
                            "b": pa.array(
                                [D(1), D(f"{10**right_digits - 1}E-{s2}")], pa.decimal128(p2, s2)
                            ),
                        }
                    )
                    stage = _stage(
                        Derive(
                            columns={
                                "out": BinOp(op=op, left=Column(name="a"), right=Column(name="b"))
                            }
                        )
                    )
                    _same(stage, table)


# -- partials -----------------------------------------------------------------------------------

_keys = st.lists(st.sampled_from(["k", "m", "d"]), min_size=1, max_size=2, unique=True)
_aggregates = st.lists(
    st.sampled_from(
        [
            "count()",
            "count(p)",
            "sum(p)",
            "mean(p)",
            "sum(c)",
            "mean(q)",
            "sum(w)",
            "mean(w)",
            "sum(p * (1 - q))",
            "sum(p * (1 - q) * (1 + c))",
            "count(f)",
            "count(n)",
            "sum(f)",  # with a decimal: pandas' compensated float sum, declined
            "mean(i)",
        ]
    ),
    min_size=1,
    max_size=4,
    unique=True,
)


def _partials_agree(spec: Aggregate, table: pa.Table) -> bool:
    """The Arrow partial is the pandas one to the bit; False when it declined."""
    try:
        want = canonical(aggregate.partial(spec, to_pandas(table)))
    except Exception:  # the pandas path's own error: the Arrow path must decline
        with pytest.raises(columnar.Unsupported):
            columnar.partial(spec, table)
        return False
    try:
        got = columnar.partial(spec, table)
    except columnar.Unsupported:
        return False
    pd.testing.assert_frame_equal(to_pandas(got), want, check_exact=True)
    stored = columnar.storable(got)
    assert stored is not None
    assert bytes(encode_parquet(stored)) == _stored_bytes(want)
    return True


@SETTINGS
@given(tables(), _keys, _aggregates)
def test_decimal_partial_matches_pandas_to_the_bit(
    table: pa.Table, keys: list[str], aggregates: list[str]
) -> None:
    assume(_partials_agree(_spec(keys, aggregates), table))


def test_decimal_partials_are_covered() -> None:
    for aggregates in [
        ["count()", "sum(p)", "mean(p)", "count(p)", "sum(w)", "mean(q)"],
        ["sum(p * (1 - q))", "count(f)", "count(n)", "mean(c)"],
    ]:
        for keys in (["k"], ["m", "d"]):
            assert _partials_agree(_spec(keys, aggregates), SMALL)
            assert _partials_agree(_spec(keys, aggregates), SMALL.slice(0, 0))
    # a group whose values are all null: n is 0 and the sum state 0, as pandas stores it
    assert _partials_agree(_spec(["k"], ["sum(q)", "mean(w)"]), SMALL.slice(1, 1))


def test_decimal_partials_it_declines() -> None:
    for aggregates in [["sum(p)", "sum(f)"], ["mean(i)", "mean(p)"], ["min(p)"]]:
        with pytest.raises(columnar.Unsupported):
            columnar.partial(_spec(["k"], aggregates), SMALL)


def test_decimal_sums_equal_duckdb() -> None:
    """The partial of one slice is the whole sum: exactly DuckDB's, and typed as it types it."""
    rng = random.Random(7)
    rows = 5000
    cents = [rng.randrange(90_000, 10_500_000) for _ in range(rows)]
    lineitem = pa.table(
        {
            "k": [rng.choice("ANR") for _ in range(rows)],
            "p": pa.array(
                [None if i % 97 == 0 else D(c).scaleb(-2) for i, c in enumerate(cents)],
                pa.decimal128(15, 2),
            ),
            "q": pa.array(
                [D(rng.randrange(0, 11)).scaleb(-2) for _ in range(rows)], pa.decimal128(15, 2)
            ),
            "c": pa.array(
                [D(rng.randrange(0, 9)).scaleb(-2) for _ in range(rows)], pa.decimal128(15, 2)
            ),
        }
    )
    derive = Derive(columns={"dp": parse_expr("p * (1 - q)"), "ch": parse_expr("dp * (1 + c)")})
    priced = columnar.apply_rowwise(_stage(derive), lineitem)
    spec = Aggregate(
        group_by=("k",),
        aggregates={
            name: parse_aggregate(f"sum({col})")
            for name, col in [("sp", "p"), ("sd", "dp"), ("sc", "ch")]
        },
    )
    got = columnar.partial(spec, priced)
    want = (
        duckdb.sql(
            """SELECT k, sum(p) AS sp, sum(p * (1 - q)) AS sd, sum(p * (1 - q) * (1 + c)) AS sc
               FROM lineitem GROUP BY k ORDER BY k"""
        )
        .arrow()
        .read_all()
    )
    assert got.column("k").to_pylist() == want.column("k").to_pylist()
    for name in ("sp", "sd", "sc"):
        column = got.column(f"{name}{columnar.SEP}sum")
        assert column.type == want.schema.field(name).type, name
        assert column.to_pylist() == want.column(name).to_pylist(), name


# -- Q1 ---------------------------------------------------------------------------------------------


def test_q1_on_decimals_runs_its_slice_chain_on_arrow() -> None:
    """Each per-slice stage of the benchmark's Q1 on lineitem's decimal(15, 2) columns runs on
    the Arrow path (no Unsupported) and gives the pandas path's result."""
    import chanbatch as cb

    text = (Path(__file__).resolve().parents[1] / "benchmark" / "q1.yaml").read_text()
    stages = cb.Blueprint.from_yaml(text).model.stages
    money = pa.decimal128(15, 2)
    rng = random.Random(1)
    rows = 400
    table = pa.table(
        {
            "l_quantity": pa.array([D(rng.randrange(1, 51)) for _ in range(rows)], money),
            "l_extendedprice": pa.array(
                [D(rng.randrange(90_000, 10_500_000)).scaleb(-2) for _ in range(rows)], money
            ),
            "l_discount": pa.array(
                [D(rng.randrange(0, 11)).scaleb(-2) for _ in range(rows)], money
            ),
            "l_tax": pa.array([D(rng.randrange(0, 9)).scaleb(-2) for _ in range(rows)], money),
            "l_returnflag": [rng.choice("ANR") for _ in range(rows)],
            "l_linestatus": [rng.choice("FO") for _ in range(rows)],
            "l_shipdate": pa.array(
                [dt.date(1998, 8, 1) + dt.timedelta(days=rng.randrange(60)) for _ in range(rows)],
                pa.date32(),
            ),
        }
    )
    arrow = columnar.arrow_input(table)
    assert arrow is not None
    frame = to_pandas(table)
    for name in ("shipped", "priced"):
        stage: Stage = stages[name]
        arrow = columnar.apply_rowwise(stage, arrow)
        frame = canonical(execute.apply_rowwise(stage, frame, (), frozenset()))
        pd.testing.assert_frame_equal(to_pandas(arrow), frame, check_exact=True)
    assert arrow.schema.field("disc_price").type == pa.decimal128(38, 4)
    assert arrow.schema.field("charge").type == pa.decimal128(38, 6)
    summary = stages["summary"].operation
    assert isinstance(summary, Aggregate)
    got = columnar.partial(summary, arrow)
    want = canonical(aggregate.partial(summary, frame))
    pd.testing.assert_frame_equal(to_pandas(got), want, check_exact=True)
    stored = columnar.storable(got)
    assert stored is not None and bytes(encode_parquet(stored)) == _stored_bytes(want)
