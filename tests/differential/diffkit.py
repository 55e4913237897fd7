"""Machinery of the differential matrix: raw data, batched blueprints, independent readers.

``test_matrix.py`` says *what* each function, operator and aggregate must give (an expression,
the same computation in DuckDB SQL, the Arrow type of the result); this module does the work:

- :func:`raw_table` builds one deterministic dataset per (column type, nulls): a few hundred
  rows in 9 slices keyed by ``part``, with edge values (negatives, zero, ``-0.0``, empty and
  non-ASCII text, midnight and pre-1970 timestamps, the largest ``decimal(15, 2)``);
- :class:`Lab` freezes it with the Python API and runs ONE blueprint per dataset that computes
  every applicable cell (a ``derive`` with ``per_slice: true`` for functions and operators, a
  ``group_by`` for aggregates): cold, incrementally (all slices but the last, then the last),
  and after one slice is replaced, each compared with a cold run on a fresh store;
- outputs are read back with pyarrow from the store's files (DESIGN.md section 2), never
  through chanbatch, so that the stored Arrow types are the ground truth for every reader;
- DuckDB computes the same cells from the same raw Arrow table, independently.

A cell that the plan refuses, or whose expression fails at run time, is dropped from the batch
(found by bisection) and remembered with its message, so one broken cell cannot hide the rest.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import math
import multiprocessing
import os
import re
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

CHANBATCH = Path(sys.executable).with_name("chanbatch")

#: The column types of the matrix, as the store holds them (tpchgen-cli writes decimal(15, 2)).
TYPES: dict[str, pa.DataType] = {
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "decimal": pa.decimal128(15, 2),
}
NUMBERS = ("int", "float", "decimal")
ALL = tuple(TYPES)

SLICES = 9  # more than the combine tree's fan-out of 8, so aggregates combine on two levels
REPLACED = 4  # the slice key whose rows are replaced
UTC = dt.UTC


# -- the cells ----------------------------------------------------------------------------------

SAME = "same as the input column"


@dataclass(frozen=True)
class Ok:
    """An applicable cell: ``expr`` in the blueprint, ``sql`` in DuckDB over the same rows (or
    ``ref``, a Python function of one raw row, where the documented semantics are not DuckDB's),
    and the Arrow type the result must have."""

    expr: str
    sql: str | None
    result: pa.DataType | str
    variant: str = ""
    ref: Callable[[dict[str, Any]], Any] | None = None


@dataclass(frozen=True)
class Bad:
    """A cell that is a type error: ``plan`` must refuse it before anything runs."""

    expr: str
    variant: str = ""


Case = Ok | Bad


@dataclass(frozen=True)
class Cell:
    """One (entry, column type, variant) of the matrix, ready to put in a blueprint."""

    kind: str  # "function" | "operator" | "aggregate"
    entry: str
    label: str  # the entry as it appears in test ids ("floordiv" for "//")
    tname: str
    variant: str
    expr: str
    sql: str | None
    result: pa.DataType | None  # None for a Bad cell
    ref: Callable[[dict[str, Any]], Any] | None
    bad: bool

    @property
    def aggregate(self) -> bool:
        return self.kind == "aggregate"

    def id(self, nulls: bool | None = None) -> str:
        """``int-nulls-year``, ``string-nonull-contains-dot``; without ``nulls``: ``int-year``."""
        parts = [self.tname]
        if nulls is not None:
            parts.append("nulls" if nulls else "nonull")
        parts.append(self.label)
        if self.variant:
            parts.append(self.variant)
        return "-".join(parts)


#: Literals of each type, in the blueprint language and in DuckDB SQL: ``lo``/``hi`` bound a
#: between, ``lit`` is compared with, ``items`` fill an ``in`` list, ``bad`` is a literal of a
#: type that does not go with the column, ``text`` is a date/time written as text.
LITERALS: dict[str, dict[str, tuple[str, str]]] = {
    "int": {
        "lo": ("-10", "-10"),
        "hi": ("10", "10"),
        "lit": ("7", "7"),
        "items": ("0, -1, 7", "0, -1, 7"),
        "bad": ("'abc'", ""),
    },
    "float": {
        "lo": ("-1.5", "-1.5"),
        "hi": ("2.5", "2.5"),
        "lit": ("0.5", "0.5"),
        "items": ("0.0, -0.5, 2.5", "0.0, -0.5, 2.5"),
        "bad": ("'abc'", ""),
    },
    "decimal": {
        "lo": ("-1.5", "-1.5"),
        "hi": ("2.5", "2.5"),
        "lit": ("0.5", "0.5"),
        # -0.01 as a float is not exactly -0.01; SQL compares the decimal's value with it
        "items": ("0.5, -0.01, 2.5", "0.5, -0.01, 2.5"),
        "bad": ("'abc'", ""),
    },
    "bool": {
        "lo": ("false", "false"),
        "hi": ("true", "true"),
        "lit": ("true", "true"),
        "items": ("true", "true"),
        "bad": ("'abc'", ""),
    },
    "string": {
        "lo": ("'a'", "'a'"),
        "hi": ("'m'", "'m'"),
        "lit": ("'abc'", "'abc'"),
        "items": ("'', 'Ünï', 'abc'", "'', 'Ünï', 'abc'"),
        "bad": ("1", ""),
    },
    "date": {
        "lo": ("date('1970-01-01')", "DATE '1970-01-01'"),
        "hi": ("date('2030-06-30')", "DATE '2030-06-30'"),
        "lit": ("date('2000-02-29')", "DATE '2000-02-29'"),
        "items": ("'2000-02-29', '1970-01-01'", "DATE '2000-02-29', DATE '1970-01-01'"),
        "text": ("'2000-02-29'", "DATE '2000-02-29'"),
        "bad": ("1", ""),
    },
    "timestamp": {
        "lo": ("'1970-01-01'", "TIMESTAMPTZ '1970-01-01 00:00:00+00'"),
        "hi": ("'2030-06-30T12:00:00+02:00'", "TIMESTAMPTZ '2030-06-30 10:00:00+00'"),
        "lit": ("'2000-02-29 12:00:00'", "TIMESTAMPTZ '2000-02-29 12:00:00+00'"),
        "items": (
            "'2024-01-01', '1970-01-01T00:00:00+00:00'",
            "TIMESTAMPTZ '2024-01-01 00:00:00+00', TIMESTAMPTZ '1970-01-01 00:00:00+00'",
        ),
        "text": ("'2000-02-29T12:00:00+01:00'", "TIMESTAMPTZ '2000-02-29 11:00:00+00'"),
        "bad": ("1", ""),
    },
}


def expand(
    kind: str, rows: dict[str, dict[str, list[Case]]], labels: dict[str, str] | None = None
) -> list[Cell]:
    """Every cell of a table of rows (entry -> column type -> cases), literals filled in."""
    out = []
    for entry, by_type in rows.items():
        for tname, cases in by_type.items():
            bp = {k: v[0] for k, v in LITERALS[tname].items()}
            sql = {k: v[1] for k, v in LITERALS[tname].items()}
            for case in cases:
                label = (labels or {}).get(entry, entry)
                if isinstance(case, Bad):
                    out.append(
                        Cell(
                            kind=kind,
                            entry=entry,
                            label=label,
                            tname=tname,
                            variant=case.variant,
                            expr=case.expr.format(**bp),
                            sql=None,
                            result=None,
                            ref=None,
                            bad=True,
                        )
                    )
                    continue
                result = TYPES[tname] if case.result == SAME else case.result
                assert isinstance(result, pa.DataType), (entry, tname, case)
                out.append(
                    Cell(
                        kind=kind,
                        entry=entry,
                        label=label,
                        tname=tname,
                        variant=case.variant,
                        expr=case.expr.format(**bp),
                        sql=case.sql.format(**sql) if case.sql is not None else None,
                        result=result,
                        ref=case.ref,
                        bad=False,
                    )
                )
    ids = [c.id() for c in out]
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert not duplicates, f"two cells share an id: {sorted(duplicates)}"
    return out


# -- raw data -----------------------------------------------------------------------------------

_STRINGS = [
    "",
    "a",
    "abc",
    "ABC",
    "Abc",
    "Ünï",
    "émoji 🎉",
    "日本語",
    " padded ",
    "a.b",
    "100%",
    "under_score",
    "Zeta",
    "zeta",
    "e\u0301",  # e + combining acute: two characters
    "Ωmega",
    "x" * 40,
]
_NUM_TEXT = ["12", "-3", " 12.7 ", "0", "-2.7", "1e3", "0.0", "-0.5", "+4"]
_BOOL_TEXT = ["true", "T", "yes", "1", "FALSE", " f ", "no", "0", "Yes"]
_TS_TEXT = [
    "2024-03-01",
    "2024-03-01 12:30:00",
    "2024-02-29T23:59:59+02:00",  # 21:59:59 UTC
    "2023-12-31T22:00:00-05:00",  # 03:00 UTC on 2024-01-01: year, day and date change
    "1970-01-01 00:00:00",
    "1969-12-31 23:59:59.5+00:00",
    "2000-02-29 00:00:00+00:00",
]
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_DAY0 = dt.date(1970, 1, 1)

# Edge values planted among the random ones, per type (the x column, then the y column).
_EDGES: dict[str, tuple[list[Any], list[Any]]] = {
    "int": ([0, -1, 1, 2, -2, 7, -7, 2**31 - 1, -(2**31), 2**40, -(2**40)], [0, -1, 2, 3, 0]),
    "float": (
        [0.0, -0.0, 0.5, -0.5, 1.5, 2.5, -2.5, 0.1, 1e10, -1e-7, 123456.789],
        [0.0, 0.5, -1.0, 2.0, 0.0],
    ),
    "decimal": (
        [
            Decimal(v)
            for v in (
                "0.00",
                "-0.01",
                "0.01",
                "0.50",
                "-0.50",
                "2.50",
                "-2.50",
                "1.25",
                "1.05",
                "9999999999999.99",
                "-9999999999999.99",
            )
        ],
        [Decimal(v) for v in ("0.00", "0.50", "-1.00", "2.00", "0.00")],
    ),
    "bool": ([True, False], [False, True]),
    "string": (list(_STRINGS), ["", "a", "Ünï", "abc"]),
    "date": (
        [
            dt.date(1970, 1, 1),
            dt.date(1969, 12, 31),
            dt.date(2000, 2, 29),
            dt.date(2024, 2, 29),
            dt.date(1900, 1, 1),
            dt.date(2099, 12, 31),
        ],
        [dt.date(1970, 1, 1), dt.date(2000, 2, 29)],
    ),
    "timestamp": (
        [
            dt.datetime(2024, 1, 1, tzinfo=UTC),  # midnight
            dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            _EPOCH,
            dt.datetime(2024, 2, 29, 23, 0, tzinfo=UTC),
            dt.datetime(2000, 1, 1, 12, 0, 0, 1, tzinfo=UTC),
            dt.datetime(2000, 2, 29, 12, 0, tzinfo=UTC),
        ],
        [dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2000, 2, 29, 12, 0, tzinfo=UTC)],
    ),
}


def _random_values(tname: str, rng: np.random.Generator, n: int, narrow: bool) -> list[Any]:
    """``n`` random values of a type; ``narrow`` for a divisor/exponent-friendly range."""
    if tname == "int":
        return (
            [int(v) for v in rng.integers(-5, 6, n)]
            if narrow
            else [int(v) for v in rng.integers(-1000, 1001, n)]
        )
    if tname == "float":
        # multiples of 1/8 and 1/4 are exact in binary, so rounding ties are true ties
        return (
            [float(v) / 4 for v in rng.integers(-12, 13, n)]
            if narrow
            else [float(v) / 8 for v in rng.integers(-8000, 8001, n)]
        )
    if tname == "decimal":
        cents = rng.integers(-20, 21, n) * 25 if narrow else rng.integers(-100000, 100001, n)
        return [Decimal(int(c)).scaleb(-2) for c in cents]
    if tname == "bool":
        return [bool(v) for v in rng.integers(0, 2, n)]
    if tname == "string":
        return [_STRINGS[int(i)] for i in rng.integers(0, len(_STRINGS), n)]
    if tname == "date":
        return [_DAY0 + dt.timedelta(days=int(d)) for d in rng.integers(-25000, 47000, n)]
    if tname == "timestamp":
        micros = rng.integers(-2 * 10**15, 4 * 10**15, n)
        return [_EPOCH + dt.timedelta(microseconds=int(m)) for m in micros]
    raise ValueError(tname)


def _with_edges(values: list[Any], edges: list[Any], rng: np.random.Generator) -> list[Any]:
    out = list(values)
    spots = rng.choice(len(out), size=min(len(edges), len(out)), replace=False)
    for spot, edge in zip(spots, edges, strict=False):
        out[int(spot)] = edge
    return out


def raw_table(
    tname: str, nulls: bool, *, rows: int = 297, seed: int = 0, parts: Iterable[int] | None = None
) -> pa.Table:
    """The raw data of one dataset: ``rid`` (unique row id), ``part`` (slice key), ``g`` (group
    key 0..4), ``flag`` (bool), ``x`` and ``y`` (the column type under test), and for text the
    helper columns ``num_text``, ``bool_text`` and ``ts_text`` that casts and date parts parse.

    With ``nulls``, about 15% of every column but ``rid``/``part``/``g`` is null, and ``x`` is
    null in the whole group ``g == 4`` (an all-null group for the aggregates). ``parts`` limits
    the rows to those slice keys; ``seed`` gives other values (used to replace a slice).
    """
    rng = np.random.default_rng(zlib.crc32(f"{tname}/{nulls}/{seed}".encode()))
    per_slice = rows // SLICES
    rid = np.arange(rows, dtype=np.int64) + seed * 100_000
    part = np.minimum(np.arange(rows) // per_slice + 1, SLICES).astype(np.int64)
    g = (np.arange(rows) % 5).astype(np.int64)
    x_edges, y_edges = _EDGES[tname]
    x = _with_edges(_random_values(tname, rng, rows, narrow=False), x_edges, rng)
    y = _with_edges(_random_values(tname, rng, rows, narrow=True), y_edges, rng)
    flag: list[Any] = [bool(v) for v in rng.integers(0, 2, rows)]
    columns: dict[str, list[Any]] = {"x": x, "y": y, "flag": flag}
    if tname == "string":
        for name, pool in (
            ("num_text", _NUM_TEXT),
            ("bool_text", _BOOL_TEXT),
            ("ts_text", _TS_TEXT),
        ):
            picked = rng.integers(0, len(pool), rows)
            columns[name] = _with_edges([pool[int(i)] for i in picked], list(pool), rng)
    if nulls:
        for name, values in columns.items():
            holes = rng.random(rows) < 0.15
            columns[name] = [None if hole else v for v, hole in zip(values, holes, strict=True)]
        columns["x"] = [None if gk == 4 else v for v, gk in zip(columns["x"], g, strict=True)]
    table = pa.table(
        {
            "rid": pa.array(rid, pa.int64()),
            "part": pa.array(part, pa.int64()),
            "g": pa.array(g, pa.int64()),
            "flag": pa.array(columns.pop("flag"), pa.bool_()),
            "x": pa.array(columns.pop("x"), TYPES[tname]),
            "y": pa.array(columns.pop("y"), TYPES[tname]),
            **{name: pa.array(values, pa.string()) for name, values in columns.items()},
        }
    )
    if parts is not None:
        keep = set(parts)
        table = table.filter(pa.array([p in keep for p in part]))
    return table


def replaced_rows(tname: str, nulls: bool) -> pa.Table:
    """Other rows (another count, other values, other row ids) for slice :data:`REPLACED`."""
    other = raw_table(tname, nulls, rows=40 * SLICES, seed=1)
    return other.filter(pc.equal(other["part"], REPLACED))


# -- blueprints ---------------------------------------------------------------------------------


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def column_name(index: int, aggregate: bool) -> str:
    return f"a{index:03d}" if aggregate else f"c{index:03d}"


def blueprint_yaml(name: str, raw: str, suffix: str, cells: dict[str, Cell]) -> str:
    """One blueprint computing ``cells`` (column name -> cell) over dataset ``raw``:

    - ``d``: the functions and operators, a per-slice derive;
    - ``agg``: the aggregates but ``median``, grouped by ``g``: per-slice partials, combined in
      a tree;
    - ``aggw``: every aggregate grouped by ``g``, beside ``median(rid)``, which makes the whole
      stage run on the whole input (docs 4), the other way to compute each aggregate;
    - ``agg0`` and ``agg0w``: the same two, ungrouped, over the rows where ``x`` is null: an
      all-null input with nulls, an empty one without (one row all the same, docs 3.6).

    Each stage is an output, frozen as ``<stage>_<suffix>``.
    """
    derive = {k: c for k, c in cells.items() if not c.aggregate}
    lines = [f"name: {name}", f"inputs: {{raw: {raw}}}", "stages:"]
    outputs = []
    if derive:
        lines += ["  d:", "    from: raw", "    per_slice: true", "    derive:"]
        lines += [f"      {k}: {_q(c.expr)}" for k, c in derive.items()]
        outputs.append("d")
    if any(c.aggregate for c in cells.values()):
        lines += ["  nx:", "    from: raw", '    filter: "is_null(x)"']
    for stage, source, grouped in AGGREGATE_STAGES:
        group = {k: c for k, c in cells.items() if any(p.stage == stage for p in places(c))}
        if group:
            lines += [f"  {stage}:", f"    from: {source}"]
            lines += ["    group_by: [g]"] if grouped else []
            lines += ["    aggregate:"] + [f"      {k}: {_q(c.expr)}" for k, c in group.items()]
            if stage in WHOLE_STAGES:  # an aggregate without partials: the whole input
                lines += ["      whole_input: median(rid)"]
            outputs.append(stage)
    lines.append("outputs:")
    lines += [f"  {stage}: {stage}_{suffix}" for stage in outputs]
    return "\n".join(lines) + "\n"


#: (stage, what it reads, grouped by g)
AGGREGATE_STAGES = (("agg", "raw", True), ("aggw", "raw", True), ("agg0", "nx", False))
AGGREGATE_STAGES += (("agg0w", "nx", False),)
WHOLE_STAGES = ("aggw", "agg0w")


@dataclass(frozen=True)
class Place:
    """Where a cell's column is: an output stage, and the column that keys its rows (None for
    the one row of an ungrouped aggregate)."""

    stage: str
    key: str | None
    what: str


def places(cell: Cell) -> list[Place]:
    """Every output that holds a cell's column."""
    if not cell.aggregate:
        return [Place("d", "rid", "per-slice derive")]
    whole = [
        Place("aggw", "g", "grouped by g, beside median (whole input)"),
        Place("agg0w", None, "ungrouped over the rows where x is null, beside median"),
    ]
    if cell.entry == "median":
        return whole
    return [
        Place("agg", "g", "grouped by g (per-slice partials)"),
        whole[0],
        Place("agg0", None, "ungrouped over the rows where x is null (partials)"),
        whole[1],
    ]


