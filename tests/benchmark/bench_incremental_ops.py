#!/usr/bin/env python
"""The incremental operators (issue 18): one new slice against a cold run, whole processes.

Run it from the repository root, with the project's venv active::

    flock /tmp/chanbatch-bench.lock python tests/benchmark/bench_incremental_ops.py \\
        --out docs/performance.md

For each item below, over TPC-H lineitem frozen in day slices (``--slice-by l_shipdate``,
2,525 at SF 0.1, the default ``--sf``), each figure the wall time of a whole process (median of
``--repeat`` rounds, default 3):

``cold``
    ``chanbatch run ITEM.yaml --store COPY --json`` on a new store of hard links to the frozen
    data (nothing cached).
``one new slice``
    the same blueprint on a store that holds every day but one (1998-08-31 at SF 0.1, the last
    day of the last full month) and was run once; the missing day is frozen into a hard-link
    copy of it with ``chanbatch snapshot freeze DATASET PIECE --slice-by l_shipdate`` (one
    process per dataset the blueprint reads, timed apart), then ``run`` is timed. The store then
    holds exactly the cold run's rows, so its output must equal the cold run's.
``DuckDB``
    ``python -c "import duckdb; duckdb.sql(SQL).fetchall()"`` answering the same query from
    scratch over the same rows as Parquet (one file; the union and the join read two).

The items (their blueprints are in ``ITEMS`` below, written next to the prepared data):

``count_distinct``   exact ``count_distinct(l_partkey)`` per (returnflag, linestatus);
``approx_distinct``  ``approx_count_distinct(l_orderkey)`` (HyperLogLog), same groups;
``approx_median``    ``approx_median(l_extendedprice)`` (t-digest), same groups;
``top_n``            a ``sort`` on (-l_extendedprice, l_orderkey, l_linenumber) read only by a
                     ``limit: 10`` (top-N);
``union``            lineitem split by l_orderkey parity into two datasets, both frozen by day,
                     unioned and summed per group;
``join``             lineitem joined (inner) with a per-day table keyed by l_shipdate, both
                     frozen by day (a co-sliced join), summed per group;
``window``           a per-day aggregate (``per_slice``) per l_returnflag, then a 7-day rolling
                     sum over it (a ``window`` whose range frame reaches 6 days back over the
                     slicing column: each day reads its halo of the 6 days before it).

Every answer is checked before any timing against DuckDB in this process over the same rows:
exact items equal (floats within a relative 1e-9); ``approx_count_distinct`` within 4.9% of the
exact count and the t-digest median's rank within 1% of 0.5, the bounds docs/blueprints.md
section 4 documents. The one-new-slice run's output must equal the cold run's, and every
timed run must give the output snapshot its checked run gave. The DuckDB process's answer is
checked too (its approximations against the same bounds). A failed check stops the benchmark
(exit 1) and writes nothing. The runs' JSON stats give the tasks each computed.

The checking round is the first timed round: before it, every blueprint has run once on the
store missing a day (the untimed run the one-new-slice copies start from), which warms the
processes' bytecode and the page cache, and DuckDB runs once untimed. The ``--repeat - 1``
rounds after it rotate the order of the processes. ``--quick`` (the smoke test) keeps the
days from 1998-07-01 on (about 150 slices; ``--from DATE`` sets another first day) and runs one
round.

Data preparation, stores and process timing are ``bench_slices.py``'s (TPC-H lineitem from
``tpchgen-cli`` cached under ``--cache``, decimals as float64); the prepared data and stores are
kept under ``--cache``, stamped with chanbatch's format and engine versions.

This file is not a test: ``tests/benchmark/conftest.py`` keeps pytest from collecting it;
``test_bench_incremental_smoke.py`` runs it small.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bench_q1
import bench_slices as bs
from benchkit import REPO, ensure_lineitem, fmt_samples, median, write_section

SECTION = "Incremental operators (issue 18)"
BEGIN = "<!-- bench_incremental_ops.py: generated, begin -->"
END = "<!-- bench_incremental_ops.py: generated, end -->"
RECIPE = 1  # bump when the prepared data or stores below change
KEY = "l_shipdate"
GOAL = 0.05  # one new slice, x the cold run (issue 18)
RTOL = 1e-9
HLL_BOUND = 0.049  # relative, docs/blueprints.md section 4
RANK_BOUND = 0.01  # the median's rank, from 0.5
GROUP = ["l_returnflag", "l_linestatus"]

# The datasets of the prepared store, each frozen by l_shipdate.
DATASETS = ("lineitem", "lineitem_a", "lineitem_b", "days")


@dataclass(frozen=True, slots=True)
class Item:
    name: str
    label: str
    reads: tuple[str, ...]  # the datasets the blueprint reads: each gets the new day
    blueprint: str
    output: str  # the output dataset
    sql: str  # DuckDB's query, over {lineitem}, {a}, {b}, {days}
    check: str  # "exact"; "hll": `orders` near count(DISTINCT); "tdigest": `price`'s rank


def _agg_sql(select: str, source: str = "read_parquet('{lineitem}')") -> str:
    return (
        f"SELECT l_returnflag, l_linestatus, {select} FROM {source} "
        "GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus"
    )


def _grouped(name: str, aggregates: str) -> str:
    return f"""\
