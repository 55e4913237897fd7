"""Slice affinity, CPU pinning and task reports on a real LocalCluster (issue 5).

Which worker ran each task comes from the run record, which the workers fill in themselves;
the expected worker of a slice is computed here from its definition (the highest blake3 of
``slice id|worker name``), not by calling chanbatch's choice.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections import defaultdict
from pathlib import Path

import blake3
import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster

import chanbatch as cb
from chanbatch.run.cluster import pick_worker

BLUEPRINT = """\
name: affinity
inputs: {t: t}
stages:
  kept:
    from: t
    filter: "v > 0"
  scaled:
    from: kept
    derive: {w: "v * 3"}
  per_kind:
    from: scaled
    group_by: [kind]
    aggregate: {n: count(), total: sum(w)}
outputs:
  per_kind: affinity_out
"""

SLICES = 16


def expected_worker(slice_id: str, names: dict[str, str]) -> str:
    def weight(addr: str) -> str:
        return blake3.blake3(f"{slice_id}|{names[addr]}".encode()).hexdigest()

    return max(sorted(names), key=weight)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    n = SLICES * 200
    return pd.DataFrame(
        {
            "day": np.repeat(np.arange(SLICES, dtype="int64"), 200),
            "kind": rng.choice(np.array(["a", "b", "c"], dtype=object), n),
            "v": rng.normal(0.5, 1.0, n).round(2),
        }
    )


@pytest.fixture(scope="module")
def client():
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def test_each_slice_runs_on_the_worker_its_id_hashes_to(
    tmp_path: Path, frame: pd.DataFrame, client: Client
) -> None:
    store = cb.Store(tmp_path / "store")
    info = store.freeze("t", frame, slice_by="day")
    slice_ids = {s.key: s.id for s in info.slices}
    result = cb.Blueprint.from_yaml(BLUEPRINT).run(store, scheduler=client)

    record = json.loads(next((tmp_path / "store" / "runs").glob("*.json")).read_text())
    names = {t["worker"]: t["worker_name"] for t in record["tasks"] if "worker" in t}
    assert len(names) == 2, "both workers ran tasks"
    ran_on: dict[int, set[str]] = defaultdict(set)
    for task in record["tasks"]:
        if task["slice"] is not None:
            ran_on[task["slice"]].add(task["worker"])
    assert set(ran_on) == set(range(SLICES))
    # an unloaded run: every slice stayed on one worker, the one its slice id hashes to
    for key, workers in ran_on.items():
        assert workers == {expected_worker(slice_ids[key], names)}, key
    # and the values are right
    got = result.outputs["per_kind"].compute().set_index("kind").sort_index()
    kept = frame[frame.v > 0]
    want = kept.assign(w=kept.v * 3).groupby("kind").agg(n=("v", "size"), total=("w", "sum"))
    assert list(got.n) == list(want.n)
    assert np.allclose(got.total, want.total)


def test_removing_a_worker_moves_only_its_own_slices() -> None:
    names = {f"tcp://10.0.0.{i}:1": str(i) for i in range(5)}
    slices = [blake3.blake3(str(i).encode()).hexdigest() for i in range(400)]
    before = {s: pick_worker(s, names) for s in slices}
    assert before == {s: expected_worker(s, names) for s in slices}
    counts = defaultdict(int)
    for addr in before.values():
        counts[addr] += 1
    assert min(counts.values()) > 400 / 5 / 2, "slices spread over every worker"
    gone = "tcp://10.0.0.3:1"
    after = {s: pick_worker(s, {a: n for a, n in names.items() if a != gone}) for s in slices}
    moved = {s for s in slices if before[s] != after[s]}
    assert moved == {s for s in slices if before[s] == gone}
    # a restarted worker keeps its name but not its address: it gets its slices back
    restarted = {(a if a != gone else "tcp://10.0.0.3:2"): n for a, n in names.items()}
    again = {s: pick_worker(s, restarted) for s in slices}
    assert {s for s in slices if again[s] == "tcp://10.0.0.3:2"} == {
        s for s in slices if before[s] == gone
    }


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux and two usable cores",
)
def test_pin_cpus_gives_each_worker_a_core_of_its_own(tmp_path: Path, frame: pd.DataFrame) -> None:
    store = cb.Store(tmp_path / "store")
    store.freeze("t", frame, slice_by="day")
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        before = client.run(lambda: sorted(os.sched_getaffinity(0)))
        assert all(len(cores) >= 2 for cores in before.values())
        cb.Blueprint.from_yaml(BLUEPRINT).run(store, scheduler=client, pin_cpus=True)
        after = client.run(lambda: sorted(os.sched_getaffinity(0)))
        threads = client.run(
            lambda: sorted(
                {tuple(sorted(os.sched_getaffinity(int(t)))) for t in os.listdir("/proc/self/task")}
            )
        )
    assert all(len(cores) == 1 for cores in after.values()), after
    assert len({cores[0] for cores in after.values()}) == 2, "two different cores"
    # every thread of a worker, not just the one that ran the plugin
    assert all(len(masks) == 1 for masks in threads.values()), threads


def test_with_many_slices_per_worker_a_combine_group_runs_where_its_first_slice_hashes(
    tmp_path: Path, client: Client
) -> None:
    """Past GROUPS_PER_WORKER groups per worker, every slice under one lowest combine node runs
    on the worker the group's first slice id hashes to, so that the batch holding them runs
    their combine too: the record shows each group on the worker its first slice hashes to,
    both workers with a fair share, and the answer pandas gives."""
    from chanbatch.run.cluster import GROUPS_PER_WORKER

    slices = 700
    rng = np.random.default_rng(8)
    frame = pd.DataFrame(
        {
            "day": np.repeat(np.arange(slices, dtype="int64"), 4),
            "kind": rng.choice(np.array(["a", "b", "c"], dtype=object), slices * 4),
            "v": rng.normal(0.5, 1.0, slices * 4).round(2),
        }
    )
    store = cb.Store(tmp_path / "store")
    info = store.freeze("t", frame, slice_by="day")
    slice_ids = {s.key: s.id for s in info.slices}
    result = cb.Blueprint.from_yaml(BLUEPRINT).run(store, scheduler=client)

    record = json.loads(next((tmp_path / "store" / "runs").glob("*.json")).read_text())
    tasks = record["tasks"]
    names = {t["worker"]: t["worker_name"] for t in tasks if "worker" in t}
    assert len(names) == 2
    slice_of = {t["key"]: t["slice"] for t in tasks if t["kind"] == "partial"}
    groups = [
        [slice_of[d] for d in t["deps"]]
        for t in tasks
        if t["kind"] == "combine" and all(d in slice_of for d in t["deps"])
    ]
    assert len(groups) >= GROUPS_PER_WORKER * 2  # enough groups: placed by group
    grouped = {s for g in groups for s in g}
    assert len(grouped) == sum(len(g) for g in groups) > slices * 0.9
    # a slice alone in its lowest group has no combine there: it goes by its own id
    groups += [[key] for key in range(slices) if key not in grouped]
    ran_on: dict[int, set[str]] = defaultdict(set)
    for task in tasks:
        if task["slice"] is not None:
            ran_on[task["slice"]].add(task["worker"])
    for group in groups:
        want = expected_worker(slice_ids[group[0]], names)
        for key in group:
            assert ran_on[key] == {want}, (group, key)
    per_worker = defaultdict(int)
    for workers in ran_on.values():
        per_worker[next(iter(workers))] += 1
    assert min(per_worker.values()) > slices / 4  # both workers got a fair share
    got = result.outputs["per_kind"].compute().set_index("kind").sort_index()
    kept = frame[frame.v > 0]
    want_frame = kept.assign(w=kept.v * 3).groupby("kind").agg(n=("v", "size"), total=("w", "sum"))
    assert list(got.n) == list(want_frame.n)
    assert np.allclose(got.total, want_frame.total)


def test_a_cold_run_of_many_day_slices_reports_every_task(tmp_path: Path, client: Client) -> None:
    """Date slice keys, and more task reports than the scheduler keeps events of one topic (a
    thousand). Before, such a run failed with "internal error" (a date is not a msgpack value,
    so a worker could not send its report), and with int keys it waited 10 s for reports the
    scheduler had dropped and recorded most tasks with no outcome."""
    days, rows = 420, 12
    rng = np.random.default_rng(17)
    first = dt.date(2021, 1, 1)
    frame = pd.DataFrame(
        {
            "day": np.repeat([first + dt.timedelta(days=i) for i in range(days)], rows),
            "kind": rng.choice(np.array(["a", "b", "c"], dtype=object), days * rows),
            "v": rng.normal(0.5, 1.0, days * rows).round(2),
        }
    )
    source = tmp_path / "source"
    info = cb.Store(source).freeze("t", frame, slice_by="day")
    assert len(info.slices) == days and info.slices[0].key == first
    on_threads = tmp_path / "threads"
    shutil.copytree(source, on_threads)
    blueprint = cb.Blueprint.from_yaml(BLUEPRINT)

    result = blueprint.run(cb.Store(source), scheduler=client)
    alone = blueprint.run(cb.Store(on_threads), scheduler="threads")

    # the same output as on threads, and the right one
    assert result.snapshots["per_kind"]["snapshot"] == alone.snapshots["per_kind"]["snapshot"]
    got = result.outputs["per_kind"].compute().set_index("kind").sort_index()
    kept = frame[frame.v > 0]
    want = kept.assign(w=kept.v * 3).groupby("kind").agg(n=("v", "size"), total=("w", "sum"))
    assert list(got.n) == list(want.n)
    assert np.allclose(got.total, want.total)

    # every task of the cold run reported what it did, from a worker of the cluster
    record = json.loads(next((source / "runs").glob("*.json")).read_text())
    tasks = [t for t in record["tasks"] if t["kind"] != "load"]
    assert len(tasks) > 1_000  # more than the scheduler keeps events of one topic
    assert {t.get("outcome") for t in tasks} == {"computed"}
    workers = set(client.scheduler_info()["workers"])
    assert {t["worker"] for t in tasks} <= workers
    assert len({t["worker"] for t in tasks}) == 2
    per_slice = [t for t in tasks if t["slice"] is not None]
    assert {t["slice"] for t in per_slice} == {s.key.isoformat() for s in info.slices}
