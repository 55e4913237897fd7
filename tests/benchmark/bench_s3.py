"""Requests on S3 (issue 20): how many requests each command makes, and what latency costs.

Run from the repository root, with the venv active::

    python tests/benchmark/bench_s3.py --out docs/performance.md

TPC-H Q1 (``tests/benchmark/q1.yaml``) over lineitem frozen by ``month`` (84 slices at SF1) and
by ``l_shipdate`` (2,526 day slices), on a moto S3 server on 127.0.0.1 that counts every request
it serves, by type (``tests/benchmark/s3count.py``). Every command is a real ``chanbatch``
process that finds the server through ``AWS_ENDPOINT_URL`` (botocore, and so s3fs, honours it);
nothing in chanbatch is patched. Per shape, on a fresh prefix holding every slice but one (the
``middle`` slice of bench_slices.py's preparation, so that adding it changes the answer and
makes N slices again), uploaded from the frozen local store:

``snapshot list``
    the datasets table.
``cold run``
    ``chanbatch run q1.yaml`` with nothing cached.
``no-op plan``, ``no-op run``
    ``plan`` and ``run`` again: everything is cached. The target: their LIST and read
    (GET + HEAD) requests do not grow with N (84 against 2,526).
``new slice: freeze``, ``new slice: run``
    ``snapshot freeze lineitem PIECE --slice-by KEY`` of the withheld slice, then ``run``.
    The target: the run makes at most a few dozen requests (``NEW_SLICE_REQUESTS``).
``... with 20 ms``
    the same freeze and run, on a fresh copy of the warm store, with ``--delay`` (default
    20 ms) added by the server to every request. The target: the run finishes in under 2 s at
    2,526 day slices.

Answers are checked before any timing: the cold run's output against DuckDB's Q1 over the same
rows (every slice but the withheld one), the runs after the new slice against DuckDB over every
row; a no-op must compute nothing and give the cold run's output snapshot. A failed check stops
the benchmark (exit 1) and writes nothing.

Data and stores are bench_slices.py's (``Prepared``), cached under ``--cache`` (default
``.bench/``). The S3 server keeps objects in memory; uploading a store is not counted. Counts
are exact and repeatable; seconds are medians of ``--repeat`` rounds on a shared machine.

This file is not a test: ``tests/benchmark/conftest.py`` keeps pytest from collecting it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bench_q1
import bench_slices as bs
from benchkit import REPO, ensure_lineitem, fmt_samples, git_revision, median, version
from benchkit import write_section as _write_section
from s3count import KINDS, UNSET, CountingS3, Counts

SECTION = "Requests on S3 (issue 20)"
BEGIN = "<!-- bench_s3.py: generated, begin -->"
END = "<!-- bench_s3.py: generated, end -->"
DOC_HEADER = "# Performance\n"
SHAPES = ("month", "day")
WITHHELD = "middle"
STORE_DIRS = ("objects", "manifests", "refs")
NEW_SLICE_REQUESTS = 48  # "at most a few dozen requests" for one new slice's run
NEW_SLICE_SECONDS = 2.0  # with --delay on every request, at 2,526 day slices
COMMANDS = (
    "snapshot list",
    "snapshot list, after the run",
    "cold run",
    "no-op plan",
    "no-op run",
    "new slice: freeze",
    "new slice: run",
)


@dataclass(slots=True)
class Measured:
    """One command of one shape: its counts (exact) and its wall seconds per round."""

    counts: Counts
    seconds: list[float] = field(default_factory=list)


@dataclass(slots=True)
class ShapeResult:
    name: str
    slices: int  # after the new slice
    commands: dict[str, Measured] = field(default_factory=dict)
    delayed: dict[str, list[float]] = field(default_factory=dict)  # command -> seconds
    delayed_counts: dict[str, Counts] = field(default_factory=dict)
    areas: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)


@dataclass(slots=True)
class Report:
    shapes: list[ShapeResult] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def verify(self, what: str) -> None:
        self.verified.append(what)
        print(f"  checked: {what}", flush=True)


# -- processes on the server ------------------------------------------------------------------


class Bench:
    """The server, and the chanbatch processes run against it."""

    def __init__(self, s3: CountingS3) -> None:
        self.s3 = s3
        self.env = s3.env(bs.child_env())
        # this process reads the outputs back through s3fs: point it at the server too
        for name in UNSET:
            os.environ.pop(name, None)
        os.environ.update(s3.env({}))
        self._n = 0

    def prefix(self, name: str) -> str:
        self._n += 1
        return f"{name}-{self._n:03d}"

    def chanbatch(self, url: str, *args: str) -> tuple[bs.Proc, Counts]:
        """Run ``chanbatch ARGS --store URL``: the process and the requests it made."""
        self.s3.reset()
        proc = bs.run_process([bs.cli(), *args, "--store", url], env=self.env)
        return proc, self.s3.counts()

    def run(self, url: str) -> tuple[bs.Proc, Counts, dict[str, Any]]:
        proc, counts = self.chanbatch(url, "run", str(bs.BLUEPRINT), "--json")
        return proc, counts, json.loads(proc.stdout)

    def freeze(self, url: str, piece: Path, key: str) -> tuple[bs.Proc, Counts]:
        proc, counts = self.chanbatch(
            url, "snapshot", "freeze", bs.DATASET, str(piece), "--slice-by", key, "--json"
        )
        doc = json.loads(proc.stdout)
        if [s["new"] for s in doc["slices"]] != [True]:
            raise bs.CheckFailed(f"freezing {piece.name} into {url} did not add one new slice")
        return proc, counts

    def download(self, prefix: str, local: Path) -> None:
        """Copy every file under ``prefix`` to ``local`` (not counted: reset afterwards)."""
        client = self.s3.client()
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.s3.bucket, Prefix=prefix + "/"
        )
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        from concurrent.futures import ThreadPoolExecutor

        def get(key: str) -> None:
            path = local / key[len(prefix) + 1 :]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(client.get_object(Bucket=self.s3.bucket, Key=key)["Body"].read())

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(get, keys))


def snapshot_of(doc: dict[str, Any]) -> str:
    return str(next(iter(doc["outputs"].values()))["snapshot"])


def check(report: Report, what: str, url: str, doc: dict[str, Any], want: list[Any]) -> None:
    import chanbatch as cb

    got = cb.Store(url).read_pandas(f"{bs.OUTPUT}@{snapshot_of(doc)}")
    bs.same(what, got, want, "DuckDB")
    report.verify(f"{what} = DuckDB")


def duckdb_without(path: Path, key: str, value: Any) -> list[Any]:
    """DuckDB's Q1 over ``path`` without the rows whose ``key`` is ``value``."""
    import duckdb

    sql = bs.Q1_SQL.format(path=path).replace("WHERE ", f"WHERE {key} IS DISTINCT FROM ? AND ", 1)
    with duckdb.connect() as con:
        return con.execute(sql, [value]).fetchall()