name: inc_{name}
inputs:
  lineitem: lineitem
stages:
  grouped:
    from: lineitem
    group_by: [l_returnflag, l_linestatus]
    aggregate: {{{aggregates}}}
outputs:
  grouped: inc_{name}
"""


ITEMS = (
    Item(
        "count_distinct",
        "`count_distinct(l_partkey)` per group (exact)",
        ("lineitem",),
        _grouped("count_distinct", "parts: count_distinct(l_partkey)"),
        "inc_count_distinct",
        _agg_sql("count(DISTINCT l_partkey) AS parts"),
        "exact",
    ),
    Item(
        "approx_distinct",
        "`approx_count_distinct(l_orderkey)` per group (HLL)",
        ("lineitem",),
        _grouped("approx_distinct", "orders: approx_count_distinct(l_orderkey)"),
        "inc_approx_distinct",
        _agg_sql("approx_count_distinct(l_orderkey) AS orders"),
        "hll",
    ),
    Item(
        "approx_median",
        "`approx_median(l_extendedprice)` per group (t-digest)",
        ("lineitem",),
        _grouped("approx_median", "price: approx_median(l_extendedprice)"),
        "inc_approx_median",
        _agg_sql("approx_quantile(l_extendedprice, 0.5) AS price"),
        "tdigest",
    ),
    Item(
        "top_n",
        "top-N: `sort` [-l_extendedprice, l_orderkey, l_linenumber] read only by `limit: 10`",
        ("lineitem",),
        """\
name: inc_top_n
inputs:
  lineitem: lineitem
stages:
  ranked:
    from: lineitem
    sort: [-l_extendedprice, l_orderkey, l_linenumber]
  top:
    from: ranked
    limit: 10
outputs:
  top: inc_top_n
""",
        "inc_top_n",
        "SELECT * FROM read_parquet('{lineitem}') "
        "ORDER BY l_extendedprice DESC, l_orderkey, l_linenumber LIMIT 10",
        "exact",
    ),
    Item(
        "union",
        "`union` of two datasets sliced by day (lineitem split by l_orderkey parity), "
        "then count and sum per group",
        ("lineitem_a", "lineitem_b"),
        # The selects before the union are a workaround: a union read by an aggregate that
        # needs only some columns fails (KeyError: a part is loaded without the other columns).
        """\
name: inc_union
inputs:
  a: lineitem_a
  b: lineitem_b
stages:
  a_cols: {from: a, select: [l_returnflag, l_linestatus, l_quantity]}
  b_cols: {from: b, select: [l_returnflag, l_linestatus, l_quantity]}
  both:
    from: a_cols
    union: [b_cols]
  grouped:
    from: both
    group_by: [l_returnflag, l_linestatus]
    aggregate: {n: count(), qty: sum(l_quantity)}
