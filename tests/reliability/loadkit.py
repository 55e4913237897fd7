"""Helpers for the load tests of issue 7 (faults 3, 4 and 5): worker loss, concurrent writers
and runs, gc under load.

- :class:`Processes` starts the real ``chanbatch`` script (or a Python snippet) with its output
  in files, and on exit kills every one still running and every process below it (found with
  psutil before the kill), by pid: a failing test leaves nothing behind.
- :class:`Gate` holds a run in the middle through ``udfs_load.gate``; :func:`wait_until` waits
  for what the held processes report, and fails early (with their stderr) when one dies.
- :class:`GcLoop` runs ``chanbatch gc --grace G --json`` again and again in the background.
- The checks read the store's files directly: the ref log as JSON, objects hashed with blake3
  (DESIGN.md section 2), never chanbatch's own helpers. Expected results come from pandas.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import pandas as pd
import psutil
from clikit import CHANBATCH, Result, base_env
from udfs_load import GATE_DIR, GATE_HOLD

HERE = Path(__file__).resolve().parent
KITS = [str(HERE), *(str(HERE.parent / kit) for kit in ("cli", "snapshot", "run"))]
ALLOW = ("--allow-module", "udfs_load")


def child_env(**extra: str) -> dict[str, str]:
    """The environment of every process started here: ``udfs_load`` and the test kits
    importable (workers of ``--scheduler processes`` inherit it), no ambient store, plain
    output."""
    env = base_env(**extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (*KITS, env.get("PYTHONPATH")) if p)
    return env


# -- processes ---------------------------------------------------------------------------------


@dataclass
class Launched:
    """A process started by :class:`Processes`, its stdout and stderr in files."""

    argv: tuple[str, ...]
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.err.read_text(errors="replace") if self.err.exists() else ""

    def finish(self, timeout: float = 180) -> Result:
        """Wait for the process and return what it did (killed, with what it said so far, if
        it is still running after ``timeout``)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(self)
        return Result(
            self.argv, self.proc.returncode, self.out.read_text(errors="replace"), self.stderr()
        )


