#!/usr/bin/env python
"""Benchmark of the snapshot store (issue 2): freeze, verify, read-back and CLI startup.

Run it from the repository root, with the project's venv active::

    python tests/benchmark/bench_store.py --sf 1 --repeat 5 --out docs/performance.md

It measures, in one run, taking medians of several repeats:

1. freeze of TPC-H ``lineitem`` as month slices (84 at any scale factor), against ONE raw
   ``pyarrow.parquet.write_table`` of the same in-memory table with default options, written to
   the same folder. Target: ratio <= 1.35. The two sides alternate in order across repeats;
   every measurement writes to a new folder, which is deleted (and the deletion synced) before
   the next one, and Arrow's allocator returns its unused memory to the OS first (as mimalloc
   does by itself milliseconds after a call), so each side starts from the same state and pays
   for the fresh memory it writes. Nothing is evicted from the page cache: the input is in
   memory and the outputs go to the page cache. The same ratio "warm" (each side timed right
   after an untimed run of itself) is reported beside it, without a target.
2. ``verify`` of such a store, of the whole store and through the REF ``lineitem``: bytes checked
   per second. Target: >= 1 GB/s (1e9 bytes).
3. startup of ``chanbatch --help`` and ``chanbatch snapshot list --store STORE`` as whole
   processes (wall time). Target: < 0.3 s each. ``python -c pass`` is the floor. If the CLI is
   missing or fails, those figures read "n/a" and the reason is printed.
4. without a target: read-back throughput (``Store.read_table`` of every slice), and the warm
   freeze ratio with other Parquet codecs (the store's fixed writer options patched in memory
   for the duration of those measurements only), to compare with the store's warm ratio. It
   also reports the bytes Arrow's memory pool hands out during each side, and each side's
   kernel CPU time (page faults on fresh memory).

The machine this runs on may be shared. Every measurement also records how much of the machine's
CPU capacity other processes (and the hypervisor's steal) used meanwhile, from ``/proc/stat``.
Before each one the script waits (up to ``--quiet-wait`` seconds) for a quiet moment, and it takes
up to ``--tries`` times as many measurements as it needs: the medians use the measurements with
at most ``--noise`` of the machine busy elsewhere or, if there are too few, the least disturbed
ones. The report says how many were taken and how disturbed the used ones were.

With ``--profile`` (and automatically when the freeze target is missed) it also reports where
freeze spends its time: the phases of one freeze (by wrapping functions of
``chanbatch.snapshot.freeze`` in memory) and the single-threaded cost of each step on the same
data.

TPC-H data is generated once with ``tpchgen-cli`` and cached under ``<repo>/.bench/`` (ignored by
git); scratch stores go to a temporary folder there and are removed at the end. ``--out FILE``
writes the results into the section "Snapshot store (issue 2)" of FILE, between generated-block
markers; the rest of FILE, including notes under the section after the block, is kept.

This file is not a test: ``tests/benchmark/conftest.py`` keeps pytest from collecting it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import gc
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
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
DATASET = "lineitem"
KEY = "month"
SECTION = "Snapshot store (issue 2)"
BEGIN = "<!-- bench_store.py: generated, begin -->"
END = "<!-- bench_store.py: generated, end -->"

TARGET_FREEZE_RATIO = 1.35
TARGET_VERIFY_GBS = 1.0
TARGET_STARTUP_S = 0.3

# Writer settings measured besides the store's own: overrides of its fixed WRITE_OPTIONS.
WRITER_VARIANTS: dict[str, dict[str, Any]] = {
    "snappy": {"compression": "snappy", "compression_level": None},
    "lz4": {"compression": "lz4", "compression_level": None},
    "none": {"compression": "none", "compression_level": None},
}
DEFAULT_VARIANTS = "snappy,lz4"

DOC_HEADER = """# Performance

Measured numbers for chanbatch, one section per area. Each section names the command that
produced its numbers and the machine they were measured on. Re-running a section's command
replaces only the generated block of that section, so notes written below a block are kept.
"""

NCPU = os.cpu_count() or 1
CLOCK_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# -- measuring on a shared machine ---------------------------------------------------------------


def _machine_busy() -> float | None:
    """CPU seconds every process on the machine has used, steal included; None off Linux."""
    try:
        with open("/proc/stat") as handle:
            fields = handle.readline().split()
    except OSError:
        return None
    ticks = [int(x) for x in fields[1:9]] + [0] * 8
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICK


def _own_cpu() -> tuple[float, float]:
    """CPU seconds (all, and in the kernel) of this process and the children it waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system, t.system + t.children_system


@dataclass(slots=True)
class Sample:
    seconds: float  # wall
    cpu: float  # this process and its waited-for children, all threads
    sys: float  # the part of ``cpu`` spent in the kernel (page faults, file writes)
    noise: float  # share of the machine's CPU capacity used by others meanwhile (0..1)


def measure(fn: Callable[[], Any]) -> tuple[Sample, Any]:
    busy0, (own0, sys0), wall0 = _machine_busy(), _own_cpu(), time.perf_counter()
    value = fn()
    wall = time.perf_counter() - wall0
    own1, sys1 = _own_cpu()
    busy1 = _machine_busy()
    noise = 0.0
    if busy0 is not None and busy1 is not None and wall > 0:
        noise = min(1.0, max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall * NCPU))
    return Sample(wall, own1 - own0, sys1 - sys0, noise), value