def shape_bench(
    bench: Bench, prep: bs.Prepared, shape: str, args: argparse.Namespace
) -> ShapeResult:
    """Every command of ``shape``: counted once with its answer checked, then timed."""
    report: Report = args.report
    data = prep.data(shape, [WITHHELD])
    w = data.withheld[WITHHELD]
    result = ShapeResult(shape, data.slices)
    print(
        f"\n{shape}: {data.slices:,} slices; the new slice is {w.key} ({w.rows:,} rows)", flush=True
    )
    want_before = duckdb_without(data.file, data.key, w.key)
    want_after = bs.duckdb_q1(data.file)

    prefix = bench.prefix(shape)
    url = bench.s3.url_of(prefix)
    started = time.perf_counter()
    files = bench.s3.upload(w.base, prefix, STORE_DIRS)
    print(f"  uploaded {files:,} files in {time.perf_counter() - started:.1f} s", flush=True)

    def add(name: str, proc: bs.Proc, counts: Counts, where: str = prefix) -> None:
        m = result.commands.setdefault(name, Measured(counts))
        if m.counts.by_kind != counts.by_kind:
            report.notes.append(
                f"{shape}, {name}: the counts changed between rounds ({m.counts} then {counts})"
            )
        m.seconds.append(proc.seconds)
        if name not in result.areas:
            result.areas[name] = {a: dict(c) for a, c in counts.area(where).items()}
        print(f"  {name}: {proc.seconds:.2f} s, {counts}", flush=True)

    add("snapshot list", *bench.chanbatch(url, "snapshot", "list"))
    proc, counts, cold = bench.run(url)
    check(report, f"{shape}: cold run on S3 ({data.slices - 1:,} slices)", url, cold, want_before)
    add("cold run", proc, counts)
    warm = Path(tempfile.mkdtemp(prefix=f"s3-{shape}-warm-", dir=args.cache))
    bench.download(prefix, warm)

    for i in range(args.repeat):
        add("no-op plan", *bench.chanbatch(url, "plan", str(bs.BLUEPRINT), "--json"))
        proc, counts, doc = bench.run(url)
        if doc["stats"]["computed"] or snapshot_of(doc) != snapshot_of(cold):
            raise bs.CheckFailed(f"{shape}: a no-op run computed or gave another output: {doc}")
        if i == 0:
            report.verify(f"{shape}: a no-op run on S3 computes nothing, same output")
        add("no-op run", proc, counts)
        add("snapshot list, after the run", *bench.chanbatch(url, "snapshot", "list"))

    after: str | None = None
    for delay in (0.0, args.delay):
        for _ in range(args.repeat):
            fresh = bench.prefix(f"{shape}-new")
            bench.s3.upload(warm, fresh)
            fresh_url = bench.s3.url_of(fresh)
            bench.s3.delay = delay
            try:
                fproc, fcounts = bench.freeze(fresh_url, w.piece, data.key)
                rproc, rcounts, doc = bench.run(fresh_url)
            finally:
                bench.s3.delay = 0.0
            if after is None:
                check(report, f"{shape}: run after one new slice on S3", fresh_url, doc, want_after)
                after = snapshot_of(doc)
            elif snapshot_of(doc) != after:
                raise bs.CheckFailed(
                    f"{shape}: a timed run after the new slice gave another output"
                )
            if delay:
                ms = f"{delay * 1000:g} ms"
                result.delayed.setdefault("new slice: freeze", []).append(fproc.seconds)
                result.delayed.setdefault("new slice: run", []).append(rproc.seconds)
                result.delayed_counts["new slice: run"] = rcounts
                print(
                    f"  with {ms}: freeze {fproc.seconds:.2f} s, run {rproc.seconds:.2f} s",
                    flush=True,
                )
            else:
                add("new slice: freeze", fproc, fcounts, fresh)
                add("new slice: run", rproc, rcounts, fresh)
    bench.s3.delay = args.delay
    try:
        for _ in range(args.repeat):
            proc, _counts, _doc = bench.run(url)
            result.delayed.setdefault("no-op run", []).append(proc.seconds)
    finally:
        bench.s3.delay = 0.0
    bs.drop(warm)
    return result