def column_values(table: pa.Table, key: str | None, column: str) -> dict[Any, Any]:
    """key -> value of ``column`` (row number for an ungrouped result)."""
    keys = table[key].to_pylist() if key is not None else list(range(table.num_rows))
    return dict(zip(keys, table[column].to_pylist(), strict=True))


def problem_fields(exc: BaseException) -> dict[str, str]:
    """Field ('derive.c003') -> message, for each problem of a BlueprintError."""
    out: dict[str, str] = {}
    for problem in getattr(exc, "problems", []):
        if problem.field:
            out.setdefault(problem.field, str(problem))
    return out


# -- reading a store's files, without chanbatch -------------------------------------------------


@dataclass
class Stored:
    """A dataset's head snapshot read from the store's files with pyarrow."""

    snapshot: str
    table: pa.Table
    schemas: list[pa.Schema]  # one per object, in slice order
    keys: list[Any]

    def types_of(self, column: str) -> list[pa.DataType]:
        """The distinct types ``column`` has across the objects, in order of appearance."""
        seen: list[pa.DataType] = []
        for schema in self.schemas:
            t = schema.field(column).type if column in schema.names else None
            if t is not None and t not in seen:
                seen.append(t)
        return seen


def read_stored(store: Path, dataset: str, snapshot: str | None = None) -> Stored:
    """The head snapshot of ``dataset`` (or ``snapshot``), from refs, manifests and objects."""
    if snapshot is None:
        head = sorted((store / "refs" / dataset).glob("*.json"))[-1]
        snapshot = json.loads(head.read_text())["snapshot"]
    manifest = json.loads((store / "manifests" / snapshot[:2] / f"{snapshot[2:]}.json").read_text())
    tables, schemas, keys = [], [], []
    for entry in manifest["slices"]:
        sid = entry["id"]
        slice_manifest = json.loads((store / "manifests" / sid[:2] / f"{sid[2:]}.json").read_text())
        for part in slice_manifest["parts"]:
            oid = part["object"]
            table = pq.read_table(store / "objects" / oid[:2] / oid[2:])
            tables.append(table)
            schemas.append(table.schema)
            keys.append(entry["key"])
    try:
        table = pa.concat_tables(tables)
    except pa.ArrowInvalid:
        table = pa.concat_tables(tables, promote_options="permissive")
    return Stored(snapshot=snapshot, table=table, schemas=schemas, keys=keys)


