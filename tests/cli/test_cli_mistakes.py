"""Mistakes users make, through the real ``chanbatch`` script: each gives exactly one
``Error:`` line that names the thing at fault and says what to do, exit 2 (bad usage) or 1 (the
store or cluster refused), no traceback, and leaves every file of the store as it was.

- ``--store`` naming a regular file, a file's subpath, an unknown protocol, a filesystem that
  is not installed, or a host that refuses: for every command that takes ``--store``.
- A read-only store: freeze, gc and cache evict (and run, pin) say so; reading still works.
- A data file (a large CSV, Parquet, gzip) given where a blueprint goes.
- A mistyped ``--scheduler``, and a scheduler address nothing answers: no ``running`` record.
- Two files with the same stem frozen as one slice each.

The list of these messages is in docs/reliability.md ("User mistakes and their messages").
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from clikit import (
    Result,
    age,
    assert_one_error_line,
    base_env,
    csv_frame,
    files,
    ok,
    ok_json,
    run,
    tree,
)

BLUEPRINT = """\
name: delays
inputs:
  ds: ds
stages:
  late:
    from: ds
    filter: "delay > 0"
  by_carrier:
    from: late
    group_by: [carrier]
    aggregate:
      n: count()
      worst: max(delay)
outputs:
  by_carrier: delays_by_carrier
"""

MONTHS = ("2024-01", "2024-02", "2024-03")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``src/`` (a CSV per month, one more to add), ``bp.yaml`` and ``store``:
    dataset ``ds`` frozen from the months and the blueprint run once (cache entries, a run
    record)."""
    root = tmp_path_factory.mktemp("mistakes")
    src = root / "src"
    src.mkdir()
    for i, month in enumerate(MONTHS):
        csv_frame(seed=i + 1).to_csv(src / f"{month}.csv", index=False)
    csv_frame(seed=9).to_csv(src / "2024-04.csv", index=False)
    (root / "bp.yaml").write_text(BLUEPRINT)
    store = root / "store"
    ok_json("snapshot", "freeze", "ds", *(src / f"{m}.csv" for m in MONTHS), store=store)
    ok_json("run", root / "bp.yaml", store=store)
    return root


def copy_of(project: Path, where: Path) -> Path:
    work = where / "work"
    shutil.copytree(project, work)
    return work


def one_error(result: Result, code: int, *needles: str) -> str:
    """:func:`assert_one_error_line`, and the line is short: it never quotes a file's contents."""
    line = assert_one_error_line(result, code, *needles)
    assert len(line) < 400, line
    return line


# -- 5. --store that cannot be a store --------------------------------------------------------

#: Every command that takes --store, with arguments that would work on a real store.
STORE_COMMANDS: dict[str, list[str]] = {
    "freeze": ["snapshot", "freeze", "ds", "src/2024-04.csv"],
    "list": ["snapshot", "list"],
    "list-dataset": ["snapshot", "list", "ds"],
    "inspect": ["snapshot", "inspect", "ds"],
    "verify": ["snapshot", "verify"],
    "diff": ["snapshot", "diff", "ds", "ds"],
    "pin": ["snapshot", "pin", "ds"],
    "unpin": ["snapshot", "unpin", "ds"],
    "gc": ["gc"],
    "gc-dry-run": ["gc", "--dry-run"],
    "demo": ["demo", "--months", "1"],
    "plan": ["plan", "bp.yaml"],
    "run": ["run", "bp.yaml"],
    "explain": ["explain", "late", "bp.yaml"],
    "cache-ls": ["cache", "ls"],
    "cache-du": ["cache", "du"],
    "cache-evict": ["cache", "evict", "--all"],
    "report": ["report", "-o", "report.html"],
    "graph": ["graph", "bp.yaml", "-o", "graph.svg"],
}

#: A store URL -> (exit code, what the line must say).
BAD_STORES: dict[str, tuple[int, tuple[str, ...]]] = {
    "some.csv": (2, ("store some.csv is a file, not a directory", "--store")),
    "ftp://127.0.0.1:1/store": (
        1,
        ("cannot reach store ftp://127.0.0.1:1/store", "Connection refused", "check the URL"),
    ),
}


def _missing_filesystem() -> tuple[str, str] | None:
    """A protocol fsspec knows whose package is not installed here, and that package."""
    for protocol, package in (("sftp", "paramiko"), ("gs", "gcsfs"), ("abfs", "adlfs")):
        if importlib.util.find_spec(package) is None:
            return protocol, package
    return None


@dataclass(frozen=True)
class Attempt:
    result: Result
    unchanged: bool