outputs:
  grouped: inc_union
""",
        "inc_union",
        _agg_sql(
            "count(*) AS n, sum(l_quantity) AS qty",
            "(SELECT * FROM read_parquet('{a}') UNION ALL SELECT * FROM read_parquet('{b}'))",
        ),
        "exact",
    ),
    Item(
        "join",
        "co-sliced inner `join` of lineitem with a per-day table on l_shipdate, both sliced "
        "by day, then count and sum per group",
        ("lineitem", "days"),
        """\
name: inc_join
inputs:
  lineitem: lineitem
  days: days
stages:
  joined:
    from: lineitem
    join: {right: days, on: l_shipdate}
  grouped:
    from: joined
    group_by: [l_returnflag, l_linestatus]
    aggregate: {n: count(), value: sum(l_extendedprice * rate)}
outputs:
  grouped: inc_join
""",
        "inc_join",
        _agg_sql(
            "count(*) AS n, sum(l_extendedprice * rate) AS value",
            "read_parquet('{lineitem}') JOIN read_parquet('{days}') USING (l_shipdate)",
        ),
        "exact",
    ),
    Item(
        "window",
        "7-day rolling `window` (range 6 days preceding, over the slicing column) of a per-day "
        "aggregate, per l_returnflag",
        ("lineitem",),
        """\
name: inc_window
inputs:
  lineitem: lineitem
stages:
  daily:
    from: lineitem
    per_slice: true
    group_by: [l_shipdate, l_returnflag]
    aggregate: {qty: sum(l_quantity), n: count()}
  weekly:
    from: daily
    window:
      partition_by: l_returnflag
      order_by: l_shipdate
      range: {preceding: 6 days}
      columns: {week_qty: sum(qty), week_n: sum(n)}
outputs:
  weekly: inc_window