# -- the report -------------------------------------------------------------------------------


def judged(shapes: list[ShapeResult], delay: float) -> list[tuple[str, str, str, bool]]:
    """(target, measured, verdict text, met) for each of the issue's three targets."""
    out: list[tuple[str, str, str, bool]] = []
    by = {s.name: s for s in shapes}
    if "month" in by and "day" in by:
        m, d = by["month"], by["day"]
        for name in ("no-op plan", "no-op run"):
            a, b = m.commands[name].counts, d.commands[name].counts
            lists = (a.by_kind["LIST"], b.by_kind["LIST"])
            reads = (a.by_kind["GET"] + a.by_kind["HEAD"], b.by_kind["GET"] + b.by_kind["HEAD"])
            ok = lists[1] <= lists[0] and reads[1] <= reads[0]
            out.append(
                (
                    f"{name}: LIST and GET+HEAD independent of N",
                    f"LIST {lists[0]} → {lists[1]}, GET+HEAD {reads[0]} → {reads[1]} "
                    f"({m.slices:,} → {d.slices:,} slices)",
                    "",
                    ok,
                )
            )
    for s in shapes:
        c = s.commands["new slice: run"].counts
        out.append(
            (
                f"{s.name}: one new slice's run ≤ {NEW_SLICE_REQUESTS} requests",
                f"{c.total} ({c})",
                "",
                c.total <= NEW_SLICE_REQUESTS,
            )
        )
    if "day" in by:
        secs = by["day"].delayed.get("new slice: run", [])
        if secs:
            out.append(
                (
                    f"day: one new slice's run with {delay * 1000:g} ms per request < "
                    f"{NEW_SLICE_SECONDS:g} s",
                    f"{median(secs):.2f} s (rounds {fmt_samples(secs)})",
                    "",
                    median(secs) < NEW_SLICE_SECONDS,
                )
            )
    return out


