"""Issue 18, "must hold for every item", checked the same way for every incremental operator.

Each operator is one small blueprint over integer day slices (3 rows a day, 2 for a replaced
day; a group ``rare`` present only on some days; nulls in every value column). A store starts
with days 0..N-1 but one day in the middle missing, and is run cold. Then, one step at a time:

- append: day N is frozen;
- insert: the missing middle day is frozen;
- replace: an existing day is frozen again with other rows.

After each step the run must compute, per (stage, kind), at most the operator's bound (a few
per-slice tasks, and for a combine tree at most ``ceil(log2(slices)) + 2`` combines: the path of
the changed slice) and nothing else; its outputs must equal DuckDB's answer on the same raw rows;
and its output snapshot ids must equal a cold run's over the same data in a fresh store.

Bounds per operator (``depth`` = ``ceil(log2(slices)) + 2``):

- ``count_distinct``, sketches: 1 partial, ``depth`` combines, 1 finish;
- top-N (``sort: [-y, id]`` read only by ``limit: 5``): 1 partial and ``depth`` combines of
  the sort, 1 task of the limit;
- ``union``: 1 apply;
- co-sliced ``inner``/``left``/``right``/``outer`` joins on ``[day, k]``: 1 apply;
- ``window`` with ``range: {preceding: 2, following: 1}`` over ``day``: the halo, 4 applies
  (the changed day, the day before it and the two after it);
- exact ``median``: the deliberate exception. ``plan`` says it is not incremental, and its one
  task reads every slice; it is bounded to that one task, and its answer must be DuckDB's.

Stores are ``memory://``. Measured on 2 shared cores: the ten N = 84 cases take about 50 s (45 s
of CPU; up to 100 s of wall time when the cores are busy). ``--runslow`` adds N = 2,526, about an
hour in all: 3 to 5 minutes for each one-input operator and about 10 for each join, whose four
cold runs (the first one and one per step) take about 75 s each; an incremental step's run is
under a second.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import chanbatch as cb

# -- data --------------------------------------------------------------------------------------

SKIPPED = {"t": None, "a": 5, "b": 4, "l": 5, "r": 4}  # day % 6 with no slice (one side only)
SEEDS = {"t": 0, "a": 1, "b": 2, "l": 3, "r": 4}


def rows(dataset: str, days: list[int], version: int = 0) -> pd.DataFrame:
    """The rows of ``days`` of ``dataset``, day by day: each day's the same whichever other days
    exist; ``version`` 1 is a day's replacement (two other rows). Ids are unique across
    datasets, days and versions."""
    n = 3 if version == 0 else 2
    day = np.repeat(np.asarray(days, dtype="int64"), n)
    i = np.tile(np.arange(n), len(days))
    h = day * 37 + i * 11 + SEEDS[dataset] * 13 + version * 5
    g = np.array(["a", "b", "a"], dtype=object)[i]
    g[(day % 10 == 3) & (i == n - 1)] = "rare"  # a group only some days have
    x = pd.array(h % 997, dtype="Int64")
    x[(h % 7) == 0] = pd.NA
    y = ((h * 7919) % 1009) / 4.0 - 100.0
    y[(h % 5) == 0] = np.nan
    k = pd.array(h % 3, dtype="Int64")
    k[(h % 11) == 0] = pd.NA
    ids = day * 100 + SEEDS[dataset] * 10 + version * 5 + i
    frame = pd.DataFrame({"day": day, "k": k, "x": x, "y": y})
    if dataset == "r":  # the join's right side: its own value columns, no name shared but keys
        return frame.rename(columns={"x": "w", "y": "z"}).assign(rid=ids)
    return frame.assign(g=pd.Series(g, dtype="string"), id=ids)


def lifted(frame: pd.DataFrame, value: float) -> pd.DataFrame:
    """``frame`` with its first row's value (``y``, or ``z`` on the join's right) set to
    ``value``, above every generated one: the top-N changes at every step."""
    frame.loc[0, "z" if "z" in frame else "y"] = value
    return frame


def days_of(dataset: str, days: list[int]) -> list[int]:
    skip = SKIPPED[dataset]
    return [d for d in days if skip is None or d % 6 != skip]


# -- DuckDB, the oracle ------------------------------------------------------------------------


def duck(sql: str, data: dict[str, pd.DataFrame]) -> list[tuple]:
    """DuckDB's answer over the raw rows, NaN read as NULL (through Arrow)."""
    con = duckdb.connect()
    for name, frame in data.items():
        con.register(name, pa.Table.from_pandas(frame, preserve_index=False))
    return [tuple(plain(v) for v in row) for row in con.execute(sql).fetchall()]


