"""Helpers for the hostile-input tests of issue 7 (items 8 to 12).

- :func:`run_many` runs many ``chanbatch`` command lines fast and faithfully: one Python process
  imports the CLI once, then forks a child per command line, two at a time. Each child runs the
  console script's entry point (``chanbatch.cli:main``, which ``console`` wraps) with its stdout and stderr file descriptors
  sent to files, so the exit status and the output are exactly what the installed script gives;
  a child that runs longer than its time limit is killed by SIGALRM, which shows as a hang.
- :class:`Sandbox`: a store inside a directory, a canary directory beside it, and a snapshot of
  every file under the sandbox's parent, to prove that hostile input never touches a path outside
  the store, and that inside it only the paths of DESIGN.md section 2 appear.
- :func:`time_limit`: fail instead of hanging.
- :func:`record_counts`: how many cases each test ran, for ``docs/reliability.md``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# The reliability conftest puts tests/cli on sys.path, but not tests/blueprint (the expression
# strategies); and the driver process of run_many has no conftest at all.
for _kit in ("cli", "blueprint"):
    if str(REPO / "tests" / _kit) not in sys.path:
        sys.path.append(str(REPO / "tests" / _kit))

import pytest  # noqa: E402
from blueprintkit import expressions  # noqa: E402  (re-exported for the fuzz tests)
from clikit import Result, base_env, tree  # noqa: E402

# -- many command lines, one interpreter ----------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One ``chanbatch`` command line, run in ``cwd`` with ``env`` added to the base env."""

    args: tuple[str, ...]
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 60


def case(*args: str | os.PathLike[str], cwd: Any = None, **kwargs: Any) -> Case:
    return Case(tuple(os.fspath(a) for a in args), os.fspath(cwd) if cwd else None, **kwargs)


def run_many(
    cases: Sequence[Case], *, env: Mapping[str, str] | None = None, jobs: int = 2
) -> list[Result]:
    """Run every case (see the module docstring), ``jobs`` at a time, so no case may depend on
    another having run before it; results in the order of ``cases``."""
    if not cases:
        return []
    payload = json.dumps(
        {
            "jobs": jobs,
            "cases": [
                {"args": c.args, "cwd": c.cwd, "env": dict(c.env), "timeout": c.timeout}
                for c in cases
            ],
        }
    )
    proc = subprocess.run(
        [sys.executable, str(Path(__file__)), "--driver"],
        input=payload,
        capture_output=True,
        text=True,
        env={**base_env(), **(env or {})},
        timeout=sum(c.timeout for c in cases) + 60,
        check=False,
    )
    assert proc.returncode == 0, f"driver failed:\n{proc.stderr[-3000:]}"
    done = json.loads(proc.stdout)
    return [
        Result(c.args, d["code"], d["stdout"], d["stderr"])
        for c, d in zip(cases, done, strict=True)
    ]


def _child(entry_point: Any, item: dict[str, Any], out: int, err: int) -> NoReturn:
    """One command line in a forked child, like the console script; never returns."""
    code = 1
    try:
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.environ.update(item["env"])
        if item["cwd"]:
            os.chdir(item["cwd"])
        signal.alarm(max(1, int(item["timeout"])))
        entry_point(list(item["args"]))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # main() itself must never let one through
        import traceback

        traceback.print_exc()
        code = 99
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _driver() -> None:
    """The driver process of :func:`run_many` (``python hostilekit.py --driver``)."""
    import pandas  # noqa: F401
    import pyarrow.csv
    import pyarrow.parquet  # noqa: F401

    # What most commands import anyway, imported once here instead of in every child.
    import chanbatch.cli.render
    import chanbatch.engine.graph
    import chanbatch.run
    import chanbatch.snapshot  # noqa: F401
    from chanbatch.cli import main as entry_point  # what the console script calls

    request = json.loads(sys.stdin.read())
    cases, jobs = request["cases"], request["jobs"]
    results: list[dict[str, Any] | None] = [None] * len(cases)
    running: dict[int, int] = {}  # pid -> case index
    with tempfile.TemporaryDirectory() as scratch:

        def start(index: int, item: dict[str, Any]) -> None:
            sys.stdout.flush()
            sys.stderr.flush()
            with (
                open(Path(scratch, f"{index}.out"), "wb") as out,
                open(Path(scratch, f"{index}.err"), "wb") as err,
            ):
                pid = os.fork()
                if pid == 0:
                    _child(entry_point, item, out.fileno(), err.fileno())
            running[pid] = index

        pending = list(enumerate(cases))[::-1]
        while pending or running:
            while pending and len(running) < jobs:
                start(*pending.pop())
            pid, status = os.wait()
            index = running.pop(pid)
            results[index] = {
                "code": os.waitstatus_to_exitcode(status),
                "stdout": Path(scratch, f"{index}.out").read_bytes().decode("utf-8", "replace"),
                "stderr": Path(scratch, f"{index}.err").read_bytes().decode("utf-8", "replace"),
            }
    sys.stdout.write(json.dumps(results))


# -- the CLI's error contract -------------------------------------------------------------------


