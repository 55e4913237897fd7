"""Scale simulation (issue 20): stores of 10,000 and 100,000 small slices, measured so that
docs/scaling.md can extrapolate to 1,000,000 slices and 1,000 workers.

Run from the repository root, with the venv active::

    python tests/benchmark/bench_scale_sim.py --out docs/scaling.md

The data and blueprint are bench_slices.py's ``100k`` shape: N int slices of 10 rows and a
sum/count group-by (``many.yaml``). The 100,000-slice store, frozen and run once, is the one
bench_slices.py caches (``.bench/slices-many-100000``), hard-linked; the 10,000-slice store is
built the same way and cached beside it. Per N, on a hard-link copy of the warm store:

- the store's files and bytes per area, the head snapshot manifest, the ref-log entries, the
  cache index (entry files and pack indexes), the blueprint's memo and its run records;
- ``chanbatch plan`` and ``run`` with nothing to do: seconds and peak RSS (processes);
- one new slice (``snapshot freeze`` of one 10-row slice), then ``plan`` and ``run``: seconds and
  peak RSS;
- the file operations of a no-op ``run`` and of the run after one new slice, counted with
  ``strace -f`` on the local store (opens for reading and writing, stats, directory listings
  of paths under the store): a local stand-in for S3 requests at sizes too big to upload to
  the moto server (bench_s3.py counts real S3 requests at 84 and 2,526 slices);
- ref-log contention, on the counting S3 server (tests/benchmark/s3count.py): W ``snapshot
  freeze`` processes started together, each adding its own slice to one dataset of 100 slices;
  every version must be committed once, and the PUTs to ``refs/`` per committed version say how
  often a writer lost the race and tried again.

Answers: the no-op run must compute nothing and its output must equal DuckDB's group-by over
the raw rows; the run after the new slice must equal DuckDB over the rows with the new slice.
A failed check stops the script (exit 1) and writes nothing.

This file is not a test: ``tests/benchmark/conftest.py`` keeps pytest from collecting it.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bench_q1
import bench_slices as bs
from benchkit import REPO, fmt_samples, git_revision, median, version
from benchkit import write_section as _write_section
from s3count import UNSET, CountingS3

SECTION = "Measured at 10,000 and 100,000 slices"
BEGIN = "<!-- bench_scale_sim.py: generated, begin -->"
END = "<!-- bench_scale_sim.py: generated, end -->"
DOC_HEADER = "# Scaling out\n"
SIZES = (10_000, 100_000)
AREAS = ("objects", "manifests", "refs", "cache", "cache/packs", "memo", "runs")
WRITERS = (1, 4, 16)
CONTENTION_SLICES = 100


@dataclass(slots=True)
class Sized:
    """What was measured at one N."""

    n: int
    files: dict[str, int] = field(default_factory=dict)  # area -> files
    bytes: dict[str, int] = field(default_factory=dict)  # area -> bytes
    facts: dict[str, float] = field(default_factory=dict)  # name -> value
    seconds: dict[str, list[float]] = field(default_factory=dict)
    rss_mb: dict[str, list[float]] = field(default_factory=dict)
    ops: dict[str, dict[str, int]] = field(default_factory=dict)  # command -> op -> count


class CheckFailed(Exception):
    """An answer differs from DuckDB's."""


# -- stores -----------------------------------------------------------------------------------


def warm_store(args: argparse.Namespace, n: int) -> bs.Many:
    """The frozen-and-run store of ``n`` slices, built once (bench_slices.prepare_many)."""
    ns = argparse.Namespace(slices_100k=n, cache=args.cache, rebuild=False)
    return bs.prepare_many(ns)


def area_sizes(store: Path) -> tuple[dict[str, int], dict[str, int]]:
    files: dict[str, int] = collections.Counter()
    size: dict[str, int] = collections.Counter()
    for area in AREAS:
        top = store / area
        if not top.exists():
            continue
        for p in top.rglob("*"):
            if p.is_file() and not (area == "cache" and p.parent.name == "packs"):
                files[area] += 1
                size[area] += p.stat().st_size
    return dict(files), dict(size)


def head_facts(store: Path, dataset: str) -> dict[str, float]:
    """The newest ref-log entry of ``dataset`` and the snapshot manifest it names: bytes."""
    refs = sorted((store / "refs" / dataset).glob("*.json"))
    text = refs[-1].read_text()
    doc = json.loads(text)
    snapshot = doc.get("snapshot") or doc.get("manifest")
    manifest = store / "manifests" / snapshot[:2] / f"{snapshot[2:]}.json"
    return {
        f"{dataset}: ref-log entries": len(refs),
        f"{dataset}: first ref entry, bytes": refs[0].stat().st_size,
        f"{dataset}: newest ref entry, bytes": len(text),
        f"{dataset}: snapshot manifest, bytes": manifest.stat().st_size,
    }