@dataclass(slots=True)
class Settings:
    noise: float  # a measurement is clean when others used at most this share of the machine
    quiet_wait: float  # seconds to wait for a quiet moment before each measurement
    tries: int  # take at most this many times the measurements needed


def wait_quiet(settings: Settings) -> None:
    """Wait until others use at most ``settings.noise`` of the machine over half a second."""
    deadline = time.perf_counter() + settings.quiet_wait
    while time.perf_counter() < deadline:
        busy0, (own0, _), wall0 = _machine_busy(), _own_cpu(), time.perf_counter()
        if busy0 is None:
            return
        time.sleep(0.5)
        busy1, (own1, _) = _machine_busy(), _own_cpu()
        assert busy1 is not None
        others = max(0.0, (busy1 - busy0) - (own1 - own0))
        if others / ((time.perf_counter() - wall0) * NCPU) <= settings.noise:
            return


def settle() -> None:
    """Start every measurement from the same state.

    The previous measurement's garbage is collected, its deleted files are synced, and Arrow's
    allocator returns its unused memory to the OS, as it does by itself shortly after a call
    ends (mimalloc purges freed memory after milliseconds). So each measurement pays for the
    fresh memory it touches, as a new process or a call after an idle moment does.
    """
    gc.collect()
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    if hasattr(os, "sync"):
        os.sync()


@dataclass(slots=True)
class Trial:
    """One measurement: one or more timed parts (for example the two sides of a pair)."""

    parts: dict[str, Sample]
    value: Any = None

    @property
    def noise(self) -> float:
        return max(s.noise for s in self.parts.values())


@dataclass(slots=True)
class Selection:
    used: list[Trial]
    taken: int
    clean: int
    threshold: float

    def seconds(self, part: str) -> list[float]:
        return [t.parts[part].seconds for t in self.used]

    def cpu(self, part: str) -> list[float]:
        return [t.parts[part].cpu for t in self.used]

    def sys(self, part: str) -> list[float]:
        return [t.parts[part].sys for t in self.used]

    def median(self, part: str) -> float:
        return statistics.median(self.seconds(part))

    def describe(self) -> str:
        noise = statistics.median(t.noise for t in self.used)
        worst = max(t.noise for t in self.used)
        how = (
            f"{len(self.used)} clean"
            if self.clean >= len(self.used)
            else f"the {len(self.used)} least disturbed (only {self.clean} clean)"
        )
        return (
            f"{how} of {self.taken} taken; others used {noise:.0%} of the machine "
            f"(median, worst {worst:.0%}) during the used ones"
        )


def select(
    run_trial: Callable[[int], Trial], needed: int, settings: Settings, *, wait: bool = True
) -> Selection:
    """Take trials until ``needed`` are clean or ``settings.tries`` × needed were taken."""
    taken: list[Trial] = []
    clean = 0
    while clean < needed and len(taken) < needed * settings.tries:
        settle()
        if wait:
            wait_quiet(settings)
        trial = run_trial(len(taken))
        taken.append(trial)
        clean += trial.noise <= settings.noise
    good = [t for t in taken if t.noise <= settings.noise]
    if len(good) >= needed:
        used = good[:needed]
    else:
        least = sorted(range(len(taken)), key=lambda i: taken[i].noise)[:needed]
        used = [taken[i] for i in sorted(least)]
    return Selection(used=used, taken=len(taken), clean=len(good), threshold=settings.noise)


def batch(fn: Callable[[], Any], runs: int) -> Trial:
    """A trial of ``runs`` quick runs: one Sample per run, noise measured over all of them."""
    walls: list[float] = []

    def go() -> None:
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            walls.append(time.perf_counter() - start)

    whole, _ = measure(go)
    cpu, kernel = whole.cpu / runs, whole.sys / runs
    return Trial(
        parts={f"run{i}": Sample(w, cpu, kernel, whole.noise) for i, w in enumerate(walls)}
    )


def batch_seconds(selection: Selection) -> list[float]:
    trial = selection.used[0]
    return [s.seconds for s in trial.parts.values()]


# -- results ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """One line of the summary table."""

    figure: str
    measured: str
    target: str = "—"
    passed: bool | None = None  # None: no target, or not measurable
    # for report.py's summary and chart: the figure as a ratio (lower is better) and its
    # target; an absolute target is a ratio to its budget (time ÷ the time the target allows)
    x: float | None = None
    goal: float | None = None

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return "n/a" if self.target != "—" else "—"
        return "yes" if self.passed else "**no**"


@dataclass(slots=True)
class Report:
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # markdown lines
    profile: list[str] = field(default_factory=list)  # markdown lines
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(f"  => {row.figure}: {row.measured} [target {row.target}: {row.verdict}]", flush=True)


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:.1f} s"


# -- machine ------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _filesystem(path: Path) -> str:
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def _first_touch() -> str:
    """How fast this machine maps fresh memory, against rewriting memory already mapped."""
    import numpy as np

    fresh, again = [], []
    for _ in range(3):
        settle()
        start = time.perf_counter()
        block = np.ones(1 << 26)  # 512 MiB, every page touched for the first time
        middle = time.perf_counter()
        block[:] = 2.0
        fresh.append(middle - start)
        again.append(time.perf_counter() - middle)
        del block
    size = (1 << 29) / 1e9
    return (
        f"{size / median(fresh):.1f} GB/s for fresh memory, {size / median(again):.1f} GB/s "
        "rewriting it (numpy, 512 MiB, median of 3)"
    )