def attempt(project: Path, where: Path, args: list[str], store: str, **env: str) -> Attempt:
    """Run ``args --store STORE`` in a copy of the project; whether every file stayed as it was."""
    work = copy_of(project, where)
    (work / "some.csv").write_text("a,b\n1,2\n")
    before = tree(work)
    result = run(*args, store=store, cwd=work, env=base_env(**env))
    return Attempt(result, tree(work) == before)


@pytest.fixture(scope="module")
def bad_store_attempts(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], Attempt]:
    """Every command with every bad store, several at a time."""
    cases = [(command, store) for store in BAD_STORES for command in STORE_COMMANDS]

    def go(case: tuple[str, str]) -> Attempt:
        command, store = case
        return attempt(
            project, tmp_path_factory.mktemp("bad-store"), STORE_COMMANDS[command], store
        )

    with ThreadPoolExecutor(4) as pool:
        return dict(zip(cases, pool.map(go, cases), strict=True))


@pytest.mark.parametrize("store", list(BAD_STORES))
@pytest.mark.parametrize("command", list(STORE_COMMANDS))
def test_a_store_that_cannot_be_one(
    command: str, store: str, bad_store_attempts: dict[tuple[str, str], Attempt]
) -> None:
    code, needles = BAD_STORES[store]
    outcome = bad_store_attempts[command, store]
    one_error(outcome.result, code, *needles)
    assert outcome.unchanged, "a file beside the store (or the file named as one) changed"


@pytest.mark.parametrize("command", ["freeze", "list", "run"])
def test_a_store_inside_a_file(project: Path, tmp_path: Path, command: str) -> None:
    outcome = attempt(project, tmp_path, STORE_COMMANDS[command], "some.csv/inner")
    one_error(outcome.result, 2, "store some.csv/inner", "some.csv is a file, not a directory")
    assert outcome.unchanged


def test_a_store_file_named_by_the_environment(project: Path, tmp_path: Path) -> None:
    work = copy_of(project, tmp_path)
    (work / "some.csv").write_text("a,b\n1,2\n")
    before = tree(work)
    result = run("snapshot", "list", cwd=work, env=base_env(CHANBATCH_STORE="some.csv"))
    one_error(result, 2, "store some.csv is a file, not a directory")
    assert tree(work) == before


@pytest.mark.parametrize("command", ["freeze", "list", "run"])
def test_an_unknown_protocol(project: Path, tmp_path: Path, command: str) -> None:
    outcome = attempt(project, tmp_path, STORE_COMMANDS[command], "nosuchfs://bucket/store")
    line = one_error(outcome.result, 2, "nosuchfs://bucket/store", "unknown protocol 'nosuchfs'")
    assert "give a local path" in line
    assert outcome.unchanged


@pytest.mark.parametrize("command", ["freeze", "list", "run"])
def test_a_filesystem_that_is_not_installed(project: Path, tmp_path: Path, command: str) -> None:
    missing = _missing_filesystem()
    if missing is None:
        pytest.skip("every candidate fsspec filesystem package is installed here")
    protocol, package = missing
    url = f"{protocol}://somewhere/store"
    outcome = attempt(project, tmp_path, STORE_COMMANDS[command], url)
    line = one_error(outcome.result, 1, f"cannot open store {url}")
    assert package in line and "install" in line.lower(), line
    assert outcome.unchanged


# -- 6. a store the user may not write ---------------------------------------------------------


