"""What the benchmark scripts share: the TPC-H data, versions, and the performance doc."""

from __future__ import annotations

import importlib.metadata
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class Ratio:
    """One figure of the summary in tests/benchmark/report.py: chanbatch over its baseline.

    ``x`` is lower-is-better. A figure whose target is absolute (seconds, GB/s) is given as a
    ratio to its budget: its time over the time the target allows, so that 1 is the target.
    """

    figure: str
    x: float
    goal: float | None  # met when x <= goal (strictly below for "<" targets); None: no target
    detail: str  # the measured values behind x, as text
    target: str  # the target as the issue states it, or "—"
    source: str = ""  # the script that measured it
    strict: bool = False  # the target is "<", not "<="

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        return self.x < self.goal if self.strict else self.x <= self.goal


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def fmt_samples(samples: Sequence[float]) -> str:
    return ", ".join(f"{s:.3f}" for s in samples)


def version(dist: str) -> str:
    """The installed version of ``dist``, or "not installed"."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def git_revision() -> str:
    """The short commit, and whether chanbatch/ has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        rev = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "chanbatch")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + (" + uncommitted changes under chanbatch/" if dirty else "")


def find_tool(name: str) -> str | None:
    """A console script of this environment (beside the interpreter), or one on PATH."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    return shutil.which(name)


def ensure_lineitem(sf: float, cache: Path) -> Path:
    """The cached lineitem Parquet file at scale factor ``sf``, generated on first use."""
    out = cache / f"tpch-sf{sf:g}"
    target = out / "lineitem.parquet"
    if target.exists():
        return target
    tool = find_tool("tpchgen-cli")
    if tool is None:
        sys.exit("tpchgen-cli not found: pip install tpchgen-cli (it is in the [test] extra)")
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="gen-", dir=out))
    cmd = [tool, "parquet", "-s", f"{sf:g}", "--tables", "lineitem", "--output-dir", str(scratch)]
    print("generating:", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    os.replace(scratch / "lineitem.parquet", target)
    shutil.rmtree(scratch, ignore_errors=True)
    return target


def write_section(
    path: Path,
    body: str,
    *,
    section: str,
    begin: str,
    end: str,
    header: str,
    first: bool = False,
) -> None:
    """Replace a script's generated block in ``path``, or add its section: at the end, or
    with ``first`` before the first section (``## ``) of the file.

    Everything else in the file (other sections, notes under the block) is kept as it is.
    """
    block = f"{begin}\n{body}{end}\n"
    heading = f"## {section}"
    text = path.read_text() if path.exists() else header
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    elif heading in text:
        head, rest = text.split(heading, 1)
        text = f"{head}{heading}\n\n{block}{rest}"
    elif first and "\n## " in text:
        head, rest = text.split("\n## ", 1)
        text = f"{head.rstrip()}\n\n{heading}\n\n{block}\n## {rest}"
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n{block}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def section_markdown(
    command: str,
    facts: list[tuple[str, str]],
    table: list[str],
    report: Any,
    *,
    profile_title: str,
) -> str:
    """A benchmark's generated block: command, machine facts, results table, notes, method and
    samples, and (when the report has one) its profile under ``profile_title``."""
    lines = [
        f"Command (from the repository root, venv active): `{command}`",
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in facts],
        "",
        *table,
        "",
    ]
    if report.notes:
        lines += [f"- {n}" for n in report.notes] + [""]
    lines += ["### Method and samples", "", *report.details, ""]
    if report.profile:
        lines += [f"### {profile_title}", "", *report.profile, ""]
    return "\n".join(lines).rstrip() + "\n"