def machine(workdir: Path) -> list[tuple[str, str]]:
    import pyarrow as pa

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else NCPU
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return [
        ("date", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("CPU", _cpu_model()),
        ("cores", f"{NCPU} logical, {usable} usable by this process"),
        ("RAM", _ram_gib()),
        ("first write to memory", _first_touch()),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("store folder", f"{workdir.parent} ({_filesystem(workdir)}, page cache)"),
        ("load average at start", load),
        ("Python", platform.python_version()),
        ("pyarrow", f"{pa.__version__} (memory pool: {pa.default_memory_pool().backend_name})"),
        ("pandas", _version("pandas")),
        ("dask", _version("dask")),
        ("blake3", _version("blake3")),
        ("numpy", _version("numpy")),
        ("fsspec", _version("fsspec")),
        ("chanbatch", f"{_version('chanbatch')}, git {_git_revision()}"),
    ]


# -- data ---------------------------------------------------------------------------------------


def load_table(path: Path) -> Any:
    """lineitem in memory, with the int key ``month`` = year * 100 + month of ``l_shipdate``."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    ship = table["l_shipdate"]
    month = pc.add(pc.multiply(pc.year(ship), 100), pc.month(ship))
    return table.append_column(KEY, month)


# -- 1. freeze against write_table ---------------------------------------------------------------


@dataclass(slots=True)
class Frozen:
    slices: int = 0
    store_bytes: int = 0
    raw_bytes: int = 0
    compression: str = ""  # the codec found in the store's first object
    raw_allocated: int = 0  # bytes allocated from Arrow's memory pool during one call
    freeze_allocated: int = 0


def _object_compression(store_dir: Path) -> str:
    import pyarrow.parquet as pq

    for dirpath, _dirs, files in os.walk(store_dir / "objects"):
        for name in files:
            meta = pq.ParquetFile(os.path.join(dirpath, name)).metadata
            return str(meta.row_group(0).column(0).compression)
    return "unknown"


def _allocated() -> int:
    """Bytes allocated from Arrow's default memory pool so far (a running total)."""
    import pyarrow as pa

    pool = pa.default_memory_pool()
    return int(pool.total_bytes_allocated()) if hasattr(pool, "total_bytes_allocated") else 0


def freeze_once(table: Any, store_dir: Path) -> tuple[Sample, Any]:
    from chanbatch import Store

    def go() -> Any:
        return Store(str(store_dir)).freeze(DATASET, table, slice_by=KEY)

    return measure(go)


def bench_freeze(
    table: Any,
    workdir: Path,
    needed: int,
    warmup: int,
    settings: Settings,
    label: str,
    *,
    warm: bool = False,
) -> tuple[Selection, Frozen]:
    """Pairs of (one raw write_table, one freeze), alternating which side goes first.

    With ``warm``, each timed side runs right after an untimed run of itself, so the memory it
    needs is already mapped (the best case: back-to-back calls in one process).
    """
    import pyarrow.parquet as pq

    info = Frozen()

    def raw_side(i: int) -> Sample:
        path = workdir / f"raw-{label}-{i}.parquet"
        before = _allocated()
        sample, _ = measure(functools.partial(pq.write_table, table, path))
        info.raw_allocated = _allocated() - before
        info.raw_bytes = path.stat().st_size
        path.unlink()
        return sample

    def freeze_side(i: int) -> Sample:
        store_dir = workdir / f"store-{label}-{i}"
        before = _allocated()
        sample, result = freeze_once(table, store_dir)
        info.freeze_allocated = _allocated() - before
        info.slices = len(result.slices)
        info.store_bytes = sum(s.bytes for s in result.slices)
        info.compression = _object_compression(store_dir)
        shutil.rmtree(store_dir)
        return sample

    def pair(i: int) -> Trial:
        parts: dict[str, Sample] = {}
        for side in ("raw", "freeze") if i % 2 == 0 else ("freeze", "raw"):
            if parts:
                settle()
                wait_quiet(settings)
            timed_side = raw_side if side == "raw" else freeze_side
            if warm:
                timed_side(-1 - i)
            parts[side] = timed_side(i)
        raw, frz = parts["raw"], parts["freeze"]
        print(
            f"  [{label}] pair {i + 1}: write_table {raw.seconds:.3f} s, freeze {frz.seconds:.3f} s"
            f", ratio {frz.seconds / raw.seconds:.3f}, others {max(raw.noise, frz.noise):.0%}",
            flush=True,
        )
        return Trial(parts)

    for i in range(warmup):
        print(f"  [{label}] warm-up:", flush=True)
        pair(i + 1)  # odd: freeze first, so the first timed pair starts with write_table
    return select(pair, needed, settings), info


def ratios(selection: Selection) -> list[float]:
    return [t.parts["freeze"].seconds / t.parts["raw"].seconds for t in selection.used]


@contextlib.contextmanager
def writer_options(overrides: dict[str, Any]) -> Iterator[None]:
    """Patch the store's fixed Parquet writer options in memory, and restore them."""
    from chanbatch.snapshot import freeze as freeze_mod
    from chanbatch.snapshot import normalize as normalize_mod

    found = [getattr(m, "WRITE_OPTIONS", None) for m in (normalize_mod, freeze_mod)]
    dicts = {id(d): d for d in found if isinstance(d, dict)}
    saved = [(d, dict(d)) for d in dicts.values()]
    for d in dicts.values():
        d.update(overrides)
    try:
        yield
    finally:
        for d, before in saved:
            d.clear()
            d.update(before)


# -- 2. verify, 4. read-back ---------------------------------------------------------------------


def bench_verify(
    store_dir: Path, runs: int, ref: str | None, settings: Settings
) -> tuple[Selection, Any]:
    from chanbatch import Store

    store = Store(str(store_dir))
    report = store.verify(ref)  # warm-up: the objects were just written, so they are cached
    if not report.ok:
        sys.exit(f"verify({ref!r}) found problems: {report.document()}")
    return select(lambda _i: batch(functools.partial(store.verify, ref), runs), 1, settings), report


def bench_read(
    store_dir: Path, needed: int, rows: int, settings: Settings
) -> tuple[Selection, int]:
    from chanbatch import Store

    store = Store(str(store_dir))
    arrow_bytes = 0

    def one(_i: int) -> Trial:
        nonlocal arrow_bytes
        sample, table = measure(functools.partial(store.read_table, DATASET))
        if table.num_rows != rows:
            sys.exit(f"read-back returned {table.num_rows} rows, expected {rows}")
        arrow_bytes = table.nbytes
        return Trial({"read": sample})

    return select(one, needed, settings), arrow_bytes


# -- 3. startup ----------------------------------------------------------------------------------


def _imports(argv: list[str]) -> str:
    """Which heavy packages a command imports, and its three slowest top-level imports."""
    if argv[0] != sys.executable:
        try:
            with open(argv[0], "rb") as handle:
                if handle.read(2) != b"#!":
                    return ""
        except OSError:
            return ""
        argv = [sys.executable, *argv]
    probe = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]], capture_output=True, text=True, check=False
    )
    modules: set[str] = set()
    top: list[tuple[int, str]] = []
    for line in probe.stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3:
            continue
        if not parts[1].strip().isdigit():
            continue
        name = parts[2].rstrip()
        modules.add(name.strip())
        if len(name) - len(name.lstrip()) == 1:
            top.append((int(parts[1]), name.strip()))
    heavy = [
        f"{pkg} {'yes' if any(m == pkg or m.startswith(pkg + '.') for m in modules) else 'no'}"
        for pkg in ("dask", "pandas", "pyarrow")
    ]
    slowest = ", ".join(f"`{n}` {us / 1e3:.0f} ms" for us, n in sorted(top, reverse=True)[:3])
    return f"imports {', '.join(heavy)}; slowest top-level imports: {slowest}"


