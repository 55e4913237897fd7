"""Benchmark: planning a blueprint over 10,000 slices (issue 4: under 1 s).

Freezes a synthetic dataset of N small slices once (kept under ``--cache``), then times:

- ``plan`` in process with an empty cache (every key provisional above the partials);
- a cold run over all slices (for scale, timed once);
- ``plan`` in process with everything cached: the keys above the partials hash the partials'
  contents, so this reads one cache entry per stored task;
- ``chanbatch plan --json`` and a no-op ``chanbatch run --json`` as whole processes;
- appending one slice: plan, then run;
- beside them, the same query over the same 10,000 object files from scratch, checked first
  against chanbatch's answer: DuckDB and Polars (``--repeat`` times) and hand-written dask
  (once: about a minute and a half at 10,000 files; ``--no-dask`` skips it).

Run from the repository root with the venv active:
``python tests/benchmark/bench_plan.py --slices 10000 --out docs/performance.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from benchkit import REPO, Ratio, fmt_samples, git_revision, median, version, write_section

import chanbatch as cb

BLUEPRINT = """\
name: many_slices
inputs:
  events: events
stages:
  valid:
    from: events
    filter: "v > 0"
  scored:
    from: valid
    derive: {w: "v * 2"}
  per_kind:
    from: scored
    group_by: [kind]
    aggregate: {n: count(), total: sum(w), mean_v: mean(v), top: max(v)}
outputs:
  per_kind: many_slices_per_kind
"""

PLAN_BUDGET_S = 1.0  # issue 4: plan under 1 s at 10,000 slices
BEGIN = "<!-- bench_plan.py: generated, begin -->"
END = "<!-- bench_plan.py: generated, end -->"


def frame(slices: int, rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = slices * rows
    return pd.DataFrame(
        {
            "day": np.repeat(np.arange(slices, dtype="int64"), rows),
            "kind": rng.choice(np.array(["a", "b", "c", "d", "e"], dtype=object), n),
            "v": rng.normal(1.0, 2.0, n).round(3),
        }
    )


QUERY_SQL = """
SELECT kind, count(*) AS n, sum(v * 2) AS total, avg(v) AS mean_v, max(v) AS top
FROM read_parquet($files) WHERE v > 0 GROUP BY kind
"""


def object_files(store_dir: Path, dataset: str) -> list[str]:
    """The local paths of the objects of ``dataset``'s latest snapshot, in slice order."""
    from chanbatch.snapshot.layout import object_path
    from chanbatch.snapshot.read import slice_parts

    store = cb.Store(store_dir)
    return [
        str(store_dir / object_path(p.object))
        for p in slice_parts(store.storage, store.slices(dataset))
    ]


def duckdb_query(files: list[str]) -> pd.DataFrame:
    import duckdb

    with duckdb.connect(config={"threads": os.cpu_count() or 1}) as con:
        return con.execute(QUERY_SQL, {"files": files}).df()


def polars_query(files: list[str]) -> pd.DataFrame:
    import polars as pl

    v = pl.col("v")
    return (
        pl.scan_parquet(files)
        .filter(v > 0)
        .group_by("kind")
        .agg(n=pl.len(), total=(v * 2).sum(), mean_v=v.mean(), top=v.max())
        .collect()
        .to_pandas()
    )


def dask_query(files: list[str]) -> pd.DataFrame:
    import dask.dataframe as dd

    df = dd.read_parquet(files)
    df = df[df.v > 0]
    df = df.assign(w=df.v * 2)
    out = df.groupby("kind").agg(
        n=("v", "count"), total=("w", "sum"), mean_v=("v", "mean"), top=("v", "max")
    )
    return out.compute(scheduler="threads", num_workers=os.cpu_count() or 1).reset_index()