def _run_quietly(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[str]:
    """``path`` read-only for chanbatch while inside; yields the system's word for the refusal.

    As root, permissions do not stop writes, so ``path`` is bind-mounted read-only over itself
    (skipped with the reason where mounting is not allowed); otherwise every file and folder
    loses its write bits, and gets them back on the way out.
    """
    if os.geteuid() == 0:
        if shutil.which("mount") is None:
            pytest.skip("running as root, where chmod does not stop writes, and no mount(8)")
        bind = _run_quietly("mount", "--bind", str(path), str(path))
        if bind.returncode != 0:
            pytest.skip(f"running as root and cannot bind-mount: {bind.stderr.strip()}")
        ro = _run_quietly("mount", "-o", "remount,bind,ro", str(path))
        if ro.returncode != 0:
            _run_quietly("umount", str(path))
            pytest.skip(f"running as root and cannot remount read-only: {ro.stderr.strip()}")
        try:
            yield "Read-only file system"
        finally:
            if _run_quietly("umount", str(path)).returncode != 0:
                _run_quietly("umount", "-l", str(path))
        return
    modes = {}
    for dirpath, dirs, names in os.walk(path):
        for name in [*dirs, *names, ""]:
            target = Path(dirpath, name)
            modes[target] = target.stat().st_mode
            target.chmod(modes[target] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        yield "Permission denied"
    finally:
        for target, mode in modes.items():
            target.chmod(stat.S_IMODE(mode))


#: Commands that must write, on a read-only store -> what the line says they could not do.
READ_ONLY_REFUSED: dict[str, tuple[list[str], str]] = {
    "freeze-new-slice": (["snapshot", "freeze", "ds", "{src}/2024-04.csv"], "cannot write"),
    "freeze-new-dataset": (["snapshot", "freeze", "other", "{src}/2024-04.csv"], "cannot write"),
    "freeze-same-data": (["snapshot", "freeze", "ds", "{src}/2024-01.csv"], "cannot write"),
    "gc": (["gc"], "cannot remove"),
    "cache-evict": (["cache", "evict", "--all"], "cannot remove"),
    "pin": (["snapshot", "pin", "ds"], "cannot write"),
    "run": (["run", "{bp}"], "cannot write"),
}


@pytest.fixture
def locked(project: Path, tmp_path: Path) -> Iterator[tuple[Path, str, dict[str, bytes | None]]]:
    """A copy of the project whose store has debris for gc (a day-old temp file), made
    read-only; yields the work folder, the refusal's wording and the store's tree before."""
    work = copy_of(project, tmp_path)
    store = work / "store"
    debris = store / "tmp" / "left-by-a-crash.tmp"
    debris.parent.mkdir(exist_ok=True)
    debris.write_bytes(b"half a parquet file")
    age(debris, 86400)
    before = tree(store)
    with read_only(store) as word:
        yield work, word, before
    assert tree(store) == before


@pytest.mark.parametrize("case", list(READ_ONLY_REFUSED))
def test_a_read_only_store_refuses_writes_clearly(
    case: str, locked: tuple[Path, str, dict[str, bytes | None]]
) -> None:
    work, word, before = locked
    store = work / "store"
    args, what = READ_ONLY_REFUSED[case]
    values = {"src": str(work / "src"), "bp": str(work / "bp.yaml")}
    result = run(*(a.format(**values) for a in args), store=store, cwd=work)
    line = one_error(result, 1, what, f"in store {store}", word)
    assert "read-only filesystem" in line or "check its permissions" in line, line
    assert tree(store) == before


def test_a_read_only_store_can_still_be_read(
    locked: tuple[Path, str, dict[str, bytes | None]],
) -> None:
    work, _word, before = locked
    store = work / "store"
    assert [d["dataset"] for d in ok_json("snapshot", "list", store=store)["datasets"]] == [
        "delays_by_carrier",
        "ds",
    ]
    assert ok_json("snapshot", "verify", store=store)["ok"] is True
    assert ok_json("gc", "--dry-run", store=store)["removed"]["tmp"] == 1
    assert ok_json("plan", work / "bp.yaml", store=store)["summary"]["compute"] == 0
    assert tree(store) == before


# -- 7. a data file given as a blueprint -------------------------------------------------------


@pytest.fixture(scope="module")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 MB CSV (flights.csv), the same as Parquet, gzip, and a CSV named .txt."""
    root = tmp_path_factory.mktemp("data-files")
    rng = np.random.default_rng(7)
    rows = 40_000
    df = pd.DataFrame(
        {
            "carrier": rng.choice(["AA", "B6", "DL", "UA"], rows),
            "dep_delay": rng.normal(10, 30, rows).round(1),
            "origin": rng.choice(["JFK", "LGA", "EWR"], rows),
            "distance": rng.integers(100, 3000, rows),
        }
    )
    df.to_csv(root / "flights.csv", index=False)
    df.to_parquet(root / "flights.parquet", index=False)
    df.to_csv(root / "flights.csv.gz", index=False)
    shutil.copy(root / "flights.csv", root / "flights.txt")
    return root


DATA_FILES: dict[str, tuple[str, ...]] = {
    "flights.csv": ("flights.csv is a CSV data file, not a blueprint",),
    "flights.parquet": ("flights.parquet is a Parquet data file, not a blueprint",),
    "flights.csv.gz": ("flights.csv.gz is a compressed data file, not a blueprint",),
    # no telling suffix: read as YAML (one long scalar), and only its first line is quoted
    "flights.txt": (
        "flights.txt:1: not a blueprint",
        "got the text 'carrier,dep_delay,origin,distance' ...",
    ),
}


@pytest.mark.parametrize("command", ["run", "plan", "validate"])
@pytest.mark.parametrize("name", list(DATA_FILES))
def test_a_data_file_is_not_a_blueprint(
    name: str, command: str, data_files: Path, project: Path, tmp_path: Path
) -> None:
    work = copy_of(project, tmp_path)
    store = work / "store"
    before = tree(store)
    args = [command, str(data_files / name)]
    if command != "validate":
        args += ["--store", str(store)]
    line = one_error(run(*args, cwd=work), 2, *DATA_FILES[name])
    first_rows = (data_files / "flights.csv").read_text().splitlines()[1:3]
    assert not any(row in line for row in first_rows), line
    if name != "flights.txt":
        assert "chanbatch snapshot freeze DATASET" in line, line
    assert tree(store) == before


# -- 8. a scheduler that cannot work -----------------------------------------------------------


def fresh(project: Path, where: Path) -> Path:
    """A copy of the project whose store has ``ds`` but no run: a run has tasks to compute."""
    work = copy_of(project, where)
    store = work / "store"
    shutil.rmtree(store)
    src = work / "src"
    ok_json("snapshot", "freeze", "ds", *(src / f"{m}.csv" for m in MONTHS), store=store)
    return work


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("thread", "threads"), ("proceses", "processes"), ("kubernets", "kubernetes"), ("", None)],
)
def test_a_mistyped_scheduler_writes_no_record(
    project: Path, tmp_path: Path, typo: str, meant: str | None
) -> None:
    work = fresh(project, tmp_path)
    store = work / "store"
    before = tree(store)
    result = run("run", "bp.yaml", "--scheduler", typo, store=store, cwd=work)
    needles = [f"unknown scheduler {typo!r}", "tcp://host:8786"]
    if meant:
        needles.append(f"did you mean {meant!r}?")
    one_error(result, 2, *needles)
    assert tree(store) == before  # no runs/ folder, no record with status "running"
    if typo == "thread":  # and the run as meant works
        ok("run", "bp.yaml", "--scheduler", meant, store=store, cwd=work)


def test_the_library_checks_the_scheduler_before_writing(project: Path, tmp_path: Path) -> None:
    from chanbatch.blueprint.parse import load_blueprint
    from chanbatch.errors import UsageError
    from chanbatch.run import run_blueprint
    from chanbatch.snapshot import SnapshotStore

    work = fresh(project, tmp_path)
    store = work / "store"
    before = tree(store)
    with pytest.raises(UsageError, match="unknown scheduler 'thread'") as refused:
        run_blueprint(load_blueprint(work / "bp.yaml"), SnapshotStore(store), scheduler="thread")
    assert refused.value.hint is not None and "did you mean 'threads'?" in refused.value.hint
    assert tree(store) == before


def test_a_scheduler_nothing_answers_leaves_no_running_record(
    project: Path, tmp_path: Path
) -> None:
    work = fresh(project, tmp_path)
    store = work / "store"
    before = files(store)
    env = base_env(DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="2s")
    result = run(
        "run", "bp.yaml", "--scheduler", "tcp://127.0.0.1:1", store=store, cwd=work, env=env
    )
    one_error(result, 1, "cannot reach scheduler tcp://127.0.0.1:1", "dask scheduler")
    # the intent record written before the run read anything is withdrawn again
    assert files(store) == before
    assert not list(store.glob("runs/*.json"))


# -- 11. two files, one stem ----------------------------------------------------------------


def test_two_files_with_one_stem_are_refused(project: Path, tmp_path: Path) -> None:
    work = copy_of(project, tmp_path)
    store = work / "store"
    for folder, seed in (("a", 21), ("b", 22)):
        (work / folder).mkdir()
        csv_frame(seed=seed).to_csv(work / folder / "data.csv", index=False)
    before = tree(store)
    result = run("snapshot", "freeze", "ds", "a/data.csv", "b/data.csv", store=store, cwd=work)
    line = one_error(result, 2, "a/data.csv and b/data.csv", "slice 'data'", "--slice")
    assert "rename" in line
    assert tree(store) == before
    # a new store is not even created
    result = run("snapshot", "freeze", "x", "a/data.csv", "b/data.csv", store="new", cwd=work)
    one_error(result, 2, "a/data.csv and b/data.csv")
    assert not (work / "new").exists()
    # one slice on purpose is still fine
    both = ["a/data.csv", "b/data.csv"]
    doc = ok_json("snapshot", "freeze", "both", *both, "--slice", "data", store=store, cwd=work)
    assert [s["rows"] for s in doc["slices"]] == [24]


def test_one_file_given_twice_is_refused(project: Path, tmp_path: Path) -> None:
    work = copy_of(project, tmp_path)
    store = work / "store"
    before = tree(store)
    result = run(
        "snapshot", "freeze", "ds", "src/2024-04.csv", "./src/2024-04.csv", store=store, cwd=work
    )
    one_error(result, 2, "src/2024-04.csv is given twice")
    assert tree(store) == before
