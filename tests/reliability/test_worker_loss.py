"""Fault 3 of issue 7: a worker lost in the middle of a run.

``chanbatch run --scheduler processes --workers 2`` (the real script, whose LocalCluster starts
its worker processes as its own children) is held in the middle by ``udfs_load.gate``: one slice
waits at the gate, in a worker process that says its pid, while the other slices are computed
and recorded. The test SIGKILLs exactly that worker, a child of the ``chanbatch`` process, then
opens the gate. The run must finish (exit 0) with the output snapshot ids of an undisturbed run,
the held slice must have run again in another process, and the outputs must equal pandas'.

The slow variants:

- three workers, two killed in turn: the first holder, then the worker the held slice moved to;
- one worker, killed. This once hung for ever: every task was restricted, loosely, to the one
  worker's address, and distributed never schedules a ``no-worker`` task whose loose
  restrictions name only workers that are gone (``bulk_schedule_unrunnable_after_adding_worker``
  checks ``valid_workers`` and ignores ``loose_restrictions``), so the restarted worker, with a
  new address, never got them. chanbatch now restricts nothing with fewer than two workers, and
  installs a scheduler plugin (``chanbatch/run/orphans.py``, tested in
  ``tests/run/test_orphans.py``) that frees such tasks when all their workers die at once.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pandas as pd
import psutil
import pytest
from loadkit import (
    ALLOW,
    Gate,
    Processes,
    assert_output,
    blueprint,
    child_env,
    copy_store,
    days_frame,
    expected,
    outputs_of,
    verify,
    wait_until,
)

import chanbatch as cb

SLICES = 8
HOLD = 5  # the slice held at the gate


@pytest.fixture(scope="module")
def frozen(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """A store with input ``t``: SLICES days."""
    frame = days_frame(SLICES, 40, seed=3)
    store = tmp_path_factory.mktemp("worker-loss") / "store"
    cb.Store(store).freeze("t", frame, slice_by="day")
    return store, frame


def recorded(store: Path) -> int:
    return len(list((store / "cache").glob("*.json")))


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize(
    ("workers", "kills"),
    [
        (2, 1),
        pytest.param(3, 2, marks=pytest.mark.slow),
        pytest.param(1, 1, marks=pytest.mark.slow),
    ],
)
def test_a_worker_killed_mid_run_does_not_change_the_output(
    frozen: tuple[Path, pd.DataFrame], tmp_path: Path, workers: int, kills: int
) -> None:
    source, frame = frozen
    path = tmp_path / "loss.yaml"
    path.write_text(blueprint("loss"))
    calm = cb.Blueprint.from_yaml(path).run(
        str(copy_store(source, tmp_path / "calm")), scheduler="threads", allow_modules=ALLOW[1:]
    )
    want = {stage: info["snapshot"] for stage, info in calm.snapshots.items()}

    store = copy_store(source, tmp_path / "store")
    gate = Gate(tmp_path / "gate", [HOLD])
    victims: list[int] = []
    with Processes(tmp_path / "logs") as procs:
        run = procs.chanbatch(
            "run", path, "--store", store, "--scheduler", "processes", "--workers", str(workers),
            "--json", *ALLOW, name="run", env=child_env(**gate.env()),
        )  # fmt: skip
        for _ in range(kills):
            # the held slice is at the gate in a process not killed yet, others are recorded
            # (one worker holding the slice can record nothing else meanwhile)
            holder = wait_until(
                lambda: (
                    recorded(store) >= min(2, workers - 1)
                    and next((a.pid for a in gate.arrivals() if a.pid not in victims), None)
                ),
                what="the held slice at the gate and other results recorded",
                watch=[run],
                timeout=120,
            )
            family = {p.pid for p in psutil.Process(run.pid).children(recursive=True)}
            assert holder in family, (holder, family)  # a worker process of this very run
            assert run.proc.poll() is None, "the run finished while a slice was held"
            os.kill(holder, signal.SIGKILL)
            victims.append(holder)
            wait_until(lambda pid=holder: gone(pid), what=f"worker {holder} to die", watch=[run])
        at_kill = recorded(store)
        gate.open()
        result = run.finish(timeout=180 if workers > 1 else 45)

    assert result.code == 0, str(result)
    assert outputs_of(result) == want
    held = [a for a in gate.arrivals() if a.day == HOLD]
    assert [a.pid for a in held[:kills]] == victims
    assert len(held) == kills + 1 and held[-1].pid not in victims  # ran again elsewhere
    assert min(2, workers - 1) <= at_kill < recorded(store)  # results came after the kill

    out = cb.Store(store)
    for stage, want_rows in expected(frame).items():
        assert_output(out.read_pandas(f"loss_{stage}"), want_rows)
    verify(store)
    print(f"\nworker loss: {kills} worker(s) killed with {at_kill} results recorded, "
          f"{recorded(store)} at the end; stats {result.json()['stats']['computed']} computed")  # fmt: skip