def stop(launched: Launched) -> None:
    """SIGKILL ``launched`` and every process below it, if still running."""
    if launched.proc.poll() is not None:
        return
    try:
        family = psutil.Process(launched.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    launched.proc.kill()
    launched.proc.wait(timeout=30)
    for child in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(family, timeout=30)


class Processes:
    """Starts processes for a test; on exit, stops every one still running (see :func:`stop`)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[Launched] = []
        logs.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        for launched in reversed(self.started):
            stop(launched)

    def start(self, argv: Sequence[str], *, name: str, env: dict[str, str]) -> Launched:
        out, err = self.logs / f"{name}.out", self.logs / f"{name}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(list(argv), stdout=stdout, stderr=stderr, env=env)
        launched = Launched(tuple(argv[1:]), proc, out, err)
        self.started.append(launched)
        return launched

    def chanbatch(self, *args: str | os.PathLike[str], name: str, env: dict[str, str]) -> Launched:
        """Start the installed ``chanbatch`` script with ``args``."""
        return self.start([str(CHANBATCH), *map(os.fspath, args)], name=name, env=env)

    def python(self, code: str, *args: str, name: str, env: dict[str, str]) -> Launched:
        """Start ``python -c code args``."""
        return self.start([sys.executable, "-c", code, *args], name=name, env=env)


def wait_until(
    ready: Callable[[], Any],
    *,
    what: str,
    timeout: float = 90,
    watch: Iterable[Launched] = (),
) -> Any:
    """Poll ``ready()`` until it returns something true, and return that. Fails when ``timeout``
    passes, or at once when a watched process exits (with its stderr)."""
    deadline = time.monotonic() + timeout
    watched = list(watch)
    while True:
        value = ready()
        if value:
            return value
        for launched in watched:
            if launched.proc.poll() is not None:
                raise AssertionError(
                    f"waiting for {what}: {' '.join(launched.argv[:2])} exited "
                    f"{launched.proc.returncode}\n{launched.stderr()}"
                )
        if time.monotonic() > deadline:
            raise AssertionError(f"waiting for {what}: nothing after {timeout} s")
        time.sleep(0.01)


# -- the gate (udfs_load.gate) -----------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    """A process that reached the gate with a held slice."""

    day: int
    pid: int
    name: str


class Gate:
    """A folder that ``udfs_load.gate`` holds slices ``hold`` at, until :meth:`open`."""

    def __init__(self, folder: Path, hold: Iterable[int]) -> None:
        self.folder = folder
        self.hold = sorted(hold)
        folder.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        return {GATE_DIR: str(self.folder), GATE_HOLD: ",".join(map(str, self.hold))}

    def arrivals(self) -> list[Arrival]:
        """Every arrival so far, oldest first."""
        found = []
        for path in self.folder.glob("arrived-*"):
            _, day, pid, _n = path.name.split("-")
            found.append((path.stat().st_mtime_ns, Arrival(int(day), int(pid), path.name)))
        return [a for _, a in sorted(found, key=lambda item: (item[0], item[1].name))]

    def open(self) -> None:
        (self.folder / "go").touch()


# -- gc again and again ------------------------------------------------------------------------


@dataclass(frozen=True)
class GcPass:
    """One ``chanbatch gc`` that ran in the loop (monotonic start and end)."""

    started: float
    ended: float
    code: int
    report: dict[str, Any]
    stderr: str


@dataclass
class GcLoop:
    """``chanbatch gc --grace GRACE --json`` on ``store``, one after the other, in a thread."""

    store: Path
    grace: str
    env: dict[str, str]
    passes: list[GcPass] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _current: subprocess.Popen[str] | None = None

    def __enter__(self) -> GcLoop:
        self._thread = threading.Thread(target=self._loop, name="gc-loop", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[GcPass]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=90)
            assert not self._thread.is_alive(), "the gc loop did not stop"
        return self.passes

    def _loop(self) -> None:
        argv = [str(CHANBATCH), "gc", "--grace", self.grace, "--store", str(self.store), "--json"]
        while not self._stop.is_set():
            started = time.monotonic()
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env
            )
            try:
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            try:
                report = json.loads(out) if proc.returncode == 0 else {}
            except ValueError:
                report = {}
            self.passes.append(GcPass(started, time.monotonic(), proc.returncode, report, err))

    def passes_within(self, start: float, end: float) -> list[GcPass]:
        """The passes that started at or after ``start`` and ended by ``end`` (monotonic)."""
        return [p for p in list(self.passes) if p.started >= start and p.ended <= end]

    def wait_passes(self, count: int, *, after: float, watch: Iterable[Launched] = ()) -> None:
        """Wait until ``count`` passes have run from start to end after ``after``."""
        wait_until(
            lambda: len(self.passes_within(after, time.monotonic())) >= count,
            what=f"{count} gc passes",
            watch=watch,
        )

    def removed(self) -> dict[str, int]:
        """What all passes removed, by kind."""
        total: dict[str, int] = {}
        for p in self.passes:
            for kind, n in p.report.get("removed", {}).items():
                total[kind] = total.get(kind, 0) + n
        return total


# -- the store, read directly -------------------------------------------------------------------


def b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def object_file(store: Path, oid: str) -> Path:
    return store / "objects" / oid[:2] / oid[2:]


def ref_log(store: Path, dataset: str) -> list[dict[str, Any]]:
    """The ref-log entries of ``dataset`` as stored, oldest first; each file's name must be its
    version."""
    entries = []
    for path in sorted((store / "refs" / dataset).glob("*.json")):
        doc = json.loads(path.read_bytes())
        assert int(path.stem) == doc["version"], (path, doc["version"])
        entries.append(doc)
    return entries


def chain_problems(entries: Sequence[dict[str, Any]]) -> list[str]:
    """What breaks the rules of a ref log: versions 1..N without a gap, each entry's parent the
    snapshot of the one before (none for the first)."""
    problems = []
    versions = [e["version"] for e in entries]
    if versions != list(range(1, len(entries) + 1)):
        problems.append(f"versions are not 1..{len(entries)}: {versions}")
    parent = None
    for entry in entries:
        if entry.get("parent") != parent:
            problems.append(f"v{entry['version']}: parent {entry.get('parent')} != {parent}")
        parent = entry["snapshot"]
    return problems


def cache_problems(store: Path) -> tuple[int, list[str]]:
    """How many cache entries there are, and what is wrong with them: an entry that does not
    parse, names no object, or names an object that is missing or does not hash to its id."""
    problems = []
    entries = sorted((store / "cache").glob("*.json"))
    for path in entries:
        try:
            doc = json.loads(path.read_bytes())
            objects = [str(o) for o in doc["objects"]]
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"{path.name}: unreadable ({exc})")
            continue
        if not objects:
            problems.append(f"{path.name}: names no object")
        for oid in objects:
            target = object_file(store, oid)
            if not target.exists():
                problems.append(f"{path.name}: object {oid[:12]} is missing")
            elif b3(target.read_bytes()) != oid:
                problems.append(f"{path.name}: object {oid[:12]} does not hash to its id")
    return len(entries), problems


def verify(store: Path) -> dict[str, Any]:
    """``chanbatch snapshot verify --json`` of the whole store; fails unless it is ok."""
    proc = subprocess.run(
        [str(CHANBATCH), "snapshot", "verify", "--store", str(store), "--json"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )
    assert proc.returncode == 0, f"verify exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    doc = json.loads(proc.stdout)
    assert doc["ok"] and not doc["corrupt"] and not doc.get("missing"), doc
    return doc


def age(store: Path, seconds: float, tops: Iterable[str]) -> int:
    """Set the mtime of every file under ``tops`` ``seconds`` back; returns how many."""
    then = time.time() - seconds
    count = 0
    for top in tops:
        for dirpath, _dirs, names in os.walk(store / top):
            for name in names:
                os.utime(os.path.join(dirpath, name), (then, then))
                count += 1
    return count


def copy_store(source: Path, target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    return target


# -- data and the blueprint --------------------------------------------------------------------


def days_frame(days: int, rows: int, *, seed: int, first: int = 1) -> pd.DataFrame:
    """``days`` slices (column ``day``) of ``rows`` rows: a group ``g`` and an integer-valued
    float ``x``, so that sums are exact in any order."""
    rng = np.random.default_rng(seed)
    n = days * rows
    return pd.DataFrame(
        {
            "day": np.repeat(np.arange(first, first + days), rows).astype("int64"),
            "g": pd.Series(rng.choice(["a", "b", "c"], n), dtype="str"),
            "x": rng.integers(-50, 100, n).astype("float64"),
            "id": np.arange(n, dtype="int64") + first * 100_000,
        }
    )


def blueprint(name: str) -> str:
    """A blueprint on input ``t`` through ``udfs_load:gate``: one aggregate over all slices
    (per-slice partials and a combine) and one per-slice aggregate."""
    return f"""\
name: {name}
inputs:
  t: t
stages:
  gated:
    from: t
    map: {{function: "udfs_load:gate", version: "1"}}
  by_g:
    from: gated
    group_by: [g]
    aggregate:
      n: count()
      total: sum(w)
      avg: mean(x)
      sd: std(x)
      hi: max(x)
  daily:
    from: gated
    group_by: [day, g]
    per_slice: true
    aggregate:
      n: count()
      total: sum(w)
outputs:
  by_g: {name}_by_g
  daily: {name}_daily
"""


def expected(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """What :func:`blueprint`'s outputs must hold, computed with pandas alone, by output stage."""
    data = frame.assign(w=frame["x"] * 2 + 1)
    by_g = (
        data.groupby("g")
        .agg(
            n=("x", "size"),
            total=("w", "sum"),
            avg=("x", "mean"),
            sd=("x", "std"),
            hi=("x", "max"),
        )
        .reset_index()
    )
    daily = data.groupby(["day", "g"]).agg(n=("x", "size"), total=("w", "sum")).reset_index()
    return {"by_g": by_g, "daily": daily}


def assert_output(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """``got`` has ``want``'s rows (in any order) and columns; numbers to 1e-9 relative."""
    keys = [c for c in ("day", "g") if c in want.columns]
    got = got[list(want.columns)].sort_values(keys).reset_index(drop=True)
    want = want.sort_values(keys).reset_index(drop=True)
    got = got.assign(g=got["g"].astype(str))
    want = want.assign(g=want["g"].astype(str))
    pd.testing.assert_frame_equal(got, want, check_dtype=False, rtol=1e-9)


def outputs_of(result: Result) -> dict[str, str]:
    """Output stage -> snapshot id, from ``chanbatch run --json``."""
    assert result.code == 0, str(result)
    return {stage: info["snapshot"] for stage, info in result.json()["outputs"].items()}


# -- concurrent writers --------------------------------------------------------------------------

#: Keys that every writer freezes, with the same rows: the overlap between writers.
SHARED_KEYS = (0, 1, 2, 3, 4)


def writer_keys(writer: int, writers: int, per_writer: int) -> list[int]:
    """The keys writer ``writer`` freezes, in order: ``per_writer`` in all, the shared keys
    spread evenly among its own (which interleave with the other writers': 100 + i * writers +
    writer), the first shared key first, so every writer races for it at once."""
    own = [100 + i * writers + writer for i in range(per_writer - len(SHARED_KEYS))]
    step = per_writer // len(SHARED_KEYS)
    keys: list[int] = []
    for i, shared in enumerate(SHARED_KEYS):
        keys.append(shared)
        keys.extend(own[i * (step - 1) : (i + 1) * (step - 1)])
    keys.extend(own[len(SHARED_KEYS) * (step - 1) :])
    return keys


def slice_frame(key: int) -> pd.DataFrame:
    """The rows of slice ``key``, the same in every process: they say which key and row they are."""
    rows = 30
    return pd.DataFrame(
        {
            "key": np.full(rows, key, dtype="int64"),
            "row": np.arange(rows, dtype="int64"),
            "value": (key * 1000 + np.arange(rows)).astype("float64") / 8,
            "label": pd.Series([f"{key}-{i}" for i in range(rows)], dtype="str"),
        }
    )