""",
        "inc_window",
        "WITH daily AS (SELECT l_shipdate, l_returnflag, sum(l_quantity) AS qty, count(*) AS n "
        "FROM read_parquet('{lineitem}') GROUP BY l_shipdate, l_returnflag) "
        "SELECT l_shipdate, l_returnflag, qty, n, sum(qty) OVER w AS week_qty, "
        "sum(n) OVER w AS week_n FROM daily WINDOW w AS (PARTITION BY l_returnflag "
        "ORDER BY l_shipdate RANGE BETWEEN INTERVAL 6 DAYS PRECEDING AND CURRENT ROW) "
        "ORDER BY l_shipdate, l_returnflag",
        "exact",
    ),
)
NAMES = tuple(i.name for i in ITEMS)


# -- data -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Data:
    root: Path
    files: dict[str, Path]  # dataset -> every row, one Parquet file
    pieces: dict[str, Path]  # dataset -> the new day's rows
    full: Path  # every dataset, every day
    base: Path  # every dataset, every day but the new one
    day: dt.date
    slices: int
    rows: int
    day_rows: int
    seconds: float = 0.0  # preparing (0 when cached)


def tables(source: Path, since: dt.date | None) -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    lineitem = bench_q1.prepared_table(source)
    if since is not None:
        lineitem = lineitem.filter(pc.greater_equal(lineitem[KEY], since))
    odd = pc.equal(pc.bit_wise_and(lineitem["l_orderkey"], 1), 1)
    days = pc.unique(lineitem[KEY]).sort()
    rate = 1.0 + (np.arange(len(days)) % 7) / 100.0  # a per-day factor
    return {
        "lineitem": lineitem,
        "lineitem_a": lineitem.filter(odd),
        "lineitem_b": lineitem.filter(pc.invert(odd)),
        "days": pa.table({KEY: days, "rate": pa.array(rate, pa.float64())}),
    }


def prepare(args: argparse.Namespace, source: Path) -> Data:
    """The Parquet files, the new day's pieces and the two stores, built once under --cache."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    import chanbatch as cb

    started = time.perf_counter()
    since = f"-from-{args.since}" if args.since else ""
    root = bs.stamped_root(
        args.cache / f"incremental-sf{args.sf:g}{since}",
        bs.stamp({"source": source.stat().st_size, "incremental recipe": RECIPE}),
    )
    cache: dict[str, Any] = {}

    def table(name: str) -> Any:
        if not cache:
            cache.update(tables(source, args.since))
        return cache[name]

    meta_file = root / "meta.json"
    if not meta_file.exists():
        lineitem = table("lineitem")
        day = bs.append_key(lineitem, KEY)
        meta = {
            "day": day.isoformat(),
            "slices": len(pc.unique(lineitem[KEY])),
            "rows": lineitem.num_rows,
            "day rows": int(pc.sum(pc.equal(lineitem[KEY], day)).as_py()),
        }
        meta_file.write_text(json.dumps(meta))
    meta = json.loads(meta_file.read_text())
    day = dt.date.fromisoformat(meta["day"])

    def freeze_all(path: Path, keep: Callable[[Any], Any]) -> None:
        store = cb.Store(path)
        for name in DATASETS:
            t = table(name)
            store.freeze(name, t.filter(keep(t[KEY])), slice_by=KEY)

    files, pieces = {}, {}
    for name in DATASETS:
        files[name] = bs.built(
            root / f"{name}.parquet", lambda p, n=name: pq.write_table(table(n), p)
        )
        pieces[name] = bs.built(
            root / f"{name}-piece.parquet",
            lambda p, n=name: pq.write_table(table(n).filter(pc.equal(table(n)[KEY], day)), p),
        )
    full = bs.built(root / "full", lambda p: freeze_all(p, lambda c: pc.is_valid(c)))
    base = bs.built(root / "base", lambda p: freeze_all(p, lambda c: pc.not_equal(c, day)))
    seconds = time.perf_counter() - started if cache else 0.0
    return Data(
        root,
        files,
        pieces,
        full,
        base,
        day,
        meta["slices"],
        meta["rows"],
        meta["day rows"],
        seconds,
    )


# -- answers ----------------------------------------------------------------------------------


def sql_of(item: Item, data: Data, exact: bool = False) -> str:
    """DuckDB's query of ``item`` over the data's files; with ``exact``, the exact query an
    approximate item is checked against."""
    sql = item.sql
    if exact and item.check == "hll":
        sql = sql.replace("approx_count_distinct(", "count(DISTINCT ")
    f = data.files
    return sql.format(lineitem=f["lineitem"], a=f["lineitem_a"], b=f["lineitem_b"], days=f["days"])


def duckdb_rows(sql: str) -> list[dict[str, Any]]:
    import duckdb

    with duckdb.connect() as con:
        cur = con.execute(sql)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(float(a) - float(b)) <= RTOL * abs(float(b))
    return bool(a == b) or str(a) == str(b)


