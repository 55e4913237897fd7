#!/usr/bin/env python
"""The performance report (issue 8): every benchmark in one run, docs/performance.md and charts.

Run it by hand (not in CI) from the repository root, with the project's venv active and the
bench extra installed (``pip install -e '.[bench]'``: matplotlib, polars, duckdb, tpchgen-cli),
holding the lock the other benchmark users take::

    flock /tmp/chanbatch-bench.lock python tests/benchmark/report.py            # ~25 min
    flock /tmp/chanbatch-bench.lock python tests/benchmark/report.py --quick    # ~3 min smoke

In one process, in this order, it runs the earlier issues' benchmarks through their own
``bench(argv)`` functions, each writing its own generated block of the doc as it does when run
alone (the hand-written notes under each block are kept):

1. ``bench_store.py``: freeze of TPC-H lineitem (84 month slices) against one
   ``pyarrow.parquet.write_table``; ``verify`` GB/s; CLI start-up (issue 2);
2. freeze against the same table written partitioned by month by Polars
   (``write_parquet(partition_by=...)``) and DuckDB (``COPY ... PARTITION_BY``), snappy as the
   store (this script, "Freeze against partitioned writers");
3. ``bench_q1.py``: TPC-H Q1 cold against hand-written dask, DuckDB and Polars, no-op rerun,
   one new slice, whole-process no-op (issues 3 and 4);
4. ``bench_plan.py``: plan at 10,000 slices (issue 4);
5. ``bench_scaling.py``: run time against slice count, cold and incremental, against dask,
   DuckDB and Polars (issue 8);
6. ``bench_distributed.py``: a 2-worker process cluster against dask on it, and the
   ``processes`` scheduler (issue 5).

Then it draws ``docs/img/ratios.png`` (each figure's ratio to its baseline or its budget, log
scale, the target of each bar and a line at 1×) and ``docs/img/scaling.png`` (run time against
slice count, log-log), and writes the "Summary" section at the top of the doc: charts, every
ratio with its target and verdict, the machine, versions, date, the load average sampled during
the run, and how to reproduce. Each benchmark checks that its baselines compute the same answer
as chanbatch before timing them, takes medians of rotated rounds and records the spread.

``--quick`` runs every part on small inputs with one round (TPC-H SF 0.1, 1,000 slices for the
plan, up to 100 slices for the scaling) and, unless ``--out`` is given, writes into a copy of
the doc under ``.bench/report-quick/`` so that the committed numbers are never smoke numbers.

This file is not a test: ``tests/benchmark/conftest.py`` keeps pytest from collecting it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchkit import REPO, Ratio, fmt_samples, median, version, write_section

SECTION = "Summary (issue 8)"
BEGIN = "<!-- report.py: generated, begin -->"
END = "<!-- report.py: generated, end -->"
WRITERS_SECTION = "Freeze against partitioned writers (issue 8)"
WRITERS_BEGIN = "<!-- report.py writers: generated, begin -->"
WRITERS_END = "<!-- report.py writers: generated, end -->"
DOC = REPO / "docs" / "performance.md"
RATIOS_PNG = "img/ratios.png"
SCALING_PNG = "img/scaling.png"
PARTS = ("store", "writers", "q1", "plan", "scaling", "distributed")


# -- the load average, sampled while everything runs ----------------------------------------------


class LoadSampler:
    """Samples the 1-minute load average every ``every`` seconds on a daemon thread."""

    def __init__(self, every: float = 5.0) -> None:
        self.samples: list[float] = []
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if hasattr(os, "getloadavg"):
                self.samples.append(os.getloadavg()[0])
            self._stop.wait(self._every)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def describe(self) -> str:
        s = self.samples
        if not s:
            return "not sampled"
        return (
            f"1-minute load average sampled every {self._every:g} s ({len(s)} samples): "
            f"median {median(s):.2f}, min {min(s):.2f}, max {max(s):.2f}"
        )


# -- parts -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """What the parts gave: ratios for the summary, the scaling result, what went wrong."""

    ratios: list[Ratio] = field(default_factory=list)
    scaling: Any = None
    seconds: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def from_rows(rows: Sequence[Any], source: str) -> list[Ratio]:
    """The rows of a bench script's report that carry a numeric ratio."""
    out = []
    for row in rows:
        if getattr(row, "x", None) is None:
            continue
        measured = getattr(row, "measured", None) or " ".join(
            t for t in (f"{row.seconds} s" if row.seconds else "", row.ratio) if t
        ).replace(" s ", " s; ")
        out.append(
            Ratio(
                figure=row.figure,
                x=row.x,
                goal=row.goal,
                detail=measured,
                target=row.target,
                source=source,
                strict=row.target.startswith("<"),
            )
        )
    return out