# -- comparing values ---------------------------------------------------------------------------


def normal(value: Any) -> Any:
    """One spelling per value: NaN is null (the docs: ``0 / 0`` is null), numpy scalars are
    Python's, pandas timestamps are datetimes."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return normal(value.item())
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return None
        if isinstance(value, pd.Timestamp):
            return value.to_pydatetime()
    except ImportError:  # pragma: no cover
        pass
    return value


def same_value(expected: Any, got: Any, exact: bool = False) -> bool:
    """Equal as values: floats to 1e-9 relative (sums and Chan merges add in another order
    than DuckDB) unless ``exact``, decimals and ints exactly, text, booleans and times exactly."""
    expected, got = normal(expected), normal(got)
    if expected is None or got is None:
        return expected is None and got is None
    if exact:
        return type(expected) is type(got) and expected == got
    if isinstance(expected, bool) or isinstance(got, bool):
        return type(expected) is type(got) and expected == got
    if isinstance(expected, float) or isinstance(got, float):
        if not isinstance(expected, int | float | Decimal) or not isinstance(
            got, int | float | Decimal
        ):
            return False
        e, g = float(expected), float(got)
        if math.isinf(e) or math.isinf(g):
            return e == g
        return math.isclose(e, g, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(expected, dt.datetime) or isinstance(got, dt.datetime):
        return (
            isinstance(expected, dt.datetime) and isinstance(got, dt.datetime) and expected == got
        )
    if isinstance(expected, str) or isinstance(got, str):
        return type(expected) is type(got) and expected == got
    return bool(expected == got)


def show(value: Any) -> str:
    value = normal(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    return repr(value)


def mismatches(
    expected: dict[Any, Any],
    got: dict[Any, Any],
    context: Callable[[Any], str],
    limit: int = 6,
    exact: bool = False,
) -> list[str]:
    """Lines describing the keys whose values differ (at most ``limit``, plus a count);
    ``exact`` for two runs of chanbatch, which must agree to the bit."""
    keys = sorted(set(expected) | set(got), key=lambda k: (k is None, k))
    bad = []
    for key in keys:
        if key not in got:
            bad.append(
                f"  {context(key)}: missing from the output (expected {show(expected[key])})"
            )
        elif key not in expected:
            bad.append(f"  {context(key)}: unexpected row with {show(got[key])}")
        elif not same_value(expected[key], got[key], exact):
            bad.append(f"  {context(key)}: expected {show(expected[key])}, got {show(got[key])}")
    if len(bad) > limit:
        return [*bad[:limit], f"  ... and {len(bad) - limit} more of {len(keys)} rows"]
    return bad


# -- pandas readers agree with Arrow -------------------------------------------------------------


def pandas_problems(series: Any, column: pa.ChunkedArray | pa.Array) -> list[str]:
    """How a pandas column read through chanbatch differs from the stored Arrow column: its
    dtype must be the pandas form of the Arrow type (nullable ``Int64``/``boolean`` when there
    are nulls, never text for numbers, booleans or decimals) and its values the same."""
    import pandas as pd

    t = column.type
    dtype = series.dtype
    out = []
    nulls = column.null_count > 0
    arrow_backed = isinstance(dtype, pd.ArrowDtype)
    if arrow_backed and dtype.pyarrow_dtype != t:
        out.append(f"dtype {dtype} holds another Arrow type than the stored {t}")
    elif pa.types.is_integer(t):
        if not (pd.api.types.is_integer_dtype(dtype)):
            want = "Int64 (nullable integers)" if nulls else "int64 or Int64"
            out.append(f"dtype {dtype} for stored {t}: expected {want}")
    elif pa.types.is_floating(t):
        if not pd.api.types.is_float_dtype(dtype):
            out.append(f"dtype {dtype} for stored {t}: expected float64")
    elif pa.types.is_boolean(t):
        if not pd.api.types.is_bool_dtype(dtype):
            want = "boolean (nullable)" if nulls else "bool or boolean"
            out.append(f"dtype {dtype} for stored {t}: expected {want}")
    elif pa.types.is_string(t):
        if not pd.api.types.is_string_dtype(dtype):
            out.append(f"dtype {dtype} for stored {t}: expected a string dtype")
    elif pa.types.is_timestamp(t):
        if not (
            pd.api.types.is_datetime64_any_dtype(dtype) and str(getattr(dtype, "tz", "")) == "UTC"
        ):
            out.append(f"dtype {dtype} for stored {t}: expected datetime64[.., UTC]")
    elif pa.types.is_date(t):
        if not (arrow_backed or pd.api.types.is_datetime64_any_dtype(dtype)):
            out.append(f"dtype {dtype} for stored {t}: expected a date dtype")
    elif pa.types.is_decimal(t) and not (arrow_backed or dtype == np.dtype(object)):
        out.append(f"dtype {dtype} for stored {t}: expected Decimal objects or an Arrow decimal")
    want = column.to_pylist()
    got = [normal(v) for v in series.tolist()]
    if pa.types.is_date(t):
        got = [v.date() if isinstance(v, dt.datetime) else v for v in got]
    if len(want) != len(got):
        out.append(f"{len(got)} rows, stored {len(want)}")
        return out
    wrong = [
        (i, w, g)
        for i, (w, g) in enumerate(zip(want, got, strict=True))
        if not (same_value(w, g) and _same_kind(w, g))
    ]
    if wrong:
        sample = ", ".join(f"row {i}: stored {show(w)}, read {show(g)}" for i, w, g in wrong[:4])
        out.append(f"{len(wrong)} values differ ({sample})")
    return out


def _same_kind(stored: Any, read: Any) -> bool:
    """An int read back as 3.0 or a bool as 'True' is not the stored value."""
    if stored is None or read is None:
        return True
    if isinstance(stored, bool):
        return isinstance(read, bool)
    if isinstance(stored, int):
        return isinstance(read, int) and not isinstance(read, bool)
    if isinstance(stored, Decimal):
        return isinstance(read, Decimal)
    return True


# -- the lab ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """Everything one dataset's runs produced."""

    tname: str
    nulls: bool
    cells: dict[str, Cell]  # column -> cell, every applicable cell
    failed: dict[str, str] = field(default_factory=dict)  # column -> why it is not in the runs
    raw: pa.Table | None = None
    cold: dict[str, Stored] = field(default_factory=dict)  # stage -> stored output
    incremental: dict[str, Stored] = field(default_factory=dict)
    replaced: dict[str, Stored] = field(default_factory=dict)
    replaced_cold: dict[str, Stored] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # "incremental"/"replaced" -> message
    reference: dict[tuple[str, str], dict[Any, Any]] = field(default_factory=dict)

    @property
    def suffix(self) -> str:
        return f"{self.tname}_{'nulls' if self.nulls else 'nonull'}"

    def column_of(self, cell: Cell) -> str:
        for name, c in self.cells.items():
            if c is cell:
                return name
        raise KeyError(cell.id())