def probe_command(argv: list[str]) -> str | None:
    """None if ``argv`` runs and exits 0, else why not."""
    try:
        probe = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run `{shlex.join(argv)}`: {exc}"
    if probe.returncode != 0:
        last = (probe.stderr.strip() or probe.stdout.strip()).splitlines()[-1:] or [""]
        return f"`{shlex.join(argv)}` exited {probe.returncode}: {last[0][:200]}"
    return None


def bench_process(argv: list[str], runs: int, settings: Settings) -> Selection:
    run = functools.partial(
        subprocess.run, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
    )
    return select(lambda _i: batch(run, runs), 1, settings)


# -- profile -------------------------------------------------------------------------------------


class Phases:
    """Wrap functions (in memory) to sum wall, thread-CPU and process-CPU seconds per label."""

    def __init__(self) -> None:
        self.totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
        self._lock = threading.Lock()
        self._undo: list[tuple[Any, str, Any]] = []
        self.missing: list[str] = []

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        original = owner.__dict__.get(attr) if isinstance(owner, type) else None
        original = original or getattr(owner, attr, None)
        if original is None:
            self.missing.append(f"{getattr(owner, '__name__', owner)}.{attr}")
            return

        @functools.wraps(original)
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            w0, t0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
            a0 = _allocated()
            try:
                return original(*args, **kwargs)
            finally:
                w = time.perf_counter() - w0
                t, p = time.thread_time() - t0, time.process_time() - p0
                a = _allocated() - a0
                with self._lock:
                    total = self.totals[label]
                    total[0] += w
                    total[1] += t
                    total[2] += p
                    total[3] += a

        self._undo.append((owner, attr, original))
        setattr(owner, attr, timed_call)

    def take(self) -> dict[str, tuple[float, ...]]:
        out = {k: tuple(v) for k, v in self.totals.items()}
        self.totals.clear()
        return out

    def restore(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo.clear()


# (module attribute, label): called one after another on the calling thread.
MAIN_PHASES = [
    ("refs.head", "read the dataset head"),
    ("_load", "load: to Arrow (column types are normalised per batch, after the take)"),
    ("_unify_inputs", "unify schemas"),
    ("_cut", "cut: sort each input batch's key codes (thread pool)"),
    ("_write_slices", "take and write the slices, in waves (thread pool)"),
    ("refs.commit", "commit: snapshot manifest + ref"),
]
# Called inside the write pool; summed over its threads. A label starting with "of which" is a
# part of the row above it, so it is not added to the rows the rest is computed from.
WORKER_PHASES = [
    ("cut._take", "take one input batch's rows of a wave, normalise them"),
    ("write._write_object", "write one object: encode Parquet, hash, rename into place"),
    ("write.digest_file", "of which blake3 of the written file"),
    ("write.encode_parquet", "of which encode to memory (stores that are not local)"),
    ("write.write_manifest", "slice manifests"),
]


def profile_freeze(table: Any, workdir: Path, needed: int, settings: Settings) -> list[str]:
    from chanbatch.snapshot import freeze as freeze_mod
    from chanbatch.snapshot import objects as objects_mod
    from chanbatch.snapshot import refs as refs_mod
    from chanbatch.snapshot import storage as storage_mod

    phases = Phases()
    for name, label in MAIN_PHASES:
        owner, attr = (refs_mod, name[5:]) if name.startswith("refs.") else (freeze_mod, name)
        phases.wrap(owner, attr, label)
    from chanbatch.snapshot.freeze import cut as cut_mod
    from chanbatch.snapshot.freeze import write as write_mod

    owners = {"cut": cut_mod, "write": write_mod, "objects": objects_mod, "storage": storage_mod}
    for name, label in WORKER_PHASES:
        first, *middle, attr = name.split(".")
        owner = owners[first]
        for part in middle:
            owner = getattr(owner, part)
        phases.wrap(owner, attr, label)
    workers = int(getattr(cut_mod, "_WORKERS", 0) or 0)

    def one(i: int) -> Trial:
        store_dir = workdir / f"store-profile-{i}"
        phases.take()
        sample, _ = freeze_once(table, store_dir)
        found = phases.take()
        shutil.rmtree(store_dir)
        print(f"  profiled freeze {i + 1}: {sample.seconds:.3f} s", flush=True)
        return Trial({"freeze": sample}, value=found)

    try:
        chosen = select(one, needed, settings)
    finally:
        phases.restore()

    def med(label: str, index: int) -> float:
        return median([t.value.get(label, (0.0, 0.0, 0.0, 0.0))[index] for t in chosen.used])

    wall = chosen.median("freeze")
    cpu = median(chosen.cpu("freeze"))
    lines = [
        f"Phases of one freeze, timed by wrapping the functions named below in memory (median of "
        f"{chosen.describe()}). Freeze wall {wall:.3f} s, CPU {cpu:.3f} s of this process on "
        f"{NCPU} cores; the write pool has {workers or '?'} threads.",
        "",
        "| phase, on the calling thread in order | wall s | CPU s (all threads) | share of wall "
        "| Arrow memory allocated |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, label in MAIN_PHASES:
        w, p, a = med(label, 0), med(label, 2), med(label, 3)
        lines.append(
            f"| {label} (`{name}`) | {w:.3f} | {p:.3f} | {w / wall:.0%} | {a / 1e9:.2f} GB |"
        )
    rest = median(
        [
            t.parts["freeze"].seconds
            - sum(t.value.get(label, (0.0,))[0] for _name, label in MAIN_PHASES)
            for t in chosen.used
        ]
    )
    lines += [
        f"| other (`Store()`, result) | {rest:.3f} | | {rest / wall:.0%} | |",
        "",
        "| inside the write pool, summed over its threads | wall s | thread CPU s |",
        "|---|---:|---:|",
    ]
    inside = 0.0
    for name, label in WORKER_PHASES:
        w, t = med(label, 0), med(label, 1)
        inside += 0.0 if label.startswith("of which") else w
        lines.append(f"| {label} (`{name}`) | {w:.3f} | {t:.3f} |")
    if workers:
        pool = workers * (med(MAIN_PHASES[3][1], 0) + med(MAIN_PHASES[4][1], 0))
        lines.append(
            f"| the rest: key codes and their sort per batch (in the cut), `combine_chunks` of "
            f"each slice, waiting (= {workers} × wall of the cut and the writes − the rows "
            f"above) | {pool - inside:.3f} | |"
        )
    if phases.missing:
        lines += ["", "Not found, so not timed: " + ", ".join(phases.missing)]
    return lines


def profile_steps(table: Any, store_dir: Path, needed: int, settings: Settings) -> list[str]:
    """Single-threaded cost of each step freeze takes, on the same data, in memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from chanbatch import Store
    from chanbatch.hashing import digest
    from chanbatch.snapshot.normalize import WRITE_OPTIONS, normalize_table

    store = Store(str(store_dir))
    keys = [entry.key for entry in store.slices(DATASET)]
    slices = [store.read_table(DATASET, start=k, stop=k).combine_chunks() for k in keys]
    normalized = normalize_table(table)
    n = len(slices)

    def encode(tables: list[Any], options: dict[str, Any]) -> list[Any]:
        out = []
        for t in tables:
            sink = pa.BufferOutputStream()
            pq.write_table(t, sink, **options)
            out.append(sink.getvalue())
        return out

    def hash_all(blobs: list[Any]) -> list[str]:
        return [digest(memoryview(b)) for b in blobs]

    def assemble(tables: list[Any]) -> list[Any]:  # the per-slice copy freeze makes
        return [
            pa.concat_tables(
                [t.slice(0, t.num_rows // 2), t.slice(t.num_rows // 2)]
            ).combine_chunks()
            for t in tables
        ]

    blobs = encode(slices, WRITE_OPTIONS)
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("`normalize_table` (whole table)", functools.partial(normalize_table, table)),
    ]
    take_waves = _take_waves(table)
    if take_waves is not None:
        steps.append(take_waves)
    steps += [
        (f"concat + `combine_chunks` of {n} slices (copy)", functools.partial(assemble, slices)),
        ("`write_table`, whole table, pyarrow defaults", functools.partial(encode, [table], {})),
        (
            "`write_table`, whole normalised table, store options",
            functools.partial(encode, [normalized], WRITE_OPTIONS),
        ),
        (
            f"`write_table` × {n} slices, store options",
            functools.partial(encode, slices, WRITE_OPTIONS),
        ),
        (f"`write_table` × {n} slices, pyarrow defaults", functools.partial(encode, slices, {})),
        (f"blake3 of the {n} objects (`digest`)", functools.partial(hash_all, blobs)),
    ]
    lines = [
        "CPU cost of each step alone, on one thread (blake3 may use more), in memory, on the "
        f"same data (median of {needed}). Each step is timed right after an untimed run of "
        "itself, so its memory is already mapped: these are costs without fresh-memory page "
        "faults.",
        "",
        "| step | wall s | CPU s | others' share of the machine |",
        "|---|---:|---:|---:|",
    ]
    for label, fn in steps:

        def one(_i: int, fn: Callable[[], Any] = fn) -> Trial:
            fn()
            return Trial({"step": measure(fn)[0]})

        chosen = select(one, needed, settings)
        noise = median([t.noise for t in chosen.used])
        lines.append(
            f"| {label} | {chosen.median('step'):.3f} | {median(chosen.cpu('step')):.3f} "
            f"| {noise:.0%} |"
        )
        print(f"  {label}: {chosen.median('step'):.3f} s", flush=True)
    return lines


def _take_waves(table: Any) -> tuple[str, Callable[[], Any]] | None:
    """Freeze's own cut and takes of every wave, on one thread; None if freeze has none."""
    from chanbatch.snapshot.freeze import cut as freeze_mod
    from chanbatch.snapshot.normalize import normalize_schema

    needed = ("_Input", "_split", "_waves", "_take", "_WORKERS")
    if not all(hasattr(freeze_mod, name) for name in needed):
        return None
    schema = normalize_schema(table.schema)

    def run() -> None:
        item = freeze_mod._Input(label="input", table=table, lazy=True)
        saved = freeze_mod._WORKERS
        freeze_mod._WORKERS = 1
        try:
            cuts = freeze_mod._split([item], KEY)
        finally:
            freeze_mod._WORKERS = saved
        pieces: dict[Any, list[Any]] = defaultdict(list)
        for cut in cuts:
            for key in cut.spans:
                pieces[key].append(cut)
        for wave in freeze_mod._waves(sorted(pieces), pieces):
            for cut in {c.seq: c for key in wave for c in pieces[key]}.values():
                freeze_mod._take(cut, wave, schema)

    return "cut + take every wave's rows out of the input batches, normalised", run


# -- output --------------------------------------------------------------------------------------


def table_markdown(rows: list[Row]) -> list[str]:
    out = ["| figure | measured | target | pass |", "|---|---|---|---|"]
    out += [f"| {r.figure} | {r.measured} | {r.target} | {r.verdict} |" for r in rows]
    return out


def print_table(rows: list[Row]) -> None:
    headers = ("figure", "measured", "target", "pass")
    cells = [
        (r.figure.replace("`", ""), r.measured.replace("`", ""), r.target, r.verdict.strip("*"))
        for r in rows
    ]
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
        profile_title="Where freeze spends its time",
    )


def write_doc(path: Path, body: str) -> None:
    """Replace this script's generated block in ``path``, keeping everything else."""
    write_section(path, body, section=SECTION, begin=BEGIN, end=END, header=DOC_HEADER)


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sf", type=float, default=1.0, help="TPC-H scale factor (default 1)")
    p.add_argument("--repeat", type=int, default=5, help="measurements per figure (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up pairs (default 1)")
    p.add_argument("--startup-repeat", type=int, default=10, help="runs per startup figure")
    p.add_argument("--out", type=Path, help="write the results into this markdown file")
    p.add_argument("--cache", type=Path, default=REPO / ".bench", help="data + scratch folder")
    p.add_argument(
        "--writers",
        default=DEFAULT_VARIANTS,
        help=f"other codecs to measure, comma-separated, '' for none ({', '.join(WRITER_VARIANTS)})",
    )
    p.add_argument(
        "--noise",
        type=float,
        default=0.10,
        help="a measurement is clean if other processes used at most this share of the "
        "machine's CPU meanwhile (default 0.10)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=10.0,
        help="seconds to wait for a quiet machine before each measurement (default 10, 0: off)",
    )
    p.add_argument(
        "--tries",
        type=int,
        default=2,
        help="take at most this many times the needed measurements to find clean ones",
    )
    p.add_argument("--profile", action="store_true", help="profile freeze even if it passes")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    p.add_argument("--check", action="store_true", help="exit 1 if any target is missed")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return bench(argv)[0]


def bench(argv: list[str] | None = None) -> tuple[int, Report]:
    """Run the benchmark; its exit code and its report (tests/benchmark/report.py reads it)."""
    args = parse_args(argv)
    command = shlex.join(["python", "tests/benchmark/bench_store.py", *(argv or sys.argv[1:])])
    args.cache.mkdir(parents=True, exist_ok=True)
    source = ensure_lineitem(args.sf, args.cache)
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=args.cache))
    facts = machine(workdir)
    report = Report()
    try:
        run(args, source, workdir, report)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    at = next(i for i, (k, _) in enumerate(facts) if k == "load average at start")
    facts.insert(at + 1, ("load average at end", load))
    print_table(report.rows)
    for note in report.notes:
        print("note:", note)
    if args.out is not None:
        write_doc(args.out, section_markdown(command, facts, report))
        print(f"\nwrote the section '{SECTION}' of {args.out}")
    missed = [r.figure for r in report.rows if r.passed is False]
    return (1 if (args.check and missed) else 0), report