def scaling_ratios(result: Any) -> list[Ratio]:
    """The scaling benchmark's ratios at its largest slice count."""
    import bench_scaling as bs

    if not result.points:
        return []
    n = max(result.points)
    p = result.points[n]
    out = []
    for a, b, label in (
        (bs.COLD, bs.DASK, "cold run ÷ hand-written dask"),
        (bs.COLD, bs.DUCKDB, "cold run ÷ DuckDB"),
        (bs.COLD, bs.POLARS, "cold run ÷ Polars"),
        (bs.INCREMENTAL, bs.COLD, "one new slice: run ÷ cold run"),
        (bs.INCREMENTAL, bs.DUCKDB, "one new slice: run ÷ DuckDB's full run"),
    ):
        x = bs.paired(p, a, b)
        if x is not None:
            out.append(
                Ratio(
                    f"Q1 at {n:,} slices: {label}",
                    x,
                    None,
                    f"{p[a].med:.3f} s ÷ {p[b].med:.3f} s",
                    "—",
                    "bench_scaling.py",
                )
            )
    return out


def writers_bench(args: argparse.Namespace, out_doc: Path, workdir: Path) -> list[Ratio]:
    """Freeze against Polars' and DuckDB's writes of the same table partitioned by month."""
    import bench_store as bst
    import duckdb
    import pyarrow.parquet as pq
    from benchkit import ensure_lineitem

    table = bst.load_table(ensure_lineitem(args.sf, args.cache))
    months = len(set(table[bst.KEY].to_pylist()))
    counter = iter(range(1_000_000))

    def target() -> Path:
        return workdir / f"w{next(counter):03d}"

    def freeze(path: Path) -> None:
        bst.freeze_once(table, path)

    def write_table(path: Path) -> None:
        import pyarrow.parquet as pq

        path.mkdir(parents=True)
        pq.write_table(table, path / "lineitem.parquet")

    def polars_write(path: Path) -> None:
        import polars as pl

        pl.from_arrow(table).write_parquet(path, compression="snappy", partition_by=bst.KEY)

    def duckdb_write(path: Path) -> None:
        con = duckdb.connect(config={"threads": os.cpu_count() or 1})
        try:
            con.register("lineitem", table)
            con.execute(
                f"COPY lineitem TO '{path}' (FORMAT parquet, PARTITION_BY ({bst.KEY}), "
                "COMPRESSION snappy)"
            )
        finally:
            con.close()

    sides: dict[str, Callable[[Path], None]] = {"freeze": freeze, "write_table": write_table}
    sides["DuckDB"] = duckdb_write
    if has_module("polars"):
        sides["Polars"] = polars_write
    # the same work: every row written, one file (or folder) per month for the partitioned ones
    problems = []
    for name in ("DuckDB", "Polars"):
        if name not in sides:
            continue
        path = target()
        sides[name](path)
        written = sum(pq.ParquetFile(f).metadata.num_rows for f in path.rglob("*.parquet"))
        parts = [p for p in path.iterdir() if p.is_dir()]
        if written != table.num_rows or len(parts) != months:
            problems.append(
                f"{name} wrote {written:,} rows in {len(parts)} folders, "
                f"not {table.num_rows:,} in {months}; not timed"
            )
            del sides[name]
        shutil.rmtree(path)
    samples: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for i in range(args.repeat + 1):  # the first round is an untimed warm-up
        for name in names[i % len(names) :] + names[: i % len(names)]:
            bst.settle()
            path = target()
            started = time.perf_counter()
            sides[name](path)
            seconds = time.perf_counter() - started
            if i:
                samples[name].append(seconds)
            shutil.rmtree(path)
    ratios = []
    rows = []
    for name in [n for n in names if n != "freeze"]:
        x = median([a / b for a, b in zip(samples["freeze"], samples[name], strict=True)])
        detail = f"{median(samples['freeze']):.3f} s ÷ {median(samples[name]):.3f} s"
        ratios.append(Ratio(f"freeze ÷ {name}", x, None, detail, "—", "report.py"))
        rows.append(f"| freeze ÷ {name} | {x:.2f}× | {detail} |")
    body = [
        f"Run by `{args.command}` ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}; the machine is "
        "in the summary at the top).",
        "",
        "| figure | ratio | seconds (medians) |",
        "|---|---:|---|",
        *rows,
        "",
        f"- Input: TPC-H lineitem SF{args.sf:g}, {table.num_rows:,} rows, with the key "
        f"`{bst.KEY}` (bench_store.py's table), in memory and given to every side.",
        f"- freeze: `Store(<new folder>).freeze('lineitem', table, slice_by='{bst.KEY}')`, "
        f"{months} slices (content hashes, manifests, ref). DuckDB: `COPY` of the registered "
        f"Arrow table `TO <folder> (FORMAT parquet, PARTITION_BY ({bst.KEY}), COMPRESSION "
        "snappy)`, as many threads as cores. Polars: `pl.from_arrow(table).write_parquet("
        f"<folder>, compression='snappy', partition_by='{bst.KEY}')`. write_table: one "
        "`pyarrow.parquet.write_table`, defaults (bench_store.py's baseline).",
        "- Checked first: DuckDB and Polars wrote every row, in one folder per month.",
        f"- {args.repeat} rounds after an untimed one, the order rotated by one each round; "
        "every side writes to a new folder, deleted after. Ratios are medians of per-round "
        "ratios.",
        *[f"- {name} s: {fmt_samples(v)}" for name, v in samples.items()],
        *[f"- MISMATCH: {p}" for p in problems],
    ]
    write_section(
        out_doc,
        "\n".join(body) + "\n",
        section=WRITERS_SECTION,
        begin=WRITERS_BEGIN,
        end=WRITERS_END,
        header="# Performance\n",
    )
    return ratios