class Checker:
    """An item's reference answer (DuckDB in this process) and its checks."""

    def __init__(self, item: Item, data: Data) -> None:
        self.item, self.data = item, data
        self.want = duckdb_rows(sql_of(item, data, exact=True))
        self.errors: list[str] = []  # the approximations' errors, as text

    def check(self, what: str, got: list[dict[str, Any]]) -> None:
        item, want = self.item, self.want
        if len(got) != len(want):
            raise bs.CheckFailed(f"{item.name}, {what}: {len(got)} rows, DuckDB {len(want)}")
        value = {"hll": "orders", "tdigest": "price"}.get(item.check)
        errors = []
        for g, w in zip(got, want, strict=True):
            for column, expected in w.items():
                if column == value:
                    continue
                if column not in g or not close(g[column], expected):
                    raise bs.CheckFailed(
                        f"{item.name}, {what}: {column} is {g.get(column)!r}, DuckDB's "
                        f"{expected!r} (row {w})"
                    )
            if item.check == "hll":
                exact = w["orders"]
                error = abs(g["orders"] - exact) / exact
                errors.append(error)
                if error > HLL_BOUND:
                    raise bs.CheckFailed(
                        f"{item.name}, {what}: estimate {g['orders']} is {error:.2%} from the "
                        f"exact {exact} (bound {HLL_BOUND:.1%})"
                    )
            elif item.check == "tdigest":
                off = self.rank_error(g, float(g["price"]))
                errors.append(off)
                if off > RANK_BOUND:
                    raise bs.CheckFailed(
                        f"{item.name}, {what}: median {g['price']}'s rank is {off:.3%} from 0.5 "
                        f"(bound {RANK_BOUND:.0%}) in group {[g[k] for k in GROUP]}"
                    )
        if errors:
            self.errors.append(f"{what}: worst {max(errors):.3%}")

    def rank_error(self, row: dict[str, Any], estimate: float) -> float:
        """How far the estimate's rank among its group's values lies from 0.5: 0 when the
        ranks it spans (values below it, to values at or below it) include 0.5."""
        import duckdb

        sql = (
            "SELECT count(*) FILTER (WHERE l_extendedprice < $e), "
            "count(*) FILTER (WHERE l_extendedprice <= $e), count(l_extendedprice) "
            f"FROM read_parquet('{self.data.files['lineitem']}') "
            "WHERE l_returnflag = $f AND l_linestatus = $s"
        )
        with duckdb.connect() as con:
            params = {"e": estimate, "f": row["l_returnflag"], "s": row["l_linestatus"]}
            below, upto, n = con.execute(sql, params).fetchone()  # type: ignore[misc]
        lo, hi = below / n, upto / n
        return 0.0 if lo <= 0.5 <= hi else min(abs(lo - 0.5), abs(hi - 0.5))


def output_rows(run: bs.Run, dataset: str) -> list[dict[str, Any]]:
    import chanbatch as cb

    snapshot = run.doc["outputs"]
    ((_, out),) = snapshot.items()
    if out["dataset"] != dataset:
        raise bs.CheckFailed(f"the run wrote {out['dataset']}, not {dataset}")
    return cb.Store(run.store).read_table(f"{dataset}@{out['snapshot']}").to_pylist()


# -- measuring --------------------------------------------------------------------------------


def freeze_into(store: Path, dataset: str, piece: Path) -> float:
    cmd = [bs.cli(), "snapshot", "freeze", dataset, str(piece), "--slice-by", KEY]
    proc = bs.run_process([*cmd, "--store", str(store), "--json"])
    doc = json.loads(proc.stdout)
    if [s["new"] for s in doc["slices"]] != [True]:
        raise bs.CheckFailed(f"freezing {piece.name} into {store} did not add one new slice")
    return proc.seconds


def tasks(run: bs.Run) -> dict[str, tuple[int, int]]:
    """(computed, reused) per stage, from the run's JSON stats."""
    stages = run.doc["stats"]["stages"]
    return {k: (int(v["computed"]), int(v["reused"])) for k, v in stages.items()}


@dataclass(slots=True)
class Result:
    item: Item
    cold: list[float]
    new: list[float]
    duckdb: list[float]
    freeze: list[float]  # per round: the new day's freezes, summed
    cold_tasks: dict[str, tuple[int, int]]
    new_tasks: dict[str, tuple[int, int]]
    errors: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return median([n / c for n, c in zip(self.new, self.cold, strict=True)])

    @property
    def vs_duckdb(self) -> float:
        return median([n / d for n, d in zip(self.new, self.duckdb, strict=True)])

    @property
    def met(self) -> bool:
        return self.ratio <= GOAL

    def computed(self, which: str) -> int:
        return sum(c for c, _ in getattr(self, f"{which}_tasks").values())