class Lab:
    """Stores under ``root`` and the lazily computed outcome of each dataset.

    - ``cold``: every raw dataset frozen whole, each blueprint run once;
    - ``inc``: all slices but the last, run, the last slice, run; then slice 4 replaced, run;
    - ``fresh``: the data after the replacement frozen whole, run once.
    """

    def __init__(
        self,
        root: Path,
        cells: list[Cell],
        *,
        rows: int = 297,
        seed: int = 0,
        cells_from: str = "test_matrix:CELLS",
    ) -> None:
        self.root = root
        self.cells = cells
        self.rows = rows
        self.seed = seed
        self.cells_from = cells_from
        self.cold = root / "cold"
        self.inc = root / "inc"
        self.fresh = root / "fresh"
        self.scratch = root / "scratch"
        self._outcomes: dict[tuple[str, bool], Outcome] = {}
        self._futures: dict[tuple[str, bool], Future[Outcome]] = {}
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._dataset_locks: dict[tuple[str, bool], threading.Lock] = {}
        self._frames: dict[tuple[str, bool, str, str], Any] = {}

    # runs

    def prefetch(self, datasets: Iterable[tuple[str, bool]], workers: int | None = None) -> None:
        """Start computing ``datasets`` in worker processes (one per core, at most 2), in order.

        Each dataset's runs are independent of the others' (their own dataset names in shared
        stores, which take concurrent writers), so the matrix takes half the time on 2 cores.
        """
        todo = [d for d in dict.fromkeys(datasets) if d not in self._outcomes]
        workers = workers or min(2, os.cpu_count() or 1)
        if not todo or workers < 2:
            return
        self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        for tname, nulls in todo:
            self._futures[tname, nulls] = self._pool.submit(
                compute_outcome, str(self.root), self.rows, self.seed, self.cells_from, tname, nulls
            )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def outcome(self, tname: str, nulls: bool) -> Outcome:
        with self._lock:
            lock = self._dataset_locks.setdefault((tname, nulls), threading.Lock())
        with lock:
            if (tname, nulls) not in self._outcomes:
                future = self._futures.get((tname, nulls))
                if future is None:
                    self._outcomes[tname, nulls] = self._compute(tname, nulls)
                else:
                    out = future.result()
                    by_id = {c.id(): c for c in self.cells}
                    out.cells = {k: by_id[cid] for k, cid in out.cells.items()}
                    self._outcomes[tname, nulls] = out
            return self._outcomes[tname, nulls]

    def _compute(self, tname: str, nulls: bool) -> Outcome:
        import chanbatch as cb

        applicable = [c for c in self.cells if c.tname == tname and not c.bad]
        derive = [c for c in applicable if not c.aggregate]
        aggs = [c for c in applicable if c.aggregate]
        cells = {column_name(i, False): c for i, c in enumerate(derive)}
        cells |= {column_name(i, True): c for i, c in enumerate(aggs)}
        out = Outcome(tname=tname, nulls=nulls, cells=cells)
        raw = raw_table(tname, nulls, rows=self.rows, seed=self.seed)
        out.raw = raw
        name = f"raw_{out.suffix}"
        cold = cb.Store(str(self.cold))
        cold.freeze(name, raw, slice_by="part")
        runnable = self._runnable(cold, name, out)
        out.cold = self._read(self.cold, out.suffix, runnable)
        out.reference = reference(raw, cells)

        inc = cb.Store(str(self.inc))
        last = raw.filter(pc.equal(raw["part"], SLICES))
        inc.freeze(name, raw.filter(pc.less(raw["part"], SLICES)), slice_by="part")
        try:
            self._run(inc, name, out.suffix, runnable)
            inc.freeze(name, last, slice_by="part")
            self._run(inc, name, out.suffix, runnable)
            out.incremental = self._read(self.inc, out.suffix, runnable)
        except Exception as exc:  # the incremental run must work whenever the cold one did
            out.errors["incremental"] = f"{type(exc).__name__}: {exc}"
            return out
        new_rows = replaced_rows(tname, nulls)
        try:
            inc.freeze(name, new_rows, slice_by="part")
            self._run(inc, name, out.suffix, runnable)
            out.replaced = self._read(self.inc, out.suffix, runnable)
        except Exception as exc:
            out.errors["replaced"] = f"{type(exc).__name__}: {exc}"
            return out
        final = pa.concat_tables(
            [
                raw.filter(pc.less(raw["part"], REPLACED)),
                new_rows,
                raw.filter(pc.greater(raw["part"], REPLACED)),
            ]
        )
        fresh = cb.Store(str(self.fresh))
        fresh.freeze(name, final, slice_by="part")
        self._run(fresh, name, out.suffix, runnable)
        out.replaced_cold = self._read(self.fresh, out.suffix, runnable)
        return out

    def _runnable(self, store: Any, raw: str, out: Outcome) -> dict[str, Cell]:
        """The cells that plan and run: those the plan refuses are dropped with the plan's
        message, those that fail at run time are found by bisection on a scratch store."""
        import chanbatch as cb
        from chanbatch.errors import ChanbatchError

        cells = dict(out.cells)
        for _ in range(len(cells) + 1):
            text = blueprint_yaml(f"m_{out.suffix}", raw, out.suffix, cells)
            try:
                cb.Blueprint.from_yaml(text).plan(store)
                break
            except ChanbatchError as exc:
                fields = problem_fields(exc)
                hit = [k for k in cells if f"derive.{k}" in fields or f"aggregate.{k}" in fields]
                if not hit:
                    raise
                for k in hit:
                    why = fields.get(f"derive.{k}") or fields[f"aggregate.{k}"]
                    out.failed[k] = f"plan refused it: {why}"
                    del cells[k]
        scratch = None
        for _ in range(len(cells) + 1):
            try:
                self._run(store, raw, out.suffix, cells)
                return cells
            except Exception as exc:
                error = exc
            why = f"the run failed: {type(error).__name__}: {error}"
            # an error that names columns (a freeze that finds no type) needs no search
            found = dict.fromkeys(
                (k for k in re.findall(r"'([ac]\d{3})'", str(error)) if k in cells), why
            )
            if not found:  # find the cells that fail, among those of the stage named
                if scratch is None:
                    scratch = cb.Store(str(self.scratch / out.suffix))
                    scratch.freeze(raw, out.raw, slice_by="part")
                stage = re.search(r"stage '(\w+)'", str(error))
                suspects = {
                    k: c
                    for k, c in cells.items()
                    if stage is None or any(p.stage == stage.group(1) for p in places(c))
                }
                found = {
                    k: f"the run failed: {message}"
                    for k, message in self._bisect(scratch, raw, out.suffix, suspects).items()
                }
            if not found:
                raise error
            for k, message in found.items():
                out.failed[k] = message
                del cells[k]
        raise AssertionError(f"{out.suffix}: no cell runs")

    def _bisect(self, store: Any, raw: str, suffix: str, cells: dict[str, Cell]) -> dict[str, str]:
        if not cells:
            return {}
        try:
            self._run(store, raw, f"{suffix}_probe", cells)
            return {}
        except Exception as exc:
            if len(cells) == 1:
                return {next(iter(cells)): f"{type(exc).__name__}: {exc}"}
        keys = list(cells)
        half = len(keys) // 2
        failed = self._bisect(store, raw, suffix, {k: cells[k] for k in keys[:half]})
        failed |= self._bisect(store, raw, suffix, {k: cells[k] for k in keys[half:]})
        return failed

    def _run(self, store: Any, raw: str, suffix: str, cells: dict[str, Cell]) -> Any:
        import chanbatch as cb

        text = blueprint_yaml(f"m_{suffix}", raw, suffix, cells)
        return cb.Blueprint.from_yaml(text).run(store, scheduler="sync")

    def _read(self, store: Path, suffix: str, cells: dict[str, Cell]) -> dict[str, Stored]:
        stages = {p.stage for c in cells.values() for p in places(c)}
        return {stage: read_stored(store, f"{stage}_{suffix}") for stage in sorted(stages)}

    # readers through chanbatch, once per dataset and output

    def frame(self, tname: str, nulls: bool, stage: str, how: str) -> Any:
        """The cold output read through chanbatch: ``how`` is "read" (Store.read(...).compute())
        or "read_pandas"."""
        import chanbatch as cb

        key = (tname, nulls, stage, how)
        out = self.outcome(tname, nulls)
        with self._lock:
            if key not in self._frames:
                store = cb.Store(str(self.cold))
                ref = f"{stage}_{out.suffix}"
                if how == "read":
                    self._frames[key] = store.read(ref).compute().reset_index(drop=True)
                else:
                    self._frames[key] = store.read_pandas(ref)
            return self._frames[key]

    def inspect_cli(self, tname: str, nulls: bool, stage: str) -> subprocess.CompletedProcess[str]:
        """``chanbatch snapshot inspect --json`` of an output, as a real subprocess."""
        out = self.outcome(tname, nulls)
        return subprocess.run(
            [
                *(str(CHANBATCH), "snapshot", "inspect", f"{stage}_{out.suffix}"),
                *("--json", "--store", str(self.cold)),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )


def compute_outcome(
    root: str, rows: int, seed: int, cells_from: str, tname: str, nulls: bool
) -> Outcome:
    """A worker process's share of :meth:`Lab.prefetch`: one dataset's outcome, its cells sent
    back by id (a cell's Python reference is a function, which does not pickle)."""
    module, name = cells_from.split(":")
    cells = getattr(importlib.import_module(module), name)
    out = Lab(Path(root), cells, rows=rows, seed=seed)._compute(tname, nulls)
    out.cells = {k: c.id() for k, c in out.cells.items()}  # type: ignore[misc]
    return out


# -- the reference: DuckDB, or Python where the docs say otherwise ------------------------------


def reference(raw: pa.Table, cells: dict[str, Cell]) -> dict[tuple[str, str], dict[Any, Any]]:
    """(stage, column) -> key -> the value the cell must have there (keys as
    :func:`column_values` gives them), computed from ``raw`` by DuckDB, or by the cell's
    Python ``ref``."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("raw", raw)
    out: dict[tuple[str, str], dict[Any, Any]] = {}
    rows = raw.to_pylist()
    queries = {
        "d": "SELECT rid AS k, {} FROM raw ORDER BY rid",
        "agg": "SELECT g AS k, {} FROM raw GROUP BY g ORDER BY g",
        "aggw": "SELECT g AS k, {} FROM raw GROUP BY g ORDER BY g",
        "agg0": "SELECT 0 AS k, {} FROM raw WHERE x IS NULL",
        "agg0w": "SELECT 0 AS k, {} FROM raw WHERE x IS NULL",
    }
    by_stage: dict[str, dict[str, Cell]] = {}
    for k, c in cells.items():
        for place in places(c):
            by_stage.setdefault(place.stage, {})[k] = c
    for stage, cols in by_stage.items():
        sql = {k: c for k, c in cols.items() if c.sql is not None}
        if sql:
            select = ", ".join(f"{c.sql} AS {k}" for k, c in sql.items())
            result = con.sql(queries[stage].format(select)).to_arrow_table().to_pydict()
            for k in sql:
                out[stage, k] = dict(zip(result["k"], result[k], strict=True))
        for k, c in cols.items():
            if c.sql is None:
                assert c.ref is not None and stage == "d", c
                out[stage, k] = {row["rid"]: c.ref(row) for row in rows}
    con.close()
    return out
