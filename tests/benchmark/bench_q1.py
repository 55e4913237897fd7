#!/usr/bin/env python
"""Benchmark of TPC-H Q1 as a blueprint (issues 3 and 4): cold, no-op and incremental runs.

Run it from the repository root, with the project's venv active::

    python tests/benchmark/bench_q1.py --sf 1 --repeat 5 [--out docs/performance.md]

What it measures, in ONE run, with medians over ``--repeat`` repeats whose order rotates (the
machine may be shared and noisy, so every figure is sampled in every round):

(a) ``tests/benchmark/q1.yaml`` run COLD with ``scheduler="threads"``: every repeat runs in a
    fresh store made of hard links to the frozen objects, manifests and refs (no ``cache/``, no
    ``runs/``), so nothing is reused;
(b) a hand-written ``dask.dataframe`` Q1 over the same 84 Parquet objects (``dd.read_parquet``
    of the object files), on the threaded scheduler with the same number of workers;
(c) DuckDB answering Q1 from the same object files (``read_parquet([...])``), a new connection
    each time, with the same number of threads; also as a whole process;
(d) the no-op rerun (everything cached): in-process right after each cold run, and as a whole
    process, ``chanbatch run tests/benchmark/q1.yaml --store STORE --json``;
(e) one new slice appended: the 83 first months are frozen and run once (untimed), then each
    repeat freezes the 84th month into a copy of that store (timed apart) and runs again.

Targets: issue 3, cold <= 1.10x the hand-written dask; issue 4, no-op <= 0.05x cold in
process, whole-process no-op faster than DuckDB from scratch, one new slice <= 0.05x cold.
Ratios pair the samples of one round (the median of the per-round ratios).

Without a target, for diagnosis: dask decoding every column of every object as chanbatch does
(``dd.from_map`` of ``pq.read_table(path).to_pandas()``), and one new FULL month appended
(1998-08 onto 1992-01..1998-07; the last month, 1998-12, has 18 rows, all filtered out).

Every answer is checked: chanbatch, dask and DuckDB against each other and against the exact
decimal answer (DuckDB over the original tpchgen file), floats with a relative tolerance; the
no-op and incremental runs must give the cold run's output snapshot id.

If a target is missed (or with ``--profile``), it profiles a cold run: its wall time on one
thread ("sync") against threads, unprofiled; cProfile of a "sync" run, grouped into phases;
per-task thread time in a threaded run; the imports of the whole-process no-op; and the costs,
on one Python thread, of each step and of the alternatives proposed in docs/performance.md.

Data: TPC-H lineitem from ``tpchgen-cli`` (cached under ``<repo>/.bench/``, ignored by git),
prepared once: decimal columns become float64 (pandas has no fast decimal type, so chanbatch and
dask would otherwise compute on Python ``Decimal`` objects; both sides, and DuckDB, read the same
floats), ``string_view`` becomes ``string``, and an int key ``month`` = year * 100 + month of
``l_shipdate`` is added; frozen with ``Store(path).freeze("lineitem", table, slice_by="month")``
into 84 slices. ``l_shipdate`` stays a date32 column.

This file is not a test: ``tests/benchmark/conftest.py`` keeps pytest from collecting it.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import gc
import json
import os
import platform
import pstats
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchkit
from benchkit import (
    ensure_lineitem,
    fmt_samples,
    median,
    write_section,
)
from benchkit import find_tool as _tool
from benchkit import git_revision as _git_revision
from benchkit import version as _version

REPO = Path(__file__).resolve().parents[2]
BLUEPRINT = REPO / "tests" / "benchmark" / "q1.yaml"
DATASET = "lineitem"
OUTPUT_STAGE = "q1"
KEY = "month"
SECTION = "Blueprints: TPC-H Q1 (issues 3 and 4)"
BEGIN = "<!-- bench_q1.py: generated, begin -->"
END = "<!-- bench_q1.py: generated, end -->"
PREPARE_VERSION = 1  # bump when the preparation below changes

TARGET_COLD = 1.10  # x hand-written dask (issue 3)
TARGET_NOOP = 0.05  # x cold, in process (issue 4)
TARGET_APPEND = 0.05  # x cold, in process (issue 4)

SHIP_CUTOFF = dt.date(1998, 9, 2)  # date '1998-12-01' - interval '90' day
GROUP = ["l_returnflag", "l_linestatus"]
RESULT_COLUMNS = [
    *GROUP,
    "sum_qty",
    "sum_base_price",
    "sum_disc_price",
    "sum_charge",
    "avg_qty",
    "avg_price",
    "avg_disc",
    "count_order",
]
Q1_COLUMNS = [
    "l_quantity",
    "l_extendedprice",
    "l_discount",
    "l_tax",
    "l_returnflag",
    "l_linestatus",
    "l_shipdate",
]
RTOL = 1e-9

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
FROM read_parquet($files)
WHERE l_shipdate <= DATE '1998-09-02'
GROUP BY l_returnflag, l_linestatus
ORDER BY l_returnflag, l_linestatus
"""

DOC_HEADER = """# Performance

Measured numbers for chanbatch, one section per area. Each section names the command that
produced its numbers and the machine they were measured on. Re-running a section's command
replaces only the generated block of that section, so notes written below a block are kept.
"""


# -- results ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """One line of the summary table."""

    figure: str
    seconds: str
    ratio: str = ""
    target: str = "—"
    passed: bool | None = None  # None: no target
    x: float | None = None  # the ratio as a number, for report.py's summary and chart
    goal: float | None = None  # the target ratio as a number (met when x <= goal)

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return "—"
        return "yes" if self.passed else "**no**"


@dataclass(slots=True)
class Report:
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # markdown lines
    profile: list[str] = field(default_factory=list)  # markdown lines
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        ratio = f" ({row.ratio})" if row.ratio else ""
        print(f"  {row.figure}: {row.seconds}{ratio}  [{row.target}: {row.verdict}]", flush=True)


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f}" if seconds < 10 else f"{seconds:.1f}"


def settle() -> None:
    """Let the previous measurement's garbage and writes go before the next one starts."""
    gc.collect()
    if hasattr(os, "sync"):
        os.sync()


# -- other processes ------------------------------------------------------------------------------


def _busy_seconds() -> float | None:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    # user nice system idle iowait irq softirq steal ...
    ticks = [int(x) for x in fields[1:9]]
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]
    return busy / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Others:
    """How much of the machine other processes used while a measurement ran (0..1)."""

    # CPU seconds of this process and its exited children (a subclass may count more)
    own_seconds = staticmethod(_own_seconds)

    def __init__(self) -> None:
        self.busy = _busy_seconds()
        self.own = self.own_seconds()
        self.wall = time.perf_counter()

    def share(self) -> float | None:
        busy = _busy_seconds()
        if busy is None or self.busy is None:
            return None
        wall = time.perf_counter() - self.wall
        others = (busy - self.busy) - (self.own_seconds() - self.own)
        return max(0.0, others / (wall * (os.cpu_count() or 1)))


QUIET_WAIT = 10.0  # seconds wait_quiet waits at most by default (report.py --quick lowers it)


def wait_quiet(limit: float | None = None, window: float = 0.5, threshold: float = 0.10) -> None:
    """Wait (at most ``limit`` seconds) for a ``window`` in which others use < ``threshold``."""
    limit = QUIET_WAIT if limit is None else limit
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        probe = Others()
        time.sleep(window)
        share = probe.share()
        if share is None or share < threshold:
            return


# -- machine ------------------------------------------------------------------------------------


