#!/usr/bin/env python
"""Slices as users run them (issue 17): every figure a whole process, against DuckDB and Polars.

Run it from the repository root, with the project's venv active::

    python tests/benchmark/bench_slices.py --sf 1 --repeat 5 --out docs/performance.md

What it measures, each figure the wall time of a whole process (``subprocess`` of the
``chanbatch`` console script beside this interpreter, or of ``python -c``), the median of
``--repeat`` rounds whose order rotates; a ratio is the median of the per-round ratios:

``month``
    TPC-H Q1 (``tests/benchmark/q1.yaml``) over lineitem frozen in month slices: ``chanbatch run``
    cold (a fresh store of hard links to the objects, nothing cached), after one new month is
    appended (the 69,317 rows of 1998-08 at SF1 onto every earlier month, already run once;
    the freeze of the new month is a process timed apart), and a no-op rerun. Ratios are to
    DuckDB answering Q1 from scratch over the same rows as one Parquet file
    (``python -c "import duckdb; duckdb.sql(Q1).fetchall()"``); Polars does the same
    (``pl.scan_parquet(F)...collect()``) beside it. The no-op process is also run once under
    ``python -X importtime`` to see whether it imports pandas or ``dask.dataframe``.
``day``
    the same, sliced by ``l_shipdate`` (2,526 day slices at SF1); the new slice is the last day
    of that month (1998-08-31, 1,921 rows at SF1).
``decimal``
    the month shape cold on the decimal columns as tpchgen-cli writes them (decimal128(15, 2)),
    against the same cold run on float64; its sums must equal DuckDB's decimal sums exactly.
``backfill``
    one slice inserted first, in the middle, or last, into a store holding every other slice
    (already run once): its run against an append's, and how many combine tasks it recomputed
    against the combines on that slice's path to the root (from the run record in ``runs/``).
``100k``
    a synthetic dataset of ``--slices-100k`` int slices of 10 rows and a sum/count group-by:
    the no-op run, one new slice, and the peak RSS of ``chanbatch plan --json``, against budgets
    (1 s, 2 s, 500 MB). The frozen and run store is built once and cached under ``--cache``,
    keyed by chanbatch's store format and engine version; its build time is reported apart.
``freeze``
    ``chanbatch snapshot freeze lineitem F --slice-by l_shipdate`` against DuckDB's
    ``COPY (SELECT * FROM read_parquet(F)) TO dir (FORMAT parquet, PARTITION_BY (l_shipdate))``,
    and its peak RSS against a process doing one ``pq.read_table`` + ``pq.write_table`` of F.
``cluster``
    the month shape's cold and one-new-slice runs on a running cluster of two single-threaded
    worker processes (``dask scheduler`` and two ``dask worker --nthreads 1``, started once, as
    a team keeps one; ``--scheduler tcp://...``), the targets' figures; its start-up, until both
    workers are registered, is reported apart. The same runs with ``--scheduler processes
    --workers 2``, where each run starts and closes its own ``LocalCluster``, are reported
    beside them, with what that start-up costs (a no-op run on it, and a process that starts
    and closes a 2-worker ``LocalCluster``).

Every answer is checked before any timing: chanbatch's output (read back with
``Store.read_pandas``/``read_table``) against DuckDB's Q1 over the same raw rows (floats with a
relative tolerance of 1e-9, decimal sums exactly, counts exactly), and so are the answers the
DuckDB and Polars processes print. A timed run must give the output snapshot its checked run
gave. A failed check stops the benchmark (exit 1) and writes nothing.

Processes run with ``PYTHONDONTWRITEBYTECODE`` unset (users' installs keep ``__pycache__``), and
the checking round before the timed ones is also their warm-up, so bytecode exists.

Data: TPC-H lineitem from ``tpchgen-cli``, prepared once under ``--cache`` (default ``.bench/``,
ignored by git) as ``bench_q1.py`` prepares it (decimals as float64, ``string_view`` as
``string``, an int key ``month`` = year * 100 + month of ``l_shipdate``), and a decimal copy that
keeps the decimals. ``--quick`` (the CI smoke) takes the checking round's own times as its one
round, backfills one middle month only, and cuts the day shapes to 1998-07-01 onwards, so that
they have about 150 slices.

This file is not a test: ``tests/benchmark/conftest.py`` keeps pytest from collecting it;
``test_bench_slices_smoke.py`` runs it small.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import bench_q1
from benchkit import REPO, Ratio, ensure_lineitem, find_tool, fmt_samples, median, version
from benchkit import write_section as _write_section

BLUEPRINT = REPO / "tests" / "benchmark" / "q1.yaml"
SECTION = "Slices as users run them (issue 17)"
BEGIN = "<!-- bench_slices.py: generated, begin -->"
END = "<!-- bench_slices.py: generated, end -->"
CHART = "slices.png"  # in img/ beside the doc
DOC_HEADER = "# Performance\n"
RECIPE = 1  # bump when the prepared data or stores below change
SHAPES = ("month", "day", "decimal", "backfill", "100k", "freeze", "cluster")
DATASET = "lineitem"
OUTPUT = "tpch_q1"
GROUP = bench_q1.GROUP
RESULT_COLUMNS = bench_q1.RESULT_COLUMNS
SUMS = ["sum_qty", "sum_base_price", "sum_disc_price", "sum_charge"]
RTOL = 1e-9
QUICK_DAYS_FROM = dt.date(1998, 7, 1)  # --quick: the day shapes from here on only
TIMEOUT = 1800.0  # seconds a process may take before it counts as hung

# Targets (issue 17).
APPEND_GOAL = 0.8  # one new slice, x DuckDB from scratch (0.1 at SF >= 10)
APPEND_GOAL_SF10 = 0.1
NOOP_GOAL = 0.5
COLD_GOAL = {"month": 3.0, "day": 4.0}
DECIMAL_GOAL = 1.3  # x the float64 cold run
BACKFILL_GOAL = 1.2  # x an append
BUDGET_100K = {"noop": 1.0, "append": 2.0, "plan_mb": 500.0}
FREEZE_GOAL = 1.0  # x DuckDB COPY ... PARTITION_BY
FREEZE_MEMORY_GOAL = 1.3  # x read_table + write_table

# The figures, before this work (SF1, 2 cores), keyed by figure id.
BEFORE = {
    "month cold": "1.9 s, 6.5×",
    "month append": "1.24 s, 2.8×",
    "month noop": "0.25 s, 0.9×",
    "day cold": "17.2 s, 50×",
    "day append": "1.73 s, 5×",
    "day noop": "0.45 s, 1.3×",
    "decimal ratio": "9× the float64 run",
    "decimal duckdb": "22 s, 58×",
    "freeze duckdb": "1.44×",
    "freeze rw": "2.85×",
}

Q1_SQL = """
SELECT l_returnflag, l_linestatus,
       sum(l_quantity) AS sum_qty,
       sum(l_extendedprice) AS sum_base_price,
       sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price,
       sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge,
       avg(l_quantity) AS avg_qty,
       avg(l_extendedprice) AS avg_price,
       avg(l_discount) AS avg_disc,
       count(*) AS count_order
FROM read_parquet('{path}')
WHERE l_shipdate <= DATE '1998-09-02'
GROUP BY l_returnflag, l_linestatus
ORDER BY l_returnflag, l_linestatus
"""

# Runs argv[2:] and writes its wall seconds, exit status and peak RSS to the file argv[1].
# posix_spawn does not copy this small process's memory into the child (which would count in
# its ru_maxrss); the child shares it until it execs, so at most this process's few MB count.
WRAP_PY = """\
import json, os, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.posix_spawnp(cmd[0], cmd, os.environ)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - started
with open(out, "w") as f:
    json.dump({"seconds": seconds, "status": os.waitstatus_to_exitcode(status),
               "max_rss_kb": usage.ru_maxrss}, f)
"""

DUCKDB_PY = """\
import json, sys
import duckdb
# no progress bar: under load a slow query would print one into the answer on stdout
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
rows = con.sql(sys.argv[1]).fetchall()
print(json.dumps(rows, default=str))
"""

POLARS_Q1_PY = """\
import datetime as dt, json, sys
import polars as pl
price = pl.col("l_extendedprice") * (1 - pl.col("l_discount"))
out = (
    pl.scan_parquet(sys.argv[1])
    .filter(pl.col("l_shipdate") <= dt.date(1998, 9, 2))
    .with_columns(disc_price=price, charge=price * (1 + pl.col("l_tax")))
    .group_by("l_returnflag", "l_linestatus")
    .agg(
        pl.col("l_quantity").sum().alias("sum_qty"),
        pl.col("l_extendedprice").sum().alias("sum_base_price"),
        pl.col("disc_price").sum().alias("sum_disc_price"),
        pl.col("charge").sum().alias("sum_charge"),
        pl.col("l_quantity").mean().alias("avg_qty"),
        pl.col("l_extendedprice").mean().alias("avg_price"),
        pl.col("l_discount").mean().alias("avg_disc"),
        pl.len().alias("count_order"),
    )
    .sort("l_returnflag", "l_linestatus")
    .collect()
)
print(json.dumps(out.rows(), default=str))
"""

DUCKDB_COPY_PY = """\
import sys
import duckdb
duckdb.sql(
    f"COPY (SELECT * FROM read_parquet('{sys.argv[1]}')) TO '{sys.argv[2]}' "
    "(FORMAT parquet, PARTITION_BY (l_shipdate))"
)
"""

READ_WRITE_PY = """\
import sys
import pyarrow.parquet as pq
pq.write_table(pq.read_table(sys.argv[1]), sys.argv[2])
"""

WAIT_WORKERS_PY = """\
import sys
from distributed import Client
with Client(sys.argv[1], timeout=60) as client:
    client.wait_for_workers(int(sys.argv[2]), timeout=120)