def has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def part_argv(args: argparse.Namespace, part: str, out_doc: Path) -> list[str]:
    """The command line each earlier script gets, full or quick."""
    out = ["--out", str(out_doc)]
    sf = ["--sf", f"{args.sf:g}"]
    rep = ["--repeat", str(args.repeat)]
    wait = ["--quiet-wait", f"{args.quiet_wait:g}"]
    if part == "store":
        quick = ["--warmup", "0", "--startup-repeat", "3"]
        return [*sf, *rep, "--writers", "", *wait, *(quick if args.quick else []), *out]
    if part in ("q1", "distributed"):
        return [*sf, *rep, "--no-profile", *out]
    if part == "plan":
        slices = "1000" if args.quick else "10000"
        return ["--slices", slices, "--rows", "20", "--repeat", str(min(3, args.repeat)), *out]
    if part == "scaling":
        rows = "300000" if args.quick else str(args.scaling_rows)
        slices = "10,30,100" if args.quick else args.slices
        chart = os.path.relpath(args.img / Path(SCALING_PNG).name, out_doc.parent)
        rep = ["--repeat", str(min(3, args.repeat))]
        return [*sf, "--rows", rows, "--slices", slices, *rep, *wait, *out, "--chart", chart]
    raise ValueError(part)


def run_parts(args: argparse.Namespace, out_doc: Path, outcome: Outcome) -> None:
    import bench_q1

    bench_q1.QUIET_WAIT = args.quiet_wait  # bench_q1 and bench_distributed wait this long
    workdir = Path(tempfile.mkdtemp(prefix="report-", dir=args.cache))
    try:
        for part in args.parts:
            print(f"\n=== {part} ===", flush=True)
            started = time.perf_counter()
            try:
                outcome.ratios += run_part(args, part, out_doc, workdir, outcome)
            except Exception as exc:
                traceback.print_exc()
                outcome.failures.append(f"{part}: {type(exc).__name__}: {exc}")
            outcome.seconds[part] = time.perf_counter() - started
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_part(
    args: argparse.Namespace, part: str, out_doc: Path, workdir: Path, outcome: Outcome
) -> list[Ratio]:
    if part == "writers":
        return writers_bench(args, out_doc, workdir)
    argv = part_argv(args, part, out_doc)
    if part == "plan":
        import bench_plan

        found = bench_plan.bench(argv)
        return [  # the figures with a target first
            Ratio(r.figure, r.x, r.goal, r.detail, r.target, "bench_plan.py", strict=True)
            for r in sorted(found, key=lambda r: r.goal is None)
        ]
    if part == "scaling":
        import bench_scaling

        code, result = bench_scaling.bench(argv)
        outcome.scaling = result
        if code:
            outcome.failures.append(f"scaling: answers disagree: {result.problems}")
        return scaling_ratios(result)
    module = {"store": "bench_store", "q1": "bench_q1", "distributed": "bench_distributed"}[part]
    bench = __import__(module).bench
    code, report = bench(argv)
    if code:
        outcome.failures.append(f"{part}: exit {code}; {report.notes}")
    return from_rows(report.rows, f"{module}.py")


