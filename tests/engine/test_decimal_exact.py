"""Decimals computed on their unscaled integers, and decimal states merged and finished on Arrow.

The Arrow path adds, subtracts and multiplies decimals, and sums them in a partial, on their
unscaled integers in int64 where every value and result is certain to fit
(:func:`chanbatch.engine.arrow_eval._int64_arith`, :mod:`chanbatch.engine.arrow_numpy`), and
merges and finishes decimal sums and means without pandas
(:mod:`chanbatch.engine.arrow_combine`). Each is checked here against what it replaces (Arrow's
128-bit checked kernels; the pandas combine and finish, to the stored bytes) and against DuckDB's
decimal answers, with values drawn at the edges: nulls, the type's limits, and magnitudes on both
sides of an int64.
"""

from __future__ import annotations

import decimal
import itertools
import random
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from enginekit import tables_of
from hypothesis import given
from hypothesis import strategies as st

from chanbatch.blueprint.expr import parse_expr
from chanbatch.blueprint.model import Derive
from chanbatch.engine import arrow_combine, arrow_eval, columnar
from chanbatch.engine.arrow_numpy import decimals, unscaled
from tests.engine.test_arrow_combine import SETTINGS, _both, _finished, _partial, _spec, cuts
from tests.engine.test_columnar import _stage

D = decimal.Decimal
INT64 = 2**63


def _decimals(
    precision: int, scale: int, nulls: bool = True
) -> st.SearchStrategy[decimal.Decimal | None]:
    """Values of decimal(precision, scale): small, at the type's limit, and around an int64's."""
    top = 10**precision - 1
    edges = [0, top, -top, INT64 - 1, -INT64, INT64, -INT64 - 1, 2**53, 2**53 + 1]
    unscaled_values = st.one_of(
        st.integers(-10_000, 10_000),
        st.integers(-top, top),
        st.sampled_from([e for e in edges if abs(e) <= top]),
    )
    values = unscaled_values.map(lambda u: D(f"{u}E-{scale}"))  # exact: no context
    return st.one_of(st.none(), values) if nulls else values


COLUMNS = {
    "k": (pa.string(), st.one_of(st.none(), st.sampled_from(["x", "y", "é"]))),
    "m": (pa.int64(), st.integers(0, 3)),
    "p": (pa.decimal128(15, 2), _decimals(15, 2, nulls=False)),  # lineitem's, no nulls
    "q": (pa.decimal128(15, 2), _decimals(15, 2)),
    "e": (pa.decimal128(18, 0), _decimals(18, 0, nulls=False)),  # sums past an int64
    # past an int64 itself; of 30 digits, so that no sum of them passes 38 (pandas refuses)
    "w": (pa.decimal128(38, 10), _decimals(30, 10, nulls=False)),
}


def tables(max_rows: int = 30) -> st.SearchStrategy[pa.Table]:
    return tables_of(COLUMNS, max_rows=max_rows)


# -- unscaled integers -----------------------------------------------------------------------


@SETTINGS
@given(
    st.sampled_from([(15, 2), (18, 0), (22, 2), (38, 4), (38, 10)]).flatmap(
        lambda t: st.tuples(
            st.just(t),
            st.lists(_decimals(*t, nulls=False), max_size=12),
            st.integers(0, 3),
            st.integers(0, 12),
        )
    )
)
def test_unscaled_reads_the_integers(case: tuple[tuple[int, int], list[Any], int, int]) -> None:
    """The int64 of each value, from arrays sliced and cut into chunks; None when one does not
    fit; and back to the same array."""
    (precision, scale), values, offset, cut = case
    kind = pa.decimal128(precision, scale)
    whole = pa.array([D(0)] * offset + values, kind).slice(offset)
    cut = min(cut, len(values))
    chunked = pa.chunked_array([whole.slice(0, cut), whole.slice(cut)], kind)
    ints = [int(v * D(f"1E{scale}")) for v in values]
    fits = all(-INT64 <= i < INT64 for i in ints)
    for array in (whole, chunked):
        found = unscaled(array)
        if not fits:
            assert found is None
            continue
        assert found is not None
        assert found[0].tolist() == ints
        assert found[1] == max((abs(i) for i in ints), default=0)
        assert decimals(found[0], kind).equals(whole)
    assert unscaled(pa.array([*values, None], kind)) is None  # nulls: left to Arrow


# -- + - * on unscaled integers, against the checked kernels and DuckDB -------------------------


def _kernel_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arrow_eval, "_int64_arith", lambda *args: None)


def _arith(op: str, left: Any, right: Any) -> pa.Array | Exception:
    try:
        return arrow_eval._decimal_arith(op, left, right)
    except (pa.ArrowException, arrow_eval.Unsupported) as exc:
        return exc


_operands = st.sampled_from(["p", "q", "e", "w", 1, 100, -7, 10**17])