"""

CLUSTER_PY = """\
from distributed import Client, LocalCluster
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True)
client = Client(cluster)
client.close()
cluster.close()
"""

# The 100k shape: a synthetic dataset and a small blueprint over it.
MANY_KEY = "slice"
MANY_ROWS = 10  # per slice
MANY_BLUEPRINT = """\
name: many_slices
inputs:
  events: events
stages:
  per_kind:
    from: events
    group_by: [kind]
    aggregate: {n: count(), total: sum(v)}
outputs:
  per_kind: many_per_kind
"""
MANY_SQL = (
    "SELECT kind, count(*) AS n, sum(v) AS total FROM read_parquet('{path}') "
    "GROUP BY kind ORDER BY kind"
)
MANY_POLARS_PY = """\
import json, sys
import polars as pl
out = (
    pl.scan_parquet(sys.argv[1]).group_by("kind")
    .agg(pl.len().alias("n"), pl.col("v").sum().alias("total")).sort("kind").collect()
)
print(json.dumps(out.rows()))
"""


class CheckFailed(Exception):
    """An answer differs from DuckDB's, or a run did not do what the figure says it does."""


# -- results ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Figure:
    """One row of the table: chanbatch's samples, its baselines' samples, the ratio's."""

    shape: str  # the --shapes name that measured it
    label: str
    seconds: list[float]  # chanbatch's figure per round (MB for a memory figure)
    ratios: list[float]  # per round: chanbatch's figure over what `ratio_to` says
    ratio_to: str  # "DuckDB", "the float64 run", "an append", "budget 1 s", ...
    before: str = "—"  # the figure, before this work
    duckdb: list[float] = field(default_factory=list)
    polars: list[float] = field(default_factory=list)
    goal: float | None = None  # met when the ratio is <= goal (< with strict)
    target: str = "—"
    strict: bool = False
    also_ok: bool | None = None  # a second condition of the target (None: there is none)
    note: str = ""
    unit: str = "s"
    short: str = ""  # the chart's label, when the table's is long

    @property
    def x(self) -> float:
        return median(self.ratios)

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        ok = self.x < self.goal if self.strict else self.x <= self.goal
        return ok and self.also_ok is not False

    def ratio(self) -> Ratio:
        label = self.short or self.label
        return Ratio(label, self.x, self.goal, self.note, self.target, strict=self.strict)


@dataclass(slots=True)
class Report:
    figures: list[Figure] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)  # the answer checks that passed
    notes: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # markdown lines: method and samples
    chart: Path | None = None
    took: dict[str, float] = field(default_factory=dict)  # seconds per shape, preparing included

    def add(self, figure: Figure) -> None:
        self.figures.append(figure)
        verdict = {True: "met", False: "MISSED", None: "no target"}[figure.met]
        print(
            f"  {figure.label}: {fmt_value(median(figure.seconds), figure.unit)}, "
            f"{fmt_x(figure.x)} {figure.ratio_to} [{figure.target}: {verdict}] {figure.note}",
            flush=True,
        )
        baselines = [("DuckDB", figure.duckdb), ("Polars", figure.polars)]
        self.details.append(
            f"- {figure.label}: chanbatch {figure.unit} {fmt_samples(figure.seconds)}; "
            + "".join(f"{name} s {fmt_samples(s)}; " for name, s in baselines if s)
            + f"ratios to {figure.ratio_to} {fmt_samples(figure.ratios)}"
        )

    def verify(self, what: str) -> None:
        self.verified.append(what)
        print(f"  checked: {what}", flush=True)


def fmt_x(x: float) -> str:
    return f"{x:.3f}×" if x < 0.1 else f"{x:.2f}×"


def fmt_value(value: float, unit: str) -> str:
    if unit == "MB":
        return f"{value:,.0f} MB"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def rotate(items: list[str], n: int) -> list[str]:
    n %= len(items)
    return items[n:] + items[:n]


# -- processes --------------------------------------------------------------------------------


@dataclass(slots=True)
class Proc:
    seconds: float
    max_rss_mb: float  # peak resident memory of the process (and not of its children)
    stdout: str
    stderr: str


def child_env() -> dict[str, str]:
    """The environment of every timed process: as the caller's, but writing bytecode."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_process(
    cmd: Sequence[str], env: dict[str, str] | None = None, timeout: float | None = None
) -> Proc:
    """Run ``cmd`` to its end: its wall seconds and its own peak RSS.

    It runs under a small wrapper process (``WRAP_PY``) that times it and reads its rusage:
    a child forked from this big benchmark process would count this process's memory in its
    own ``ru_maxrss``. A process still running after ``timeout`` seconds (default ``TIMEOUT``)
    is killed with its children, and that is an error: a hung run must not hang the benchmark.
    """
    env = child_env() if env is None else env
    limit = TIMEOUT if timeout is None else timeout
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile(suffix=".json") as measured,
    ):
        wrapped = [sys.executable, "-S", "-c", WRAP_PY, measured.name, *cmd]
        child = subprocess.Popen(wrapped, stdout=out, stderr=err, env=env, start_new_session=True)
        timer = threading.Timer(limit, _kill_group, (child.pid,))
        timer.start()
        try:
            child.wait()
        finally:
            timer.cancel()
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        text = Path(measured.name).read_text()
    if not text:
        raise RuntimeError(f"{shlex.join(cmd)} hung: killed after {limit:g} s:\n{stderr[-3000:]}")
    m = json.loads(text)
    if m["status"] != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited {m['status']}:\n{stderr[-3000:]}")
    return Proc(m["seconds"], m["max_rss_kb"] / 1024, stdout, stderr)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def cli() -> str:
    tool = find_tool("chanbatch")
    if tool is None:
        sys.exit("the chanbatch console script was not found: pip install -e .")
    return tool


@dataclass(slots=True)
class Run:
    """A ``chanbatch run --json`` process."""

    seconds: float
    doc: dict[str, Any]
    store: Path

    @property
    def snapshot(self) -> str:
        return str(next(iter(self.doc["outputs"].values()))["snapshot"])

    @property
    def computed(self) -> int:
        return int(self.doc["stats"]["computed"])

    def record(self) -> dict[str, Any]:
        return json.loads((self.store / "runs" / f"{self.doc['run']}.json").read_text())


def chanbatch_run(
    store: Path,
    blueprint: Path = BLUEPRINT,
    scheduler: str | None = None,
    timeout: float | None = None,
) -> Run:
    cmd = [cli(), "run", str(blueprint), "--store", str(store), "--json"]
    if scheduler is not None:
        cmd += ["--scheduler", scheduler, "--workers", "2"]
    proc = run_process(cmd, timeout=timeout)
    return Run(proc.seconds, json.loads(proc.stdout), store)


def freeze_process(store: Path, piece: Path, key: str) -> float:
    cmd = [cli(), "snapshot", "freeze", DATASET, str(piece), "--slice-by", key]
    proc = run_process([*cmd, "--store", str(store), "--json"])
    doc = json.loads(proc.stdout)
    if [s["new"] for s in doc["slices"]] != [True]:
        raise CheckFailed(f"freezing {piece.name} into {store} did not add one new slice: {doc}")
    return proc.seconds


def python_process(code: str, *argv: str) -> Proc:
    return run_process([sys.executable, "-c", code, *argv])


def link_store(src: Path, dst: Path, everything: bool = False) -> Path:
    """A new store of hard links to ``src``'s files: its data only, or with its cache too.

    chanbatch never writes a file in place, so the copy cannot change the original.
    """
    dirs = ("objects", "manifests", "refs")
    if everything:
        dirs += ("cache", "memo", "runs")
    return bench_q1.link_store(src, dst, dirs)


class Scratch:
    """Numbered folders under one scratch folder, each deleted when its measurement is done."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._n = 0

    def path(self, name: str) -> Path:
        self._n += 1
        return self.root / f"{name}-{self._n:04d}"


