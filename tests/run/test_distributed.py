"""Distributed execution (DESIGN.md sections 1 and 6, issue 5), on real Dask clusters.

- The same blueprint gives the same output snapshot ids under every scheduler: ``sync``,
  ``threads`` and ``processes`` with 1, 2 and 3 workers, and an external cluster (a
  ``dask scheduler`` and two ``dask worker`` processes started here) through the API and through
  ``chanbatch run --scheduler tcp://...``. Its aggregates are float sums over values of wildly
  different magnitudes, so adding the slices up in another order would change their bits, and
  with them the snapshot ids. Every run computes cold, on its own copy of one frozen store.
- The run record names the worker and the seconds of every computed task.
- A worker process killed in the middle of a run does not fail it, and the output is the same.
- A task that raises on a cluster stops the run naming the stage and the slice, and what
  finished before is in the cache.

Every process started here is killed at the end, even when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pytest
import udfs_dist
from opskit import Cli, assert_error_line, cli

import chanbatch as cb
from chanbatch.engine.execute import StageFailed

HERE = Path(__file__).resolve().parent
DASK = Path(sys.executable).with_name("dask")
CHANBATCH = Path(sys.executable).with_name("chanbatch")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
TCP = re.compile(r"^tcp://127\.0\.0\.1:\d+$")
ALLOW = ("udfs_dist",)

SLICES = 24
SPREAD = """\
name: spread
inputs:
  t: t
stages:
  napped:
    from: t
    map: {function: "udfs_dist:nap", version: "1"}
  by_g:
    from: napped
    group_by: [g]
    aggregate:
      n: count()
      total: sum(x)
      avg: mean(x)
      var_x: var(x)
      sd_x: std(x)
  ranked:
    from: by_g
    sort: [-total, g]
  daily:
    from: napped
    group_by: [day, g]
    per_slice: true
    aggregate:
      n: count()
      total: sum(x)
      avg: mean(x)
      sd_x: std(x)
outputs:
  ranked: spread_ranked
  daily: spread_daily
"""
STAGES = ("napped", "by_g", "ranked", "daily")


def spread_frame(slices: int = SLICES, rows: int = 30, seed: int = 11) -> pd.DataFrame:
    """``slices`` days of rows whose ``x`` mixes magnitudes from 1e-3 to 1e16, both signs:
    their float sums depend on the order they are added in."""
    rng = np.random.default_rng(seed)
    n = slices * rows
    magnitudes = np.array([1e16, -1e16, 1.0, 3.25, 1e-3, 7e8, -2.5e12])
    return pd.DataFrame(
        {
            "day": np.repeat(np.arange(1, slices + 1), rows).astype("int64"),
            "g": pd.Series(rng.choice(["a", "b", "c"], n), dtype="str"),
            "x": rng.choice(magnitudes, n) * rng.uniform(0.5, 1.5, n),
            "id": np.arange(n, dtype="int64"),
        }
    )


# -- processes: external Dask clusters ----------------------------------------------------------


def child_env() -> dict[str, str]:
    """The environment of every process started here: the UDF modules importable, no ambient
    store, plain output."""
    env = {k: v for k, v in os.environ.items() if k != "CHANBATCH_STORE"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
    return env


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop a cluster's processes, ``[scheduler, *workers]``: terminate the workers, then the
    scheduler (workers whose scheduler went first wait for it), then kill whatever is left of
    them and of the processes below them. Only processes started here, by pid."""
    family: list[psutil.Process] = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            family.extend(psutil.Process(proc.pid).children(recursive=True))
    for group in (procs[1:], procs[:1]):
        for proc in group:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in group:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    _gone, alive = psutil.wait_procs(family, timeout=5)
    for leftover in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            leftover.kill()
    psutil.wait_procs(alive, timeout=5)