# -- processes --------------------------------------------------------------------------------

OPEN = re.compile(r'^\d+\s+(\w+)\((?:(?:AT_FDCWD|-?\d+), )?"([^"]+)"(?:, ([A-Z_|]+))?')


def strace_ops(cmd: list[str], store: Path) -> dict[str, int]:
    """File operations of ``cmd`` on paths under ``store``, by kind: ``read`` (open for
    reading a file), ``write`` (open to create or write), ``stat`` (stat, access,
    readlink), ``list`` (open of a directory, to list it), ``rename``/``link``/``unlink``."""
    with tempfile.NamedTemporaryFile(suffix=".strace") as out:
        full = [
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=openat,stat,lstat,newfstatat,statx,access,faccessat2,rename,renameat,"
            "renameat2,link,linkat,unlink,unlinkat",
            "-o",
            out.name,
            *cmd,
        ]
        done = subprocess.run(full, env=bs.child_env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} under strace failed:\n{done.stderr[-2000:]}")
        lines = Path(out.name).read_text(errors="replace").splitlines()
    root = str(store.resolve())
    ops: dict[str, int] = collections.Counter()
    for line in lines:
        m = OPEN.match(line)
        if m is None or not m.group(2).startswith(root):
            continue
        call, flags = m.group(1), m.group(3) or ""
        if call == "openat":
            if "O_DIRECTORY" in flags:
                ops["list"] += 1
            elif "O_WRONLY" in flags or "O_RDWR" in flags or "O_CREAT" in flags:
                ops["write"] += 1
            else:
                ops["read"] += 1
        elif call.startswith("rename"):
            ops["rename"] += 1
        elif call.startswith("link"):
            ops["link"] += 1
        elif call.startswith("unlink"):
            ops["unlink"] += 1
        else:
            ops["stat"] += 1
    return dict(ops)


def many_answer(raw: Path, below: int | None = None) -> list[tuple[int, int, int]]:
    import duckdb

    sql = bs.MANY_SQL.format(path=raw)
    if below is not None:
        sql = sql.replace("GROUP BY", f"WHERE {bs.MANY_KEY} < {below} GROUP BY")
    with duckdb.connect() as con:
        return [tuple(r) for r in con.execute(sql).fetchall()]


def check_output(store: Path, doc: dict[str, Any], want: list[Any], what: str) -> None:
    import chanbatch as cb

    snapshot = next(iter(doc["outputs"].values()))["snapshot"]
    got = cb.Store(str(store)).read_pandas(f"many_per_kind@{snapshot}")
    rows = sorted(tuple(int(x) for x in r) for r in got[["kind", "n", "total"]].values.tolist())
    if rows != want:
        raise CheckFailed(f"{what}: {rows} != DuckDB's {want}")
    print(f"  checked: {what} = DuckDB", flush=True)