def drop(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def copy_store(src: Path, dst: Path) -> Path:
    """A new store holding copies (not links) of ``src``'s data: files of their own, whose
    pages :func:`evict` can drop without touching ``src``'s."""
    for name in ("objects", "manifests", "refs"):
        shutil.copytree(src / name, dst / name)
    return dst


def evict(path: Path) -> None:
    """Drop the file ``path``, or every file under it, from the page cache
    (``posix_fadvise(DONTNEED)``; a clean page goes, and no privilege is needed): the next read
    of it comes from the disk, as on a machine that has not read it lately."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# -- answers ----------------------------------------------------------------------------------


def q1_frame(rows: list[Any]) -> Any:
    import pandas as pd

    return pd.DataFrame([list(r) for r in rows], columns=RESULT_COLUMNS)


def duckdb_q1(path: Path) -> list[tuple[Any, ...]]:
    """DuckDB's Q1 over one Parquet file, in this process: the reference answer."""
    import duckdb

    with duckdb.connect() as con:
        return con.execute(Q1_SQL.format(path=path)).fetchall()


def same(name: str, got: Any, want_rows: list[Any], want_name: str) -> None:
    problem = bench_q1.compare(name, got, q1_frame(want_rows), want_name)
    if problem is not None:
        raise CheckFailed(problem)


def check_output(name: str, store: Path, snapshot: str, want_rows: list[Any]) -> None:
    import chanbatch as cb

    same(name, cb.Store(store).read_pandas(f"{OUTPUT}@{snapshot}"), want_rows, "DuckDB")


def check_decimal_output(store: Path, snapshot: str, want_rows: list[Any]) -> None:
    """Sums and counts equal DuckDB's decimal answer exactly; means within RTOL."""
    import chanbatch as cb

    table = cb.Store(store).read_table(f"{OUTPUT}@{snapshot}")
    got = sorted(table.select(RESULT_COLUMNS).to_pylist(), key=lambda r: tuple(r[k] for k in GROUP))
    want = [dict(zip(RESULT_COLUMNS, r, strict=True)) for r in want_rows]
    if len(got) != len(want):
        raise CheckFailed(f"decimal Q1: {len(got)} groups, DuckDB {len(want)}")
    for g, w in zip(got, want, strict=True):
        where = f"decimal Q1, group {w['l_returnflag']}{w['l_linestatus']}"
        if [g[k] for k in GROUP] != [w[k] for k in GROUP] or g["count_order"] != w["count_order"]:
            raise CheckFailed(f"{where}: {g} != DuckDB's {w}")
        for column in SUMS:
            if not isinstance(g[column], Decimal) or g[column] != w[column]:
                raise CheckFailed(
                    f"{where}: {column} is {g[column]!r}, DuckDB's exact sum {w[column]!r}"
                )
        for column in ("avg_qty", "avg_price", "avg_disc"):
            a, b = float(g[column]), float(w[column])
            if abs(a - b) > RTOL * abs(b):
                raise CheckFailed(f"{where}: {column} is {a!r}, DuckDB's {b!r}")


def check_baselines(
    report: Report, path: Path, want_rows: list[Any], what: str
) -> dict[str, float]:
    """Run the DuckDB and Polars processes once (a warm-up) and check what they print.

    Returns their seconds; without "polars" when Polars cannot answer (noted, not fatal).
    """
    proc = python_process(DUCKDB_PY, Q1_SQL.format(path=path))
    printed = json.loads(proc.stdout)
    same(f"the DuckDB process over {what}", q1_frame(printed), want_rows, "DuckDB in-process")
    report.verify(f"DuckDB process, Q1 over {what}")
    seconds = {"duckdb": proc.seconds}
    try:
        proc = python_process(POLARS_Q1_PY, str(path))
        same(f"Polars over {what}", q1_frame(json.loads(proc.stdout)), want_rows, "DuckDB")
    except (RuntimeError, CheckFailed) as exc:
        report.notes.append(f"Polars over {what}, not timed: {str(exc)[-300:]}")
        return seconds
    report.verify(f"Polars process, Q1 over {what}")
    return seconds | {"polars": proc.seconds}


def duckdb_seconds(path: Path) -> float:
    return python_process(DUCKDB_PY, Q1_SQL.format(path=path)).seconds


def polars_seconds(path: Path) -> float:
    return python_process(POLARS_Q1_PY, str(path)).seconds


def imports_of(store: Path) -> dict[str, bool]:
    """Whether a no-op ``chanbatch run`` process imports pandas or dask.dataframe."""
    cmd = [sys.executable, "-X", "importtime", cli(), "run", str(BLUEPRINT), "--store", str(store)]
    proc = run_process([*cmd, "--json"])
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip())
    return {name: name in names for name in ("pandas", "dask.dataframe", "pyarrow", "dask")}


def combine_path(record: dict[str, Any], slice_key: Any) -> tuple[int, int, int]:
    """From a run record: (combines recomputed, combines on ``slice_key``'s path to the root,
    depth of the combine tree)."""
    tasks = record["tasks"]
    combines = {t["key"]: t for t in tasks if t["kind"] == "combine"}
    parent: dict[str, str] = {}
    for t in combines.values():
        for dep in t["deps"]:
            parent[dep] = t["key"]
    partial = [t for t in tasks if t["kind"] == "partial" and str(t["slice"]) == str(slice_key)]
    if len(partial) != 1:
        raise CheckFailed(f"the run record has {len(partial)} partials of slice {slice_key}")
    path, node = 0, partial[0]["key"]
    while node in parent:
        node = parent[node]
        path += 1
    levels: dict[str, int] = {}

    def level(key: str) -> int:
        if key not in combines:
            return 0
        if key not in levels:
            levels[key] = 1 + max(level(d) for d in combines[key]["deps"])
        return levels[key]

    depth = max((level(k) for k in combines), default=0)
    computed = sum(1 for t in combines.values() if t.get("outcome") == "computed")
    return computed, path, depth


# -- data -------------------------------------------------------------------------------------


def stamp(extra: dict[str, Any]) -> dict[str, Any]:
    import pyarrow as pa

    from chanbatch.version import ENGINE_VERSION, FORMAT_VERSION

    return {
        "recipe": RECIPE,
        "format": FORMAT_VERSION,
        "engine": ENGINE_VERSION,
        "chanbatch": version("chanbatch"),
        "pyarrow": pa.__version__,
        "pandas": version("pandas"),
        **extra,
    }


def stamped_root(root: Path, want: dict[str, Any], rebuild: bool = False) -> Path:
    """``root``, emptied unless its stamp says it was built by the same recipe and versions."""
    stamp_file = root / "stamp.json"
    if rebuild or not (stamp_file.exists() and json.loads(stamp_file.read_text()) == want):
        drop(root)
        root.mkdir(parents=True)
        stamp_file.write_text(json.dumps(want))
    return root


def built(path: Path, build: Callable[[Path], None]) -> Path:
    """``path``, built by ``build`` unless a finished build is there."""
    done = path.with_name(path.name + ".done")
    if not done.exists():
        drop(path)
        print(f"  building {path}", flush=True)
        build(path)
        done.write_text("")
    return path


def decimal_table(path: Path) -> Any:
    """lineitem with its decimals as tpchgen-cli writes them, strings as ``string``, and
    ``month``."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    for i, f in enumerate(table.schema):
        if pa.types.is_string_view(f.type) or pa.types.is_large_string(f.type):
            table = table.set_column(i, f.name, table[f.name].cast(pa.string()))
    ship = table["l_shipdate"]
    month = pc.add(pc.multiply(pc.year(ship), 100), pc.month(ship)).cast(pa.int32())
    return table.append_column("month", month)


@dataclass(slots=True)
class Withheld:
    """A store holding every slice but one, and that slice, to add to a copy of it."""

    label: str  # "append", "first", "middle", "last"
    key: Any
    rows: int
    base: Path  # the store without the slice
    piece: Path  # the slice's rows, one Parquet file
    upto: Path  # every row of base + piece, one Parquet file (DuckDB's and Polars' input)


@dataclass(slots=True)
class Data:
    """One shape's data: its rows as one file, the store of all its slices, the withheld."""

    name: str
    key: str  # the slicing column
    file: Path
    full: Path
    slices: int
    rows: int
    withheld: dict[str, Withheld] = field(default_factory=dict)