def plain(value: Any) -> Any:
    """A comparable Python value: every null as None, floats rounded far below their spread."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "item"):
        value = value.item()
    return round(value, 9) if isinstance(value, float) else value


def table(frame: pd.DataFrame, columns: list[str]) -> list[tuple]:
    return [tuple(plain(v) for v in row) for row in frame[columns].itertuples(index=False)]


def unordered(found: list[tuple]) -> list[tuple]:
    return sorted(found, key=lambda row: [(v is None, v if v is not None else 0) for v in row])


# -- the operators -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Operator:
    """One blueprint and what must hold for it."""

    text: str
    inputs: tuple[str, ...]
    kinds: dict[str, set[str]]  # stage -> the task kinds its plan must have
    bounds: Callable[[int], dict[tuple[str, str], int]]  # (stage, kind) -> at most, by depth
    check: Callable[[cb.Store, dict[str, pd.DataFrame]], None]
    note: str | None = None  # a note the plan must give


def tree(stage: str) -> Callable[[int], dict[tuple[str, str], int]]:
    return lambda depth: {(stage, "partial"): 1, (stage, "combine"): depth, (stage, "finish"): 1}


def check_distinct(store: cb.Store, data: dict[str, pd.DataFrame]) -> None:
    got = table(store.read_pandas("per_g"), ["g", "rows", "nx", "ny"])
    want = duck("SELECT g, count(*), count(DISTINCT x), count(DISTINCT y) FROM t GROUP BY g", data)
    assert unordered(got) == unordered(want)


def check_sketches(store: cb.Store, data: dict[str, pd.DataFrame]) -> None:
    """HLL within 3 standard errors (4.9%) of the exact count; the t-digest estimate's rank
    within 1% of q, or, up to 200 values (exact there), the value at ``floor(q * n)``."""
    got = store.read_pandas("per_g")
    exact = {
        g: (u, ys)
        for g, u, ys in duck(
            "SELECT g, count(DISTINCT x), list(y ORDER BY y) FILTER (WHERE y IS NOT NULL) "
            "FROM t GROUP BY g",
            data,
        )
    }
    assert sorted(got["g"]) == sorted(exact)
    for row in got.itertuples(index=False):
        u, ys = exact[row.g]
        assert abs(row.u - u) <= 0.049 * u, (row.g, row.u, u)
        for q, estimate in ((0.5, row.m), (0.9, row.p90)):
            if len(ys) <= 200:
                assert estimate == ys[math.floor(q * len(ys))], (row.g, q, estimate)
            else:
                below = sum(v < estimate for v in ys) / len(ys)
                at_most = sum(v <= estimate for v in ys) / len(ys)
                assert below - 0.01 <= q <= at_most + 0.01, (row.g, q, below, at_most)


def check_top(store: cb.Store, data: dict[str, pd.DataFrame]) -> None:
    got = table(store.read_pandas("top"), ["id", "y"])
    assert got == duck("SELECT id, y FROM t ORDER BY y DESC NULLS LAST, id LIMIT 5", data)


def check_union(store: cb.Store, data: dict[str, pd.DataFrame]) -> None:
    """Slice by slice in day order, a's part then b's, each in its own row order."""
    columns = ["day", "k", "x", "y", "g", "id"]
    got = table(store.read_pandas("both"), columns)
    want = duck(
        f"SELECT {', '.join(columns)} FROM (SELECT *, 0 AS part FROM a UNION ALL "
        "SELECT *, 1 AS part FROM b) ORDER BY day, part, id",
        data,
    )
    assert got == want


SQL_JOIN = {"inner": "JOIN", "left": "LEFT JOIN", "right": "RIGHT JOIN", "outer": "FULL JOIN"}


def check_join(how: str) -> Callable[[cb.Store, dict[str, pd.DataFrame]], None]:
    def check(store: cb.Store, data: dict[str, pd.DataFrame]) -> None:
        columns = ["day", "k", "x", "y", "g", "id", "w", "z", "rid"]
        got = table(store.read_pandas(f"joined_{how}"), columns)
        want = duck(
            "SELECT coalesce(l.day, r.day), coalesce(l.k, r.k), l.x, l.y, l.g, l.id, "
            f"r.w, r.z, r.rid FROM l {SQL_JOIN[how]} r ON l.day = r.day AND l.k = r.k",
            data,
        )
        assert unordered(got) == unordered(want)

    return check


def check_window(store: cb.Store, data: dict[str, pd.DataFrame]) -> None:
    got = table(store.read_pandas("rolled"), ["id", "s", "n", "m"])
    want = duck(
        "SELECT id, sum(x) OVER w, count(*) OVER w, avg(y) OVER w FROM t WINDOW w AS "
        "(PARTITION BY g ORDER BY day RANGE BETWEEN 2 PRECEDING AND 1 FOLLOWING)",
        data,
    )
    assert unordered(got) == unordered(want)


def check_median(store: cb.Store, data: dict[str, pd.DataFrame]) -> None:
    got = table(store.read_pandas("med"), ["g", "m"])
    assert unordered(got) == unordered(duck("SELECT g, median(y) FROM t GROUP BY g", data))


def one_input(stages: str, outputs: str) -> str:
    return f"name: op\ninputs: {{t: t}}\nstages:\n{stages}\noutputs: {{{outputs}}}\n"


def join(how: str) -> Operator:
    return Operator(
        text=(
            "name: op\ninputs: {l: l, r: r}\nstages:\n"
            f"  joined: {{from: l, join: {{right: r, on: [day, k], how: {how}}}}}\n"
            f"outputs: {{joined: joined_{how}}}\n"
        ),
        inputs=("l", "r"),
        kinds={"joined": {"apply"}},
        bounds=lambda depth: {("joined", "apply"): 1},
        check=check_join(how),
    )


OPERATORS: dict[str, Operator] = {
    "count_distinct": Operator(
        text=one_input(
            "  per_g: {from: t, group_by: [g], aggregate: "
            "{rows: count(), nx: count_distinct(x), ny: count_distinct(y)}}",
            "per_g: per_g",
        ),
        inputs=("t",),
        kinds={"per_g": {"partial", "combine", "finish"}},
        bounds=tree("per_g"),
        check=check_distinct,
    ),
    "sketches": Operator(
        text=one_input(
            "  per_g: {from: t, group_by: [g], aggregate: {u: approx_count_distinct(x), "
            'm: approx_median(y), p90: "approx_quantile(y, 0.9)"}}',
            "per_g: per_g",
        ),
        inputs=("t",),
        kinds={"per_g": {"partial", "combine", "finish"}},
        bounds=tree("per_g"),
        check=check_sketches,
    ),
    "top_n": Operator(
        text=one_input(
            "  ranked: {from: t, sort: [-y, id]}\n  first: {from: ranked, limit: 5}",
            "first: top",
        ),
        inputs=("t",),
        kinds={"ranked": {"partial", "combine"}, "first": {"whole"}},
        bounds=lambda depth: {
            ("ranked", "partial"): 1,
            ("ranked", "combine"): depth,
            ("first", "whole"): 1,
        },
        check=check_top,
    ),
    "union": Operator(
        text=(
            "name: op\ninputs: {a: a, b: b}\nstages:\n  both: {from: a, union: [b]}\n"
            "outputs: {both: both}\n"
        ),
        inputs=("a", "b"),
        kinds={"both": {"apply"}},
        bounds=lambda depth: {("both", "apply"): 1},
        check=check_union,
    ),
    **{f"join_{how}": join(how) for how in SQL_JOIN},
    "window": Operator(
        text=one_input(
            "  rolled:\n    from: t\n    window:\n      partition_by: g\n      order_by: day\n"
            "      range: {preceding: 2, following: 1}\n"
            "      columns: {s: sum(x), n: count(), m: mean(y)}",
            "rolled: rolled",
        ),
        inputs=("t",),
        kinds={"rolled": {"apply"}},
        bounds=lambda depth: {("rolled", "apply"): 4},  # the halo: 1 + 2 preceding + 1 following
        check=check_window,
    ),
    "median": Operator(
        text=one_input("  med: {from: t, group_by: [g], aggregate: {m: median(y)}}", "med: med"),
        inputs=("t",),
        kinds={"med": {"whole"}},
        bounds=lambda depth: {("med", "whole"): 1},  # one task, but over every slice
        check=check_median,
        note="stage 'med': median does not decompose into per-slice partials; it runs on the "
        "whole input and is not incremental",
    ),
}

# -- the steps ---------------------------------------------------------------------------------


@pytest.fixture
def stores() -> Iterator[Callable[[], cb.Store]]:
    """A factory of fresh ``memory://`` stores, emptied afterwards."""
    made: list[str] = []

    def make() -> cb.Store:
        made.append(f"memory://incremental-{uuid.uuid4().hex}")
        return cb.Store(made[-1])

    yield make
    fs = fsspec.filesystem("memory")
    for url in made:
        if fs.exists(url):
            fs.rm(url, recursive=True)