class Cluster:
    """``dask scheduler`` plus ``workers`` x ``dask worker --nthreads 1`` (each a nanny with a
    worker process below it), all on 127.0.0.1, logging to files in ``root``."""

    def __init__(self, root: Path, workers: int = 2) -> None:
        self.root = root
        self.n_workers = workers
        self.procs: list[subprocess.Popen[bytes]] = []
        self.address = ""

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [str(DASK), *args], stdout=log, stderr=subprocess.STDOUT, env=child_env()
        )
        log.close()
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.root.glob("*.log"))
        )

    def __enter__(self) -> Cluster:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._start()
        except BaseException:
            stop(self.procs)
            raise
        return self

    def _start(self) -> None:
        info = self.root / "scheduler.json"
        scheduler = self._spawn(
            "scheduler",
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(info),
        )
        deadline = time.monotonic() + 60
        while not info.exists():
            assert scheduler.poll() is None, f"dask scheduler exited\n{self.logs()}"
            assert time.monotonic() < deadline, f"no scheduler file\n{self.logs()}"
            time.sleep(0.05)
        while not self.address:
            with contextlib.suppress(ValueError):  # the file may be half written
                self.address = json.loads(info.read_text())["address"]
            time.sleep(0.02)
        assert TCP.match(self.address), self.address
        for i in range(self.n_workers):
            self._spawn(
                f"worker{i}",
                "worker",
                self.address,
                "--host",
                "127.0.0.1",
                "--nthreads",
                "1",
                "--no-dashboard",
                "--name",
                f"w{i}",
                "--local-directory",
                str(self.root / "scratch"),
            )
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(self.n_workers, timeout=60)

    def __exit__(self, *exc: object) -> None:
        stop(self.procs)

    def worker_popens(self) -> list[subprocess.Popen[bytes]]:
        return self.procs[1:]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One external cluster for the tests that do not disturb it."""
    with Cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


# -- stores and runs ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frozen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with ``t`` frozen in SLICES slices and nothing run yet: copied for every run."""
    root = tmp_path_factory.mktemp("frozen") / "store"
    cb.Store(root).freeze("t", spread_frame(), slice_by="day")
    return root


def fresh_copy(frozen: Path, where: Path) -> Path:
    """A copy of ``frozen`` at ``where``: a run on it computes everything."""
    shutil.copytree(frozen, where)
    assert not list(where.glob("cache/*.json")) and not list(where.glob("runs/*.json"))
    return where


def record_of(store: Path, run_id: str) -> dict[str, Any]:
    return json.loads((store / "runs" / f"{run_id}.json").read_text())


class Runs:
    """Cold runs of SPREAD, one per (scheduler, workers), each on its own copy of the frozen
    store, made once per module and shared by the tests that look at them."""

    def __init__(self, frozen: Path, root: Path) -> None:
        self.frozen, self.root = frozen, root
        self.done: dict[tuple[str, int | None], tuple[Path, Any]] = {}

    def get(self, scheduler: str, workers: int | None) -> tuple[Path, Any]:
        config = (scheduler, workers)
        if config not in self.done:
            store = fresh_copy(self.frozen, self.root / f"{scheduler}-{workers}")
            result = cb.Blueprint.from_yaml(SPREAD).run(
                str(store), scheduler=scheduler, workers=workers, allow_modules=ALLOW
            )
            self.done[config] = (store, result)
        return self.done[config]