def assert_clean_error(result: Result, code: int, *needles: str) -> str:
    """Exit ``code``; stderr starts with the one ``Error: `` line (a blueprint with several
    problems lists them on the lines after it); no traceback, no internal error, nothing
    unprintable. Returns the first line."""
    assert result.code == code, str(result)
    assert "Traceback" not in result.stderr, str(result)
    lines = result.err_lines
    assert lines and lines[0].startswith("Error: "), str(result)
    assert not lines[0].startswith("Error: internal error"), str(result)
    assert sum(line.startswith("Error:") for line in lines) == 1, str(result)
    assert all(ch == "\n" or ch.isprintable() for ch in result.stderr), repr(result.stderr)
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in {result.stderr!r}"
    return lines[0]


# -- the filesystem around a store -----------------------------------------------------------------

HEX = "[0-9a-f]"
#: Every path a store may hold (DESIGN.md section 2, and chanbatch.snapshot.layout).
LAYOUT = re.compile(
    "^(?:"
    + "|".join(
        [
            rf"objects/{HEX}{{2}}/{HEX}{{62}}",
            rf"manifests/{HEX}{{2}}/{HEX}{{62}}\.json",
            r"refs/[A-Za-z0-9][A-Za-z0-9_.-]{0,127}/\d{12}\.json",
            rf"pins/{HEX}{{64}}\.json",
            rf"cache/{HEX}{{64}}\.json",
            rf"cache/packs/{HEX}{{64}}\.json",
            r"runs/\d{8}T\d{6}-[0-9a-f]{8}\.json",
            rf"memo/{HEX}{{32}}\.json",
            rf"memo/{HEX}{{32}}\.last\.json",
        ]
    )
    + ")$"
)
LAYOUT_DIRS = re.compile(
    rf"^(?:objects|manifests|refs|pins|cache|cache/packs|runs|memo|tmp|objects/{HEX}{{2}}"
    rf"|manifests/{HEX}{{2}}"
    r"|refs/[A-Za-z0-9][A-Za-z0-9_.-]{0,127})/$"
)


@dataclass(frozen=True)
class Sandbox:
    """``parent/sandbox/{store, canary, cwd}``: hostile input runs with ``cwd`` as its working
    directory and ``store`` as its store; nothing but ``store`` may change."""

    parent: Path

    @classmethod
    def create(cls, tmp_path: Path) -> Sandbox:
        box = cls(tmp_path)
        box.root.mkdir()
        box.cwd.mkdir()
        box.canary.mkdir()
        (box.canary / "keep.txt").write_text("canary\n")
        (box.canary / "refs").mkdir()
        (box.canary / "refs" / "000000000001.json").write_text("{}")
        (box.parent / "beside.txt").write_text("beside the sandbox\n")
        return box

    @property
    def root(self) -> Path:
        return self.parent / "sandbox"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def canary(self) -> Path:
        return self.root / "canary"

    @property
    def cwd(self) -> Path:
        return self.root / "cwd"

    def outside(self) -> dict[str, bytes | None]:
        """Every file and directory under the parent except the store's, with its bytes."""
        prefix = os.path.relpath(self.store, self.parent)
        return {
            path: data
            for path, data in tree(self.parent).items()
            if path != prefix + "/" and not path.startswith(prefix + os.sep)
        }

    def strays(self) -> list[str]:
        """Paths in the store that are not part of its layout (tmp/ must be empty too)."""
        bad = []
        for path, data in tree(self.store).items():
            pattern = LAYOUT_DIRS if data is None else LAYOUT
            if not pattern.match(path) or (path.startswith("refs/") and ".." in path):
                bad.append(path)
        return bad


def diff_trees(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """What changed between two :func:`tree` snapshots, one line per path."""
    lines = [f"+ {p}" for p in sorted(set(after) - set(before))]
    lines += [f"- {p}" for p in sorted(set(before) - set(after))]
    lines += [f"~ {p}" for p in sorted(set(before) & set(after)) if before[p] != after[p]]
    return lines


# -- hangs -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Raise TimeoutError in the main thread if the block runs longer than ``seconds``."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"{what} took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- numbers for the report -----------------------------------------------------------------------

COUNTS_KEY = "chanbatch/reliability/hostile-input"


def runslow(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--runslow"))


def record_counts(request: pytest.FixtureRequest, counts: Mapping[str, int]) -> None:
    """Print how many cases a test ran and keep them in pytest's cache under :data:`COUNTS_KEY`
    (``pytest --cache-show 'chanbatch/reliability/*'``), keyed by test name."""
    counts = dict(sorted(counts.items()))
    print(f"\n{request.node.nodeid}: {json.dumps(counts)}")
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        stored = cache.get(COUNTS_KEY, {})
        stored[request.node.nodeid] = {"runslow": runslow(request), **counts}
        cache.set(COUNTS_KEY, stored)


__all__ = ["expressions"]  # and everything above; listed so that linters see the re-export

if __name__ == "__main__" and sys.argv[1:] == ["--driver"]:
    _driver()