def measure(item: Item, data: Data, args: argparse.Namespace, scratch: bs.Scratch) -> Result:
    blueprint = data.root / f"{item.name}.yaml"
    blueprint.write_text(item.blueprint)
    sql = sql_of(item, data)
    checker = Checker(item, data)
    print(f"\n{item.name}: {item.label}", flush=True)

    # untimed: the store missing the new day, run once; DuckDB once
    warm = bs.link_store(data.base, scratch.path(f"{item.name}-warm"))
    bs.chanbatch_run(warm, blueprint)
    if not args.quick:
        bs.python_process(bs.DUCKDB_PY, sql)

    # the checking round, also the first timed round
    def cold_run() -> bs.Run:
        return bs.chanbatch_run(
            bs.link_store(data.full, scratch.path(f"{item.name}-cold")), blueprint
        )

    freezes: list[float] = []

    def new_run() -> bs.Run:
        store = bs.link_store(warm, scratch.path(f"{item.name}-new"), everything=True)
        freezes.append(sum(freeze_into(store, d, data.pieces[d]) for d in item.reads))
        return bs.chanbatch_run(store, blueprint)

    cold = cold_run()
    cold_rows = output_rows(cold, item.output)
    checker.check("cold run", cold_rows)
    new = new_run()
    if output_rows(new, item.output) != cold_rows:
        raise bs.CheckFailed(f"{item.name}: the run after one new slice differs from the cold run")
    checker.check("one new slice", output_rows(new, item.output))
    proc = bs.python_process(bs.DUCKDB_PY, sql)
    printed = json.loads(proc.stdout)
    names = list(checker.want[0]) if checker.want else []
    duck_rows = [dict(zip(names, row, strict=True)) for row in printed]
    try:
        checker.check(
            "DuckDB process", [_typed(r, w) for r, w in zip(duck_rows, checker.want, strict=False)]
        )
    except bs.CheckFailed as exc:
        if item.check == "exact":
            raise
        checker.errors.append(f"DuckDB's own approximation out of chanbatch's bound: {exc}")
    print(
        "  checked: cold = DuckDB, one new slice = cold, DuckDB process = DuckDB"
        + (f" ({'; '.join(checker.errors)})" if checker.errors else ""),
        flush=True,
    )
    for run in (cold, new):
        bs.drop(run.store)
    samples = {"cold": [cold.seconds], "new": [new.seconds], "duckdb": [proc.seconds]}

    def cold_once() -> float:
        run = cold_run()
        if run.snapshot != cold.snapshot:
            raise bs.CheckFailed(f"{item.name}: a timed cold run gave another output")
        bs.drop(run.store)
        return run.seconds

    def new_once() -> float:
        run = new_run()
        if run.snapshot != new.snapshot:
            raise bs.CheckFailed(f"{item.name}: a timed one-new-slice run gave another output")
        bs.drop(run.store)
        return run.seconds

    steps = {
        "cold": cold_once,
        "new": new_once,
        "duckdb": lambda: bs.python_process(bs.DUCKDB_PY, sql).seconds,
    }
    for name, values in bs.timed_rounds(args.repeat - 1, steps).items():
        samples[name] += values
    bs.drop(warm)
    result = Result(
        item,
        samples["cold"],
        samples["new"],
        samples["duckdb"],
        freezes,
        tasks(cold),
        tasks(new),
        checker.errors,
    )
    print(
        f"  cold {median(result.cold):.3f} s, one new slice {median(result.new):.3f} s "
        f"({result.ratio:.3f}× cold, target ≤ {GOAL:g}: {'met' if result.met else 'MISSED'}), "
        f"DuckDB {median(result.duckdb):.3f} s; tasks computed {result.computed('new')} of "
        f"{result.computed('cold')}",
        flush=True,
    )
    return result


def _typed(printed: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    """A row the DuckDB process printed (JSON, dates as text) with the reference's types."""
    out = {}
    for k, v in printed.items():
        w = want.get(k)
        out[k] = dt.date.fromisoformat(v) if isinstance(w, dt.date) and isinstance(v, str) else v
    return out


# -- the doc ----------------------------------------------------------------------------------


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:.1f} s"