def same_answer(got: pd.DataFrame, want: pd.DataFrame) -> bool:
    """Groups and counts exactly, floats within a relative 1e-9."""
    a = got.sort_values("kind").reset_index(drop=True)
    b = want.sort_values("kind").reset_index(drop=True)
    if a["kind"].astype(str).tolist() != b["kind"].astype(str).tolist():
        return False
    if a["n"].astype("int64").tolist() != b["n"].astype("int64").tolist():
        return False
    return all(
        np.allclose(a[c].astype("float64"), b[c].astype("float64"), rtol=1e-9, atol=0)
        for c in ("total", "mean_v", "top")
    )


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def process(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [str(Path(sys.executable).with_name("chanbatch")), *args],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    bench(argv)


def bench(argv: list[str] | None = None) -> list[Ratio]:
    """Run the benchmark; its figures with a target, as ratios (for tests/benchmark/report.py)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=20, help="rows per slice")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=REPO / ".bench")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-dask", action="store_true", help="skip the dask baseline")
    args = parser.parse_args(argv)

    base = args.cache / f"plan-{args.slices}x{args.rows}"
    frozen = base / "frozen"
    if not (frozen / "refs" / "events").exists():
        shutil.rmtree(frozen, ignore_errors=True)
        start = time.perf_counter()
        cb.Store(frozen).freeze("events", frame(args.slices, args.rows), slice_by="day")
        print(f"froze {args.slices} slices in {time.perf_counter() - start:.1f} s")
    work = base / "work"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(frozen, work)
    store = cb.Store(work)
    yaml = base / "many_slices.yaml"
    yaml.write_text(BLUEPRINT)
    bp = cb.Blueprint.from_yaml(yaml)
    rows: list[tuple[str, str, str]] = []

    cold_plan = timed(lambda: bp.plan(cb.Store(work)), args.repeat)
    doc = bp.plan(store).document()
    rows.append(
        (
            f"plan, nothing cached ({len(doc['tasks'])} tasks)",
            f"{median(cold_plan):.3f}",
            "< 1 s",
        )
    )
    start = time.perf_counter()
    first = bp.run(store, scheduler="threads")
    cold_run = time.perf_counter() - start
    rows.append((f"cold run, `threads` ({first.stats['computed']} tasks)", f"{cold_run:.3f}", "—"))
    answer = store.read_pandas("many_slices_per_kind")
    files = object_files(work, "events")
    engines: dict[str, Callable[[list[str]], pd.DataFrame]] = {"DuckDB": duckdb_query}
    try:
        import polars  # noqa: F401

        engines["Polars"] = polars_query
    except ImportError:
        pass
    if not args.no_dask:
        engines["dask"] = dask_query
    baseline: dict[str, list[float]] = {}
    for name, query in engines.items():
        if not same_answer(query(files), answer):  # the dask check is its one timed run
            rows.append((f"{name}: MISMATCH with chanbatch's answer, not timed", "—", "—"))
            continue
        baseline[name] = (
            timed(lambda q=query: q(files), 1)
            if name == "dask"
            else timed(lambda q=query: q(files), args.repeat)
        )
        times = "timed once" if name == "dask" else "median"
        rows.append(
            (
                f"{name}, the same query over the {len(files):,} objects from scratch ({times})",
                f"{median(baseline[name]):.3f}",
                f"cold run {cold_run / median(baseline[name]):.2f}×",
            )
        )
    warm_plan = timed(lambda: bp.plan(cb.Store(work)), args.repeat)
    assert bp.plan(store).document()["summary"]["compute"] == 0
    rows.append(("plan, everything cached", f"{median(warm_plan):.3f}", "< 1 s"))
    plan_proc = [process("plan", str(yaml), "--store", str(work), "--json")]
    plan_proc += [
        process("plan", str(yaml), "--store", str(work), "--json") for _ in range(args.repeat - 1)
    ]
    rows.append(("`chanbatch plan --json`, whole process", f"{median(plan_proc):.3f}", "< 1 s"))
    noop = [process("run", str(yaml), "--store", str(work), "--json") for _ in range(args.repeat)]
    rows.append(("no-op `chanbatch run --json`, whole process", f"{median(noop):.3f}", "—"))
    extra = frame(1, args.rows, seed=1).assign(day=args.slices)
    store.freeze("events", extra, slice_by="day")
    append_plan = timed(lambda: bp.plan(cb.Store(work)), args.repeat)
    rows.append(("plan after one slice is appended", f"{median(append_plan):.3f}", "< 1 s"))
    start = time.perf_counter()
    appended = bp.run(store, scheduler="threads")
    append_run = time.perf_counter() - start
    rows.append(
        (
            f"run after one slice is appended ({appended.stats['computed']} computed, "
            f"{appended.stats['cutoff']} cut off)",
            f"{append_run:.3f}",
            f"{append_run / cold_run:.3f}× cold",
        )
    )

    ratios = [
        Ratio(
            f"run after one slice is appended to {args.slices:,} ÷ {name} (the whole query)",
            append_run / median(seconds),
            None,
            f"{append_run:.3f} s ÷ {median(seconds):.3f} s",
            "—",
        )
        for name, seconds in baseline.items()
        if name != "dask"
    ] + [
        Ratio(
            f"cold run over {args.slices:,} slices ÷ {name}",
            cold_run / median(seconds),
            None,
            f"{cold_run:.3f} s ÷ {median(seconds):.3f} s",
            "—",
        )
        for name, seconds in baseline.items()
    ]
    ratios += [
        Ratio(
            f"plan, {args.slices:,} slices, nothing cached",
            median(cold_plan) / PLAN_BUDGET_S,
            1.0,
            f"{median(cold_plan):.3f} s ÷ {PLAN_BUDGET_S:g} s",
            "< 1 s (issue 4)",
        ),
        Ratio(
            f"plan, {args.slices:,} slices, everything cached",
            median(warm_plan) / PLAN_BUDGET_S,
            1.0,
            f"{median(warm_plan):.3f} s ÷ {PLAN_BUDGET_S:g} s",
            "< 1 s (issue 4)",
        ),
        Ratio(
            f"`chanbatch plan --json`, {args.slices:,} slices, whole process",
            median(plan_proc) / PLAN_BUDGET_S,
            1.0,
            f"{median(plan_proc):.3f} s ÷ {PLAN_BUDGET_S:g} s",
            "< 1 s (issue 4)",
        ),
        Ratio(
            f"plan after one slice is appended to {args.slices:,}",
            median(append_plan) / PLAN_BUDGET_S,
            1.0,
            f"{median(append_plan):.3f} s ÷ {PLAN_BUDGET_S:g} s",
            "< 1 s (issue 4)",
        ),
        Ratio(
            f"run after one slice is appended to {args.slices:,} ÷ cold run",
            append_run / cold_run,
            None,
            f"{append_run:.3f} s ÷ {cold_run:.3f} s (one sample each)",
            "—",
        ),
    ]
    body = [
        "Command (from the repository root, venv active): "
        f"`python tests/benchmark/bench_plan.py --slices {args.slices} --rows {args.rows} "
        f"--repeat {args.repeat}{' --no-dask' if args.no_dask else ''} --out docs/performance.md`",
        "",
        "| machine | |",
        "|---|---|",
        f"| date | {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} |",
        f"| CPU | {platform.processor() or platform.machine()}, {os.cpu_count()} cores |",
        f"| load average at start/end | {' '.join(f'{x:.2f}' for x in os.getloadavg())} |",
        f"| Python | {platform.python_version()} |",
        f"| pandas / pyarrow / dask | {version('pandas')} / {version('pyarrow')} / "
        f"{version('dask')} |",
        f"| chanbatch | {version('chanbatch')}, git {git_revision()} |",
        "",
        f"Input: {args.slices:,} slices of {args.rows} rows (`day`, `kind`, `v`); blueprint: "
        "filter → derive → group_by/aggregate (count, sum, mean, max), so each slice has two "
        "row-wise tasks and a partial, under a combine tree of fan-out 8.",
        "",
        "| figure | seconds (median) | target |",
        "|---|---:|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
        "",
        f"- plan, nothing cached, s: {fmt_samples(cold_plan)}",
        f"- plan, everything cached, s: {fmt_samples(warm_plan)}",
        f"- `chanbatch plan --json` s: {fmt_samples(plan_proc)}",
        f"- no-op `chanbatch run --json` s: {fmt_samples(noop)}",
        f"- plan after an append, s: {fmt_samples(append_plan)}",
        *(f"- {name} s: {fmt_samples(v)}" for name, v in baseline.items()),
        "- The baselines read the same object files as the cold run (before the append), "
        f"with {os.cpu_count()} threads; each answer was first checked against chanbatch's "
        "(groups and counts exactly, floats within a relative 1e-9).",
        "",
    ]
    text = "\n".join(body)
    print(text)
    if args.out:
        write_section(
            args.out,
            text,
            section="Planning over 10,000 slices (issue 4)",
            begin=BEGIN,
            end=END,
            header="# Performance\n",
        )
    return ratios


if __name__ == "__main__":
    main()
