"""Kill a real ``chanbatch`` process at points spread over its whole life, and say where each
kill landed.

The kill tests of issue 7 (faults 1 and 2) start the installed console script, send it SIGKILL
at some point, classify the kill by what the store holds afterwards (a *phase*: nothing new yet,
objects but no ref, ...), and then check the store. :func:`campaign` chooses the points:

- A point is an amount of CPU time the process has used (user + system, all threads, read from
  ``/proc``), not a wall-clock delay: on a loaded machine a process's wall time stretches and
  jitters far more than the work it has done. Where ``/proc`` is missing, wall time is used.
- The span is the CPU time of an undisturbed run, measured under the load of the kills (as many
  at once as the campaign runs), and corrected by every killed process that exits first. The
  planned points are stratified over it, so that they cover it evenly, plus a few right at the
  start.
- A process's CPU time still varies from run to run (by a quarter on a busy machine: caches
  and cores are shared), and some phases are short (a freeze writes its ref in the last tenth
  of its life), so the random kills can miss a phase. When a phase that the test requires is
  still missing after them, further kills are aimed at it: each waits until the store shows the
  phase (or a later one) and kills at once. A process that exits before its signal was not
  killed; it is checked like the others and replaced.

Phases are found by the test from the store's files, never from timing, so the coverage that the
tests assert (:meth:`Phases.assert_covered`) cannot pass by killing always too early or too
late.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clikit import CHANBATCH, Result, base_env

#: The phase of a process that finished on its own before its signal was sent.
EXITED = "exited"
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_POLL = 0.002


@dataclass(frozen=True)
class Landing:
    """One kill: the process's CPU seconds when it was sent, and the phase it landed in."""

    index: int
    at: float
    phase: str

    @property
    def killed(self) -> bool:
        return self.phase != EXITED


@dataclass(frozen=True)
class Shot:
    """When to kill: once the process has used ``at`` CPU seconds (at once for 0), or, with
    ``phase``, as soon as its store shows that phase or a later one."""

    at: float = 0.0
    phase: str | None = None


@dataclass(frozen=True)
class Phases:
    """The phases a kill can land in, from the earliest, and the groups of them that a campaign
    must hit (each group a run of neighbours in ``order``)."""

    order: tuple[str, ...]
    required: tuple[tuple[str, ...], ...]

    def rank(self, phase: str) -> int:
        return [*self.order, EXITED].index(phase)

    def missing(self, landings: Sequence[Landing]) -> list[tuple[str, ...]]:
        """The required groups that no landing has hit yet."""
        seen = {x.phase for x in landings}
        return [group for group in self.required if not seen.intersection(group)]

    def describe(self, landings: Sequence[Landing]) -> str:
        """One line: kills per phase, then the processes that exited first."""
        counts = Counter(x.phase for x in landings)
        parts = [f"{p}={counts[p]}" for p in [*self.order, EXITED] if counts[p]]
        killed = sum(x.killed for x in landings)
        return f"{killed} kills in {len(landings)} trials: " + ", ".join(parts)

    def assert_covered(self, landings: Sequence[Landing], kills: int) -> None:
        """At least ``kills`` kills, and one in every required group."""
        summary = self.describe(landings)
        assert sum(x.killed for x in landings) >= kills, summary
        gaps = self.missing(landings)
        assert not gaps, f"no kill landed in {gaps}: {summary}"


# -- one process ----------------------------------------------------------------------------------


def argv(*args: str | os.PathLike[str]) -> list[str]:
    """The command line of the installed ``chanbatch`` script with ``args``."""
    return [str(CHANBATCH), *(os.fspath(a) for a in args)]