# -- charts ----------------------------------------------------------------------------------------


def short(text: str, width: int = 64) -> str:
    text = text.replace("`", "").replace("**", "")
    return text if len(text) <= width else text[: width - 1] + "…"


def ratio_chart(ratios: Sequence[Ratio], path: Path) -> None:
    """Horizontal bars of each ratio (log scale), its target as a tick, a line at 1×."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = list(reversed(ratios))  # the first figure at the top
    colours = {True: "#2e7d32", False: "#c62828", None: "#78909c"}
    fig, ax = plt.subplots(figsize=(10, 0.38 * len(items) + 1.6))
    ys = range(len(items))
    ax.barh(list(ys), [r.x for r in items], color=[colours[r.met] for r in items], height=0.6)
    for y, r in zip(ys, items, strict=True):
        if r.goal is not None:
            ax.plot([r.goal, r.goal], [y - 0.42, y + 0.42], color="black", linewidth=2.2)
        ax.text(max(r.x, r.goal or 0) * 1.1, y, f"{r.x:.3g}×", va="center", fontsize=8)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_yticks(list(ys), [short(r.figure) for r in items], fontsize=8)
    low = min([r.x for r in items] + [r.goal or 1 for r in items])
    high = max([r.x for r in items] + [r.goal or 1 for r in items])
    ax.set_xlim(low / 2, high * 3)
    ax.set_xlabel("chanbatch ÷ baseline (time ratio, lower is better; log scale)")
    ax.set_title(
        "Ratios: green met its target (black tick), red missed it, grey has no target;\n"
        "absolute targets are shown as time ÷ the time the target allows (target = 1×)",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def scaling_chart(result: Any, path: Path) -> None:
    """Median run time against slice count (log-log), with each series' min-max spread."""
    import matplotlib

    matplotlib.use("Agg")
    import bench_scaling as bs
    import matplotlib.pyplot as plt

    styles = {
        bs.COLD: ("#1565c0", "o", "-"),
        bs.INCREMENTAL: ("#2e7d32", "s", "-"),
        bs.DASK: ("#ef6c00", "^", "--"),
        bs.DUCKDB: ("#6a1b9a", "D", "--"),
        bs.POLARS: ("#00838f", "v", "--"),
    }
    labels = {
        bs.COLD: "chanbatch, cold run",
        bs.INCREMENTAL: "chanbatch, one new slice appended (rerun)",
        bs.DASK: "hand-written dask (recomputes all)",
        bs.DUCKDB: "DuckDB (recomputes all)",
        bs.POLARS: "Polars (recomputes all)",
    }
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, (colour, marker, line) in styles.items():
        series = result.series(name)
        if not series:
            continue
        xs = [n for n, _ in series]
        med = [p.med for _, p in series]
        lo = [p.med - min(p.seconds) for _, p in series]
        hi = [max(p.seconds) - p.med for _, p in series]
        ax.errorbar(
            xs,
            med,
            yerr=[lo, hi],
            label=labels[name],
            color=colour,
            marker=marker,
            linestyle=line,
            capsize=3,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("slices (the same rows cut finer)")
    ax.set_ylabel("seconds (median; bars: min–max)")
    ax.set_title(f"TPC-H Q1 over {result.rows:,} rows cut into N slices", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the summary -----------------------------------------------------------------------------------


def fmt_x(x: float) -> str:
    return f"{x:.3f}×" if x < 0.1 else f"{x:.2f}×"


def summary_table(ratios: Sequence[Ratio]) -> list[str]:
    lines = ["| figure | ratio | measured | target | met | by |", "|---|---:|---|---|---|---|"]
    for r in ratios:
        met = {True: "yes", False: "**no**", None: "—"}[r.met]
        lines.append(
            f"| {r.figure} | {fmt_x(r.x)} | {r.detail} | {r.target} | {met} | {r.source} |"
        )
    return lines


def machine_facts() -> list[tuple[str, str]]:
    from bench_q1 import machine

    facts = machine()
    facts = [(k, v) for k, v in facts if k != "load average at start"]
    at = next(i for i, (k, _) in enumerate(facts) if k == "numpy")
    facts[at + 1 : at + 1] = [
        ("distributed", version("distributed")),
        ("polars", version("polars")),
        ("matplotlib", version("matplotlib")),
    ]
    facts.insert(5, ("kernel", platform.version()))
    return facts


def summary_markdown(
    args: argparse.Namespace,
    outcome: Outcome,
    facts: list[tuple[str, str]],
    load: str,
    charts: dict[str, str],
) -> str:
    met = [r for r in outcome.ratios if r.met is True]
    missed = [r for r in outcome.ratios if r.met is False]
    lines = [
        f"Command (from the repository root, venv active): `{args.command}`",
        "",
    ]
    if "ratios" in charts:
        lines += [f"![ratios of every benchmark]({charts['ratios']})", ""]
    if "scaling" in charts:
        lines += [f"![run time against slice count]({charts['scaling']})", ""]
    lines += [
        f"{len(met)} targets met, {len(missed)} missed"
        + (": " + "; ".join(short(r.figure, 200) for r in missed) if missed else "")
        + ". Every ratio below is chanbatch's time over its baseline's, lower is better, from "
        "the sections further down (each names its method, samples and spread); a target that "
        "is absolute is given as the measured time over the time it allows.",
        "",
        *summary_table(outcome.ratios),
        "",
        "| machine and versions | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in facts],
        f"| load during the run | {load} |",
        "| time per part | "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in outcome.seconds.items())
        + " |",
        "",
    ]
    if outcome.failures:
        lines += [f"- FAILED: {f}" for f in outcome.failures] + [""]
    lines += [
        "### How to reproduce",
        "",
        "From the repository root, with the venv active and the bench extra installed "
        "(`pip install -e '.[bench]'`), holding the lock other benchmark users take:",
        "",
        "```",
        "flock /tmp/chanbatch-bench.lock python tests/benchmark/report.py",
        "```",
        "",
        "It generates TPC-H data with `tpchgen-cli` under `.bench/` on first use (ignored by "
        "git), runs every part in one process, rewrites the generated blocks of this page "
        "(hand-written notes under them are kept) and the charts in `docs/img/`. "
        "Each benchmark waits up to `--quiet-wait` seconds (5) before each measurement for a "
        "quieter machine, and records how much of it other processes used. "
        "`--quick` is a smoke run on small inputs that writes to `.bench/report-quick/` "
        "instead; `--parts` runs some parts only; `--help` lists the rest.",
    ]
    return "\n".join(lines).rstrip() + "\n"


# -- main ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Full run: flock /tmp/chanbatch-bench.lock python tests/benchmark/report.py",
    )
    p.add_argument("--quick", action="store_true", help="a 2-3 minute smoke run on small inputs")
    p.add_argument("--out", type=Path, help=f"the doc to write (default {DOC.relative_to(REPO)})")
    p.add_argument("--img", type=Path, help="the charts' folder (default: img/ beside --out)")
    p.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated parts to run, in this order: {','.join(PARTS)} (default: all)",
    )
    p.add_argument("--sf", type=float, help="TPC-H scale factor (default 1; --quick 0.1)")
    p.add_argument("--repeat", type=int, help="rounds per figure (default 5; --quick 1)")
    p.add_argument(
        "--slices",
        default="10,30,100,300,1000",
        help="slice counts of the scaling chart (default 10,30,100,300,1000)",
    )
    p.add_argument(
        "--scaling-rows", type=int, default=3_000_000, help="rows the scaling cuts (default 3M)"
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        help="before each measurement, wait at most this many seconds for half a second in "
        "which other processes use under 10%% of the machine (default 5; --quick 1)",
    )
    p.add_argument("--cache", type=Path, default=REPO / ".bench", help="data + scratch folder")
    args = p.parse_args(argv)
    args.command = shlex.join(
        ["python", "tests/benchmark/report.py", *(sys.argv[1:] if argv is None else argv)]
    )
    args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    args.sf = args.sf if args.sf is not None else (0.1 if args.quick else 1.0)
    if args.quiet_wait is None:
        args.quiet_wait = 1.0 if args.quick else 5.0
    args.repeat = max(1, args.repeat if args.repeat is not None else (1 if args.quick else 5))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    out_doc = args.out
    if out_doc is None:
        out_doc = DOC
        if args.quick:  # never overwrite the committed numbers with smoke numbers
            out_doc = args.cache / "report-quick" / "performance.md"
            out_doc.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(DOC, out_doc)
    args.img = args.img or out_doc.parent / "img"
    facts = machine_facts()
    start_load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    outcome = Outcome()
    with LoadSampler() as load:
        run_parts(args, out_doc, outcome)
    end_load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    charts = {}
    if outcome.ratios:
        ratio_chart(outcome.ratios, args.img / Path(RATIOS_PNG).name)
        charts["ratios"] = os.path.relpath(args.img / Path(RATIOS_PNG).name, out_doc.parent)
    if outcome.scaling is not None and outcome.scaling.points:
        scaling_chart(outcome.scaling, args.img / Path(SCALING_PNG).name)
        charts["scaling"] = os.path.relpath(args.img / Path(SCALING_PNG).name, out_doc.parent)
    load_text = f"at start {start_load}, at end {end_load}; {load.describe()}"
    body = summary_markdown(args, outcome, facts, load_text, charts)
    write_section(
        out_doc, body, section=SECTION, begin=BEGIN, end=END, header="# Performance\n", first=True
    )
    print("\n" + "\n".join(summary_table(outcome.ratios)))
    print(f"\nwrote {out_doc} and {sorted(charts.values())} (relative to it)")
    for failure in outcome.failures:
        print("FAILED:", failure)
    return 1 if outcome.failures else 0


if __name__ == "__main__":
    sys.exit(main())