def measure(args: argparse.Namespace, n: int, scratch: Path) -> Sized:
    """Everything at ``n`` slices."""
    many = warm_store(args, n)
    out = Sized(n)
    print(f"\n{n:,} slices (store built in {many.build})", flush=True)
    chan = bs.cli()
    bp = str(many.blueprint)
    want_before = many_answer(many.raw, below=n)
    want_after = many_answer(many.raw)

    def proc(name: str, *argv: str, store: Path) -> bs.Proc:
        p = bs.run_process([chan, *argv, "--store", str(store)])
        out.seconds.setdefault(name, []).append(p.seconds)
        out.rss_mb.setdefault(name, []).append(p.max_rss_mb)
        return p

    a = bs.link_store(many.warm, scratch / f"a-{n}", everything=True)
    out.files, out.bytes = area_sizes(a)
    packs = list((a / "cache" / "packs").glob("*.json"))
    out.files["cache/packs"], out.bytes["cache/packs"] = (
        len(packs),
        sum(p.stat().st_size for p in packs),
    )
    for i in range(args.repeat):
        proc("no-op plan", "plan", bp, "--json", store=a)
        doc = json.loads(proc("no-op run", "run", bp, "--json", store=a).stdout)
        if doc["stats"]["computed"]:
            raise CheckFailed(f"{n:,}: a no-op run computed {doc['stats']['computed']} tasks")
        if i == 0:
            check_output(a, doc, want_before, f"{n:,} slices, no-op run")
    out.ops["no-op run"] = strace_ops([chan, "run", bp, "--json", "--store", str(a)], a)
    out.ops["no-op plan"] = strace_ops([chan, "plan", bp, "--json", "--store", str(a)], a)
    freeze = ["snapshot", "freeze", "events", str(many.piece), "--slice-by", bs.MANY_KEY, "--json"]
    proc("new slice: freeze", *freeze, store=a)
    proc("new slice: plan", "plan", bp, "--json", store=a)
    doc = json.loads(proc("new slice: run", "run", bp, "--json", store=a).stdout)
    check_output(a, doc, want_after, f"{n:,} slices + one new slice, run")
    bs.drop(a)
    b = bs.link_store(many.warm, scratch / f"b-{n}", everything=True)
    out.ops["new slice: freeze"] = strace_ops([chan, *freeze, "--store", str(b)], b)
    out.ops["new slice: run"] = strace_ops([chan, "run", bp, "--json", "--store", str(b)], b)
    out.facts.update(head_facts(b, "events"))  # after one new slice: two ref-log entries
    out.facts.update(head_facts(b, "many_per_kind"))
    memo = sorted((b / "memo").glob("*.json"))
    out.facts["memo files, bytes"] = sum(p.stat().st_size for p in memo)
    runs = sorted((b / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime)
    out.facts["cold run's record, bytes"] = runs[0].stat().st_size
    out.facts["new slice run's record, bytes"] = runs[-1].stat().st_size
    bs.drop(b)
    for name, secs in out.seconds.items():
        print(
            f"  {name}: {median(secs):.2f} s, {median(out.rss_mb[name]):.0f} MB",
            flush=True,
        )
    for name, ops in out.ops.items():
        print(f"  {name}: file operations {ops}", flush=True)
    return out


# -- contention -------------------------------------------------------------------------------


@dataclass(slots=True)
class Contention:
    writers: int
    seconds: float  # from the start of the first to the end of the last
    versions: int  # ref-log versions added
    ref_puts: int  # PUT requests to refs/<dataset>/
    ref_heads: int
    ref_lists: int


def contention(args: argparse.Namespace, scratch: Path) -> list[Contention]:
    """W freeze processes at once, each adding one slice to one dataset, on counting S3."""
    import pyarrow.parquet as pq

    import chanbatch as cb

    base = scratch / "contention-base"
    cb.Store(str(base)).freeze("events", bs.many_table(CONTENTION_SLICES), slice_by=bs.MANY_KEY)
    pieces = []
    for i in range(max(WRITERS)):
        piece = scratch / f"piece-{i}.parquet"
        pq.write_table(bs.many_table(1, first=CONTENTION_SLICES + i), piece)
        pieces.append(piece)
    out = []
    print("\nref-log contention on S3", flush=True)
    with CountingS3() as s3:
        env = s3.env(bs.child_env())
        for w in WRITERS:
            prefix = f"contention-{w}"
            s3.upload(base, prefix)
            url = s3.url_of(prefix)
            s3.reset()
            started = time.perf_counter()
            freeze = [bs.cli(), "snapshot", "freeze", "events"]
            procs = [
                subprocess.Popen(
                    [*freeze, str(pieces[i]), "--slice-by", bs.MANY_KEY, "--json", "--store", url],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for i in range(w)
            ]
            results = [p.communicate() for p in procs]
            seconds = time.perf_counter() - started
            counts = s3.counts()
            for p, (_o, err) in zip(procs, results, strict=True):
                if p.returncode != 0:
                    raise CheckFailed(f"{w} concurrent freezes: one failed: {err[-1000:]}")
            listed = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=f"{prefix}/refs/events/")
            versions = len(listed.get("Contents", [])) - 1  # the base's own version is 1
            snapshots = {json.loads(o)["snapshot"] for o, _e in results}
            if versions != w or len(snapshots) != w:
                raise CheckFailed(f"{w} concurrent freezes committed {versions} versions")
            refs = [r for r in counts.requests if r.key.startswith(f"{prefix}/refs/events/")]
            tally = collections.Counter(r.kind for r in refs)
            c = Contention(w, seconds, w, tally["PUT"], tally["HEAD"], tally["LIST"])
            print(
                f"  {w} writers: {seconds:.1f} s, {c.ref_puts} ref PUTs for {w} versions, "
                f"ref HEAD {c.ref_heads}, LIST {c.ref_lists}",
                flush=True,
            )
            out.append(c)
    return out


# -- the report -------------------------------------------------------------------------------


def fmt_bytes(b: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if b >= size:
            return f"{b / size:.1f} {unit}"
    return f"{b:.0f} B"


def section_markdown(
    command: str, sized: list[Sized], cont: list[Contention], args: argparse.Namespace
) -> str:
    head = "| | " + " | ".join(f"{s.n:,} slices" for s in sized) + " | growth ×10 |"
    rule = "|---|" + "---:|" * (len(sized) + 1)

    def growth(a: float, b: float) -> str:
        return f"{b / a:.1f}×" if a else "—"

    lines = [
        f"Command (from the repository root, venv active): `{command}`",
        "",
        "Store contents (files, bytes):",
        "",
        head,
        rule,
    ]
    for area in AREAS:
        f = [s.files.get(area, 0) for s in sized]
        b = [s.bytes.get(area, 0) for s in sized]
        cells = " | ".join(f"{x:,} files, {fmt_bytes(y)}" for x, y in zip(f, b, strict=True))
        lines.append(f"| `{area}/` | {cells} | {growth(b[0], b[-1])} |")
    for name in sized[0].facts:
        v = [s.facts.get(name, 0) for s in sized]
        unit = fmt_bytes if "bytes" in name else (lambda x: f"{x:,.0f}")
        label = name.replace(", bytes", "")
        lines.append(
            f"| {label} | " + " | ".join(unit(x) for x in v) + f" | {growth(v[0], v[-1])} |"
        )
    lines += ["", "Processes (median seconds; peak RSS):", "", head, rule]
    for name in sized[0].seconds:
        secs = [median(s.seconds[name]) for s in sized]
        rss = [median(s.rss_mb[name]) for s in sized]
        cells = " | ".join(f"{x:.2f} s; {r:.0f} MB" for x, r in zip(secs, rss, strict=True))
        lines.append(f"| {name} | {cells} | {growth(secs[0], secs[-1])} (time) |")
    lines += [
        "",
        "File operations on the local store under `strace -f` (read / write / stat / list / "
        "rename+link+unlink):",
        "",
        head,
        rule,
    ]
    for name in sized[0].ops:
        totals = []
        cells = []
        for s in sized:
            o = s.ops[name]
            other = o.get("rename", 0) + o.get("link", 0) + o.get("unlink", 0)
            cells.append(
                f"{o.get('read', 0)} / {o.get('write', 0)} / {o.get('stat', 0)} / "
                f"{o.get('list', 0)} / {other}"
            )
            totals.append(sum(o.values()))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {growth(totals[0], totals[-1])} |")
    if cont:
        lines += [
            "",
            f"Ref-log contention on S3 (moto; one dataset of {CONTENTION_SLICES} slices; W "
            "`snapshot freeze` processes started together, each adding one slice):",
            "",
            "| writers | wall seconds (all) | versions committed | PUTs to `refs/` | "
            "HEADs | LISTs |",
            "|---:|---:|---:|---:|---:|---:|",
            *[
                f"| {c.writers} | {c.seconds:.1f} | {c.versions} | {c.ref_puts} | "
                f"{c.ref_heads} | {c.ref_lists} |"
                for c in cont
            ],
        ]
    facts = bench_q1.machine()
    facts += [("s3fs", version("s3fs")), ("moto", version("moto"))]
    facts += [("measured code", args.revision)]
    lines += ["", "| machine | |", "|---|---|", *[f"| {k} | {v} |" for k, v in facts], ""]
    lines += ["Samples (seconds):", ""]
    for s in sized:
        for name, secs in s.seconds.items():
            lines.append(f"- {s.n:,}, {name}: {fmt_samples(secs)}")
    return "\n".join(lines).rstrip() + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=3, help="rounds of the no-op figures")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma list of N")
    p.add_argument("--no-contention", action="store_true", help="skip the S3 contention")
    p.add_argument("--out", type=Path, help="write the section into this markdown file")
    p.add_argument("--cache", type=Path, default=REPO / ".bench", help="data + scratch folder")
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Measure; exit 1 when an answer check fails."""
    import chanbatch

    args = parse_args(argv)
    given = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["python", "tests/benchmark/bench_scale_sim.py", *given])
    code = Path(chanbatch.__file__).resolve().parent.parent
    rev = code / "REV"
    args.revision = (
        git_revision()
        if code == REPO
        else f"commit {rev.read_text().strip()} (`git archive`d to {code}, on PYTHONPATH)"
        if rev.exists()
        else f"chanbatch imported from {code}"
    )
    if shutil.which("strace") is None:
        sys.exit("strace is not installed (it counts the file operations)")
    for name in UNSET:
        os.environ.pop(name, None)
    scratch = Path(tempfile.mkdtemp(prefix="scale-sim-", dir=args.cache))
    try:
        sized = [measure(args, n, scratch) for n in args.sizes]
        cont = [] if args.no_contention else contention(args, scratch)
    except CheckFailed as exc:
        print(f"CHECK FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        bs.drop(scratch)
    if args.out is not None:
        body = section_markdown(command, sized, cont, args)
        _write_section(args.out, body, section=SECTION, begin=BEGIN, end=END, header=DOC_HEADER)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
