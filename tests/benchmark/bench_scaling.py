#!/usr/bin/env python
"""Benchmark: run time against the number of slices, cold and incremental (issue 8).

Run it from the repository root, with the project's venv active::

    python tests/benchmark/bench_scaling.py --slices 10,30,100,300,1000 --repeat 3 \\
        [--out docs/performance.md]

(tests/benchmark/report.py runs it with the other benchmarks and draws its chart.)

The same rows, the first ``--rows`` of bench_q1.py's prepared TPC-H lineitem (in tpchgen's
order, by order key, so every slice holds every ship date), are cut into N slices of equal
rows (key ``part`` = row number × N ÷ rows) for each N of ``--slices``, and frozen once per N
(kept under ``--cache`` while chanbatch's format and pyarrow's version stay the same). Then,
for each N, the query is ``tests/benchmark/q1.yaml`` (TPC-H Q1), and in every round, in an
order rotated by one each round:

- chanbatch cold: a fresh store of hard links to the N-slice snapshot, nothing cached;
- chanbatch incremental: a store of the first N - 1 slices, run once before the rounds
  (untimed), is copied (hard links, with its cache, memo and run records); slice N is frozen
  into the copy (timed apart) and the blueprint run again (timed). Its output must be the cold
  run's output snapshot: the same rows give the same ids;
- hand-written dask, DuckDB and Polars (when installed) over the same N object files, with as
  many threads as chanbatch. They have no incremental mode: a new slice costs them a full run,
  which is the point of the comparison.

Before the rounds, each baseline's answer is compared with chanbatch's (groups and counts
exactly, floats within a relative 1e-9); a baseline that disagrees is not timed.

This file is not a test: ``tests/benchmark/conftest.py`` keeps pytest from collecting it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_q1 import (
    BLUEPRINT,
    DATASET,
    DOC_HEADER,
    Others,
    compare,
    dask_q1,
    duckdb_q1,
    fmt_s,
    has_polars,
    link_store,
    load_average,
    object_files,
    output_frame,
    polars_q1,
    prepared_table,
    rotate,
    run_blueprint,
    settle,
    wait_quiet,
)
from benchkit import REPO, ensure_lineitem, fmt_samples, git_revision, median, write_section

SECTION = "Scaling with the number of slices (issue 8)"
BEGIN = "<!-- bench_scaling.py: generated, begin -->"
END = "<!-- bench_scaling.py: generated, end -->"
KEY = "part"
RECIPE = 1  # bump when the cut below changes
COLD, INCREMENTAL = "chanbatch cold", "chanbatch incremental"
DASK, DUCKDB, POLARS = "dask", "DuckDB", "Polars"
# what a store that has been run keeps; an incremental run starts from all of it
KEPT = ("objects", "manifests", "refs", "cache", "memo", "runs")


@dataclass(slots=True)
class Point:
    """One engine at one slice count: its samples, in seconds."""

    seconds: list[float] = field(default_factory=list)

    @property
    def med(self) -> float:
        return median(self.seconds)


@dataclass(slots=True)
class Scaling:
    """The result: per slice count, per engine, the samples; and what was checked."""

    rows: int = 0
    points: dict[int, dict[str, Point]] = field(default_factory=dict)
    freeze_seconds: dict[int, list[float]] = field(default_factory=dict)
    tasks: dict[int, tuple[int, list[tuple[int, int]]]] = field(default_factory=dict)
    disturbed: dict[int, list[float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def series(self, name: str) -> list[tuple[int, Point]]:
        return [(n, p[name]) for n, p in sorted(self.points.items()) if p.get(name)]


def engines() -> list[str]:
    return [COLD, INCREMENTAL, DASK, DUCKDB, *([POLARS] if has_polars() else [])]


def prepare(source: Path, rows: int, counts: Sequence[int], cache: Path) -> dict[int, Path]:
    """For each N, a folder with ``full`` (N slices) and ``base`` (the first N - 1) stores."""
    import numpy as np
    import pyarrow as pa

    import chanbatch as cb
    from chanbatch.version import FORMAT_VERSION

    stamp = {
        "recipe": RECIPE,
        "format": FORMAT_VERSION,
        "pyarrow": pa.__version__,
        "source_bytes": source.stat().st_size,
    }
    root = cache / f"scaling-{source.parent.name}-{rows}"
    table = None
    out = {}
    for n in counts:
        folder = root / f"n{n}"
        stamp_file = folder / "stamp.json"
        out[n] = folder
        if stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
            continue
        if table is None:
            whole = prepared_table(source)
            if whole.num_rows < rows:
                sys.exit(f"--rows {rows:,} is more than the {whole.num_rows:,} rows of {source}")
            table = whole.slice(0, rows).drop_columns(["month"])
        print(f"freezing {rows:,} rows as {n} slices under {folder}", flush=True)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        part = pa.array((np.arange(rows, dtype=np.int64) * n // rows).astype(np.int32))
        cut = table.append_column(KEY, part)
        cb.Store(folder / "full").freeze(DATASET, cut, slice_by=KEY)
        if n > 1:
            import pyarrow.compute as pc

            base = cut.filter(pc.less(cut[KEY], n - 1))
            cb.Store(folder / "base").freeze(DATASET, base, slice_by=KEY)
        stamp_file.write_text(json.dumps(stamp))
    return out


def measure(args: argparse.Namespace, n: int, folder: Path, workdir: Path, out: Scaling) -> None:
    """Every engine at ``n`` slices: answers checked, then ``args.repeat`` rotated rounds."""
    import chanbatch as cb

    workers = args.workers
    bp = cb.Blueprint.from_yaml(BLUEPRINT)
    full, base = folder / "full", folder / "base"
    files = object_files(full)
    counter = iter(range(1_000_000))

    def fresh(src: Path, dirs: Sequence[str] = ("objects", "manifests", "refs")) -> Path:
        return link_store(src, workdir / f"n{n}-{next(counter):03d}", dirs)

    last = cb.Store(full).read_table(f"{DATASET}[{n - 1}]")
    # untimed: the answer every engine must give, imports and the page cache
    warm = fresh(full)
    first = run_blueprint(bp, warm, workers)
    answer = output_frame(warm, first.snapshot)
    baselines: dict[str, Callable[[list[str], int], Any]] = {DASK: dask_q1, DUCKDB: duckdb_q1}
    if has_polars():
        baselines[POLARS] = polars_q1
    for name, fn in list(baselines.items()):
        problem = compare(name, fn(files, workers), answer, "chanbatch")
        if problem:
            out.problems.append(f"{n} slices: {problem}; {name} not timed")
            del baselines[name]
    ran = fresh(base)
    run_blueprint(bp, ran, workers)  # the run before the new slice arrives

    points: dict[str, Point] = defaultdict(Point)
    freezes: list[float] = []
    counts: set[tuple[int, int]] = set()

    def cold() -> None:
        info = run_blueprint(bp, fresh(full), workers)
        if info.snapshot != first.snapshot or info.reused:
            out.problems.append(f"{n} slices: a cold run gave {info.snapshot[:12]}")
        points[COLD].seconds.append(info.seconds)

    def incremental() -> None:
        store_dir = fresh(ran, KEPT)
        started = time.perf_counter()
        cb.Store(store_dir).freeze(DATASET, last, slice_by=KEY)
        freezes.append(time.perf_counter() - started)
        settle()
        info = run_blueprint(bp, store_dir, workers)
        if info.snapshot != first.snapshot:
            out.problems.append(f"{n} slices: the incremental run gave {info.snapshot[:12]}")
        counts.add((info.computed, info.reused))
        points[INCREMENTAL].seconds.append(info.seconds)

    def baseline(name: str) -> Callable[[], None]:
        def side() -> None:
            started = time.perf_counter()
            baselines[name](files, workers)
            points[name].seconds.append(time.perf_counter() - started)

        return side

    sides = {COLD: cold, INCREMENTAL: incremental, **{b: baseline(b) for b in baselines}}
    shares: list[float] = []
    for i in range(args.repeat):
        for name in rotate(list(sides), i):
            settle()
            wait_quiet(limit=args.quiet_wait)
            probe = Others()
            sides[name]()
            share = probe.share()
            if share is not None:
                shares.append(share)
    line = ", ".join(f"{k} {fmt_s(p.med)}" for k, p in points.items())
    print(f"  {n} slices: {line} (load {load_average()})", flush=True)
    out.points[n] = dict(points)
    out.freeze_seconds[n] = freezes
    out.tasks[n] = (first.computed, sorted(counts))
    out.disturbed[n] = shares


def table_markdown(result: Scaling) -> list[str]:
    names = [e for e in engines() if any(e in p for p in result.points.values())]
    lines = [
        "| slices | rows per slice | "
        + " | ".join(names)
        + " | cold ÷ dask | incremental ÷ cold |",
        "|---:|---:|" + "---:|" * len(names) + "---:|---:|",
    ]
    for n, p in sorted(result.points.items()):
        cells = [fmt_s(p[e].med) if e in p else "—" for e in names]
        ratio = fmt_ratio(p, COLD, DASK)
        inc = fmt_ratio(p, INCREMENTAL, COLD)
        lines.append(
            f"| {n:,} | {result.rows // n:,} | " + " | ".join(cells) + f" | {ratio} | {inc} |"
        )
    return lines


def paired(p: dict[str, Point], a: str, b: str) -> float | None:
    """The median of the per-round ratios a/b (rounds pair their samples), or None."""
    if a not in p or b not in p:
        return None
    return median([x / y for x, y in zip(p[a].seconds, p[b].seconds, strict=True)])


def fmt_ratio(p: dict[str, Point], a: str, b: str) -> str:
    r = paired(p, a, b)
    return "—" if r is None else f"{r:.3f}×" if r < 0.1 else f"{r:.2f}×"


def section_markdown(command: str, args: argparse.Namespace, result: Scaling, chart: str) -> str:
    lines = [f"Command (from the repository root, venv active): `{command}`", ""]
    if chart:
        lines += [f"![run time against slice count]({chart})", ""]
    lines += [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} at git {git_revision()}, "
        f"load average {result.notes[0] if result.notes else '?'}; {args.workers} threads for "
        "every engine. Seconds are medians over the rounds (spread below).",
        "",
        *table_markdown(result),
        "",
        "### Method and samples",
        "",
        f"- Data: the first {result.rows:,} rows of bench_q1.py's prepared TPC-H lineitem "
        "(decimals as float64), cut into N slices of equal rows (key `part` = row number × N ÷ "
        "rows, so each slice holds every ship date and every group), frozen once per N.",
        "- Query: `tests/benchmark/q1.yaml` (TPC-H Q1: filter, derive, group_by/aggregate, sort). "
        "dask (`dd.read_parquet` of the N object files), DuckDB (`read_parquet([...])`, a new "
        "connection each time) and Polars (`scan_parquet([...]).…collect()`) compute the same "
        "query over the same files; their answers were checked against chanbatch's before any "
        "timing (groups and counts exactly, floats within a relative 1e-9).",
        "- Cold: a fresh store of hard links to the N-slice snapshot, nothing cached. "
        "Incremental: a copy (hard links) of a store of the first N − 1 slices that was run "
        "once, with its cache, memo and run records; slice N is frozen into it (timed apart, "
        "below) and the blueprint run again: that run is the figure. Its output snapshot is "
        "the cold run's. The baselines have no incremental mode: a new slice costs them a "
        "whole run, so their line is also what an append costs them.",
        f"- {args.repeat} rounds per N after an untimed warm-up; every engine runs once per "
        "round, in an order rotated by one each round. Ratios are medians of per-round ratios.",
    ]
    for n, p in sorted(result.points.items()):
        samples = "; ".join(f"{e} {fmt_samples(p[e].seconds)}" for e in engines() if e in p)
        computed, counts = result.tasks[n]
        shares = result.disturbed.get(n) or [0.0]
        lines.append(
            f"- {n:,} slices, s: {samples}; freeze of the new slice "
            f"{fmt_samples(result.freeze_seconds[n])}; cold run computes {computed} tasks, "
            f"incremental (computed, reused) {counts}; others used {100 * median(shares):.0f}% "
            f"of the machine (worst {100 * max(shares):.0f}%)."
        )
    if result.problems:
        lines += [f"- MISMATCH: {p}" for p in result.problems]
    else:
        lines.append(
            "- Answers agree: every baseline matched chanbatch's output at every N, and every "
            "cold and incremental run gave the same output snapshot id as the first cold run."
        )
    return "\n".join(lines).rstrip() + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--sf", type=float, default=1.0, help="TPC-H scale factor (default 1)")
    p.add_argument(
        "--rows", type=int, default=3_000_000, help="total rows, cut into N slices (default 3M)"
    )
    p.add_argument(
        "--slices", default="10,30,100,300,1000", help="slice counts N (default 10,30,100,300,1000)"
    )
    p.add_argument("--repeat", type=int, default=3, help="rounds per slice count (default 3)")
    p.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="threads for every engine"
    )
    p.add_argument("--quiet-wait", type=float, default=10.0, help="max wait for a quiet machine")
    p.add_argument("--out", type=Path, help="write the results into this markdown file")
    p.add_argument("--chart", default="", help="the chart's path, relative to --out, to link")
    p.add_argument("--cache", type=Path, default=REPO / ".bench", help="data + scratch folder")
    args = p.parse_args(argv)
    args.counts = sorted({max(2, int(x)) for x in args.slices.split(",") if x.strip()})
    args.repeat = max(1, args.repeat)
    return args


def bench(argv: Sequence[str] | None = None) -> tuple[int, Scaling]:
    """Run the benchmark; exit code 1 when an answer disagrees, and the result."""
    args = parse_args(argv)
    given = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["python", "tests/benchmark/bench_scaling.py", *given])
    args.cache.mkdir(parents=True, exist_ok=True)
    source = ensure_lineitem(args.sf, args.cache)
    folders = prepare(source, args.rows, args.counts, args.cache)
    result = Scaling(rows=args.rows)
    start_load = load_average()
    workdir = Path(tempfile.mkdtemp(prefix="scaling-run-", dir=args.cache))
    try:
        for n in args.counts:
            measure(args, n, folders[n], workdir, result)
            shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result.notes.insert(0, f"{start_load} at start, {load_average()} at end")
    if args.out is not None:
        body = section_markdown(command, args, result, args.chart)
        write_section(args.out, body, section=SECTION, begin=BEGIN, end=END, header=DOC_HEADER)
        print(f"wrote section '{SECTION}' of {args.out}", flush=True)
    return (1 if result.problems else 0), result


def main(argv: Sequence[str] | None = None) -> int:
    return bench(argv)[0]


if __name__ == "__main__":
    sys.exit(main())