def table_markdown(results: Sequence[Result]) -> list[str]:
    lines = [
        "| item | cold | one new slice | new ÷ cold (target ≤ 0.05) | met | DuckDB from scratch "
        "| new ÷ DuckDB | tasks computed, new / cold | new day's freeze (apart) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.item.label} | {fmt_s(median(r.cold))} | {fmt_s(median(r.new))} "
            f"| {bs.fmt_x(r.ratio)} | {'yes' if r.met else '**no**'} | {fmt_s(median(r.duckdb))} "
            f"| {bs.fmt_x(r.vs_duckdb)} | {r.computed('new'):,} / {r.computed('cold'):,} "
            f"| {fmt_s(median(r.freeze))} |"
        )
    return lines


def details(results: Sequence[Result]) -> list[str]:
    lines = []
    for r in results:
        per_stage = ", ".join(
            f"{s} {c}/{r.cold_tasks.get(s, (0, 0))[0]} (reused {u})"
            for s, (c, u) in r.new_tasks.items()
        )
        lines.append(
            f"- {r.item.name}: cold s {fmt_samples(r.cold)}; one new slice s {fmt_samples(r.new)}; "
            f"DuckDB s {fmt_samples(r.duckdb)}; freezes s {fmt_samples(r.freeze)}; "
            f"tasks computed per stage, new/cold: {per_stage}"
            + (f"; approximation error: {'; '.join(r.errors)}" if r.errors else "")
        )
    return lines