def section_markdown(command: str, report: Report, args: argparse.Namespace) -> str:
    shapes = report.shapes
    targets = judged(shapes, args.delay)
    met = sum(ok for *_, ok in targets)
    changed = any("counts changed" in n for n in report.notes)
    lines = [
        f"Command (from the repository root, venv active): `{command}`",
        "",
        f"{met} of {len(targets)} targets met. Requests are counted by the S3 server "
        "(moto on 127.0.0.1, `tests/benchmark/s3count.py`) as they arrive from a real "
        "`chanbatch` process; counts are exact and "
        + ("differed between rounds where noted below" if changed else "the same in every round")
        + ". Seconds are whole processes (medians), on a shared 2-core machine, the server in "
        "the benchmark's own process.",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *[f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, _, ok in targets],
        "",
    ]
    head = "| command | " + " | ".join(f"{s.name} ({s.slices:,} slices)" for s in shapes) + " |"
    lines += [
        "Requests per command (LIST / GET / HEAD / PUT / DELETE; total) and seconds:",
        "",
        head,
        "|---|" + "---|" * len(shapes),
    ]
    for name in COMMANDS:
        cells = []
        for s in shapes:
            m = s.commands.get(name)
            if m is None:
                cells.append("—")
                continue
            c = m.counts.by_kind
            kinds = " / ".join(str(c[k]) for k in KINDS if k != "POST")
            post = f" + {c['POST']} POST" if c["POST"] else ""
            cells.append(f"{kinds}{post}; **{m.counts.total}**; {median(m.seconds):.2f} s")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ms = f"{args.delay * 1000:g} ms"
    for name in ("no-op run", "new slice: freeze", "new slice: run"):
        cells = [f"{median(s.delayed[name]):.2f} s" if s.delayed.get(name) else "—" for s in shapes]
        lines.append(f"| {name}, {ms} per request | " + " | ".join(cells) + " |")
    lines += ["", "Where the requests go (store area: requests by type):", ""]
    for s in shapes:
        for name in ("no-op plan", "no-op run", "new slice: run"):
            areas = s.areas.get(name, {})
            text = "; ".join(
                f"`{a}` " + ", ".join(f"{k} {n}" for k, n in sorted(c.items()))
                for a, c in sorted(areas.items())
            )
            lines.append(f"- {s.name}, {name}: {text}")
    facts = bench_q1.machine()
    facts += [
        ("s3fs", version("s3fs")),
        ("moto", version("moto")),
        ("botocore", version("botocore")),
    ]
    facts += [("measured code", args.revision)]
    lines += [
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in facts],
        "",
        *[f"- {n}" for n in report.notes],
        "",
        "### Method and samples",
        "",
        f"- Data: TPC-H lineitem SF{args.sf:g} prepared and frozen as bench_slices.py does "
        f"(`month` and `l_shipdate` slices). Each shape's store holds every slice but the "
        f"`{WITHHELD}` one; it is uploaded to a fresh prefix, then run cold. The new slice is "
        "frozen into a fresh copy of that warm store each round (the copy is downloaded after "
        "the cold run and uploaded again, uncounted).",
        f"- {args.repeat} rounds per timed figure; the delay is added by the server before it "
        "answers each request, so a process that sends requests one after another pays it once "
        "per request.",
        "- Answers checked before any timing: " + "; ".join(report.verified) + ".",
    ]
    for s in shapes:
        for name, m in s.commands.items():
            lines.append(f"- {s.name}, {name}: s {fmt_samples(m.seconds)}")
        for name, secs in s.delayed.items():
            lines.append(f"- {s.name}, {name} with {ms}: s {fmt_samples(secs)}")
    return "\n".join(lines).rstrip() + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--sf", type=float, default=1.0, help="TPC-H scale factor (default 1)")
    p.add_argument("--repeat", type=int, default=3, help="timed rounds (default 3)")
    p.add_argument("--shapes", default=",".join(SHAPES), help="comma list of month,day")
    p.add_argument("--delay", type=float, default=0.02, help="seconds per request (default 0.02)")
    p.add_argument("--out", type=Path, help="write the section into this markdown file")
    p.add_argument("--cache", type=Path, default=REPO / ".bench", help="data folder")
    args = p.parse_args(argv)
    args.shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if set(args.shapes) - set(SHAPES):
        p.error(f"unknown shapes; choose from {','.join(SHAPES)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Measure the shapes asked for; exit 1 when an answer check fails."""
    import chanbatch

    args = parse_args(argv)
    given = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["python", "tests/benchmark/bench_s3.py", *given])
    args.report = Report()
    code = Path(chanbatch.__file__).resolve().parent.parent
    rev = code / "REV"  # a commit exported there with git archive, its id written beside it
    args.revision = (
        git_revision()
        if code == REPO
        else f"commit {rev.read_text().strip()} (`git archive`d to {code}, on PYTHONPATH)"
        if rev.exists()
        else f"chanbatch imported from {code}"
    )
    args.cache.mkdir(parents=True, exist_ok=True)
    source = ensure_lineitem(args.sf, args.cache)
    root = bs.stamped_root(
        args.cache / f"slices-sf{args.sf:g}",
        bs.stamp({"source": source.stat().st_size, "days from": str(bs.QUICK_DAYS_FROM)}),
    )
    prep = bs.Prepared(source, root, quick=False)
    try:
        with CountingS3() as s3:
            bench = Bench(s3)
            for shape in args.shapes:
                args.report.shapes.append(shape_bench(bench, prep, shape, args))
    except bs.CheckFailed as exc:
        print(f"CHECK FAILED: {exc}", file=sys.stderr)
        return 1
    for target, measured, _, ok in judged(args.report.shapes, args.delay):
        print(f"{target}: {measured} [{'met' if ok else 'MISSED'}]")
    if args.out is not None:
        body = section_markdown(command, args.report, args)
        _write_section(args.out, body, section=SECTION, begin=BEGIN, end=END, header=DOC_HEADER)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