def run(args: argparse.Namespace, source: Path, workdir: Path, report: Report) -> None:
    from chanbatch import Store

    settings = Settings(noise=args.noise, quiet_wait=args.quiet_wait, tries=max(1, args.tries))
    rep = max(1, args.repeat)
    table = load_table(source)
    rows_total = table.num_rows
    print(
        f"lineitem SF{args.sf:g}: {rows_total:,} rows, {table.num_columns} columns, "
        f"{table.nbytes / 1e9:.2f} GB in memory ({source})",
        flush=True,
    )
    report.details += [
        f"- Every figure is a median. A measurement counts as clean when other processes (and "
        f"the hypervisor's steal) used at most {args.noise:.0%} of the machine's CPU meanwhile, "
        f"from /proc/stat. Before each one the script waits up to {args.quiet_wait:g} s for a "
        f"quiet half second, and takes at most {settings.tries}× the measurements it needs; if "
        "too few are clean, it uses the least disturbed ones. Each figure below says which.",
    ]

    # 1. freeze against one raw write_table
    print("\n1. freeze vs write_table", flush=True)
    pairs, info = bench_freeze(table, workdir, rep, args.warmup, settings, "store")
    ratio = median(ratios(pairs))
    raw_med, frz_med = pairs.median("raw"), pairs.median("freeze")
    raw_cpu, frz_cpu = median(pairs.cpu("raw")), median(pairs.cpu("freeze"))
    report.add(
        Row(
            f"freeze, {info.slices} month slices ÷ one `write_table`",
            f"{ratio:.2f}× ({fmt_s(frz_med)} ÷ {fmt_s(raw_med)})",
            f"≤ {TARGET_FREEZE_RATIO}×",
            ratio <= TARGET_FREEZE_RATIO,
            x=ratio,
            goal=TARGET_FREEZE_RATIO,
        )
    )
    report.details += [
        f"- Input: TPC-H lineitem SF{args.sf:g} from `tpchgen-cli`, {rows_total:,} rows, "
        f"{table.num_columns} columns (the last is the key `{KEY}` = year × 100 + month of "
        f"`l_shipdate`, added before timing), {table.nbytes / 1e9:.2f} GB in Arrow memory, "
        "read once and given to both sides. Its strings are `string_view` as read; freeze "
        "normalises them to `string`, and that cast is part of the freeze time.",
        f"- Freeze: `chanbatch.Store(<new folder>).freeze('{DATASET}', table, slice_by='{KEY}')`"
        f" → {info.slices} slices, {info.store_bytes / 1e6:.1f} MB of objects "
        f"({info.compression}). Raw: `pyarrow.parquet.write_table(table, <new file in the same "
        f"folder>)` with default options (one thread, snappy) → {info.raw_bytes / 1e6:.1f} MB.",
        f"- Pairs: {pairs.describe()}; after {args.warmup} untimed warm-up pair(s). Each pair "
        "alternates which side goes first. The ratio is the median of the per-pair ratios. "
        "Before each side, Arrow's allocator returns its unused memory to the OS "
        "(`release_unused()`), as mimalloc does by itself milliseconds after a call ends, so "
        "each side pays for the fresh memory it writes, as a new process does.",
        f"- write_table s: {fmt_samples(pairs.seconds('raw'))}",
        f"- freeze s: {fmt_samples(pairs.seconds('freeze'))}",
        f"- ratios: {fmt_samples(ratios(pairs))}",
        f"- kernel CPU s per pair: write_table {fmt_samples(pairs.sys('raw'))}; freeze "
        f"{fmt_samples(pairs.sys('freeze'))}",
        f"- Arrow memory allocated per call (from the pool's running total): write_table "
        f"{info.raw_allocated / 1e9:.2f} GB, freeze {info.freeze_allocated / 1e9:.2f} GB, for "
        f"a {table.nbytes / 1e9:.2f} GB input.",
        f"- CPU s of this process, median (of which in the kernel): write_table {raw_cpu:.2f} "
        f"({median(pairs.sys('raw')):.2f}), freeze {frz_cpu:.2f} ({median(pairs.sys('freeze')):.2f})"
        f"; freeze uses {NCPU} cores, write_table one. Kernel time is mostly first writes to "
        "fresh memory (page faults).",
    ]

    print("\n1b. the same, warm: each side right after an untimed run of itself", flush=True)
    wrep = max(2, (rep + 1) // 2)
    warm, _ = bench_freeze(table, workdir, wrep, 0, settings, "warm", warm=True)
    report.add(
        Row(
            "the same, warm: each side timed right after an untimed run of itself",
            f"{median(ratios(warm)):.2f}× ({fmt_s(warm.median('freeze'))} ÷ "
            f"{fmt_s(warm.median('raw'))})",
        )
    )
    report.details += [
        f"- Warm pairs: {warm.describe()}; ratios {fmt_samples(ratios(warm))}; CPU s (kernel):"
        f" write_table {median(warm.cpu('raw')):.2f} ({median(warm.sys('raw')):.2f}), freeze "
        f"{median(warm.cpu('freeze')):.2f} ({median(warm.sys('freeze')):.2f}).",
    ]

    # the store every later figure reads: one more freeze, untimed
    kept = workdir / "store"
    Store(str(kept)).freeze(DATASET, table, slice_by=KEY)

    # 2. verify
    print("\n2. verify", flush=True)
    for ref, label in ((None, "whole store"), (DATASET, f"REF `{DATASET}`")):
        chosen, last = bench_verify(kept, rep, ref, settings)
        seconds = median(batch_seconds(chosen))
        gbs = last.bytes / seconds / 1e9
        report.add(
            Row(
                f"verify, {label}",
                f"{gbs:.2f} GB/s ({last.bytes / 1e6:.1f} MB, {last.checked} files, "
                f"{fmt_s(seconds)})",
                f"≥ {TARGET_VERIFY_GBS:g} GB/s",
                gbs >= TARGET_VERIFY_GBS,
                x=TARGET_VERIFY_GBS / gbs,
                goal=1.0,
            )
        )
        report.details.append(
            f"- verify {label}: {rep} runs in a row, {chosen.describe()}; s: "
            f"{fmt_samples(batch_seconds(chosen))}"
        )

    # 4a. read-back
    print("\n4. read-back", flush=True)
    chosen, arrow_bytes = bench_read(kept, rep, rows_total, settings)
    secs = chosen.median("read")
    report.add(
        Row(
            f"read-back, `Store.read_table('{DATASET}')`, all slices, verified",
            f"{info.store_bytes / secs / 1e9:.2f} GB/s of objects = {arrow_bytes / secs / 1e9:.2f}"
            f" GB/s of Arrow = {rows_total / secs / 1e6:.1f} M rows/s ({fmt_s(secs)})",
        )
    )
    report.details.append(
        f"- read-back: {chosen.describe()}; s: {fmt_samples(chosen.seconds('read'))}"
    )

    # 3. startup
    print("\n3. startup", flush=True)
    startup_rows(args, kept, settings, report)

    # 4b. other writer settings
    variants = [v.strip() for v in args.writers.split(",") if v.strip()]
    if variants:
        print("\n4. freeze with other codecs", flush=True)
    for name in variants:
        overrides = WRITER_VARIANTS.get(name)
        if overrides is None:
            report.notes.append(f"unknown writer variant {name!r} skipped")
            continue
        with writer_options(overrides):
            alt, alt_info = bench_freeze(table, workdir, wrep, 0, settings, name, warm=True)
        applied = alt_info.compression != info.compression
        measured = "n/a (the override did not reach the writer)"
        if applied:
            measured = (
                f"{median(ratios(alt)):.2f}× ({fmt_s(alt.median('freeze'))} ÷ "
                f"{fmt_s(alt.median('raw'))}), objects {alt_info.store_bytes / 1e6:.1f} MB"
            )
        report.add(Row(f"the same, warm, with the store's codec set to {name}", measured))
        report.details.append(
            f"- codec {name} ({alt_info.compression}), other store options unchanged, warm "
            "pairs as above: "
            f"{alt.describe()}; ratios {fmt_samples(ratios(alt))}"
        )

    # profile
    if args.profile or ratio > TARGET_FREEZE_RATIO:
        print("\nprofile: phases of freeze", flush=True)
        report.profile += profile_freeze(table, workdir, rep, settings)
        report.profile.append("")
        print("profile: the cost of each step alone", flush=True)
        report.profile += profile_steps(table, kept, max(1, min(3, rep)), settings)
        print("\n".join(report.profile))


def startup_rows(
    args: argparse.Namespace, store_dir: Path, settings: Settings, report: Report
) -> None:
    n = max(1, args.startup_repeat)
    floor = bench_process([sys.executable, "-c", "pass"], n, settings)
    floor_cpu = floor.used[0].parts["run0"].cpu
    report.add(
        Row(
            "startup floor, `python -c pass`",
            f"{fmt_s(median(batch_seconds(floor)))} (CPU {fmt_s(floor_cpu)})",
        )
    )
    report.details.append(
        f"- `python -c pass`: {n} runs in a row, {floor.describe()}; s: "
        f"{fmt_samples(batch_seconds(floor))}"
    )
    cli = _tool("chanbatch")
    commands = [
        ("`chanbatch --help`", ["--help"]),
        (
            "`chanbatch snapshot list --store <store>`",
            ["snapshot", "list", "--store", str(store_dir)],
        ),
    ]
    for label, tail in commands:
        argv = [cli, *tail] if cli else []
        error = probe_command(argv) if cli else "no `chanbatch` executable beside Python or on PATH"
        if error:
            report.add(Row(f"startup, {label}", "n/a", f"< {TARGET_STARTUP_S} s", None))
            report.notes.append(f"startup {label} not measured: {error}")
            continue
        chosen = bench_process(argv, n, settings)
        secs = median(batch_seconds(chosen))
        cpu = chosen.used[0].parts["run0"].cpu
        report.add(
            Row(
                f"startup, {label}",
                f"{fmt_s(secs)} (CPU {fmt_s(cpu)})",
                f"< {TARGET_STARTUP_S} s",
                secs < TARGET_STARTUP_S,
                x=secs / TARGET_STARTUP_S,
                goal=1.0,
            )
        )
        report.details.append(
            f"- {label}: {n} runs in a row, {chosen.describe()}; s: "
            f"{fmt_samples(batch_seconds(chosen))}; {_imports(argv)}"
        )


if __name__ == "__main__":
    sys.exit(main())