def section_markdown(
    command: str,
    facts: list[tuple[str, str]],
    results: Sequence[Result],
    data: Data,
    args: argparse.Namespace,
    notes: list[str],
) -> str:
    met = sum(r.met for r in results)
    lines = [
        f"Command (from the repository root, venv active): `{command}`",
        "",
        f"TPC-H lineitem SF{args.sf:g} ({data.rows:,} rows"
        + (f", the days from {args.since} on" if args.since else "")
        + f"), frozen in {data.slices:,} day "
        f"slices (`--slice-by l_shipdate`). Each item's blueprint runs cold (a fresh store, "
        f"nothing cached), and after one new day ({data.day}, {data.day_rows:,} lineitem rows) "
        f"is frozen into a store holding every other day, run once. {met} of {len(results)} "
        f"items met the target (one new slice ≤ {GOAL:g}× its cold run). Every figure is the "
        "wall time of a whole process, the median of rounds; a ratio is the median of per-round "
        "ratios. DuckDB answers the same query from scratch over the same rows as Parquet.",
        "",
        *table_markdown(results),
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in facts],
        "",
        *[f"- {n}" for n in notes],
        "",
        "### Method and samples",
        "",
        "- Blueprints: `ITEMS` in the script; every aggregate groups by "
        "(l_returnflag, l_linestatus). The union's parts are lineitem's odd and even orders, "
        "frozen as two datasets; the join's right side is a table of one row per day "
        "(l_shipdate, rate), frozen by day too. The union reads its parts through a `select` "
        "each (see the notes above). The new day is frozen into every dataset the blueprint "
        "reads (one `snapshot freeze` process each; their sum is the freeze column).",
        (
            "- `--quick`: one round, the checking round (a smoke, not figures)."
            if args.quick
            else f"- {args.repeat} rounds; the first is the checking round, run after every "
            "blueprint had run once on the store missing the day (untimed) and DuckDB once; "
            "the order of the processes rotates in the rounds after it."
        )
        + " Processes run with `PYTHONDONTWRITEBYTECODE` unset.",
        "- Answers checked before timing: each cold run's output against DuckDB over the same "
        "rows (floats within 1e-9 relative; `approx_count_distinct` within 4.9% of the exact "
        "count; the t-digest median's rank within 1% of 0.5); each one-new-slice output equal "
        "to its cold run's; every timed run's output snapshot equal to its checked run's.",
        "- Tasks computed: the `stats` of `chanbatch run --json`, summed over the stages; "
        "per stage below (new/cold).",
        *details(results),
    ]
    return "\n".join(lines).rstrip() + "\n"


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--sf", type=float, default=0.1, help="TPC-H scale factor (default 0.1)")
    p.add_argument("--repeat", type=int, help="timed rounds (default 3; --quick 1)")
    p.add_argument("--items", default=",".join(NAMES), help=f"comma list of {','.join(NAMES)}")
    p.add_argument("--out", type=Path, help="write the section into this markdown file")
    p.add_argument("--cache", type=Path, default=REPO / ".bench", help="data + scratch folder")
    p.add_argument(
        "--from",
        dest="since",
        type=dt.date.fromisoformat,
        help=f"keep the days from this one on (default all; --quick {bs.QUICK_DAYS_FROM})",
    )
    p.add_argument("--quick", action="store_true", help="the smoke: fewer days, one round")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = p.parse_args(argv)
    args.repeat = max(1, args.repeat if args.repeat is not None else (1 if args.quick else 3))
    if args.quick and args.since is None:
        args.since = bs.QUICK_DAYS_FROM
    args.items = [s.strip() for s in args.items.split(",") if s.strip()]
    unknown = set(args.items) - set(NAMES)
    if unknown:
        p.error(f"unknown items {sorted(unknown)}; choose from {','.join(NAMES)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return bench(argv)[0]


def bench(argv: Sequence[str] | None = None) -> tuple[int, list[Result]]:
    """Measure the items asked for; the exit code (1: a check failed) and the results."""
    args = parse_args(argv)
    given = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["python", "tests/benchmark/bench_incremental_ops.py", *given])
    args.cache.mkdir(parents=True, exist_ok=True)
    source = ensure_lineitem(args.sf, args.cache)
    facts = bs.machine_facts()
    fingerprint = bench_q1.source_fingerprint()
    started = time.perf_counter()
    data = prepare(args, source)
    print(
        f"lineitem SF{args.sf:g}: {data.rows:,} rows in {data.slices:,} day slices; the new day "
        f"{data.day} ({data.day_rows:,} rows)",
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="incremental-", dir=args.cache))
    scratch = bs.Scratch(workdir)
    results: list[Result] = []
    try:
        for item in ITEMS:
            if item.name in args.items:
                results.append(measure(item, data, args, scratch))
    except bs.CheckFailed as exc:
        print(f"\nANSWER CHECK FAILED, nothing written: {exc}", file=sys.stderr, flush=True)
        return 1, results
    except RuntimeError as exc:  # a process failed or hung
        print(f"\nA PROCESS FAILED, nothing written: {exc}", file=sys.stderr, flush=True)
        return 1, results
    finally:
        if not args.keep:
            bs.drop(workdir)
    notes = [
        f"This run took {(time.perf_counter() - started) / 60:.1f} min, of which "
        f"{data.seconds:.0f} s preparing data and stores (0 when cached).",
        "The union's blueprint reads each part through a `select` of the columns its aggregate "
        "needs: without them, a union read by an aggregate that needs only some of the columns "
        "fails (`KeyError: 'Field \"l_orderkey\" does not exist in schema'`).",
    ]
    if bench_q1.source_fingerprint() != fingerprint:
        notes.append(
            "chanbatch's source files changed during this run, so processes ran different code; "
            "run it again."
        )
    facts.append(("load average at end", bench_q1.load_average()))
    print("\n" + "\n".join(table_markdown(results)))
    for note in notes:
        print("note:", note)
    if args.out is not None:
        body = section_markdown(command, facts, results, data, args, notes)
        write_section(args.out, body, section=SECTION, begin=BEGIN, end=END, header=bs.DOC_HEADER)
        print(f"\nwrote section '{SECTION}' of {args.out}")
    return 0, results


if __name__ == "__main__":
    sys.exit(main())