class _Child:
    """A started ``chanbatch`` process whose CPU time stays readable after it exits: it is
    reaped only when its ``with`` block ends, and :attr:`result` is set then."""

    def __init__(self, command: Sequence[str], timeout: float) -> None:
        self.command = list(command)
        self.timeout = timeout
        self.result: Result | None = None

    def __enter__(self) -> _Child:
        self._stack = contextlib.ExitStack()
        # files, not pipes: nothing blocks on a full pipe while the test waits for the process
        self._out = self._stack.enter_context(tempfile.TemporaryFile())
        self._err = self._stack.enter_context(tempfile.TemporaryFile())
        self.proc = subprocess.Popen(
            self.command, stdout=self._out, stderr=self._err, env=base_env()
        )
        self.started = time.monotonic()
        return self

    def clock(self) -> float:
        """CPU seconds used so far (wall seconds where ``/proc`` is missing)."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as handle:
                stat = handle.read()
        except FileNotFoundError:
            return time.monotonic() - self.started
        fields = stat[stat.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime, all threads

    def exited(self, *, block: bool = False) -> bool:
        """Whether it has exited, without reaping it (a zombie keeps its CPU time)."""
        flags = os.WEXITED | os.WNOWAIT | (0 if block else os.WNOHANG)
        return os.waitid(os.P_PID, self.proc.pid, flags) is not None

    def __exit__(self, kind: object, *rest: object) -> None:
        with self._stack:
            if kind is not None:  # the test failed: do not wait for the process to finish
                self.proc.kill()
            try:
                self.proc.wait(timeout=self.timeout)
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait()
            texts = []
            for handle in (self._out, self._err):
                handle.seek(0)
                texts.append(handle.read().decode(errors="replace"))
            self.result = Result(tuple(self.command[1:]), self.proc.returncode, *texts)


def timed(command: Sequence[str], timeout: float = 300) -> tuple[float, Result]:
    """Run ``command`` to its end; the CPU seconds it used (see the module docstring) and what
    it did."""
    with _Child(command, timeout) as child:
        child.exited(block=True)
        used = child.clock()
    assert child.result is not None
    return used, child.result


def timed_together(commands: Sequence[Sequence[str]]) -> list[tuple[float, Result]]:
    """:func:`timed` of each command, all at once (the load a campaign's kills run under)."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(timed, commands))


def kill(
    command: Sequence[str],
    shot: Shot,
    *,
    phases: Phases,
    landed: Callable[[], str],
    timeout: float = 300,
) -> tuple[float, Result | None]:
    """Start ``command`` and SIGKILL it at ``shot``; ``landed()`` is the phase its store shows.

    Returns the CPU seconds it had used when the signal went, and None; or, when it finished
    first, the CPU seconds of its whole life and what it did.
    """
    used = 0.0
    with _Child(command, timeout) as child:
        while shot.at > 0 or shot.phase is not None:
            exited = child.exited()
            used = child.clock()
            if exited:
                break
            if shot.phase is None:
                if used >= shot.at:
                    break
            elif phases.rank(landed()) >= phases.rank(shot.phase):
                break
            if time.monotonic() - child.started > timeout:
                raise TimeoutError(f"{command[1:3]} did not reach {shot}")
            time.sleep(_POLL)
        # A zombie ignores the signal: its exit code then says that it finished.
        os.kill(child.proc.pid, signal.SIGKILL)
    assert child.result is not None
    if child.result.code == -signal.SIGKILL:
        return used, None
    return used, child.result


# -- what a kill left ------------------------------------------------------------------------------


def listing(root: Path) -> set[str]:
    """Paths (relative to ``root``, with ``/``) of every file under ``root``."""
    out = set()
    for dirpath, _dirs, names in os.walk(root):
        base = Path(dirpath).relative_to(root)
        out.update((base / name).as_posix() for name in names)
    return out


def contents(root: Path, *folders: str) -> dict[str, bytes]:
    """The files under ``folders`` of the store ``root``: relative path -> bytes."""
    prefixes = tuple(f"{folder}/" for folder in folders)
    return {rel: (root / rel).read_bytes() for rel in listing(root) if rel.startswith(prefixes)}


def fresh_copy(source: Path, target: Path) -> Path:
    """A copy of the store ``source`` at ``target`` (replacing what is there)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    return target


# -- choosing the points ----------------------------------------------------------------------------


def planned_points(count: int, rng: random.Random, at_start: int) -> list[float]:
    """``count`` points as fractions of the span, in random order: ``at_start`` right at the
    start (the first at once, the others in the first 1.5 %), the rest one in each of equal
    strata of ``[0, 1)``."""
    at_start = min(at_start, count)
    rest = count - at_start
    points = [0.0] + [rng.uniform(0.0, 0.015) for _ in range(at_start - 1)]
    points += [(i + rng.random()) / rest for i in range(rest)]
    rng.shuffle(points)
    return points


def campaign(
    trial: Callable[[int, Shot], Landing],
    *,
    kills: int,
    lives: Sequence[float],
    phases: Phases,
    seed: int,
    jobs: int = 2,
    extra: int | None = None,
) -> list[Landing]:
    """Run ``trial(index, shot)`` until ``kills`` processes were killed and every required
    group of ``phases`` was hit (see the module docstring), ``jobs`` trials at a time and at
    most ``kills + extra`` in all. A trial kills its process at ``shot`` (see :func:`kill`)
    and returns where it landed.

    ``lives`` are the CPU seconds of undisturbed runs; their median is the span the random
    kills are spread over, and every process that exits before its signal adds its life to
    them. The first failing trial's exception is raised. Returns the landings in index order.
    """
    rng = random.Random(seed)
    planned = planned_points(kills, rng, at_start=max(1, kills // 10))
    limit = kills + (extra if extra is not None else max(8, kills // 4))
    landings: list[Landing] = []
    running: set[Future[Landing]] = set()
    started = 0

    def span() -> float:
        return statistics.median([*lives, *(x.at for x in landings if not x.killed)])

    with ThreadPoolExecutor(jobs) as pool:
        try:
            while True:
                while len(running) < jobs and started < limit:
                    if planned:
                        shot = Shot(at=planned.pop() * span())
                    elif running:
                        break  # what they find decides what comes next
                    elif gaps := phases.missing(landings):
                        shot = Shot(phase=min(gaps[0], key=phases.rank))
                    elif sum(x.killed for x in landings) < kills:
                        shot = Shot(at=rng.uniform(0.0, span()))  # for one that exited first
                    else:
                        break
                    running.add(pool.submit(trial, started, shot))
                    started += 1
                if not running:
                    break
                done, running = wait(running, return_when=FIRST_COMPLETED)
                landings.extend(f.result() for f in done)
        except BaseException:
            for future in running:
                future.cancel()
            raise
    return sorted(landings, key=lambda x: x.index)


def assert_campaign(
    label: str,
    trial: Callable[[int, Shot], Landing],
    *,
    kills: int,
    lives: Sequence[float],
    phases: Phases,
    **options: Any,
) -> list[Landing]:
    """:func:`campaign` (``options`` are its ``seed``, ``jobs`` and ``extra``), then print where
    the kills landed (``pytest -s`` shows it) and assert that they cover the required phases."""
    landings = campaign(trial, kills=kills, lives=lives, phases=phases, **options)
    undisturbed = ", ".join(f"{x:.2f}" for x in lives)
    print(f"\n{label}: undisturbed {undisturbed} CPU s; {phases.describe(landings)}")
    print("  " + " ".join(f"{x.at:.2f}:{x.phase}" for x in sorted(landings, key=lambda x: x.at)))
    phases.assert_covered(landings, kills)
    return landings
