"""Helpers for the CLI tests: run the installed ``chanbatch`` script, look at a store's files.

The tests run the real console script in a subprocess, so exit codes, stdout and stderr are
exactly what a user sees. Checks on a store read its files directly (blake3 of the bytes on
disk, pyarrow on the objects), following DESIGN.md section 2, never chanbatch's own helpers.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import pandas as pd

CHANBATCH = Path(sys.executable).with_name("chanbatch")
HEX64 = r"^[0-9a-f]{64}$"


@dataclass(frozen=True)
class Result:
    """One finished ``chanbatch`` invocation."""

    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """stdout as exactly one JSON document (json.loads of all of it)."""
        return json.loads(self.stdout)

    @property
    def err_lines(self) -> list[str]:
        return self.stderr.splitlines()

    def __str__(self) -> str:
        return (
            f"chanbatch {' '.join(self.args)} -> {self.code}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


def base_env(**extra: str) -> dict[str, str]:
    """The environment for a run: no ambient CHANBATCH_STORE, wide plain output."""
    env = {k: v for k, v in os.environ.items() if k != "CHANBATCH_STORE"}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
    env.update(extra)
    return env


def run(
    *args: str | os.PathLike[str],
    store: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 120,
) -> Result:
    """Run ``chanbatch ARGS [--store STORE]`` and return what it did (never raises on failure)."""
    argv = [os.fspath(a) for a in args]
    if store is not None:
        argv += ["--store", os.fspath(store)]
    proc = subprocess.run(
        [str(CHANBATCH), *argv],
        capture_output=True,
        text=True,
        env=env if env is not None else base_env(),
        cwd=cwd,
        timeout=timeout,
    )
    return Result(tuple(argv), proc.returncode, proc.stdout, proc.stderr)


def ok(*args: str | os.PathLike[str], **kwargs: Any) -> Result:
    """Like :func:`run`, but assert exit 0."""
    result = run(*args, **kwargs)
    assert result.code == 0, str(result)
    return result


def ok_json(*args: str | os.PathLike[str], **kwargs: Any) -> Any:
    """Run with ``--json``, assert exit 0 and nothing on stderr, and return the one document."""
    result = ok(*args, "--json", **kwargs)
    assert result.stderr == "", str(result)
    return result.json()


def assert_one_error_line(result: Result, code: int, *needles: str) -> str:
    """Assert the CLI's error contract: exit ``code``, one ``Error: `` line, no traceback."""
    assert result.code == code, str(result)
    assert "Traceback" not in result.stderr, str(result)
    assert len(result.err_lines) == 1, str(result)
    line = result.err_lines[0]
    assert line.startswith("Error: "), str(result)
    assert not line.startswith("Error: internal error"), str(result)
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


# -- sample data ----------------------------------------------------------------------------------

PERIODS = ("2024-01", "2024-02", "2024-03")


def sample_frame(rows: int = 48, *, seed: int = 0) -> pd.DataFrame:
    """Orders-like rows of three monthly periods, with ints, floats, strings and timestamps.

    ``carrier`` and ``delay`` have nulls; rows of one period are not contiguous, so slicing by
    ``period`` has to cut, and keep each slice's rows in input order.
    """
    rng = np.random.default_rng(seed)
    period = np.array(PERIODS)[rng.integers(0, len(PERIODS), rows)]
    carrier = np.array(["AA", "B6", "DL", "UA", "WN"], dtype=object)[rng.integers(0, 5, rows)]
    carrier[rng.random(rows) < 0.15] = None
    delay = rng.normal(10, 30, rows).round(1)
    delay[rng.random(rows) < 0.15] = np.nan
    day = rng.integers(1, 29, rows)
    return pd.DataFrame(
        {
            "period": pd.Series(period, dtype="str"),
            "day": day.astype("int64"),
            "carrier": pd.Series(carrier, dtype="str"),
            "delay": delay,
            "when": pd.to_datetime(
                [
                    f"{p}-{d:02d} {h:02d}:30:00"
                    for p, d, h in zip(period, day, day % 24, strict=True)
                ]
            )
            .as_unit("us")
            .tz_localize("UTC"),
            "n": rng.integers(-1000, 1000, rows).astype("int64"),
        }
    )


def csv_frame(rows: int = 12, *, seed: int = 0) -> pd.DataFrame:
    """A frame that survives a CSV round trip unchanged: no string nulls, no timestamps."""
    rng = np.random.default_rng(seed)
    delay = rng.normal(10, 30, rows).round(2)
    delay[rng.random(rows) < 0.2] = np.nan
    return pd.DataFrame(
        {
            "id": np.arange(rows, dtype="int64") + 1000 * seed,
            "carrier": pd.Series(
                np.array(["AA", "B6", "DL", "UA"])[rng.integers(0, 4, rows)], dtype="str"
            ),
            "delay": delay,
        }
    )


# -- the store's files --------------------------------------------------------------------------


def tree(root: str | os.PathLike[str]) -> dict[str, bytes | None]:
    """Every directory (None) and file (its bytes) under ``root``, by relative path."""
    root = Path(root)
    out: dict[str, bytes | None] = {}
    if not root.exists():
        return out
    for dirpath, dirs, files in os.walk(root):
        base = Path(dirpath)
        for name in dirs:
            out[str((base / name).relative_to(root)) + "/"] = None
        for name in files:
            out[str((base / name).relative_to(root))] = (base / name).read_bytes()
    return out


def files(root: str | os.PathLike[str]) -> dict[str, bytes]:
    """Only the files of :func:`tree`."""
    return {k: v for k, v in tree(root).items() if v is not None}


def b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def object_file(store: Path, oid: str) -> Path:
    return store / "objects" / oid[:2] / oid[2:]


def manifest_file(store: Path, mid: str) -> Path:
    return store / "manifests" / mid[:2] / f"{mid[2:]}.json"


def stored_ids(store: Path, kind: str) -> set[str]:
    """Ids of the files under ``objects/`` or ``manifests/``, from their paths."""
    out = set()
    for path in (store / kind).glob("*/*"):
        out.add(path.parent.name + path.name.removesuffix(".json"))
    return out


def read_manifest(store: Path, mid: str) -> dict[str, Any]:
    """A manifest document, after checking that blake3 of its bytes is its id."""
    data = manifest_file(store, mid).read_bytes()
    assert b3(data) == mid, f"manifest {mid} does not hash to its name"
    return json.loads(data)


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Flip the bits of one byte of ``path`` in place (the middle one by default)."""
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if offset is None else offset
    data[at] ^= 0xFF
    mode = path.stat().st_mode
    path.chmod(mode | 0o200)
    path.write_bytes(bytes(data))


def age(path: Path, seconds: float) -> None:
    """Set ``path``'s mtime to ``seconds`` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def in_pty(*args: str | os.PathLike[str]) -> str:
    """What ``chanbatch ARGS`` writes to a real terminal of 80x24 (no COLUMNS), escapes removed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {k: v for k, v in base_env().items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm"
    proc = subprocess.Popen(
        [str(CHANBATCH), *map(str, args)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=120) == 0
    os.close(master)
    text = b"".join(chunks).decode()
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r", "")