def computed(store: cb.Store, result: cb.run.runner.RunResult) -> dict[tuple[str, str], int]:
    """The run record's computed tasks, counted by (stage, kind)."""
    record = json.loads(store.storage.read_bytes(f"runs/{result.run_id}.json"))
    counts: dict[tuple[str, str], int] = {}
    for task in record["tasks"]:
        if task.get("outcome") == "computed":
            key = (task["stage"], task["kind"])
            counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.mark.parametrize("slices", [84, pytest.param(2526, marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", list(OPERATORS))
def test_append_insert_and_replace_cost_o1_and_end_as_a_cold_run(
    stores: Callable[[], cb.Store], name: str, slices: int
) -> None:
    op = OPERATORS[name]
    blueprint = cb.Blueprint.from_yaml(op.text)
    first, last = op.inputs[0], op.inputs[-1]
    gap, replaced = 6 * (slices // 12), 6 * (slices // 18) + 2  # kept by every dataset
    days = [d for d in range(slices) if d != gap]
    data = {ds: rows(ds, days_of(ds, days)) for ds in op.inputs}
    store = stores()
    for ds, frame in data.items():
        store.freeze(ds, frame, slice_by="day")
    plan = blueprint.plan(store).plan
    for stage, kinds in op.kinds.items():
        assert {t.kind for t in plan.tasks.values() if t.stage == stage} == kinds, stage
    if op.note is not None:
        assert op.note in plan.notes
        (whole,) = [t for t in plan.tasks.values() if t.stage == "med"]
        assert len(whole.deps) == len(days)  # the one task reads every slice
    blueprint.run(store, scheduler="sync")
    op.check(store, data)

    steps = {  # each lifts a row to the top; the replaced day's ties the appended day's
        "appended": (first, slices, lifted(rows(first, [slices]), 1000.0)),
        "inserted": (last, gap, lifted(rows(last, [gap]), 999.0)),
        "replaced": (first, replaced, lifted(rows(first, [replaced], version=1), 1000.0)),
    }
    for step, (ds, day, frame) in steps.items():
        store.freeze(ds, frame, slice_by="day")
        kept = data[ds][data[ds]["day"] != day]
        data[ds] = pd.concat([kept, frame], ignore_index=True).sort_values("day", kind="stable")
        result = blueprint.run(store, scheduler="sync")

        depth = math.ceil(math.log2(slices + 1)) + 2
        bounds = op.bounds(depth)
        done = computed(store, result)
        over = {key: n for key, n in done.items() if n > bounds.get(key, 0)}
        assert not over, (step, done, bounds)
        op.check(store, data)

        cold = stores()
        for dataset, rows_now in data.items():
            cold.freeze(dataset, rows_now, slice_by="day")
        assert blueprint.run(cold, scheduler="sync").snapshots == result.snapshots, step