class Prepared:
    """Builds each file and store on first use, under a folder stamped with the versions."""

    def __init__(self, source: Path, root: Path, quick: bool) -> None:
        self.source = source
        self.root = root
        self.quick = quick
        self._tables: dict[str, Any] = {}
        self.seconds = 0.0

    def table(self, name: str) -> Any:
        """'float' (bench_q1's preparation), 'day' (--quick: 1998 only) or 'decimal'."""
        import pyarrow.compute as pc

        if name not in self._tables:
            if name == "float":
                self._tables[name] = bench_q1.prepared_table(self.source)
            elif name == "day":
                table = self.table("float")
                if self.quick:
                    table = table.filter(pc.greater_equal(table["l_shipdate"], QUICK_DAYS_FROM))
                self._tables[name] = table
            else:
                self._tables[name] = decimal_table(self.source)
        return self._tables[name]

    def parquet(self, name: str, table: Callable[[], Any]) -> Path:
        import pyarrow.parquet as pq

        return built(self.root / name, lambda p: pq.write_table(table(), p))

    def store(self, name: str, table: Callable[[], Any], key: str) -> Path:
        import chanbatch as cb

        return built(self.root / name, lambda p: cb.Store(p).freeze(DATASET, table(), slice_by=key))

    def store_of_file(self, name: str, rows: Path, key: str) -> Path:
        """The store ``name`` holding the rows of Parquet file ``rows``, frozen by a
        ``chanbatch snapshot freeze`` process: this process may hold the whole table, and the
        freeze must not add its copies to it (SF10 did not fit in 24 GiB that way)."""
        cmd = [cli(), "snapshot", "freeze", DATASET, str(rows), "--slice-by", key]
        return built(self.root / name, lambda p: run_process([*cmd, "--store", str(p), "--json"]))

    def data(self, shape: str, positions: Sequence[str] = ()) -> Data:
        """The data of ``shape`` ('month', 'day' or 'decimal'), with the withheld slices of
        ``positions`` ('append', 'first', 'middle', 'last')."""
        import pyarrow.compute as pc

        started = time.perf_counter()
        source = {"month": "float", "day": "day", "decimal": "decimal"}[shape]
        key = "l_shipdate" if shape == "day" else "month"
        table = self.table(source)
        file = self.parquet(f"{source}.parquet", lambda: table)
        counts = {d["values"]: d["counts"] for d in pc.value_counts(table[key]).to_pylist()}
        keys = sorted(counts)
        out = Data(shape, key, file, self.root / f"{shape}-full", len(keys), table.num_rows)
        # (store, the file of its rows): frozen from files once the table is let go of
        stores: list[tuple[str, Path]] = [(f"{shape}-full", file)]
        for label in positions:
            if label == "append":
                k = append_key(table, key)
                base_rows = lambda k=k: table.filter(pc.less(table[key], k))  # noqa: E731
                upto = self.parquet(
                    f"{shape}-upto.parquet", lambda k=k: table.filter(pc.less_equal(table[key], k))
                )
            else:
                k = {"first": keys[0], "middle": keys[len(keys) // 2], "last": keys[-1]}[label]
                base_rows = lambda k=k: table.filter(pc.not_equal(table[key], k))  # noqa: E731
                upto = file
            piece = self.parquet(
                f"{shape}-{label}-piece.parquet", lambda k=k: table.filter(pc.equal(table[key], k))
            )
            base = f"{shape}-{label}-base"
            if not (self.root / f"{base}.done").exists():
                stores.append((base, self.parquet(f"{base}.parquet", base_rows)))
            out.withheld[label] = Withheld(label, k, counts[k], self.root / base, piece, upto)
        if not all((self.root / f"{name}.done").exists() for name, _ in stores):
            del table
            self._tables.clear()  # read again if asked for: the freezes need the memory
            for name, rows in stores:
                self.store_of_file(name, rows, key)
        self.seconds += time.perf_counter() - started
        return out


def append_key(table: Any, key: str) -> Any:
    """The new slice of an append: the last full month (at least 0.8 of the median month's
    rows; 1998-08 at SF1), or with day slices that month's last day."""
    import pyarrow.compute as pc

    counts = {d["values"]: d["counts"] for d in pc.value_counts(table["month"]).to_pylist()}
    typical = statistics.median(counts.values())
    month = max(m for m, n in counts.items() if n >= 0.8 * typical)
    if key == "month":
        return month
    return pc.max(table.filter(pc.equal(table["month"], month))[key]).as_py()


# -- the shapes -------------------------------------------------------------------------------


@dataclass(slots=True)
class Context:
    args: argparse.Namespace
    prep: Prepared
    scratch: Scratch
    report: Report
    checked: dict[Path, dict[str, float]] = field(default_factory=dict)  # file -> seconds of
    # the checked DuckDB and Polars processes (no "polars" when it could not answer)
    answers: dict[Path, list[Any]] = field(default_factory=dict)  # file -> DuckDB's Q1
    appenders: dict[tuple[str, str, str | None], Appender] = field(default_factory=dict)
    cold: dict[str, str] = field(default_factory=dict)  # shape -> the cold run's output snapshot
    cold_seconds: dict[str, float] = field(default_factory=dict)

    def appender(self, data: Data, label: str, scheduler: str | None = None) -> Appender:
        """The checked appender of ``data``'s withheld slice ``label``, made once."""
        key = (data.name, label, scheduler)
        if key not in self.appenders:
            self.appenders[key] = Appender(self, data, data.withheld[label], scheduler)
        return self.appenders[key]

    def answer(self, path: Path, what: str) -> list[Any]:
        """DuckDB's Q1 over ``path``; the first time, also check the baseline processes."""
        if path not in self.answers:
            self.answers[path] = duckdb_q1(path)
            self.checked[path] = check_baselines(self.report, path, self.answers[path], what)
        return self.answers[path]

    def baselines(self, path: Path, name: str) -> dict[str, Callable[[], float]]:
        steps = {f"duckdb {name}": lambda: duckdb_seconds(path)}
        if "polars" in self.checked.get(path, {}):
            steps[f"polars {name}"] = lambda: polars_seconds(path)
        return steps

    def baseline_seed(self, path: Path, name: str) -> dict[str, float]:
        return {f"{k} {name}": v for k, v in self.checked.get(path, {}).items()}

    def rounds(
        self, steps: dict[str, Callable[[], float]], seed: dict[str, float]
    ) -> dict[str, list[float]]:
        """The timed rounds; with --quick, the checking round's own times (``seed``) stand for
        them, and only the steps without one run once more."""
        if not self.args.quick:
            return timed_rounds(self.args.repeat, steps)
        return {k: [seed[k]] if k in seed else [fn()] for k, fn in steps.items()}


def timed_rounds(repeat: int, steps: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Every step once per round, the order rotated by one each round."""
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(repeat):
        for name in rotate(list(steps), i):
            bench_q1.settle()
            samples[name].append(steps[name]())
    return samples


def per_round(samples: dict[str, list[float]], a: str, b: str) -> list[float]:
    return [x / y for x, y in zip(samples[a], samples[b], strict=True)]


def append_goal(sf: float) -> float:
    return APPEND_GOAL_SF10 if sf >= 10 else APPEND_GOAL


class Appender:
    """Adds a withheld slice to hard-link copies of its base store, run once beforehand."""

    def __init__(self, ctx: Context, data: Data, w: Withheld, scheduler: str | None = None):
        self.ctx, self.data, self.w, self.scheduler = ctx, data, w, scheduler
        self.warm = link_store(w.base, ctx.scratch.path(f"{data.name}-{w.label}-warm"))
        chanbatch_run(self.warm)  # untimed: the base's results are cached before any timing
        self.freeze_seconds: list[float] = []
        self.snapshot: str | None = None
        on = f" on {scheduler}" if scheduler else ""
        self.checked = self.check(f"{w.label} slice ({w.key}) added, {data.name} slices{on}")
        ctx.report.verify(f"{data.name}, {w.label} slice added{on}: = DuckDB over the same rows")

    def once(self) -> Run:
        store = link_store(self.warm, self.ctx.scratch.path(f"{self.w.label}"), everything=True)
        self.freeze_seconds.append(freeze_process(store, self.w.piece, self.data.key))
        return chanbatch_run(store, scheduler=self.scheduler)

    def check(self, what: str) -> Run:
        run = self.once()
        rows = f"{self.data.name} slices up to {self.w.key}" if self.w.label == "append" else ""
        want = self.ctx.answer(self.w.upto, rows or f"all rows ({self.data.name} slices)")
        check_output(what, run.store, run.snapshot, want)
        self.snapshot = run.snapshot
        self.checked_freeze = self.freeze_seconds.pop()
        return run

    def timed(self) -> float:
        run = self.once()
        if run.snapshot != self.snapshot:
            raise CheckFailed(
                f"{self.w.label} of {self.data.name}: a timed run gave another output"
            )
        drop(run.store)
        return run.seconds


def sliced_shape(ctx: Context, shape: str) -> None:
    """Q1 over month or day slices: cold, one new slice appended, no-op; as processes."""
    args, report = ctx.args, ctx.report
    data = ctx.prep.data(shape, ["append"])
    w = data.withheld["append"]
    what = f"{shape} slices"
    print(
        f"\n{shape}: {data.slices:,} slices, {data.rows:,} rows; append {w.key} ({w.rows:,} rows)"
    )
    # checking round, also the warm-up
    want = ctx.answer(data.file, f"all rows ({what})")
    noop_store = link_store(data.full, ctx.scratch.path(f"{shape}-noop"))
    cold = chanbatch_run(noop_store)
    check_output(f"cold run, {what}", noop_store, cold.snapshot, want)
    report.verify(f"{shape}: cold run = DuckDB")
    ctx.cold[shape] = cold.snapshot
    ctx.cold_seconds[shape] = cold.seconds
    noop = chanbatch_run(noop_store)
    if noop.computed or noop.snapshot != cold.snapshot:
        raise CheckFailed(
            f"{shape}: the rerun computed {noop.computed} tasks or changed the output"
        )
    report.verify(f"{shape}: no-op rerun computes nothing, same output")
    appender = ctx.appender(data, "append")
    imports = imports_of(noop_store)

    def cold_from(src: Path, from_disk: bool = False) -> Callable[[], float]:
        def once() -> float:
            store = link_store(src, ctx.scratch.path(f"{shape}-cold"))
            if from_disk:
                evict(store)
            run = chanbatch_run(store)
            if run.snapshot != cold.snapshot:
                raise CheckFailed(f"{shape}: a timed cold run gave another output")
            drop(store)
            return run.seconds

        return once

    def noop_once() -> float:
        run = chanbatch_run(noop_store)
        if run.computed:
            raise CheckFailed(f"{shape}: a timed no-op computed {run.computed} tasks")
        return run.seconds

    # From disk: a copy of the data, and of DuckDB's file, of their own, so that dropping
    # their pages from the page cache leaves the other steps' reads as they are.
    disk_store = copy_store(data.full, ctx.scratch.path(f"{shape}-disk-data"))
    disk_file = ctx.scratch.path(f"{shape}-disk").with_suffix(".parquet")
    shutil.copyfile(data.file, disk_file)

    def duckdb_disk_once() -> float:
        evict(disk_file)
        return duckdb_seconds(disk_file)

    steps = {"cold": cold_from(data.full), "append": appender.timed, "noop": noop_once}
    steps |= {"cold disk": cold_from(disk_store, from_disk=True), "duckdb disk": duckdb_disk_once}
    steps |= ctx.baselines(data.file, "all") | ctx.baselines(w.upto, "upto")
    seed = {"cold": cold.seconds, "append": appender.checked.seconds, "noop": noop.seconds}
    s = ctx.rounds(
        steps, seed | ctx.baseline_seed(data.file, "all") | ctx.baseline_seed(w.upto, "upto")
    )
    base = {"duckdb": s["duckdb all"], "polars": s.get("polars all", [])}
    cold_goal = COLD_GOAL[shape]
    report.add(
        Figure(
            shape,
            f"{data.slices:,} {shape} slices, cold",
            s["cold"],
            per_round(s, "cold", "duckdb all"),
            "DuckDB",
            BEFORE[f"{shape} cold"],
            **base,
            goal=cold_goal,
            target=f"≤ {cold_goal:g}× DuckDB",
        )
    )
    report.add(
        Figure(
            shape,
            f"{data.slices:,} {shape} slices, cold, from disk (the page cache emptied of the "
            "store's files, and of DuckDB's file, before each run)",
            s["cold disk"],
            per_round(s, "cold disk", "duckdb disk"),
            "DuckDB",
            duckdb=s["duckdb disk"],
            short=f"{data.slices:,} {shape}s, cold from disk",
        )
    )
    goal = append_goal(args.sf)
    freezes = appender.freeze_seconds or [appender.checked_freeze]
    report.add(
        Figure(
            shape,
            f"{data.slices:,} {shape} slices, one new {shape} appended ({w.rows:,} rows), `run`",
            s["append"],
            per_round(s, "append", "duckdb upto"),
            "DuckDB",
            BEFORE[f"{shape} append"],
            duckdb=s["duckdb upto"],
            polars=s.get("polars upto", []),
            goal=goal,
            target=f"≤ {goal:g}× DuckDB",
            note=f"the new slice's freeze, a process apart: {median(freezes):.3f} s",
        )
    )
    pandas_free = not (imports["pandas"] or imports["dask.dataframe"])
    report.add(
        Figure(
            shape,
            f"{data.slices:,} {shape} slices, no-op rerun",
            s["noop"],
            per_round(s, "noop", "duckdb all"),
            "DuckDB",
            BEFORE[f"{shape} noop"],
            **base,
            goal=NOOP_GOAL,
            target=f"≤ {NOOP_GOAL:g}× DuckDB, no pandas or dask.dataframe",
            also_ok=pandas_free,
            note="imports: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in imports.items()),
        )
    )
    report.details.append(f"- {shape}: the new slice's freeze process, s: {fmt_samples(freezes)}")


def decimal_shape(ctx: Context) -> None:
    """Cold Q1 on decimal128(15, 2) columns against the same on float64, month slices."""
    report = ctx.report
    dec = ctx.prep.data("decimal")
    flo = ctx.prep.data("month")
    print(f"\ndecimal: {dec.slices:,} month slices of decimal128 columns, {dec.rows:,} rows")
    want = duckdb_q1(dec.file)
    ctx.answers[dec.file] = want
    store = link_store(dec.full, ctx.scratch.path("decimal-check"))
    run = chanbatch_run(store)
    check_decimal_output(store, run.snapshot, want)
    report.verify("decimal: cold run's sums = DuckDB's decimal sums, exactly")
    proc = python_process(DUCKDB_PY, Q1_SQL.format(path=dec.file))
    printed = json.loads(proc.stdout)
    if [str(v) for row in printed for v in row] != [str(v) for row in want for v in row]:
        raise CheckFailed("the DuckDB process's decimal answer differs from in-process DuckDB")
    ctx.checked[dec.file] = {"duckdb": proc.seconds}
    try:
        proc = python_process(POLARS_Q1_PY, str(dec.file))
        same("Polars over decimals", q1_frame(json.loads(proc.stdout)), want, "DuckDB")
        ctx.checked[dec.file]["polars"] = proc.seconds
        report.verify("decimal: Polars process = DuckDB")
    except (RuntimeError, CheckFailed) as exc:
        report.notes.append(f"Polars over the decimal columns, not timed: {str(exc)[-300:]}")
    drop(store)

    def cold(data: Data, snapshot: str | None) -> Callable[[], float]:
        def once() -> float:
            store = link_store(data.full, ctx.scratch.path(f"{data.name}-cold"))
            run = chanbatch_run(store)
            if snapshot is not None and run.snapshot != snapshot:
                raise CheckFailed("decimal: a timed cold run gave another output")
            drop(store)
            return run.seconds

        return once

    steps = {"decimal": cold(dec, run.snapshot), "float": cold(flo, None)}
    steps |= ctx.baselines(dec.file, "decimal")
    seed = {"decimal": run.seconds} | ctx.baseline_seed(dec.file, "decimal")
    if "month" in ctx.cold_seconds:
        seed["float"] = ctx.cold_seconds["month"]
    s = ctx.rounds(steps, seed)
    report.add(
        Figure(
            "decimal",
            f"{dec.slices:,} month slices, decimal128(15,2) columns, cold ÷ the float64 run",
            s["decimal"],
            per_round(s, "decimal", "float"),
            "the float64 run",
            BEFORE["decimal ratio"],
            duckdb=s["duckdb decimal"],
            polars=s.get("polars decimal", []),
            goal=DECIMAL_GOAL,
            target=f"≤ {DECIMAL_GOAL:g}× float64, exact sums",
            short=f"{dec.slices:,} months, decimal128 cold ÷ float64 cold",
            note=f"float64 run {median(s['float']):.3f} s; sums equal DuckDB's exactly",
        )
    )
    report.add(
        Figure(
            "decimal",
            f"{dec.slices:,} month slices, decimal128(15,2) columns, cold",
            s["decimal"],
            per_round(s, "decimal", "duckdb decimal"),
            "DuckDB",
            BEFORE["decimal duckdb"],
            duckdb=s["duckdb decimal"],
            polars=s.get("polars decimal", []),
            short=f"{dec.slices:,} months, decimal128 cold ÷ DuckDB",
        )
    )


def backfill_shape(ctx: Context) -> None:
    """One slice inserted first, in the middle, or last, against an append."""
    for shape in ("month",) if ctx.args.quick else ("month", "day"):
        positions = (
            ["append", "middle"] if ctx.args.quick else ["append", "first", "middle", "last"]
        )
        data = ctx.prep.data(shape, positions)
        print(
            f"\nbackfill, {shape} slices: "
            + ", ".join(
                f"{p} {data.withheld[p].key} ({data.withheld[p].rows:,} rows)" for p in positions
            )
        )
        appenders = {label: ctx.appender(data, label) for label in positions}
        paths = {
            label: combine_path(a.checked.record(), data.withheld[label].key)
            for label, a in appenders.items()
        }
        seed = {k: a.checked.seconds for k, a in appenders.items()}
        s = ctx.rounds({k: a.timed for k, a in appenders.items()}, seed)
        for label in positions[1:]:
            computed, path, depth = paths[label]
            w = data.withheld[label]
            ctx.report.add(
                Figure(
                    "backfill",
                    f"{data.slices:,} {shape} slices, backfill of the {label} slice "
                    f"({w.key}, {w.rows:,} rows) ÷ an append",
                    s[label],
                    per_round(s, label, "append"),
                    "an append",
                    goal=BACKFILL_GOAL,
                    target=f"≤ {BACKFILL_GOAL:g}× append, only its path",
                    also_ok=computed <= path,
                    short=f"{data.slices:,} {shape}s, backfill {label} ÷ append",
                    note=f"combines recomputed {computed}, on its path {path}, tree depth {depth}"
                    f" (the append: {paths['append'][0]} of {paths['append'][1]})",
                )
            )


def many_table(n: int, first: int = 0) -> Any:
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(first)
    rows = n * MANY_ROWS
    return pa.table(
        {
            MANY_KEY: np.repeat(np.arange(first, first + n, dtype="int64"), MANY_ROWS),
            "kind": rng.integers(0, 5, rows, dtype="int64"),
            "v": rng.integers(0, 1000, rows, dtype="int64"),
        }
    )


@dataclass(slots=True)
class Many:
    blueprint: Path
    warm: Path  # every slice frozen and run once
    raw: Path  # every row of warm + piece, one Parquet file
    piece: Path  # one new slice
    build: dict[str, float]  # seconds: freeze, first run (0 when reused)


def prepare_many(args: argparse.Namespace) -> Many:
    """The 100k store, frozen and run once, cached by format and engine version."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import chanbatch as cb

    n = args.slices_100k
    root = stamped_root(
        # "memos": the run that warms it leaves the memos a run of this code reads (chain memo,
        # pack hints: issue 17's top-down planning), else the first timed run would leave them
        args.cache / f"slices-many-{n}",
        stamp({"slices": n, "rows": MANY_ROWS, "memos": 2}),
        args.rebuild,
    )
    blueprint = root / "many.yaml"
    blueprint.write_text(MANY_BLUEPRINT)
    timings_file = root / "build.json"
    warm = root / "warm"
    piece = root / "piece.parquet"
    raw = root / "raw.parquet"
    if not (root / "warm.done").exists():
        drop(warm)
        table = many_table(n)
        started = time.perf_counter()
        print(f"  freezing {n:,} slices into {warm} (once; cached)", flush=True)
        cb.Store(warm).freeze("events", table, slice_by=MANY_KEY)
        frozen = time.perf_counter() - started
        print(f"  frozen in {frozen:.1f} s; running the blueprint once (cold)", flush=True)
        first = chanbatch_run(warm, blueprint, timeout=24 * 3600.0)
        new = many_table(1, first=n)
        pq.write_table(new, piece)
        pq.write_table(pa.concat_tables([table, new]), raw)
        timings_file.write_text(json.dumps({"freeze": frozen, "first run": first.seconds}))
        (root / "warm.done").write_text("")
        print(f"  first run {first.seconds:.1f} s", flush=True)
    return Many(blueprint, warm, raw, piece, json.loads(timings_file.read_text()))


def many_shape(ctx: Context) -> None:
    """100,000 small slices: no-op, one new slice, plan memory; against absolute budgets."""
    import duckdb

    import chanbatch as cb

    args, report = ctx.args, ctx.report
    n = args.slices_100k
    print(f"\n100k: {n:,} slices of {MANY_ROWS} rows")
    many = prepare_many(args)
    with duckdb.connect() as con:
        want = con.execute(MANY_SQL.format(path=many.raw)).fetchall()
        prior = con.execute(
            MANY_SQL.format(path=many.raw).replace("GROUP BY", f"WHERE {MANY_KEY} < {n} GROUP BY")
        ).fetchall()
    warm = link_store(many.warm, ctx.scratch.path("many-noop"), everything=True)
    noop = chanbatch_run(warm, many.blueprint)
    got = cb.Store(warm).read_pandas(f"many_per_kind@{noop.snapshot}")
    if noop.computed or sorted(map(tuple, got[["kind", "n", "total"]].values.tolist())) != prior:
        raise CheckFailed(f"100k: no-op computed {noop.computed} tasks or differs from DuckDB")
    report.verify(f"100k: no-op over {n:,} slices computes nothing; its output = DuckDB")
    proc = python_process(DUCKDB_PY, MANY_SQL.format(path=many.raw))
    if [tuple(r) for r in json.loads(proc.stdout)] != want:
        raise CheckFailed("100k: the DuckDB process's answer differs")
    seed = {"noop": noop.seconds, "duckdb": proc.seconds}
    try:
        proc = python_process(MANY_POLARS_PY, str(many.raw))
        if [tuple(r) for r in json.loads(proc.stdout)] == want:
            seed["polars"] = proc.seconds
        else:
            report.notes.append("Polars over the 100k data differs from DuckDB; not timed")
    except RuntimeError as exc:
        report.notes.append(f"Polars over the 100k data, not timed: {str(exc)[-300:]}")

    snapshot: list[str] = []

    def append_once() -> float:
        store = link_store(many.warm, ctx.scratch.path("many-append"), everything=True)
        cmd = [cli(), "snapshot", "freeze", "events", str(many.piece), "--slice-by", MANY_KEY]
        run_process([*cmd, "--store", str(store), "--json"])
        run = chanbatch_run(store, many.blueprint)
        if not snapshot:
            out = cb.Store(store).read_pandas(f"many_per_kind@{run.snapshot}")
            if sorted(map(tuple, out[["kind", "n", "total"]].values.tolist())) != want:
                raise CheckFailed("100k: the run after one new slice differs from DuckDB")
            snapshot.append(run.snapshot)
        elif run.snapshot != snapshot[0]:
            raise CheckFailed("100k: a timed run after one new slice gave another output")
        drop(store)
        return run.seconds

    seed["append"] = append_once()
    report.verify("100k: one new slice appended = DuckDB")
    plan_rss: list[float] = []

    def plan_once() -> float:
        cmd = [cli(), "plan", str(many.blueprint), "--store", str(warm), "--json"]
        proc = run_process(cmd)
        plan_rss.append(proc.max_rss_mb)
        return proc.seconds

    steps = {
        "noop": lambda: chanbatch_run(warm, many.blueprint).seconds,
        "append": append_once,
        "plan": plan_once,
        "duckdb": lambda: python_process(DUCKDB_PY, MANY_SQL.format(path=many.raw)).seconds,
    }
    if "polars" in seed:
        steps["polars"] = lambda: python_process(MANY_POLARS_PY, str(many.raw)).seconds
    s = ctx.rounds(steps, seed)
    beside = {"duckdb": s["duckdb"], "polars": s.get("polars", [])}
    built_in = ", ".join(f"{k} {v:.1f} s" for k, v in many.build.items())
    for name, label, samples, unit in (
        ("noop", "no-op `run`", s["noop"], "s"),
        ("append", "one new slice appended, `run`", s["append"], "s"),
        ("plan_mb", "`plan --json` peak RSS", plan_rss, "MB"),
    ):
        budget = BUDGET_100K[name]
        report.add(
            Figure(
                "100k",
                f"{n:,} slices of {MANY_ROWS} rows, {label}",
                samples,
                [x / budget for x in samples],
                f"budget {budget:g} {unit}",
                **(beside if unit == "s" else {}),
                goal=1.0,
                target=f"< {budget:g} {unit}",
                strict=True,
                unit=unit,
                note=f"the store built once: {built_in}" if name == "noop" else "",
            )
        )
    report.details.append(f"- 100k: `plan --json` seconds {fmt_samples(s['plan'])}")


def freeze_shape(ctx: Context) -> None:
    """``snapshot freeze --slice-by l_shipdate`` against DuckDB's partitioned COPY, as
    processes, and its peak memory against one read_table + write_table."""
    import pyarrow.parquet as pq

    import chanbatch as cb

    args, report = ctx.args, ctx.report
    table = ctx.prep.table("day")
    source = ctx.prep.parquet("day.parquet", lambda: table)
    days = len(set(table["l_shipdate"].to_pylist()))
    print(f"\nfreeze: {table.num_rows:,} rows into {days:,} day slices")
    rss: dict[str, list[float]] = {"freeze": [], "rw": [], "duckdb": []}

    def chanbatch_freeze(check: bool = False) -> float:
        store = ctx.scratch.path("freeze")
        cmd = [cli(), "snapshot", "freeze", DATASET, str(source), "--slice-by", "l_shipdate"]
        proc = run_process([*cmd, "--store", str(store), "--json"])
        if check:
            slices = cb.Store(store).resolve(DATASET).manifest.slices
            if len(slices) != days or sum(e.rows for e in slices) != table.num_rows:
                raise CheckFailed(f"freeze wrote {len(slices)} slices, not {days}")
        rss["freeze"].append(proc.max_rss_mb)
        drop(store)
        return proc.seconds

    def duckdb_copy(check: bool = False) -> float:
        out = ctx.scratch.path("copy")
        proc = python_process(DUCKDB_COPY_PY, str(source), str(out))
        if check:
            parts = [p for p in out.iterdir() if p.is_dir()]
            rows = sum(pq.ParquetFile(f).metadata.num_rows for f in out.rglob("*.parquet"))
            if len(parts) != days or rows != table.num_rows:
                raise CheckFailed(f"DuckDB's COPY wrote {rows} rows in {len(parts)} folders")
        rss["duckdb"].append(proc.max_rss_mb)
        drop(out)
        return proc.seconds

    def read_write() -> float:
        out = ctx.scratch.path("rw")
        out.mkdir()
        proc = python_process(READ_WRITE_PY, str(source), str(out / "lineitem.parquet"))
        rss["rw"].append(proc.max_rss_mb)
        drop(out)
        return proc.seconds

    seed = {"freeze": chanbatch_freeze(check=True), "duckdb": duckdb_copy(check=True)}
    seed["rw"] = read_write()
    report.verify(f"freeze: {days:,} slices of every row; DuckDB's COPY wrote every row")
    if not args.quick:  # the checking round was a warm-up
        for samples in rss.values():
            samples.clear()
    s = ctx.rounds({"freeze": chanbatch_freeze, "duckdb": duckdb_copy, "rw": read_write}, seed)
    label = f"freeze by day ({days:,} slices), `snapshot freeze --slice-by l_shipdate`"
    report.add(
        Figure(
            "freeze",
            f"{label} ÷ DuckDB COPY … PARTITION_BY",
            s["freeze"],
            per_round(s, "freeze", "duckdb"),
            "DuckDB's COPY",
            BEFORE["freeze duckdb"],
            duckdb=s["duckdb"],
            goal=FREEZE_GOAL,
            target=f"≤ {FREEZE_GOAL:g}× DuckDB",
            short=f"freeze by day ({days:,}) ÷ DuckDB COPY PARTITION_BY",
        )
    )
    report.add(
        Figure(
            "freeze",
            f"{label} ÷ one read_table + write_table",
            s["freeze"],
            per_round(s, "freeze", "rw"),
            "read + write",
            BEFORE["freeze rw"],
            note=f"read + write {median(s['rw']):.3f} s",
            short=f"freeze by day ({days:,}) ÷ read_table + write_table",
        )
    )
    report.add(
        Figure(
            "freeze",
            f"{label}, peak RSS ÷ one read_table + write_table's",
            rss["freeze"],
            [a / b for a, b in zip(rss["freeze"], rss["rw"], strict=True)],
            "read + write's peak RSS",
            goal=FREEZE_MEMORY_GOAL,
            target=f"≤ {FREEZE_MEMORY_GOAL:g}× read + write",
            unit="MB",
            short=f"freeze by day ({days:,}), peak RSS ÷ read + write's",
            note=f"read + write {median(rss['rw']):,.0f} MB, DuckDB {median(rss['duckdb']):,.0f} MB",
        )
    )


class RunningCluster:
    """A Dask cluster as a team keeps one running: a ``dask scheduler`` and two ``dask worker
    --nthreads 1`` processes, started once. ``seconds``: from starting them until both workers
    are registered (the start-up, reported apart from the runs on it)."""

    WORKERS = 2

    def __init__(self) -> None:
        import socket

        with socket.socket() as probe:  # a free port for the scheduler
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.address = f"tcp://127.0.0.1:{port}"
        dask = str(Path(sys.executable).with_name("dask"))
        began = time.perf_counter()
        self.procs = [
            _quiet(
                [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
            )
        ]
        try:
            self.procs += [
                _quiet([dask, "worker", self.address, "--nthreads", "1", "--no-dashboard"])
                for _ in range(self.WORKERS)
            ]
            python_process(WAIT_WORKERS_PY, self.address, str(self.WORKERS))
        except BaseException:
            self.close()
            raise
        self.seconds = time.perf_counter() - began

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _quiet(cmd: list[str]) -> subprocess.Popen[bytes]:
    """``cmd`` started in the background, its output discarded."""
    return subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env()
    )


def cluster_shape(ctx: Context) -> None:
    """The month shape's cold and one-new-slice runs on a running 2-worker cluster (its
    start-up reported apart), and on a ``processes`` cluster each run starts for itself."""
    data = ctx.prep.data("month", ["append"])
    w = data.withheld["append"]
    print(f"\ncluster: {data.slices:,} month slices on a running 2-worker cluster and on processes")
    want = ctx.answer(data.file, "all rows (month slices)")
    if "month" not in ctx.cold:
        threads = chanbatch_run(link_store(data.full, ctx.scratch.path("cluster-threads")))
        ctx.cold["month"] = threads.snapshot
    cluster = RunningCluster()
    try:
        _cluster_rounds(ctx, data, w, want, cluster)
    finally:
        cluster.close()


def _cluster_rounds(
    ctx: Context, data: Data, w: Withheld, want: list[Any], cluster: RunningCluster
) -> None:
    args, report = ctx.args, ctx.report
    colds: dict[str, Run] = {}
    for where in (cluster.address, "processes"):
        store = link_store(data.full, ctx.scratch.path("cluster-check"))
        colds[where] = chanbatch_run(store, scheduler=where)
        check_output(f"cold run on {where}", store, colds[where].snapshot, want)
        if ctx.cold["month"] != colds[where].snapshot:
            raise CheckFailed(f"{where} gave another output snapshot than threads")
        drop(store)
    report.verify(
        "cluster: cold run on a running cluster and on processes = DuckDB, same snapshot as threads"
    )
    running = ctx.appender(data, "append", scheduler=cluster.address)
    started = ctx.appender(data, "append", scheduler="processes")
    noop_store = link_store(data.full, ctx.scratch.path("cluster-noop"))
    chanbatch_run(noop_store)
    if not args.quick:  # warm-ups
        python_process(CLUSTER_PY)

    def cold_once(where: str) -> float:
        store = link_store(data.full, ctx.scratch.path("cluster-cold"))
        run = chanbatch_run(store, scheduler=where)
        if run.snapshot != colds[where].snapshot:
            raise CheckFailed(f"cluster: a timed cold run on {where} gave another output")
        drop(store)
        return run.seconds

    steps = {
        "cold": lambda: cold_once(cluster.address),
        "append": running.timed,
        "cold processes": lambda: cold_once("processes"),
        "append processes": started.timed,
        "noop": lambda: chanbatch_run(noop_store, scheduler="processes").seconds,
        "start": lambda: python_process(CLUSTER_PY).seconds,
    }
    steps |= ctx.baselines(data.file, "all") | ctx.baselines(w.upto, "upto")
    seed = {
        "cold": colds[cluster.address].seconds,
        "append": running.checked.seconds,
        "cold processes": colds["processes"].seconds,
        "append processes": started.checked.seconds,
    }
    s = ctx.rounds(
        steps, seed | ctx.baseline_seed(data.file, "all") | ctx.baseline_seed(w.upto, "upto")
    )
    on = "on a running 2-worker cluster (`--scheduler tcp://…`)"
    report.add(
        Figure(
            "cluster",
            f"{data.slices:,} month slices, cold, {on}",
            s["cold"],
            per_round(s, "cold", "duckdb all"),
            "DuckDB",
            duckdb=s["duckdb all"],
            polars=s.get("polars all", []),
            goal=COLD_GOAL["month"],
            target=f"≤ {COLD_GOAL['month']:g}× DuckDB",
            note=f"cluster start-up apart: a scheduler and 2 workers until registered "
            f"{cluster.seconds:.3f} s",
            short=f"{data.slices:,} months, cold, running cluster",
        )
    )
    goal = append_goal(args.sf)
    report.add(
        Figure(
            "cluster",
            f"{data.slices:,} month slices, one new month appended, {on}",
            s["append"],
            per_round(s, "append", "duckdb upto"),
            "DuckDB",
            duckdb=s["duckdb upto"],
            polars=s.get("polars upto", []),
            goal=goal,
            target=f"≤ {goal:g}× DuckDB",
            short=f"{data.slices:,} months, append, running cluster",
        )
    )
    start = (
        f"the run starts its cluster: a no-op run on processes (nothing to compute, no "
        f"cluster) {median(s['noop']):.3f} s; a process starting and closing a 2-worker "
        f"LocalCluster {median(s['start']):.3f} s"
    )
    report.add(
        Figure(
            "cluster",
            f"{data.slices:,} month slices, cold, `--scheduler processes --workers 2`",
            s["cold processes"],
            per_round(s, "cold processes", "duckdb all"),
            "DuckDB",
            duckdb=s["duckdb all"],
            polars=s.get("polars all", []),
            note=start,
        )
    )
    report.add(
        Figure(
            "cluster",
            f"{data.slices:,} month slices, one new month appended, `--scheduler processes`",
            s["append processes"],
            per_round(s, "append processes", "duckdb upto"),
            "DuckDB",
            duckdb=s["duckdb upto"],
            polars=s.get("polars upto", []),
        )
    )
    report.details.append(
        f"- cluster: a scheduler and 2 workers started, until registered, s "
        f"{cluster.seconds:.3f} (once); no-op on processes s {fmt_samples(s['noop'])}; "
        f"LocalCluster start + close process s {fmt_samples(s['start'])}"
    )


# -- the doc ----------------------------------------------------------------------------------


def table_markdown(figures: Sequence[Figure]) -> list[str]:
    lines = [
        "| shape | issue's figure (before) | chanbatch | DuckDB | Polars | ratio | target | met |",
        "|---|---|---:|---:|---:|---|---|---|",
    ]
    for f in figures:
        met = {True: "yes", False: "**no**", None: "—"}[f.met]
        duck = f"{median(f.duckdb):.3f} s" if f.duckdb else "—"
        polars = f"{median(f.polars):.3f} s" if f.polars else "—"
        note = f" ({f.note})" if f.note else ""
        lines.append(
            f"| {f.label}{note} | {f.before} | {fmt_value(median(f.seconds), f.unit)} | {duck} "
            f"| {polars} | {fmt_x(f.x)} {f.ratio_to} | {f.target} | {met} |"
        )
    return lines


def machine_facts() -> list[tuple[str, str]]:
    facts = bench_q1.machine()
    at = next(i for i, (k, _) in enumerate(facts) if k == "duckdb")
    facts.insert(at + 1, ("polars", version("polars")))
    facts.insert(at + 1, ("distributed", version("distributed")))
    return facts


def section_markdown(
    command: str, facts: list[tuple[str, str]], report: Report, args: argparse.Namespace, doc: Path
) -> str:
    lines = [
        f"Command (from the repository root, venv active): `{command}`",
        "",
    ]
    if report.chart is not None:
        chart = os.path.relpath(report.chart, doc.parent)
        lines += [f"![ratios of the slice shapes against their targets]({chart})", ""]
    met = sum(f.met is True for f in report.figures)
    missed = sum(f.met is False for f in report.figures)
    lines += [
        f"{met} targets met, {missed} missed. Every figure is the wall time of a whole process "
        "(median of rounds); the ratio is chanbatch's over the baseline it names (the median of "
        "per-round ratios); for an absolute target it is the figure over its budget. DuckDB and "
        "Polars answer from scratch over the same rows as one Parquet file.",
        "",
        *table_markdown(report.figures),
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in facts],
        "",
    ]
    lines += [f"- {n}" for n in report.notes]
    lines += [
        "",
        "### Method and samples",
        "",
        f"- Data: TPC-H lineitem SF{args.sf:g} from `tpchgen-cli`, prepared as "
        "`bench_q1.py` prepares it (decimals as float64, `string_view` as `string`, an int key "
        "`month`) and frozen by `month` or by `l_shipdate`; the decimal shape keeps tpchgen's "
        "decimal128(15,2) columns. The script's docstring says how each shape is measured.",
        (
            "- `--quick`: one round, the checking round's own times (a smoke, not figures). "
            if args.quick
            else f"- {args.repeat} timed rounds after a checking round, which is also every "
            "process's warm-up; the order of the processes rotates by one each round. "
        )
        + "Processes run with "
        "`PYTHONDONTWRITEBYTECODE` unset, so they read bytecode from `__pycache__` as an "
        "installed package does. Peak memory is the process's own `ru_maxrss`, read by a small "
        "wrapper process that spawns it (`os.posix_spawnp`, `os.wait4`), so it includes at most "
        "the wrapper's ~10 MB.",
        "- A cold run uses a new store of hard links to the frozen objects, manifests and refs "
        "(nothing cached); an append or backfill links a store holding every other slice that "
        "was run once (its cache too), freezes the new slice into it with `chanbatch snapshot "
        "freeze ... --slice-by` (a process, timed apart) and times `chanbatch run q1.yaml "
        "--store COPY --json`.",
        "- Answers checked before any timing: " + "; ".join(report.verified) + ".",
        *report.details,
    ]
    return "\n".join(lines).rstrip() + "\n"


def draw_chart(report: Report, path: Path) -> None:
    import report as report_module  # tests/benchmark/report.py

    report_module.ratio_chart([f.ratio() for f in report.figures], path)


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--sf", type=float, default=1.0, help="TPC-H scale factor (default 1)")
    p.add_argument("--repeat", type=int, help="timed rounds (default 5; --quick 1)")
    p.add_argument(
        "--shapes", default=",".join(SHAPES), help=f"comma list of {','.join(SHAPES)} (default all)"
    )
    p.add_argument(
        "--slices-100k", type=int, default=100_000, help="slices of the 100k shape (default 100000)"
    )
    p.add_argument("--out", type=Path, help="write the section into this markdown file")
    p.add_argument("--cache", type=Path, default=REPO / ".bench", help="data + scratch folder")
    p.add_argument("--quick", action="store_true", help="the CI smoke: small, one round")
    p.add_argument("--rebuild", action="store_true", help="rebuild the cached 100k store")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = p.parse_args(argv)
    args.repeat = max(1, args.repeat if args.repeat is not None else (1 if args.quick else 5))
    args.shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = set(args.shapes) - set(SHAPES)
    if unknown:
        p.error(f"unknown shapes {sorted(unknown)}; choose from {','.join(SHAPES)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return bench(argv)[0]


def bench(argv: Sequence[str] | None = None) -> tuple[int, Report]:
    """Run the shapes asked for; the exit code (1: a check failed) and the report."""
    args = parse_args(argv)
    given = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["python", "tests/benchmark/bench_slices.py", *given])
    args.cache.mkdir(parents=True, exist_ok=True)
    source = ensure_lineitem(args.sf, args.cache)
    facts = machine_facts()
    fingerprint = bench_q1.source_fingerprint()
    quick = "-quick" if args.quick else ""
    root = stamped_root(
        args.cache / f"slices-sf{args.sf:g}{quick}",
        stamp({"source": source.stat().st_size, "days from": str(QUICK_DAYS_FROM)}),
    )
    report = Report()
    workdir = Path(tempfile.mkdtemp(prefix="slices-", dir=args.cache))
    ctx = Context(args, Prepared(source, root, args.quick), Scratch(workdir), report)
    shapes: dict[str, Callable[[], None]] = {
        "month": lambda: sliced_shape(ctx, "month"),
        "day": lambda: sliced_shape(ctx, "day"),
        "decimal": lambda: decimal_shape(ctx),
        "backfill": lambda: backfill_shape(ctx),
        "100k": lambda: many_shape(ctx),
        "freeze": lambda: freeze_shape(ctx),
        "cluster": lambda: cluster_shape(ctx),
    }
    started = time.perf_counter()
    try:
        for name in args.shapes:
            began = time.perf_counter()
            shapes[name]()
            report.took[name] = time.perf_counter() - began
            print(f"  ({name}: {report.took[name]:.1f} s)", flush=True)
    except CheckFailed as exc:
        print(f"\nANSWER CHECK FAILED, nothing written: {exc}", file=sys.stderr, flush=True)
        return 1, report
    except RuntimeError as exc:  # a process failed or hung
        print(f"\nA PROCESS FAILED, nothing written: {exc}", file=sys.stderr, flush=True)
        return 1, report
    finally:
        if not args.keep:
            drop(workdir)
    report.notes.append(
        f"This run took {(time.perf_counter() - started) / 60:.1f} min ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in report.took.items())
        + f"), of which {ctx.prep.seconds:.0f} s preparing data and stores (0 when cached)."
    )
    if bench_q1.source_fingerprint() != fingerprint:
        report.notes.append(
            "chanbatch's source files changed during this run, so processes ran different code; "
            "run it again."
        )
    facts.append(("load average at end", bench_q1.load_average()))
    print("\n" + "\n".join(table_markdown(report.figures)))
    for note in report.notes:
        print("note:", note)
    if args.out is not None:
        report.chart = args.out.parent / "img" / CHART
        draw_chart(report, report.chart)
        body = section_markdown(command, facts, report, args, args.out)
        _write_section(args.out, body, section=SECTION, begin=BEGIN, end=END, header=DOC_HEADER)
        print(f"\nwrote section '{SECTION}' of {args.out} and {report.chart}")
    return 0, report


if __name__ == "__main__":
    sys.exit(main())