@pytest.fixture(scope="module")
def runs(frozen: Path, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(frozen, tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def reference(runs: Runs) -> Any:
    """The single-threaded run everything else is compared with."""
    return runs.get("sync", None)[1]


# -- 1. the same snapshots everywhere -----------------------------------------------------------


def test_the_data_is_order_sensitive() -> None:
    """Sanity check of the test data: adding the per-slice sums of a group in another order
    gives another float, so a run that combined its partials in completion order would not
    reproduce its snapshot ids."""
    frame = spread_frame()
    sums = frame.groupby(["g", "day"]).x.sum()
    changed = []
    for g in ("a", "b", "c"):
        parts = sums.loc[g].tolist()
        forward, backward = sum(parts), sum(reversed(parts))
        halves = sum(parts[::2]) + sum(parts[1::2])
        changed.append(forward != backward or forward != halves)
    assert any(changed), sums


def test_the_reference_run_matches_pandas(reference: Any) -> None:
    frame = spread_frame()
    assert {s["dataset"] for s in reference.snapshots.values()} == {
        "spread_ranked",
        "spread_daily",
    }
    for info in reference.snapshots.values():
        assert HEX64.match(info["snapshot"])

    got = reference.outputs["ranked"].compute().reset_index(drop=True)
    groups = frame.groupby("g").x
    want = pd.DataFrame(
        {
            "n": groups.size(),
            "total": groups.sum(),
            "avg": groups.mean(),
            "var_x": groups.var(),
            "sd_x": groups.std(),
        }
    )
    want = want.reset_index().sort_values(["total", "g"], ascending=[False, True])
    assert list(got.columns) == ["g", "n", "total", "avg", "var_x", "sd_x"]
    assert got.g.tolist() == want.g.tolist()  # the sort, by total descending
    assert got.n.tolist() == want.n.tolist()
    # sums of values near 1e16 that cancel: pandas adds them in another order, so they agree
    # up to the rounding of the magnitudes involved
    scale = frame.x.abs().groupby(frame.g).sum().reindex(want.g).to_numpy()
    assert np.all(np.abs(got.total.to_numpy() - want.total.to_numpy()) <= 1e-12 * scale)
    counts = want.n.to_numpy()
    assert np.all(np.abs(got.avg.to_numpy() - want.avg.to_numpy()) <= 1e-12 * scale / counts)
    assert np.allclose(got.var_x, want.var_x, rtol=1e-9, atol=0)
    assert np.allclose(got.sd_x, want.sd_x, rtol=1e-9, atol=0)

    daily = reference.outputs["daily"].compute().reset_index(drop=True)
    assert reference.snapshots["daily"]["rows"] == len(daily)
    per_day = frame.groupby(["day", "g"]).x
    want_daily = pd.DataFrame(
        {"n": per_day.size(), "total": per_day.sum(), "sd_x": per_day.std()}
    ).reset_index()
    merged = daily.merge(want_daily, on=["day", "g"], how="outer", suffixes=("", "_want"))
    assert len(merged) == len(want_daily) == len(daily)
    assert (merged.n == merged.n_want).all()
    day_scale = frame.x.abs().groupby([frame.day, frame.g]).sum()
    day_scale = day_scale.reindex(pd.MultiIndex.from_frame(merged[["day", "g"]])).to_numpy()
    assert np.all(np.abs(merged.total - merged.total_want).to_numpy() <= 1e-12 * day_scale)
    assert np.allclose(merged.sd_x, merged.sd_x_want, rtol=1e-9, atol=0, equal_nan=True)


# a LocalCluster costs seconds to start: one of them by default, the other sizes with --runslow
LOCAL = [
    pytest.param("threads", 1, id="threads-1"),
    pytest.param("threads", 2, id="threads-2"),
    pytest.param("threads", 3, id="threads-3"),
    pytest.param("processes", 1, id="processes-1", marks=pytest.mark.slow),
    pytest.param("processes", 2, id="processes-2"),
    pytest.param("processes", 3, id="processes-3", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("scheduler", "workers"), LOCAL)
def test_every_local_scheduler_gives_the_same_snapshots(
    runs: Runs, reference: Any, scheduler: str, workers: int
) -> None:
    _store, got = runs.get(scheduler, workers)
    assert got.snapshots == reference.snapshots
    assert got.stats["computed"] == reference.stats["computed"] > 0
    assert got.stats["reused"] == 0


def test_an_external_cluster_gives_the_same_snapshots_through_the_api(
    cluster: Cluster, frozen: Path, reference: Any, tmp_path: Path
) -> None:
    from distributed import Client

    bp = cb.Blueprint.from_yaml(SPREAD)
    by_address = fresh_copy(frozen, tmp_path / "address")
    got = bp.run(str(by_address), scheduler=cluster.address, allow_modules=ALLOW)
    assert got.snapshots == reference.snapshots
    assert got.stats["computed"] == reference.stats["computed"]

    # the record names the cluster's own workers, and both of them had work
    with Client(cluster.address) as client:
        addresses = set(client.scheduler_info(n_workers=-1)["workers"])
        by_client = fresh_copy(frozen, tmp_path / "client")
        again = bp.run(str(by_client), scheduler=client, allow_modules=ALLOW)
    assert again.snapshots == reference.snapshots
    for store, result in ((by_address, got), (by_client, again)):
        tasks = record_of(store, result.run_id)["tasks"]
        workers = {t["worker"] for t in tasks if t.get("outcome") == "computed"}
        assert workers == addresses, (workers, addresses)


def test_an_external_cluster_through_the_cli_gives_the_same_snapshots_and_stage_stats(
    cluster: Cluster, frozen: Path, reference: Any, tmp_path: Path
) -> None:
    store = fresh_copy(frozen, tmp_path / "store")
    path = tmp_path / "spread.yaml"
    path.write_text(SPREAD)
    args = ("run", path, "--store", store, "--scheduler", cluster.address, "--allow-module")
    cold = cli(*args, "udfs_dist", "--json", pythonpath=str(HERE))
    assert cold.code == 0, f"{cold}\n{cluster.logs()}"
    doc = cold.json()
    assert doc["outputs"] == reference.snapshots  # dataset, snapshot id and rows of each

    stats = doc["stats"]
    assert stats["computed"] == reference.stats["computed"] and stats["reused"] == 0
    assert set(stats["stages"]) == set(STAGES)
    for stage, counts in stats["stages"].items():
        assert {"computed", "reused", "seconds"} <= set(counts), stage
        assert counts["computed"] > 0 and counts["reused"] == 0, (stage, counts)
        assert isinstance(counts["seconds"], int | float) and counts["seconds"] >= 0
    assert stats["stages"]["napped"]["computed"] == SLICES  # one map per slice
    # the map sleeps 20 ms on each slice, and its seconds say so
    assert stats["stages"]["napped"]["seconds"] >= SLICES * 0.02 * 0.9
    assert sum(c["computed"] for c in stats["stages"].values()) == stats["computed"]

    warm = cli(*args, "udfs_dist", "--json", pythonpath=str(HERE))
    assert warm.code == 0, str(warm)
    redo = warm.json()
    assert redo["outputs"] == doc["outputs"]
    assert redo["stats"]["computed"] == 0
    assert redo["stats"]["reused"] == stats["computed"]
    for stage, counts in redo["stats"]["stages"].items():
        assert counts["reused"] == stats["stages"][stage]["computed"], stage
        assert counts["computed"] == 0, stage


# -- 2. the run record ---------------------------------------------------------------------------


def test_the_run_record_names_the_worker_and_seconds_of_every_computed_task(runs: Runs) -> None:
    store, result = runs.get("processes", 2)
    record = record_of(store, result.run_id)
    assert record["run"] == result.run_id
    assert record["scheduler"] == "processes"
    computed = [t for t in record["tasks"] if t.get("outcome") == "computed"]
    assert len(computed) == result.stats["computed"] == len(record["tasks"])
    for task in computed:
        assert TCP.match(str(task.get("worker"))), task
        assert isinstance(task.get("seconds"), float | int) and task["seconds"] >= 0, task
    maps = [t for t in computed if t["stage"] == "napped"]
    assert len(maps) == SLICES and all(t["seconds"] >= 0.02 for t in maps)
    assert len({t["worker"] for t in computed}) == 2


# -- 3. a worker killed in the middle of a run ---------------------------------------------------

SLOW = """\
name: slow
inputs:
  t: t
stages:
  widened:
    from: t
    map: {function: "udfs_dist:slow", version: "1"}
  by_g:
    from: widened
    group_by: [g]
    aggregate: {n: count(), total: sum(w)}
outputs:
  by_g: slow_by_g
  widened: slow_widened
"""


def test_a_worker_killed_mid_run_does_not_fail_the_run(
    cluster: Cluster, frozen: Path, tmp_path: Path
) -> None:
    """The worker *process* below one nanny is SIGKILLed once the run has recorded a result:
    the scheduler reschedules its tasks on the other worker (and on the one the nanny starts
    again, under the same name), and the run ends with the output of an undisturbed one.

    It shares the module's cluster: it waits at the end until both workers are back."""
    from distributed import Client

    path = tmp_path / "slow.yaml"
    path.write_text(SLOW)
    calm = fresh_copy(frozen, tmp_path / "calm")
    want = cb.Blueprint.from_yaml(path).run(
        str(calm), scheduler="threads", workers=4, allow_modules=ALLOW
    )
    assert want.stats["computed"] > SLICES
    calm_entries = len(list((calm / "cache").glob("*.json")))

    store = fresh_copy(frozen, tmp_path / "store")
    out, err = tmp_path / "run.out", tmp_path / "run.err"
    with Client(cluster.address) as client:
        with out.open("wb") as stdout, err.open("wb") as stderr:
            argv = ["run", path, "--store", store, "--scheduler", cluster.address, "--json"]
            proc = subprocess.Popen(
                [str(CHANBATCH), *map(str, argv), "--allow-module", "udfs_dist"],
                stdout=stdout,
                stderr=stderr,
                env=child_env(),
            )
        try:
            deadline = time.monotonic() + 60
            while not list((store / "cache").glob("*.json")):
                assert proc.poll() is None, err.read_text()
                assert time.monotonic() < deadline, "no cache entry after 60 s"
                time.sleep(0.01)
            pids = client.run(os.getpid)  # worker address -> pid of its worker process
            ours = {
                child.pid
                for nanny in cluster.worker_popens()
                for child in psutil.Process(nanny.pid).children(recursive=True)
            }
            victim_address, victim = sorted(pids.items())[0]
            assert victim in ours, (pids, ours)  # a process this test module started
            assert proc.poll() is None, "the run finished before the kill: slow the map down"
            os.kill(victim, signal.SIGKILL)
            killed_at = len(list((store / "cache").glob("*.json")))
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        # the nanny starts its worker again, as another process at another address
        client.wait_for_workers(cluster.n_workers, timeout=60)
        deadline = time.monotonic() + 60
        while victim_address in (again := client.run(os.getpid)):
            assert time.monotonic() < deadline, again
            time.sleep(0.1)
        assert victim not in again.values() and len(again) == cluster.n_workers

    assert code == 0, f"exit {code}\n{err.read_text()}\n{cluster.logs()}"
    doc = json.loads(out.read_text())
    assert doc["outputs"] == want.snapshots
    assert doc["stats"]["computed"] == want.stats["computed"], doc["stats"]
    # the kill came in the middle: most results were recorded after it, and all of them are
    assert 1 <= killed_at < calm_entries
    assert len(list((store / "cache").glob("*.json"))) == calm_entries


# -- 4. a task that raises on a cluster ---------------------------------------------------------

FAILING = """\
name: failing
inputs:
  t: t
stages:
  check:
    from: t
    map: {function: "udfs_dist:fail_on_slice", version: "1"}
  totals:
    from: check
    group_by: [g]
    aggregate: {n: count(), total: sum(x)}
outputs:
  totals: failing_totals
"""
FAIL_DAYS = 8


def make_failing_store(root: Path) -> tuple[Path, dict[str, str]]:
    """A store of FAIL_DAYS slices, and the environment that makes ``fail_on_slice`` raise on
    one of them once the others are recorded (the workers a run starts inherit it)."""
    store = root / "store"
    frame = spread_frame(slices=FAIL_DAYS, rows=10, seed=5)
    cb.Store(store).freeze("t", frame, slice_by="day")
    flag = root / "fail"
    flag.touch()
    env = {
        udfs_dist.FAIL_FLAG: str(flag),
        udfs_dist.WAIT_CACHE: str(store / "cache"),
        udfs_dist.WAIT_FOR: str(FAIL_DAYS - 1),
    }
    return store, env


def totals_partials(store: Path) -> dict[Any, str]:
    """Slice -> what a plan would do with the ``totals`` partial of that slice."""
    doc = cb.Blueprint.from_yaml(FAILING).plan(str(store)).document()
    return {
        t["slice"]: t["action"]
        for t in doc["tasks"]
        if t["stage"] == "totals" and t["kind"] == "partial"
    }


ALL_BUT_ONE = {
    day: "compute" if day == udfs_dist.FAIL_SLICE else "reuse" for day in range(1, FAIL_DAYS + 1)
}


def test_a_failing_task_on_a_cluster_names_the_stage_and_slice_and_keeps_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, env = make_failing_store(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bp = cb.Blueprint.from_yaml(FAILING)
    cold = bp.plan(str(store)).document()["summary"]["compute"]
    with pytest.raises(StageFailed) as info:
        bp.run(str(store), scheduler="processes", workers=2, allow_modules=ALLOW)
    message = str(info.value)
    assert "stage 'check'" in message, message
    assert f"slice {udfs_dist.FAIL_SLICE}" in message, message
    assert f"cannot handle day {udfs_dist.FAIL_SLICE}" in message, message
    assert info.value.exit_code == 1
    assert cb.Store(str(store)).datasets() == ["t"]  # nothing was frozen

    # every other slice's partial was recorded as it finished
    assert totals_partials(store) == ALL_BUT_ONE
    summary = bp.plan(str(store)).document()["summary"]
    assert summary["compute"] < cold

    # with the function fixed (same version), a rerun computes only what is missing and gives
    # the output of a run that never failed
    Path(env[udfs_dist.FAIL_FLAG]).unlink()
    fixed = bp.run(str(store), scheduler="sync", allow_modules=ALLOW)
    assert fixed.stats["computed"] == summary["compute"] < cold
    clean, _env = make_failing_store(tmp_path / "clean")
    Path(_env[udfs_dist.FAIL_FLAG]).unlink()
    never_failed = bp.run(str(clean), scheduler="sync", allow_modules=ALLOW)
    assert never_failed.stats["computed"] == cold
    assert fixed.snapshots == never_failed.snapshots


@pytest.fixture(scope="module")
def cli_failure(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cli, Path]:
    """``chanbatch run --scheduler processes --workers 2`` of FAILING, once for the tests below."""
    root = tmp_path_factory.mktemp("cli-failure")
    store, env = make_failing_store(root)
    path = root / "failing.yaml"
    path.write_text(FAILING)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        result = cli(
            "run",
            path,
            "--store",
            store,
            "--scheduler",
            "processes",
            "--workers",
            "2",
            "--allow-module",
            "udfs_dist",
            pythonpath=str(HERE),
        )
    return result, store


def test_a_failing_task_on_a_cluster_via_the_cli_exits_1_naming_the_stage_and_slice(
    cli_failure: tuple[Cli, Path],
) -> None:
    result, store = cli_failure
    day = udfs_dist.FAIL_SLICE
    assert result.code == 1, str(result)
    assert result.stdout == "", str(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, str(result)
    for needle in ("stage 'check'", f"slice {day}", f"cannot handle day {day}"):
        assert needle in errors[0], (needle, errors[0])
    assert result.stderr.splitlines()[-1] == errors[0], str(result)
    assert cb.Store(str(store)).datasets() == ["t"]
    assert totals_partials(store) == ALL_BUT_ONE


def test_a_failing_task_on_a_cluster_via_the_cli_prints_only_the_error_line(
    cli_failure: tuple[Cli, Path],
) -> None:
    result, _store = cli_failure
    day = udfs_dist.FAIL_SLICE
    assert_error_line(result, 1, "stage 'check'", f"slice {day}", f"cannot handle day {day}")