def _proc_line(path: str, prefix: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def source_fingerprint() -> str:
    """A digest of chanbatch's source files, to notice the library changing during a run."""
    import hashlib

    import chanbatch

    root = Path(chanbatch.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def load_average() -> str:
    if not hasattr(os, "getloadavg"):
        return "?"
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> list[tuple[str, str]]:
    import pyarrow as pa

    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    mem = _proc_line("/proc/meminfo", "MemTotal")
    ram = f"{int(mem.split()[0]) / 2**20:.1f} GiB" if mem else "unknown"
    return [
        ("date", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("CPU", _proc_line("/proc/cpuinfo", "model name") or platform.processor() or "unknown"),
        ("cores", f"{cores} logical, {usable} usable by this process"),
        ("RAM", ram),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("load average at start", load_average()),
        ("Python", platform.python_version()),
        ("pandas", _version("pandas")),
        ("pyarrow", f"{pa.__version__} (memory pool: {pa.default_memory_pool().backend_name})"),
        ("dask", _version("dask")),
        ("duckdb", _version("duckdb")),
        ("numpy", _version("numpy")),
        ("chanbatch", f"{_version('chanbatch')}, git {_git_revision()}"),
    ]


# -- data ---------------------------------------------------------------------------------------


def prepared_table(path: Path) -> Any:
    """lineitem as frozen: decimals as float64, strings as ``string``, plus the key ``month``.

    Decimal -> float64: pandas has no fast decimal type (a decimal column reaches pandas as
    Python ``Decimal`` objects, or as an ArrowDtype that groupby handles slowly), so any
    pandas-based engine would be measured on that rather than on its own work. Casting once, at
    preparation, gives chanbatch, dask and DuckDB the very same float64 values.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    columns, fields = [], []
    for f in table.schema:
        column = table[f.name]
        if pa.types.is_decimal(f.type):
            column = column.cast(pa.float64())
        elif pa.types.is_string_view(f.type) or pa.types.is_large_string(f.type):
            column = column.cast(pa.string())
        columns.append(column)
        fields.append(pa.field(f.name, column.type))
    table = pa.Table.from_arrays(columns, schema=pa.schema(fields))
    ship = table["l_shipdate"]
    month = pc.add(pc.multiply(pc.year(ship), 100), pc.month(ship)).cast(pa.int32())
    return table.append_column(KEY, month)


def month_filter(table: Any, op: str, key: int) -> Any:
    import pyarrow.compute as pc

    return table.filter(getattr(pc, op)(table[KEY], key))


@dataclass(slots=True)
class Prepared:
    """The frozen stores every measurement copies from (by hard links)."""

    full: Path  # all 84 months
    base: Path  # every month but the last
    last: Any  # the last month as an Arrow table, to append
    last_key: int
    base_month: Path  # months before FULL_MONTH
    month: Any  # FULL_MONTH as an Arrow table
    month_key: int
    slices: int
    rows: int
    object_bytes: int
    seconds: float  # preparation time, 0 when reused


FULL_MONTH = 199808


def prepare(source: Path, sf: float, cache: Path) -> Prepared:
    """Freeze the stores once; reuse them while the stamp (versions, recipe) still matches."""
    import pyarrow as pa
    import pyarrow.compute as pc

    import chanbatch as cb
    from chanbatch.version import FORMAT_VERSION

    root = cache / f"q1-sf{sf:g}"
    stamp = {
        "recipe": PREPARE_VERSION,
        "format": FORMAT_VERSION,
        "pyarrow": pa.__version__,
        "chanbatch": _version("chanbatch"),
        "source_bytes": source.stat().st_size,
    }
    stamp_file = root / "stamp.json"
    started = time.perf_counter()
    fresh = not (stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp)
    if fresh:
        print(f"preparing lineitem and freezing the stores under {root}", flush=True)
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        table = prepared_table(source)
        cb.Store(root / "full").freeze(DATASET, table, slice_by=KEY)
        last_key = int(pc.max(table[KEY]).as_py())
        cb.Store(root / "base").freeze(DATASET, month_filter(table, "less", last_key), slice_by=KEY)
        cb.Store(root / "base_month").freeze(
            DATASET, month_filter(table, "less", FULL_MONTH), slice_by=KEY
        )
        del table
        stamp_file.write_text(json.dumps(stamp))
    full = cb.Store(root / "full")
    manifest = full.resolve(DATASET).manifest
    keys = [int(e.key) for e in manifest.slices]
    last_key = keys[-1]
    files = object_files(root / "full")
    return Prepared(
        full=root / "full",
        base=root / "base",
        last=full.read_table(f"{DATASET}[{last_key}]"),
        last_key=last_key,
        base_month=root / "base_month",
        month=full.read_table(f"{DATASET}[{FULL_MONTH}]"),
        month_key=FULL_MONTH,
        slices=len(keys),
        rows=sum(e.rows for e in manifest.slices),
        object_bytes=sum(os.path.getsize(f) for f in files),
        seconds=time.perf_counter() - started if fresh else 0.0,
    )


def object_files(store_dir: Path) -> list[str]:
    """The local paths of the objects of the latest ``lineitem`` snapshot, in slice order."""
    import chanbatch as cb
    from chanbatch.snapshot.layout import object_path
    from chanbatch.snapshot.read import slice_parts

    store = cb.Store(store_dir)
    parts = slice_parts(store.storage, store.slices(DATASET))
    return [str(store_dir / object_path(p.object)) for p in parts]


def link_store(
    src: Path, dst: Path, dirs: Sequence[str] = ("objects", "manifests", "refs")
) -> Path:
    """A new store at ``dst`` whose files in ``dirs`` are hard links to ``src``'s.

    chanbatch never writes a file in place (objects are write-once, everything else is written
    to a temporary name and renamed, refs are created exclusively), so the copy cannot change
    the original.
    """
    dst.mkdir(parents=True)
    for name in dirs:
        top = src / name
        if not top.exists():
            continue
        for folder, _subdirs, files in os.walk(top):
            target = dst / Path(folder).relative_to(src)
            target.mkdir(parents=True, exist_ok=True)
            for file in files:
                os.link(Path(folder) / file, target / file)
    return dst


# -- the three engines --------------------------------------------------------------------------


def normalise(frame: Any) -> Any:
    """A Q1 answer with our column names, sorted by the group keys, plain dtypes."""
    import pandas as pd

    out = frame.reset_index(drop=True)[RESULT_COLUMNS].copy()
    for key in GROUP:
        out[key] = out[key].astype(str)
    for name in RESULT_COLUMNS[2:-1]:
        out[name] = pd.to_numeric(out[name]).astype("float64")
    out["count_order"] = out["count_order"].astype("int64")
    return out.sort_values(GROUP, kind="stable").reset_index(drop=True)


def forget_dask_plans() -> None:
    """Drop the Parquet read plans (footers, statistics) dask keeps between calls, so that
    every dask measurement starts from the files, as a new process would."""
    try:
        from dask.dataframe.dask_expr.io import parquet
    except ImportError:
        return
    cached = getattr(parquet, "_cached_plan", None)
    if isinstance(cached, dict):
        cached.clear()


def dask_q1(files: list[str], workers: int) -> Any:
    """TPC-H Q1, hand-written in dask.dataframe, as a user would write it."""
    import dask.dataframe as dd

    forget_dask_plans()
    df = dd.read_parquet(files)
    df = df[df.l_shipdate <= SHIP_CUTOFF]
    disc_price = df.l_extendedprice * (1 - df.l_discount)
    df = df.assign(disc_price=disc_price, charge=disc_price * (1 + df.l_tax))
    out = df.groupby(GROUP).agg(
        sum_qty=("l_quantity", "sum"),
        sum_base_price=("l_extendedprice", "sum"),
        sum_disc_price=("disc_price", "sum"),
        sum_charge=("charge", "sum"),
        avg_qty=("l_quantity", "mean"),
        avg_price=("l_extendedprice", "mean"),
        avg_disc=("l_discount", "mean"),
        count_order=("l_quantity", "count"),
    )
    result = out.compute(scheduler="threads", num_workers=workers)
    return result.reset_index().sort_values(GROUP).reset_index(drop=True)


def _read_whole(path: str) -> Any:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pandas()


def dask_q1_every_column(files: list[str], workers: int) -> Any:
    """The same Q1, but each partition decodes every column, as chanbatch's load does."""
    import dask.dataframe as dd
    import pyarrow.parquet as pq

    meta = pq.read_schema(files[0]).empty_table().to_pandas()
    df = dd.from_map(_read_whole, files, meta=meta, enforce_metadata=False)
    df = df[df.l_shipdate <= SHIP_CUTOFF]
    disc_price = df.l_extendedprice * (1 - df.l_discount)
    df = df.assign(disc_price=disc_price, charge=disc_price * (1 + df.l_tax))
    out = df.groupby(GROUP).agg(
        sum_qty=("l_quantity", "sum"),
        sum_base_price=("l_extendedprice", "sum"),
        sum_disc_price=("disc_price", "sum"),
        sum_charge=("charge", "sum"),
        avg_qty=("l_quantity", "mean"),
        avg_price=("l_extendedprice", "mean"),
        avg_disc=("l_discount", "mean"),
        count_order=("l_quantity", "count"),
    )
    result = out.compute(scheduler="threads", num_workers=workers)
    return result.reset_index().sort_values(GROUP).reset_index(drop=True)


def duckdb_q1(files: list[str], workers: int) -> Any:
    """Q1 in DuckDB from scratch: a new in-memory connection, read_parquet over the objects."""
    import duckdb

    con = duckdb.connect(config={"threads": workers})
    try:
        return con.execute(Q1_SQL, {"files": files}).df()
    finally:
        con.close()


def polars_q1(files: list[str], workers: int) -> Any:
    """Q1 in Polars: a lazy ``scan_parquet`` over the objects, collected.

    Polars sizes its thread pool once, when first imported (``POLARS_MAX_THREADS``); it is
    set to ``workers`` here when Polars is not imported yet, so all engines get as many threads.
    """
    if "polars" not in sys.modules:
        os.environ.setdefault("POLARS_MAX_THREADS", str(workers))
    import polars as pl

    price = pl.col("l_extendedprice") * (1 - pl.col("l_discount"))
    out = (
        pl.scan_parquet(files)
        .filter(pl.col("l_shipdate") <= SHIP_CUTOFF)
        .with_columns(disc_price=price, charge=price * (1 + pl.col("l_tax")))
        .group_by(GROUP)
        .agg(
            sum_qty=pl.col("l_quantity").sum(),
            sum_base_price=pl.col("l_extendedprice").sum(),
            sum_disc_price=pl.col("disc_price").sum(),
            sum_charge=pl.col("charge").sum(),
            avg_qty=pl.col("l_quantity").mean(),
            avg_price=pl.col("l_extendedprice").mean(),
            avg_disc=pl.col("l_discount").mean(),
            count_order=pl.len(),
        )
        .sort(GROUP)
        .collect()
    )
    return out.to_pandas()


def has_polars() -> bool:
    import importlib.util

    return importlib.util.find_spec("polars") is not None


DUCKDB_PROCESS = """
import json, sys
import duckdb
files = json.load(open(sys.argv[1]))
con = duckdb.connect(config={"threads": int(sys.argv[2])})
rows = con.execute(sys.argv[3], {"files": files}).fetchall()
assert len(rows) == 4, rows
"""


def exact_answer(source: Path) -> Any:
    """Q1 on the original decimal data (DuckDB), as floats: what every engine must approach."""
    import duckdb

    sql = Q1_SQL.replace("read_parquet($files)", "read_parquet($source)")
    with duckdb.connect() as con:
        frame = con.execute(sql, {"source": str(source)}).df()
    return normalise(frame)


def compare(name: str, got: Any, want: Any, want_name: str) -> str | None:
    """None when ``got`` matches ``want``; else what differs."""
    import numpy as np

    got, want = normalise(got), normalise(want)
    if got.shape != want.shape:
        return f"{name} has shape {got.shape}, {want_name} {want.shape}"
    for key in GROUP:
        if not (got[key] == want[key]).all():
            return f"{name} groups {got[GROUP].values.tolist()} != {want_name}'s"
    if not (got["count_order"] == want["count_order"]).all():
        return f"{name} count_order {got['count_order'].tolist()} != {want_name}'s"
    for column in RESULT_COLUMNS[2:-1]:
        a, b = got[column].to_numpy(), want[column].to_numpy()
        if not np.allclose(a, b, rtol=RTOL, atol=0.0):
            worst = float(np.max(np.abs(a - b) / np.abs(b)))
            return f"{name} {column} differs from {want_name}'s by up to {worst:.2e} (relative)"
    return None


# -- chanbatch ----------------------------------------------------------------------------------


@dataclass(slots=True)
class RunInfo:
    seconds: float
    snapshot: str
    computed: int
    reused: int


def run_blueprint(bp: Any, store_dir: Path, workers: int, scheduler: str = "threads") -> RunInfo:
    import chanbatch as cb

    started = time.perf_counter()
    result = bp.run(cb.Store(store_dir), scheduler=scheduler, workers=workers)
    seconds = time.perf_counter() - started
    info = result.snapshots[OUTPUT_STAGE]
    return RunInfo(
        seconds=seconds,
        snapshot=info["snapshot"],
        computed=int(result.stats["computed"]),
        reused=int(result.stats["reused"]),
    )


def output_frame(store_dir: Path, snapshot: str) -> Any:
    import chanbatch as cb

    frame = cb.Store(store_dir).read_pandas(f"tpch_q1@{snapshot}")
    return frame


def find_cli() -> str | None:
    return _tool("chanbatch")


def bytecode_env(prefix: Path | None) -> dict[str, str]:
    """The environment for whole-process figures.

    With ``prefix``, Python caches compiled bytecode there (``PYTHONPYCACHEPREFIX``), as an
    installed package has its ``.pyc`` files; without, the caller's environment as it is (which
    may say ``PYTHONDONTWRITEBYTECODE=1``, so every module is compiled from source each time).
    """
    env = dict(os.environ)
    if prefix is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(prefix)
    return env


def cli_noop(
    cli: str, store_dir: Path, workers: int, env: dict[str, str] | None = None
) -> tuple[float, dict[str, Any]]:
    cmd = [cli, "run", str(BLUEPRINT), "--store", str(store_dir), "--json"]
    cmd += ["--workers", str(workers)]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds, json.loads(done.stdout)


def timed_process(cmd: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


# -- the measurement rounds ---------------------------------------------------------------------


@dataclass(slots=True)
class Samples:
    by_name: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, name: str, seconds: float) -> None:
        self.by_name[name].append(seconds)

    def __getitem__(self, name: str) -> list[float]:
        return self.by_name[name]

    def med(self, name: str) -> float:
        return median(self.by_name[name])

    def paired(self, a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(self.by_name[a], self.by_name[b], strict=True)]


def rotate(items: list[str], n: int) -> list[str]:
    n %= len(items)
    return items[n:] + items[:n]


def measure(
    args: argparse.Namespace, source: Path, prep: Prepared, workdir: Path, report: Report
) -> tuple[Samples, dict[str, Any]]:
    import chanbatch as cb

    workers = args.workers
    bp = cb.Blueprint.from_yaml(BLUEPRINT)
    files = object_files(prep.full)
    files_json = workdir / "files.json"
    files_json.write_text(json.dumps(files))
    cli = find_cli()
    counter = iter(range(1_000_000))
    problems: list[str] = []
    facts: dict[str, Any] = {}

    def fresh(src: Path, dirs: Sequence[str] = ("objects", "manifests", "refs")) -> Path:
        return link_store(src, workdir / f"store-{next(counter):03d}", dirs)

    exact = exact_answer(source)

    # untimed: imports, page cache, and the stores the repeats copy from
    print("warm-up (untimed)", flush=True)
    warm = fresh(prep.full)
    first = run_blueprint(bp, warm, workers)
    facts["cold_snapshot"] = first.snapshot
    facts["tasks"] = first.computed
    answer = output_frame(warm, first.snapshot)
    for name, fn in (
        ("dask", dask_q1),
        ("dask, every column", dask_q1_every_column),
        ("DuckDB", duckdb_q1),
        *([("Polars", polars_q1)] if has_polars() else []),
    ):
        other = fn(files, workers)
        for a, a_name, b, b_name in (
            (answer, "chanbatch", other, name),
            (other, name, exact, "the exact decimal answer"),
        ):
            problem = compare(a_name, a, b, b_name)
            if problem:
                problems.append(problem)
    problem = compare("chanbatch", answer, exact, "the exact decimal answer")
    if problem:
        problems.append(problem)
    facts["answer"] = normalise(answer)
    noop_store = warm  # cached: the whole-process no-op runs here
    cached_env = bytecode_env(workdir / "pycache")
    as_is_env = bytecode_env(None)
    facts["dont_write_bytecode"] = os.environ.get("PYTHONDONTWRITEBYTECODE", "")
    duck_cmd = [sys.executable, "-c", DUCKDB_PROCESS, str(files_json), str(workers), Q1_SQL]
    timed_process(duck_cmd, cached_env)  # fills the bytecode cache
    timed_process([sys.executable, "-c", "pass"], cached_env)
    if cli is not None:
        cli_noop(cli, noop_store, workers, cached_env)
        cli_noop(cli, noop_store, workers, as_is_env)

    base = fresh(prep.base)
    base_run = run_blueprint(bp, base, workers)
    facts["base_cold"] = base_run
    base_month = fresh(prep.base_month)
    month_run = run_blueprint(bp, base_month, workers)
    facts["base_month_cold"] = month_run

    samples = Samples()
    counts: dict[str, set[tuple[int, int]]] = defaultdict(set)

    def chanbatch_cold() -> None:
        store = fresh(prep.full)
        cold = run_blueprint(bp, store, workers)
        if cold.snapshot != first.snapshot or cold.reused != 0:
            problems.append(f"cold run gave {cold.snapshot[:12]}, reused {cold.reused}")
        settle()
        noop = run_blueprint(bp, store, workers)
        if noop.snapshot != first.snapshot or noop.computed != 0:
            problems.append(
                f"no-op rerun computed {noop.computed} tasks, gave {noop.snapshot[:12]}"
            )
        samples.add("cold", cold.seconds)
        samples.add("noop", noop.seconds)

    def append(base_dir: Path, table: Any, name: str, expect: str | None) -> None:
        store_dir = fresh(base_dir, ("objects", "manifests", "refs", "cache"))
        store = cb.Store(store_dir)
        started = time.perf_counter()
        store.freeze(DATASET, table, slice_by=KEY)
        samples.add(f"{name} freeze", time.perf_counter() - started)
        settle()
        info = run_blueprint(bp, store_dir, workers)
        samples.add(name, info.seconds)
        counts[name].add((info.computed, info.reused))
        if expect is not None and info.snapshot != expect:
            problems.append(f"{name}: output {info.snapshot[:12]} != cold {expect[:12]}")

    def timed(name: str, fn: Callable[[], Any]) -> None:
        started = time.perf_counter()
        fn()
        samples.add(name, time.perf_counter() - started)

    def process_noop(name: str, env: dict[str, str]) -> None:
        assert cli is not None
        seconds, doc = cli_noop(cli, noop_store, workers, env)
        if doc["stats"]["computed"] != 0:
            problems.append(f"whole-process no-op computed {doc['stats']['computed']} tasks")
        if doc["outputs"][OUTPUT_STAGE]["snapshot"] != first.snapshot:
            problems.append("whole-process no-op gave another output snapshot")
        samples.add(name, seconds)

    sides: dict[str, Callable[[], None]] = {
        "cold": chanbatch_cold,
        "dask": lambda: timed("dask", lambda: dask_q1(files, workers)),
        "duckdb": lambda: timed("duckdb", lambda: duckdb_q1(files, workers)),
        **(
            {"polars": lambda: timed("polars", lambda: polars_q1(files, workers))}
            if has_polars()
            else {}
        ),
        "append": lambda: append(base, prep.last, "append", first.snapshot),
        "append month": lambda: append(base_month, prep.month, "append month", None),
        "duckdb process": lambda: samples.add(
            "duckdb process", timed_process(duck_cmd, cached_env)
        ),
        "python floor": lambda: samples.add(
            "python floor", timed_process([sys.executable, "-c", "pass"], cached_env)
        ),
        "dask every column": lambda: timed(
            "dask every column", lambda: dask_q1_every_column(files, workers)
        ),
    }
    if cli is not None:
        sides["noop process"] = lambda: process_noop("noop process", cached_env)
        if facts["dont_write_bytecode"]:
            sides["noop process, no bytecode cache"] = lambda: process_noop(
                "noop process, no bytecode cache", as_is_env
            )
    else:
        report.notes.append("no `chanbatch` executable found: whole-process no-op not measured")
    order = list(sides)
    disturbed: dict[str, list[float]] = defaultdict(list)
    for i in range(args.repeat):
        print(f"round {i + 1}/{args.repeat} (load {load_average()})", flush=True)
        for name in rotate(order, i):
            settle()
            wait_quiet()
            probe = Others()
            sides[name]()
            share = probe.share()
            if share is not None:
                disturbed[name].append(share)
        line = ", ".join(f"{n} {v[-1]:.3f}" for n, v in samples.by_name.items())
        print("  " + line, flush=True)
    facts["disturbed"] = dict(disturbed)
    facts["counts"] = {k: sorted(v) for k, v in counts.items()}
    facts["problems"] = problems
    facts["noop_store"] = noop_store
    facts["cli"] = cli
    facts["cached_env"] = cached_env
    return samples, facts


# -- report -------------------------------------------------------------------------------------


def summarise(
    args: argparse.Namespace,
    prep: Prepared,
    samples: Samples,
    facts: dict[str, Any],
    report: Report,
) -> None:
    w = args.workers
    cold, dask = samples.med("cold"), samples.med("dask")
    cold_ratio = median(samples.paired("cold", "dask"))
    report.add(
        Row(
            f"(a) chanbatch cold run, `threads`, {w} workers",
            fmt_s(cold),
            f"{cold_ratio:.2f}× dask",
            f"≤ {TARGET_COLD:.2f}× dask (issue 3)",
            cold_ratio <= TARGET_COLD,
            x=cold_ratio,
            goal=TARGET_COLD,
        )
    )
    report.add(
        Row(f"(b) hand-written dask.dataframe, `threads`, {w} workers", fmt_s(dask), "1.00×")
    )
    duck = samples.med("duckdb")
    report.add(
        Row(
            f"(c) DuckDB, new connection, {w} threads",
            fmt_s(duck),
            f"{median(samples.paired('duckdb', 'dask')):.2f}× dask",
        )
    )
    if samples.by_name.get("polars"):
        report.add(
            Row(
                f"(c) Polars, `scan_parquet` … `collect()`, {w} threads",
                fmt_s(samples.med("polars")),
                f"{median(samples.paired('polars', 'dask')):.2f}× dask",
            )
        )
    for name, label in (("duckdb", "DuckDB"), ("polars", "Polars")):
        if samples.by_name.get(name):
            ratio = median(samples.paired("cold", name))
            report.add(
                Row(
                    f"(a) ÷ (c): chanbatch cold run ÷ {label}", "", f"{ratio:.2f}× {label}", x=ratio
                )
            )
    report.add(
        Row(
            "(c) DuckDB as a whole process (`python -c`, import duckdb, connect, query)",
            fmt_s(samples.med("duckdb process")),
            f"{median(samples.paired('duckdb process', 'dask')):.2f}× dask",
        )
    )
    noop_ratio = median(samples.paired("noop", "cold"))
    report.add(
        Row(
            "(d) no-op rerun, in process",
            fmt_s(samples.med("noop")),
            f"{noop_ratio:.3f}× cold",
            f"≤ {TARGET_NOOP:.2f}× cold (issue 4)",
            noop_ratio <= TARGET_NOOP,
            x=noop_ratio,
            goal=TARGET_NOOP,
        )
    )
    if samples["noop process"]:
        proc_ratio = median(samples.paired("noop process", "duckdb"))
        proc_ratio2 = median(samples.paired("noop process", "duckdb process"))
        report.add(
            Row(
                "(d) no-op rerun, whole process: `chanbatch run q1.yaml --json`",
                fmt_s(samples.med("noop process")),
                f"{proc_ratio:.2f}× DuckDB ({proc_ratio2:.2f}× DuckDB as a process; fastest "
                f"samples {min(samples['noop process']) / min(samples['duckdb']):.2f}× DuckDB)",
                "< 1× DuckDB from scratch (issue 4)",
                proc_ratio < 1.0,
                x=proc_ratio,
                goal=1.0,
            )
        )
    if samples.by_name.get("noop process, no bytecode cache"):
        report.add(
            Row(
                "(d) … the same, compiling chanbatch from source "
                "(`PYTHONDONTWRITEBYTECODE=1`, as this environment sets)",
                fmt_s(samples.med("noop process, no bytecode cache")),
                f"{median(samples.paired('noop process, no bytecode cache', 'duckdb')):.2f}× "
                "DuckDB",
            )
        )
    append_ratio = median(samples.paired("append", "cold"))
    report.add(
        Row(
            f"(e) one new slice ({prep.last_key}, {prep.last.num_rows} rows) appended: run",
            fmt_s(samples.med("append")),
            f"{append_ratio:.3f}× cold",
            f"≤ {TARGET_APPEND:.2f}× cold (issue 4)",
            append_ratio <= TARGET_APPEND,
            x=append_ratio,
            goal=TARGET_APPEND,
        )
    )
    report.add(
        Row(
            f"(e) … its freeze, `Store.freeze` of {prep.last_key}",
            fmt_s(samples.med("append freeze")),
        )
    )
    report.add(
        Row(
            f"diagnostic: one new full month ({prep.month_key}, {prep.month.num_rows:,} rows) "
            f"appended: run",
            fmt_s(samples.med("append month")),
            f"{median(samples.paired('append month', 'cold')):.3f}× cold",
        )
    )
    report.add(
        Row(
            "diagnostic: dask decoding every column (`from_map` of `read_table().to_pandas()`)",
            fmt_s(samples.med("dask every column")),
            f"{median(samples.paired('dask every column', 'dask')):.2f}× dask",
        )
    )
    report.add(Row("diagnostic: `python -c pass`", fmt_s(samples.med("python floor"))))

    base, month = facts["base_cold"], facts["base_month_cold"]
    report.details += [
        f"- Input: TPC-H lineitem SF{args.sf:g} from `tpchgen-cli`, {prep.rows:,} rows, "
        f"prepared once (decimals → float64, `string_view` → `string`, key `month` = "
        f"year × 100 + month of `l_shipdate`) and frozen into {prep.slices} month slices, "
        f"{prep.object_bytes / 1e6:.1f} MB of Parquet objects. dask and DuckDB read the same "
        "object files (hard links of them) as chanbatch"
        + (", and so does Polars (`scan_parquet` of the list of files)." if has_polars() else "."),
        f"- Blueprint: `tests/benchmark/q1.yaml` (filter → derive → group_by/aggregate → sort); "
        f"a cold run computes {facts['tasks']} tasks.",
        f"- {args.repeat} rounds after one untimed warm-up of every side; each round runs every "
        "figure once, in an order rotated by one each round. Ratios are medians of the "
        "per-round ratios; seconds are medians.",
        "- Cold: each repeat is a new store of hard links to the frozen objects, manifests and "
        "refs, without `cache/` and `runs/`. The in-process no-op runs right after, in the same "
        "store.",
        f"- Appends: a copy (hard links, with `cache/`) of a store of the first {prep.slices - 1} "
        f"months, already run once ({fmt_s(base.seconds)} s cold); each repeat freezes "
        f"{prep.last_key} into it, then runs. Tasks computed/reused: "
        f"{facts['counts'].get('append')}. The output snapshot equals the cold run's. Full "
        f"month: {prep.month_key} onto the months before it ({fmt_s(month.seconds)} s cold); "
        f"computed/reused: {facts['counts'].get('append month')}.",
        "- Whole-process figures are wall times of a subprocess, from spawn to exit, with "
        "Python's bytecode cache on (in a private `PYTHONPYCACHEPREFIX`, filled by an untimed "
        "run), as an installed package has its `.pyc` files."
        + (
            " This environment sets `PYTHONDONTWRITEBYTECODE=1`, under which every run "
            "compiles chanbatch (an editable install) from source: shown on its own row."
            if facts.get("dont_write_bytecode")
            else ""
        )
        + " The "
        "whole-process no-op is judged against DuckDB's in-process time (a new connection "
        "answering Q1 from the files), the stricter reading: DuckDB's own CLI starts in "
        "milliseconds, while the `python -c` figure adds Python's start and `import duckdb`.",
        "- dask's Parquet read plans (footers, statistics), which it caches between calls in "
        "one process, are dropped before every dask run, so that dask starts from the files "
        "as chanbatch does.",
    ]
    for name, values in samples.by_name.items():
        report.details.append(f"- {name} s: {fmt_samples(values)}")
    if facts["disturbed"]:
        shares = ", ".join(
            f"{name} {100 * median(v):.0f}% (worst {100 * max(v):.0f}%)"
            for name, v in facts["disturbed"].items()
        )
        report.details.append(
            f"- Before each measurement the script waits (up to {QUIET_WAIT:g} s) for half a second in which "
            "other processes use under 10% of the machine; the machine is shared, so they may "
            f"still run meanwhile. Their median share of all cores during each figure: {shares}."
        )
    problems = facts["problems"]
    if problems:
        report.notes += [f"MISMATCH: {p}" for p in problems]
    else:
        report.details.append(
            "- Answers agree: chanbatch's output snapshot, dask, DuckDB"
            + (" and Polars" if has_polars() else "")
            + " match each other and "
            f"the exact decimal answer (DuckDB on the original file) within a relative {RTOL:g}; "
            "counts and groups exactly. Every no-op and incremental run gave the cold run's "
            "output snapshot id."
        )


# -- profile ------------------------------------------------------------------------------------

# (phase, (file suffix, function name) whose cumulative time it is); see phases() for the
# subtractions that make them disjoint.
_FUNCS = {
    "load_slice": ("chanbatch/engine/graph.py", "load_slice"),
    "load_object": ("chanbatch/snapshot/read.py", "load_object"),
    "get_object": ("chanbatch/snapshot/objects.py", "get_object"),
    "digest": ("chanbatch/hashing.py", "digest"),
    "run_task": ("chanbatch/engine/graph.py", "run_task"),
    "apply_rowwise": ("chanbatch/engine/execute.py", "apply_rowwise"),
    "evaluate_mask": ("chanbatch/engine/pandas_eval.py", "evaluate_mask"),
    "evaluate": ("chanbatch/engine/pandas_eval.py", "evaluate"),
    "date": ("chanbatch/engine/pandas_functions.py", "_date"),
    "partial": ("chanbatch/engine/aggregate.py", "partial"),
    "combine": ("chanbatch/engine/aggregate.py", "combine"),
    "finish": ("chanbatch/engine/execute.py", "finish"),
    "apply_whole": ("chanbatch/engine/execute.py", "apply_whole"),
    "write_result": ("chanbatch/cache/index.py", "write_result"),
    "plan_blueprint": ("chanbatch/run/planned.py", "plan_blueprint"),
    "build_graph": ("chanbatch/engine/graph.py", "build_graph"),
    "execute": ("chanbatch/run/planned.py", "_execute"),
    "freeze": ("chanbatch/snapshot/freeze/__init__.py", "freeze"),
    "write_record": ("chanbatch/cache/runs.py", "write_record"),
    "run_blueprint": ("chanbatch/run/runner.py", "run_blueprint"),
}


def _cumulative(stats: pstats.Stats) -> dict[str, float]:
    out = dict.fromkeys(_FUNCS, 0.0)
    table = stats.stats  # type: ignore[attr-defined]
    for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in table.items():
        for name, (suffix, fname) in _FUNCS.items():
            if func == fname and file.endswith(suffix):
                out[name] += ct
    return out


def phases(ct: dict[str, float], total: float) -> list[tuple[str, float]]:
    """Disjoint phases of a cold run, from cumulative times."""
    read = ct["get_object"]
    decode = ct["load_object"] - ct["get_object"]
    to_pandas = ct["load_slice"] - ct["load_object"]
    mask = ct["evaluate_mask"]
    derive = ct["evaluate"]
    rows = ct["apply_rowwise"] - mask - derive
    partial = ct["partial"]
    writes = ct["write_result"]
    tail = ct["combine"] + ct["finish"] + ct["apply_whole"]
    in_tasks = ct["run_task"] - writes  # every task body but its cache write
    tasks_other = in_tasks - (ct["apply_rowwise"] + partial + tail)
    scheduler = ct["execute"] - ct["run_task"] - ct["load_slice"]
    out = [
        ("read object files + blake3 check (`get_object`)", read),
        ("Parquet decode (`pq.read_table`)", decode),
        ("Arrow → pandas (`to_pandas`)", to_pandas),
        (
            f"filter expression (`evaluate_mask`), of which `date('1998-09-02')` "
            f"{ct['date']:.2f} s",
            mask,
        ),
        ("filter row selection + derive frame copy (`apply_rowwise` rest)", rows),
        ("derive expressions (`evaluate`)", derive),
        ("groupby partials (`aggregate.partial`)", partial),
        ("combine tree + finish + sort", tail),
        ("cache writes (Parquet encode, blake3, write, entry)", writes),
        ("other task code", tasks_other),
        ("dask scheduler and graph overhead (`_execute` − tasks)", scheduler),
        ("plan + decide (`plan_blueprint`)", ct["plan_blueprint"]),
        ("build graph", ct["build_graph"]),
        ("freeze the output + run record", ct["freeze"] + ct["write_record"]),
    ]
    rest = total - sum(v for _, v in out)
    if abs(rest) >= 0.005:
        out.append(("rest (outside the phases above)", rest))
    return out


class ThreadTimer:
    """Per-kind thread time of the task functions of a threaded run (patched in memory)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.lock = threading.Lock()

    @contextmanager
    def patched(self) -> Iterator[None]:
        from chanbatch.engine import graph

        originals = (graph.load_slice, graph.run_task)

        def load_slice(ref: Any) -> Any:
            started = time.perf_counter()
            try:
                return originals[0](ref)
            finally:
                self._add("load (read, check, decode)", time.perf_counter() - started)

        def run_task(call: Any, *deps: Any) -> Any:
            started = time.perf_counter()
            try:
                return originals[1](call, *deps)
            finally:
                kind = call.task.kind
                label = f"{kind} {call.task.stage}" if kind == "apply" else kind
                self._add(label, time.perf_counter() - started)

        graph.load_slice, graph.run_task = load_slice, run_task
        try:
            yield
        finally:
            graph.load_slice, graph.run_task = originals

    def _add(self, label: str, seconds: float) -> None:
        with self.lock:
            self.seconds[label] += seconds
            self.calls[label] += 1


def profile_cold(args: argparse.Namespace, prep: Prepared, workdir: Path) -> list[str]:
    import chanbatch as cb

    bp = cb.Blueprint.from_yaml(BLUEPRINT)
    lines: list[str] = []

    # 0. the same cold run on one thread, not profiled, against one on the threaded scheduler
    walls = {}
    for scheduler in ("sync", "threads"):
        store = link_store(prep.full, workdir / f"plain-{scheduler}")
        settle()
        walls[scheduler] = run_blueprint(bp, store, args.workers, scheduler).seconds
    lines += [
        f'Cold run, not profiled: {walls["sync"]:.2f} s with `scheduler="sync"` (one '
        f"thread), {walls['threads']:.2f} s with `threads` ({args.workers} workers): "
        f"{walls['sync'] / walls['threads']:.2f}× from {args.workers} threads.",
        "",
    ]

    # 1. cProfile of a single-threaded run: cProfile only sees the thread it runs in.
    store = link_store(prep.full, workdir / "profile-sync")
    settle()
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    bp.run(cb.Store(store), scheduler="sync")
    profiler.disable()
    wall = time.perf_counter() - started
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    ct = _cumulative(stats)
    lines += [
        f'cProfile of one cold run with `scheduler="sync"` (one thread; cProfile sees only '
        f"the thread it runs in): {wall:.2f} s wall, {total:.2f} s profiled. Phases are "
        "disjoint, from cumulative times:",
        "",
        "| phase | seconds | share |",
        "|---|---|---|",
    ]
    for label, seconds in phases(ct, total):
        lines.append(f"| {label} | {seconds:.2f} | {100 * seconds / total:.0f}% |")
    lines += ["", "Top functions by own time:", "", "| function | own s | calls |", "|---|---|---|"]
    table = stats.stats  # type: ignore[attr-defined]
    top = sorted(table.items(), key=lambda kv: kv[1][2], reverse=True)[:12]
    for (file, line, func), (_cc, nc, tt, _ct, _callers) in top:
        where = file.split("site-packages/")[-1].replace(str(REPO) + "/", "")
        lines.append(f"| `{where}:{line}({func})` | {tt:.2f} | {nc} |")

    # 2. a threaded run, with each task's wall time summed per kind
    store = link_store(prep.full, workdir / "profile-threads")
    settle()
    timer = ThreadTimer()
    with timer.patched():
        started = time.perf_counter()
        bp.run(cb.Store(store), scheduler="threads", workers=args.workers)
        wall = time.perf_counter() - started
    busy = sum(timer.seconds.values())
    lines += [
        "",
        f"A threaded cold run ({args.workers} workers), each task's wall time summed by kind: "
        f"{wall:.2f} s wall, {busy:.2f} s of task time, so {busy / wall:.2f} tasks ran at once "
        f"on average (of {args.workers}).",
        "",
        "| task | calls | thread-seconds |",
        "|---|---|---|",
    ]
    for label, seconds in sorted(timer.seconds.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {label} | {timer.calls[label]} | {seconds:.2f} |")
    return lines


WATCHED_IMPORTS = (
    "chanbatch.engine.graph",
    "chanbatch.engine.pandas_eval",
    "pandas",
    "numpy",
    "pyarrow",
    "dask",
)


def profile_noop_process(
    cli: str | None, store_dir: Path, workers: int, env: dict[str, str] | None = None
) -> list[str]:
    """What the whole-process no-op spends on imports, and which modules pull pandas in."""
    if cli is None:
        return []
    cmd = [sys.executable, "-X", "importtime", cli, "run", str(BLUEPRINT)]
    cmd += ["--store", str(store_dir), "--json", "--workers", str(workers)]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    wall = time.perf_counter() - started
    total = 0
    seen: dict[str, tuple[int, str]] = {}  # module -> (cumulative us, module that imported it)
    stack: list[tuple[int, str]] = []  # lines come children first; track parents by depth
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("import time:")]
    parsed = []
    for line in lines:
        fields = line.split(":", 1)[1].split("|")
        if len(fields) != 3 or not fields[1].strip().isdigit():
            continue
        raw = fields[2].rstrip()
        depth = (len(raw) - len(raw.lstrip()) - 1) // 2
        parsed.append((depth, int(fields[1]), raw.strip()))
    # importtime prints a module after everything it imported, one level deeper; a module's
    # parent is the next line printed at a smaller depth.
    for depth, cumulative, name in reversed(parsed):
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parent = stack[-1][1] if stack else "(top level)"
        stack.append((depth, name))
        if depth == 0:
            total += cumulative
        if name in WATCHED_IMPORTS:
            seen[name] = (cumulative, parent)
    tops = sorted(((c, n) for d, c, n in parsed if d == 0), key=lambda item: item[0], reverse=True)[
        :6
    ]
    parts = []
    for name in WATCHED_IMPORTS:
        if name in seen:
            cumulative, parent = seen[name]
            parts.append(f"`{name}` {cumulative / 1e6:.2f} s (imported by `{parent}`)")
        else:
            parts.append(f"`{name}` not imported")
    return [
        f"The whole-process no-op under `python -X importtime` ({wall:.2f} s wall; "
        f"{'exit 0' if done.returncode == 0 else f'exit {done.returncode}'}): imports take "
        f"{total / 1e6:.2f} s in all. Cumulative import time of the first import of: "
        + "; ".join(parts)
        + ". Largest imports at the top level: "
        + ", ".join(f"`{n}` {c / 1e6:.3f} s" for c, n in tops)
        + ".",
    ]


def what_if(prep: Prepared, repeat: int) -> list[str]:
    """Single-threaded costs, over all 84 objects, of what a cold run does and alternatives."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    import chanbatch as cb
    from chanbatch.blueprint.expr import parse_expr
    from chanbatch.engine import columnar, execute, graph
    from chanbatch.engine.pandas_eval import evaluate_mask
    from chanbatch.snapshot.objects import get_object
    from chanbatch.snapshot.read import slice_parts, to_pandas

    store = cb.Store(prep.full)
    entries = store.slices(DATASET)
    parts = slice_parts(store.storage, entries)
    blueprint = cb.Blueprint.from_yaml(BLUEPRINT)
    stages = blueprint.model.stages
    # each load as the plan lays it out: with the plan's column projection, if it makes one
    projection = {
        t.source or t.key: t.columns
        for t in blueprint.plan(store).plan.tasks.values()
        if t.kind == "load"
    }
    refs = [graph.Ref(store.url, e.id, projection.get(e.id), slice_id=e.id) for e in entries]
    raw = [get_object(store.storage, p.object) for p in parts]
    whole = [pq.read_table(pa.BufferReader(b)) for b in raw]
    tables = [graph.load_slice(r).table for r in refs]  # as a cold run loads them: Arrow
    loaded = tables[0].num_columns
    frames = [to_pandas(t) for t in tables]  # as the pandas path would see them
    ship_dtype = frames[0]["l_shipdate"].dtype
    shipped_t = [columnar.apply_rowwise(stages["shipped"], t) for t in tables]
    priced_t = [columnar.apply_rowwise(stages["priced"], t) for t in shipped_t]
    text_cutoff = parse_expr(f"l_shipdate <= '{SHIP_CUTOFF.isoformat()}'")
    shipped = [execute.apply_rowwise(stages["shipped"], f, (), frozenset()) for f in frames]
    priced = [execute.apply_rowwise(stages["priced"], f, (), frozenset()) for f in shipped]
    narrow = [t.select(Q1_COLUMNS) for t in whole]
    arrow_dates = [t.to_pandas(types_mapper=_arrow_dates) for t in narrow]
    cutoff = pa.scalar(SHIP_CUTOFF, pa.date32())
    aggregated = ["l_quantity", "l_extendedprice", "disc_price", "charge", "l_discount"]
    priced_arrow = [
        pa.Table.from_pandas(f[[*GROUP, *aggregated]], preserve_index=False) for f in priced
    ]

    def best(fn: Callable[[], Any]) -> float:
        times = []
        for _ in range(repeat):
            gc.collect()
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return median(times)

    def each(fn: Callable[[int], Any]) -> Callable[[], None]:
        def run() -> None:
            for i in range(len(parts)):
                fn(i)

        return run

    def pd_partial(i: int) -> Any:
        f = priced[i]
        return f.groupby(GROUP, sort=True, observed=True).agg(
            qty=("l_quantity", "sum"),
            price=("l_extendedprice", "sum"),
            disc_price=("disc_price", "sum"),
            charge=("charge", "sum"),
            disc=("l_discount", "sum"),
            n=("l_quantity", "count"),
        )

    def bincount_partial(i: int) -> Any:
        """Group ids computed once, then one ``np.bincount`` per state (nulls skipped)."""
        import numpy as np

        f = priced[i]
        ids = f.groupby(GROUP, sort=True, observed=True).ngroup().to_numpy()
        size = int(ids.max()) + 1 if len(ids) else 0
        out = {"rows": np.bincount(ids, minlength=size)}
        for column in aggregated:
            values = f[column].to_numpy(dtype="float64", na_value=np.nan)
            present = ~np.isnan(values)
            out[f"{column}.n"] = np.bincount(ids, weights=present, minlength=size)
            out[f"{column}.sum"] = np.bincount(
                ids, weights=np.where(present, values, 0.0), minlength=size
            )
        return out

    def arrow_partial(t: Any) -> Any:
        return t.group_by(GROUP).aggregate(
            [*((c, "sum") for c in aggregated), ("l_quantity", "count")]
        )

    def arrow_chain(i: int) -> Any:
        t = pq.read_table(pa.BufferReader(raw[i]), columns=Q1_COLUMNS)
        t = t.filter(pc.less_equal(t["l_shipdate"], cutoff))
        disc_price = pc.multiply(t["l_extendedprice"], pc.subtract(1.0, t["l_discount"]))
        charge = pc.multiply(disc_price, pc.add(1.0, t["l_tax"]))
        t = t.append_column("disc_price", disc_price).append_column("charge", charge)
        return arrow_partial(t)

    rows = [
        (
            f"load a slice as a cold run does (`graph.load_slice`: read, check, decode "
            f"{loaded} columns; it stays an Arrow table)",
            each(lambda i: graph.load_slice(refs[i])),
        ),
        (
            "filter stage as run (Arrow: `columnar.apply_rowwise`)",
            each(lambda i: columnar.apply_rowwise(stages["shipped"], tables[i])),
        ),
        (
            "derive stage as run (Arrow)",
            each(lambda i: columnar.apply_rowwise(stages["priced"], shipped_t[i])),
        ),
        (
            "partial as run (Arrow: `columnar.partial`, one-threaded `Table.group_by`)",
            each(lambda i: columnar.partial(stages["summary"].operation, priced_t[i])),
        ),
        (
            "`to_pandas` of a loaded slice, which only a pandas stage needs now",
            each(lambda i: to_pandas(tables[i])),
        ),
        (
            "read object files + blake3 check",
            each(lambda i: get_object(store.storage, parts[i].object)),
        ),
        ("decode all 17 columns", each(lambda i: pq.read_table(pa.BufferReader(raw[i])))),
        (
            f"decode only the {len(Q1_COLUMNS)} columns Q1 uses",
            each(lambda i: pq.read_table(pa.BufferReader(raw[i]), columns=Q1_COLUMNS)),
        ),
        (
            "`Table.to_pandas()` of all columns, pyarrow's defaults (dates as Python objects)",
            each(lambda i: whole[i].to_pandas()),
        ),
        (
            f"`to_pandas` of the {len(Q1_COLUMNS)} columns, dates as `ArrowDtype(date32)`",
            each(lambda i: narrow[i].to_pandas(types_mapper=_arrow_dates)),
        ),
        (
            f"pandas path: filter stage (`l_shipdate <= date('1998-09-02')`; `l_shipdate` is "
            f"`{ship_dtype}`)",
            each(lambda i: execute.apply_rowwise(stages["shipped"], frames[i], (), frozenset())),
        ),
        (
            "… the filter spelled `l_shipdate <= '1998-09-02'` (text literal read as a date)",
            each(lambda i: evaluate_mask(text_cutoff, frames[i])),
        ),
        (
            "… the same comparison on `ArrowDtype(date32)` against one `datetime.date` "
            "(the literal folded to a constant)",
            each(lambda i: arrow_dates[i]["l_shipdate"] <= SHIP_CUTOFF),
        ),
        (
            "pandas path: derive stage",
            each(lambda i: execute.apply_rowwise(stages["priced"], shipped[i], (), frozenset())),
        ),
        (
            "pandas path: groupby partial (`aggregate.partial`)",
            each(lambda i: execute.partial(stages["summary"], priced[i])),
        ),
        ("… one pandas `groupby().agg()` with the same sums and counts", each(pd_partial)),
        (
            "… group ids once (`ngroup`), then `np.bincount` per sum and count, nulls skipped",
            each(bincount_partial),
        ),
        (
            "… the same sums and counts as an Arrow hash aggregate (`Table.group_by`)",
            each(lambda i: arrow_partial(priced_arrow[i])),
        ),
        (
            "the whole per-slice chain in Arrow: decode 7 columns, filter, derive, hash aggregate",
            each(arrow_chain),
        ),
    ]
    lines = [
        f"Costs over all {len(parts)} objects, one after another in one Python thread (median "
        f"of {repeat}; pyarrow's decoding and compute kernels still use its own thread pool), of "
        "each step of a cold run and of the alternatives proposed below:",
        "",
        "| step | seconds |",
        "|---|---|",
    ]
    for label, fn in rows:
        try:
            cell = f"{best(fn):.3f}"
        except Exception as exc:  # a step the library cannot do (yet) is a finding too
            cell = f"fails: {type(exc).__name__}: {' '.join(str(exc).split())[:120]}"
        print(f"  what-if: {label}: {cell}", flush=True)
        lines.append(f"| {label} | {cell} |")
    return lines


def _arrow_dates(t: Any) -> Any:
    import pandas as pd
    import pyarrow as pa

    return pd.ArrowDtype(t) if pa.types.is_date(t) else None


# -- output -------------------------------------------------------------------------------------


def table_markdown(rows: list[Row]) -> list[str]:
    out = ["| figure | seconds | ratio | target | met |", "|---|---|---|---|---|"]
    out += [f"| {r.figure} | {r.seconds} | {r.ratio} | {r.target} | {r.verdict} |" for r in rows]
    return out


def print_table(rows: list[Row]) -> None:
    headers = ("figure", "seconds", "ratio", "target", "met")
    cells = [(r.figure, r.seconds, r.ratio, r.target, r.verdict.strip("*")) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print("\n" + line + "\n" + "-" * len(line))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))


def section_markdown(command: str, facts: list[tuple[str, str]], report: Report) -> str:
    return benchkit.section_markdown(
        command,
        facts,
        table_markdown(report.rows),
        report,
        profile_title="Where a cold run spends its time",
    )


def write_doc(path: Path, body: str) -> None:
    """Replace this script's generated block in ``path``, keeping everything else."""
    write_section(path, body, section=SECTION, begin=BEGIN, end=END, header=DOC_HEADER)


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--sf", type=float, default=1.0, help="TPC-H scale factor (default 1)")
    p.add_argument("--repeat", type=int, default=5, help="measurement rounds (default 5)")
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="threads for chanbatch, dask and DuckDB alike (default: one per core)",
    )
    p.add_argument("--out", type=Path, help="write the results into this markdown file")
    p.add_argument("--cache", type=Path, default=REPO / ".bench", help="data + scratch folder")
    p.add_argument("--profile", action="store_true", help="profile even if every target is met")
    p.add_argument("--no-profile", action="store_true", help="never profile")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    p.add_argument("--check", action="store_true", help="exit 1 if any target is missed")
    args = p.parse_args(argv)
    args.repeat = max(1, args.repeat)
    args.workers = max(1, args.workers)
    return args


def main(argv: list[str] | None = None) -> int:
    return bench(argv)[0]


def bench(argv: list[str] | None = None) -> tuple[int, Report]:
    """Run the benchmark; its exit code and its report (tests/benchmark/report.py reads it)."""
    args = parse_args(argv)
    given = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["python", "tests/benchmark/bench_q1.py", *given])
    args.cache.mkdir(parents=True, exist_ok=True)
    source = ensure_lineitem(args.sf, args.cache)
    facts = machine()
    fingerprint = source_fingerprint()
    prep = prepare(source, args.sf, args.cache)
    print(
        f"lineitem SF{args.sf:g}: {prep.rows:,} rows in {prep.slices} slices, "
        f"{prep.object_bytes / 1e6:.1f} MB of objects"
        + (f" (prepared in {prep.seconds:.1f} s)" if prep.seconds else " (prepared stores reused)"),
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="q1-run-", dir=args.cache))
    report = Report()
    found: dict[str, Any] = {}
    try:
        samples, found = measure(args, source, prep, workdir, report)
        print("\nresults", flush=True)
        summarise(args, prep, samples, found, report)
        missed = any(r.passed is False for r in report.rows)
        if not args.no_profile and (args.profile or missed):
            print("\nprofile: cold run", flush=True)
            report.profile += profile_cold(args, prep, workdir)
            report.profile += [
                "",
                *profile_noop_process(
                    found["cli"], found["noop_store"], args.workers, found["cached_env"]
                ),
            ]
            report.profile += ["", *what_if(prep, max(1, min(3, args.repeat)))]
            print("\n".join(report.profile), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    facts.append(("load average at end", load_average()))
    facts.append(("chanbatch sources (sha256 of chanbatch/**/*.py)", fingerprint))
    if source_fingerprint() != fingerprint:
        report.notes.append(
            "chanbatch's source files changed during this run: in-process figures used the "
            "code as loaded at the start, subprocesses the code of their time. Run it again."
        )
    print_table(report.rows)
    for note in report.notes:
        print("note:", note)
    if args.out is not None:
        write_doc(args.out, section_markdown(command, facts, report))
        print(f"\nwrote section '{SECTION}' of {args.out}")
    missed = [r.figure for r in report.rows if r.passed is False]
    mismatch = bool(found.get("problems"))
    return (1 if mismatch or (args.check and missed) else 0), report


if __name__ == "__main__":
    sys.exit(main())
