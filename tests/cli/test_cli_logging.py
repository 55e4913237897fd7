"""Logging, -q/--quiet, --no-progress, and progress bars only on a terminal.

Bars are looked for on a real pseudo-terminal: the child's stderr (and, unless a test pipes it,
its stdout) is the slave end of ``os.openpty()``, and the test reads what a terminal would show
from the master end.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from clikit import CHANBATCH, base_env, csv_frame, ok, run

from chanbatch.cli.main import hoist_global_flags

REPO = Path(__file__).resolve().parents[2]
PIN_WARNING = "--pin-cpus pins worker processes; with threads it does nothing"
KEYS = ("k1", "k2", "k3", "k4", "k5")
BLUEPRINT = """\
name: per_carrier
inputs:
  orders: orders
stages:
  by_carrier:
    from: orders
    group_by: [carrier]
    aggregate:
      n: count()
      total: sum(delay)
outputs:
  by_carrier: per_carrier
"""


@pytest.fixture
def sources(tmp_path: Path) -> list[Path]:
    """Five CSV files: a freeze of them has more than three slices, so it draws a bar."""
    paths = []
    for i, key in enumerate(KEYS):
        path = tmp_path / f"{key}.csv"
        csv_frame(seed=i).to_csv(path, index=False)
        paths.append(path)
    return paths


@pytest.fixture
def project(tmp_path: Path, sources: list[Path]) -> tuple[Path, Path]:
    """A store holding ``orders`` (five slices) and a blueprint that aggregates it."""
    store = tmp_path / "store"
    ok("snapshot", "freeze", "orders", *sources, "--json", store=store)
    blueprint = tmp_path / "per_carrier.yaml"
    blueprint.write_text(BLUEPRINT, encoding="utf-8")
    return store, blueprint


def _drain(fd: int, chunks: list[bytes]) -> threading.Thread:
    """Read ``fd`` while the child writes, so a full pty buffer never blocks it."""

    def drain() -> None:
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: every slave end is closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain)
    reader.start()
    return reader


def on_pty(*args: str | os.PathLike[str], stdout_tty: bool = True) -> tuple[int, str, str]:
    """Run chanbatch with stderr on a pseudo-terminal, and stdout on another one (or on a pipe,
    as in ``chanbatch ... | head``); returns (exit code, stdout, stderr's terminal)."""
    master, slave = os.openpty()
    out_master, out_slave = os.openpty() if stdout_tty else (None, None)
    env = base_env(TERM="xterm-256color")
    env.pop("NO_COLOR")
    proc = subprocess.Popen(
        [str(CHANBATCH), *map(os.fspath, args)],
        stdin=subprocess.DEVNULL,
        stdout=out_slave if out_slave is not None else subprocess.PIPE,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    err_chunks: list[bytes] = []
    out_chunks: list[bytes] = []
    readers = [_drain(master, err_chunks)]
    if out_master is not None:
        os.close(out_slave)
        readers.append(_drain(out_master, out_chunks))
        proc.wait(timeout=120)
    else:
        piped, _ = proc.communicate(timeout=120)
        out_chunks.append(piped)
    for reader in readers:
        reader.join(timeout=10)
    os.close(master)
    if out_master is not None:
        os.close(out_master)
    stdout = b"".join(out_chunks).decode(errors="replace").replace("\r\n", "\n")
    return proc.returncode, stdout, b"".join(err_chunks).decode(errors="replace")


def plain(tty: str) -> str:
    """Terminal output without its escape sequences (colours, cursor moves)."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", tty)


# -- progress bars -------------------------------------------------------------------------------


def test_freeze_draws_a_bar_on_a_terminal_only(tmp_path: Path, sources: list[Path]) -> None:
    code, stdout, tty = on_pty("snapshot", "freeze", "orders", *sources, "--store", tmp_path / "a")
    assert code == 0, tty
    assert "writing" in tty and "\x1b[" in tty, repr(tty)
    assert re.search(r"writing .* 5/5 slices", plain(tty)), repr(tty)  # five slices, all done
    assert "writing" not in stdout
    # The same freeze with stderr on a pipe: no bar, and nothing else on stderr either.
    piped = ok("snapshot", "freeze", "orders", *sources, store=tmp_path / "b")
    assert piped.stderr == ""
    assert "5 slices given, 5 new" in piped.stdout


@pytest.mark.parametrize("flag", ["--no-progress", "-q", "--quiet", "--json"])
def test_no_freeze_bar_with(tmp_path: Path, sources: list[Path], flag: str) -> None:
    code, stdout, tty = on_pty("snapshot", "freeze", "orders", *sources, flag, "--store", tmp_path)
    assert code == 0, tty
    assert tty == "", repr(tty)
    if flag == "--json":
        assert [s["key"] for s in json.loads(stdout)["slices"]] == list(KEYS)
    else:
        assert "5 slices given, 5 new" in stdout  # the requested result is still printed


def test_run_draws_stage_bars_on_a_terminal(project: tuple[Path, Path]) -> None:
    store, blueprint = project
    code, stdout, tty = on_pty("run", blueprint, "--store", store)
    assert code == 0, tty
    assert "by_carrier" in tty and "\x1b[" in tty, repr(tty)
    done = re.findall(r"by_carrier .*? (\d+)/(\d+) ", plain(tty))
    assert done and done[-1][0] == done[-1][1] != "0", repr(tty)  # the bar reached its total
    assert "computed" in stdout


def test_no_bars_when_stdout_is_piped(project: tuple[Path, Path]) -> None:
    """``chanbatch run x | head``: stderr is still the terminal, but nobody is watching a bar
    there; the issue asks for none when stdout is not a terminal."""
    store, blueprint = project
    code, stdout, tty = on_pty("run", blueprint, "--store", store, stdout_tty=False)
    assert code == 0, tty
    assert tty == "", repr(tty)
    assert "computed" in stdout


@pytest.mark.parametrize("flag", ["--no-progress", "-q", "--json"])
def test_run_draws_nothing_with(project: tuple[Path, Path], flag: str) -> None:
    store, blueprint = project
    code, stdout, tty = on_pty("run", blueprint, flag, "--store", store)
    assert code == 0, tty
    assert tty == "", repr(tty)
    if flag == "--json":
        assert json.loads(stdout)["outputs"]["by_carrier"]["dataset"] == "per_carrier"


# -- flags after the command ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("run x.yaml -q", "-q run x.yaml"),
        ("run x.yaml --quiet --no-progress", "--quiet --no-progress run x.yaml"),
        ("snapshot -q list", "-q snapshot list"),
        ("snapshot list ds --verbose", "--verbose snapshot list ds"),
        ("-v run x.yaml", "-v run x.yaml"),
        # an option's value stays, however it looks
        ("snapshot freeze ds a.csv --slice -q", "snapshot freeze ds a.csv --slice -q"),
        ("snapshot freeze ds a.csv --slice=-q -v", "-v snapshot freeze ds a.csv --slice=-q"),
        ("run x.yaml --set -q --no-progress", "--no-progress run x.yaml --set -q"),
        ("schema -o -q", "schema -o -q"),
        # after --, everything is an argument
        ("run x.yaml -- -q", "run x.yaml -- -q"),
        # an unknown command: left for Click to refuse
        ("nosuch -q", "nosuch -q"),
    ],
)
def test_hoist_global_flags(given: str, expected: str) -> None:
    assert hoist_global_flags(given.split()) == expected.split()


def test_quiet_after_the_command_is_honoured(tmp_path: Path, sources: list[Path]) -> None:
    result = ok("snapshot", "freeze", "orders", *sources, "--json", "-q", store=tmp_path)
    assert [s["key"] for s in result.json()["slices"]] == list(KEYS)
    assert result.stderr == ""


def test_an_option_value_that_looks_like_a_flag_stays_a_value(
    tmp_path: Path, sources: list[Path]
) -> None:
    doc = ok("snapshot", "freeze", "orders", sources[0], "--slice", "-q", "--json", store=tmp_path)
    assert [s["key"] for s in doc.json()["slices"]] == ["-q"]


def test_verbose_and_quiet_together_is_a_usage_error(tmp_path: Path) -> None:
    for args in (("-v", "-q", "snapshot", "list"), ("snapshot", "list", "-q", "--verbose")):
        result = run(*args, store=tmp_path)
        assert result.code == 2, str(result)
        assert result.err_lines[-1] == (
            "Error: -v/--verbose and -q/--quiet cannot be used together"
        ), str(result)


# -- logging -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        (None, f"warning: {PIN_WARNING}"),
        ("-v", f"warning chanbatch.run.runner: {PIN_WARNING}"),
        ("-q", None),
    ],
)
def test_cli_log_levels(project: tuple[Path, Path], flag: str | None, expected: str | None) -> None:
    store, blueprint = project
    extra = [flag] if flag else []
    result = ok("run", blueprint, "--pin-cpus", "--json", *extra, store=store)
    assert result.json()["outputs"]["by_carrier"]["rows"] > 0
    lines = result.err_lines
    if expected is None:
        assert lines == [], str(result)
    else:
        assert expected in lines, str(result)
        if flag is None:
            assert lines == [expected], str(result)


LIBRARY_SCRIPT = """
import json, logging, sys
import pandas as pd
import chanbatch as cb

configure = sys.argv[2] == "configured"
records = []
if configure:
    class Keep(logging.Handler):
        def emit(self, record):
            records.append([record.name, record.levelname, record.getMessage()])
    logger = logging.getLogger("chanbatch")
    logger.setLevel(logging.WARNING)
    logger.addHandler(Keep())

store = cb.Store(sys.argv[1])
df = pd.DataFrame({"k": [1, 1, 2], "x": [1.0, 2.0, 3.0]})
store.freeze("t", df, slice_by="k")
bp = cb.Blueprint.from_yaml('''
name: sums
inputs: {t: t}
stages:
  s: {from: t, group_by: [k], aggregate: {total: sum(x)}}
outputs: {s: sums}
''')
result = bp.run(store, scheduler="threads", pin_cpus=True)
print(json.dumps({"records": records, "rows": len(result.outputs["s"].compute())}))
"""


@pytest.mark.parametrize("mode", ["configured", "unconfigured"])
def test_library_logging_is_the_users_to_configure(tmp_path: Path, mode: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", LIBRARY_SCRIPT, str(tmp_path / "store"), mode],
        capture_output=True,
        text=True,
        env=base_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["rows"] == 2
    # Without configuration the library prints nothing at all: no last-resort warning line.
    assert proc.stderr == ""
    if mode == "configured":
        assert doc["records"] == [["chanbatch.run.runner", "WARNING", PIN_WARNING]]
    else:
        assert doc["records"] == []


def _calls(path: Path) -> list[str]:
    """Calls in ``path`` that print or configure logging: what only the CLI may do."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        if name in ("print", "pprint", "logging.basicConfig", "basicConfig", "click.echo") or (
            name.endswith((".write", ".flush")) and name.startswith(("sys.stdout", "sys.stderr"))
        ):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
    return found


def test_the_library_never_prints_or_configures_logging() -> None:
    library = [p for p in sorted((REPO / "chanbatch").rglob("*.py")) if "cli" not in p.parts[-2:-1]]
    assert len(library) > 30
    assert [c for p in library for c in _calls(p)] == []


def test_warnings_are_one_line_and_quiet_drops_them() -> None:
    """A k8s warning is one line on a narrow pipe, and ``-q`` keeps the manifest, not it."""
    env = base_env(COLUMNS="40")
    loud = run("k8s", "render", "--workers", "2", env=env)
    assert loud.code == 0, loud
    assert len(loud.err_lines) == 1 and loud.err_lines[0].startswith("Warning: "), loud
    assert "full-pcpus-only" in loud.err_lines[0]
    hushed = run("-q", "k8s", "render", "--workers", "2", env=env)
    assert hushed.code == 0 and hushed.stderr == "", hushed
    assert hushed.stdout == loud.stdout and "DaskCluster" in hushed.stdout


def test_a_local_cluster_says_nothing_by_default(project: tuple[Path, Path]) -> None:
    """distributed sets its loggers to INFO: none of its chatter reaches a plain run's stderr."""
    store, blueprint = project
    result = run("run", blueprint, "--scheduler", "processes", "--workers", "2", store=store)
    assert result.code == 0, result
    assert result.stderr == "", result
    assert "computed" in result.stdout
