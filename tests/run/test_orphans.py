"""Tasks whose preferred workers all die at once still run (chanbatch/run/orphans.py).

A real two-worker LocalCluster with nannies. A task restricted, loosely, to both workers waits
at a gate; both worker processes are SIGKILLed together, the nannies start new ones (with new
addresses), and the gate opens. With the plugin installed the task finishes on a new worker;
without it distributed leaves it in ``no-worker`` for good, which the second test shows, so
the first cannot pass for another reason.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import dask
import pytest
from distributed import Client, LocalCluster

from chanbatch.run.cluster import release_orphans


def wait_at_gate(gate: str) -> int:
    """Announce this worker's pid, then wait until the gate file exists."""
    Path(gate + f".{os.getpid()}").touch()
    while not os.path.exists(gate):
        time.sleep(0.02)
    return os.getpid()


@pytest.fixture
def client() -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as c,
        Client(c) as client,
    ):
        yield client


def kill_all_workers_at_the_gate(client: Client, gate: Path, rescue: bool) -> tuple[str, object]:
    if rescue:
        release_orphans(client)
    first = set(client.scheduler_info()["workers"])
    pids = set(client.run(os.getpid).values())
    with dask.annotate(workers=sorted(first), allow_other_workers=True):
        future = client.submit(wait_at_gate, str(gate), pure=False)
    deadline = time.monotonic() + 60
    while not list(gate.parent.glob(gate.name + ".*")):
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.05)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    # new workers, at new addresses, replace both
    while (
        not (set(client.scheduler_info()["workers"]) - first)
        or len(client.scheduler_info()["workers"]) < 2
    ):
        assert time.monotonic() < deadline, "the nannies did not restart the workers"
        time.sleep(0.1)
    assert not first & set(client.scheduler_info()["workers"])
    gate.touch()
    try:
        return "done", future.result(timeout=20 if rescue else 5)
    except TimeoutError:
        return client.run_on_scheduler(
            lambda dask_scheduler, key=future.key: dask_scheduler.tasks[key].state
        ), None


def test_a_task_whose_workers_all_died_runs_on_a_new_one(client: Client, tmp_path: Path) -> None:
    state, pid = kill_all_workers_at_the_gate(client, tmp_path / "gate", rescue=True)
    assert state == "done"
    assert pid in set(client.run(os.getpid).values())  # it ran on one of the new workers


def test_without_the_rescue_the_task_is_stuck(client: Client, tmp_path: Path) -> None:
    state, _pid = kill_all_workers_at_the_gate(client, tmp_path / "gate", rescue=False)
    # if distributed fixes this, the plugin can go: this test will say so
    assert state == "no-worker"