@SETTINGS
@given(tables(), st.sampled_from(["+", "-", "*"]), _operands, _operands)
def test_int64_arithmetic_is_the_checked_kernel(
    table: pa.Table, op: str, left: Any, right: Any
) -> None:
    """The same type and values as Arrow's 128-bit checked kernel, or the same refusal, on
    every pair of operands (nulls, values past an int64, products past 38 digits)."""
    if not isinstance(left, str) and not isinstance(right, str):
        return
    operands = [table.column(v) if isinstance(v, str) else v for v in (left, right)]
    fast = _arith(op, *operands)
    with pytest.MonkeyPatch.context() as patch:
        _kernel_only(patch)
        slow = _arith(op, *operands)
    if isinstance(slow, Exception):
        assert isinstance(fast, Exception), (op, left, right)
        return
    assert not isinstance(fast, Exception), (op, left, right, fast)
    assert fast.type == slow.type
    assert _whole(fast).equals(_whole(slow))


def _whole(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _lineitem(rows: int, seed: int) -> pa.Table:
    rng = random.Random(seed)
    money = pa.decimal128(15, 2)
    return pa.table(
        {
            "k": [rng.choice("ANR") for _ in range(rows)],
            "p": pa.array(
                [D(rng.randrange(90_000, 10_500_000)).scaleb(-2) for _ in range(rows)], money
            ),
            "q": pa.array([D(rng.randrange(0, 11)).scaleb(-2) for _ in range(rows)], money),
            "c": pa.array([D(rng.randrange(0, 9)).scaleb(-2) for _ in range(rows)], money),
            "n": pa.array([D(rng.randrange(1, 51)) for _ in range(rows)], money),
        }
    )


@pytest.mark.parametrize(
    "text",
    [
        "p * (1 - q)",  # Q1's disc_price
        "p * (1 - q) * (1 + c)",  # Q1's charge: narrowed to decimal(38, 6)
        "p + q - c",
        "100 - p",
        "n * p - c * 3",
    ],
)
def test_q1_arithmetic_takes_int64_and_equals_duckdb(text: str) -> None:
    """On lineitem-like data the Q1 expressions are computed on int64 (not by the kernel),
    and every value is DuckDB's, exactly."""
    lineitem = _lineitem(2000, 3)
    taken: list[bool] = []
    original = arrow_eval._int64_arith

    def spy(*args: Any) -> Any:
        result = original(*args)
        taken.append(result is not None)
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(arrow_eval, "_int64_arith", spy)
        got = columnar.apply_rowwise(_stage(Derive(columns={"out": parse_expr(text)})), lineitem)
    assert taken and all(taken), text
    want = duckdb.sql(f"SELECT {text} AS out FROM lineitem").arrow().read_all()
    assert got.column("out").to_pylist() == want.column("out").to_pylist(), text


# -- partial sums on int64 -------------------------------------------------------------------


@pytest.mark.parametrize("rows", [1, 9, 10, 11, 1000])
def test_partial_sums_on_either_side_of_an_int64(rows: int) -> None:
    """decimal(18, 0) values at the type's limit: their sum leaves an int64 from ten rows on,
    where Arrow sums the decimals themselves; both equal DuckDB's sum exactly."""
    big = D(10**18 - 1)
    slab = pa.table(
        {
            "k": ["a" if i % 3 else "b" for i in range(rows)],
            "e": pa.array([big if i % 2 else -big + i for i in range(rows)], pa.decimal128(18, 0)),
            "f": pa.array([big] * rows, pa.decimal128(18, 0)),
        }
    )
    spec = _spec(["k"], ["sum(e)", "sum(f)", "mean(f)", "count()"])
    got = columnar.partial(spec, slab)
    rows_want = duckdb.sql(
        "SELECT k, sum(e) AS e, sum(f) AS f FROM slab GROUP BY k ORDER BY k"
    ).fetchall()
    assert got.column("k").to_pylist() == [r[0] for r in rows_want]
    assert got.column(f"a0{columnar.SEP}sum").to_pylist() == [r[1] for r in rows_want]
    assert got.column(f"a1{columnar.SEP}sum").to_pylist() == [r[2] for r in rows_want]
    assert got.schema.field(f"a1{columnar.SEP}sum").type == pa.decimal128(38, 0)


# -- combine and finish on Arrow, against the pandas path and DuckDB --------------------------

_keys = st.lists(st.sampled_from(["k", "m"]), min_size=0, max_size=2, unique=True)
_aggregates = st.lists(
    st.sampled_from(
        [
            *("count()", "sum(p)", "mean(p)", "sum(q)", "mean(q)", "sum(e)", "mean(e)"),
            *("sum(w)", "mean(w)", "sum(p * (1 - q))", "count(q)"),
        ]
    ),
    min_size=1,
    max_size=4,
    unique=True,
)


@SETTINGS
@given(st.data(), tables(), _keys, _aggregates)
def test_decimal_combine_and_finish_match_pandas_to_the_bit(
    data: st.DataObject, table: pa.Table, keys: list[str], aggregates: list[str]
) -> None:
    """Partials of random cuts merged on Arrow, two levels up, and finished: the bytes the
    pandas combine and finish store (``_both`` and ``_finished`` compare them)."""
    spec = _spec(keys, aggregates)
    partials = [_partial(spec, table.slice(a, b - a)) for a, b in data.draw(cuts(table.num_rows))]
    got = _both(spec, partials)
    if got is None:
        return
    split = data.draw(st.integers(0, len(partials)))
    halves = [p for p in (partials[:split], partials[split:]) if p]
    level = [arrow_combine.combine(spec, half) for half in halves]
    top = _both(spec, level)
    assert top is not None
    _finished(spec, got)


def test_decimal_combines_are_taken() -> None:
    """Decimal sums and means, with and without nulls, beyond an int64 and beside other
    states, are merged and finished here, not by pandas."""
    table = pa.table(
        {
            "k": ["a", "b", "a", None, "b", "a"],
            "p": pa.array(
                [D("1.50"), D("2.25"), D("-0.01"), D("9.99"), D("0"), D("3")], pa.decimal128(15, 2)
            ),
            "q": pa.array([None, D("0.05"), None, None, D("0.10"), D("0")], pa.decimal128(15, 2)),
            "w": pa.array(
                [D(10) ** 27, D(1), D(10) ** 27, D(-5), D(2), D("0.1")], pa.decimal128(38, 10)
            ),
        }
    )
    spec = _spec(["k"], ["sum(p)", "mean(p)", "sum(q)", "mean(q)", "sum(w)", "mean(w)", "count()"])
    partials = [_partial(spec, table.slice(i, 2)) for i in range(0, 6, 2)]
    combined = _both(spec, partials)
    assert combined is not None
    finished = _finished(spec, combined)
    assert finished is not None
    by_key = {row["k"]: row for row in finished.to_pylist()}
    assert by_key["a"]["a0"] == D("4.49") and by_key["a"]["a2"] == D("0.00")
    assert by_key[None]["a2"] is None and by_key[None]["a3"] is None  # no q in the null key
    exact = D("2000000000000000000000000000.1")  # past an int64, summed by Arrow
    assert by_key["a"]["a4"] == exact and by_key["a"]["a5"] == float(exact) / 3


def test_decimal_tree_equals_duckdb() -> None:
    """Q1's sums and means over 40 slices, partials merged up a tree on Arrow and finished:
    sums exactly DuckDB's decimals (and typed as DuckDB types them), means the exact sum's
    nearest float over the count, within DuckDB's rounding of its own average."""
    lineitem = _lineitem(4000, 11)
    spec = _spec(
        ["k"],
        [
            *("sum(p)", "sum(p * (1 - q))", "sum(p * (1 - q) * (1 + c))"),
            *("mean(p)", "mean(q)", "count()"),
        ],
    )
    bounds = sorted(random.Random(5).sample(range(1, 4000), 39))
    parts = [
        columnar.partial(spec, lineitem.slice(a, b - a))
        for a, b in itertools.pairwise([0, *bounds, 4000])
    ]
    while len(parts) > 1:  # a tree of fan-in 3, as the plan builds one
        parts = [arrow_combine.combine(spec, parts[i : i + 3]) for i in range(0, len(parts), 3)]
    got = arrow_combine.finish(spec, parts[0])
    want = duckdb.sql(
        """SELECT k, sum(p) AS a0, sum(p * (1 - q)) AS a1, sum(p * (1 - q) * (1 + c)) AS a2,
                  avg(p) AS a3, avg(q) AS a4, sum(p)::VARCHAR AS s3, sum(q)::VARCHAR AS s4,
                  count(*) AS a5
           FROM lineitem GROUP BY k ORDER BY k"""
    )
    want_table = want.arrow().read_all()
    for name in ("a0", "a1", "a2"):
        assert got.column(name).type == want_table.schema.field(name).type, name
        assert got.column(name).to_pylist() == want_table.column(name).to_pylist(), name
    assert got.column("a5").to_pylist() == want_table.column("a5").to_pylist()
    for name, total in (("a3", "s3"), ("a4", "s4")):
        exact = [
            float(D(s)) / n
            for s, n in zip(
                want_table.column(total).to_pylist(),
                want_table.column("a5").to_pylist(),
                strict=True,
            )
        ]
        assert got.column(name).to_pylist() == exact, name
        assert got.column(name).to_pylist() == pytest.approx(
            want_table.column(name).to_pylist(), rel=1e-15
        )
