"""A cold run of many day slices on a real 2-worker LocalCluster: date slice keys, more task
reports than the scheduler keeps events of a topic (a thousand), and batches whose combines
read slices of the other worker.

Before, such a run failed with "internal error" (a date key is not a msgpack value, so a worker
could not send its report), and with int keys it waited 10 s for reports the scheduler had
dropped and recorded most tasks with no outcome.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster

import chanbatch as cb

BLUEPRINT = """\
name: daily
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
    aggregate: {n: count(), total: sum(w), top: max(v)}
outputs:
  per_kind: daily_out
"""

DAYS = 420
ROWS = 12  # per day


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(17)
    n = DAYS * ROWS
    first = dt.date(2021, 1, 1)
    return pd.DataFrame(
        {
            "day": np.repeat([first + dt.timedelta(days=i) for i in range(DAYS)], ROWS),
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


def test_a_cold_run_of_many_day_slices_on_a_cluster_reports_every_task(
    tmp_path: Path, frame: pd.DataFrame, client: Client
) -> None:
    source = tmp_path / "source"
    info = cb.Store(source).freeze("t", frame, slice_by="day")
    assert len(info.slices) == DAYS and info.slices[0].key == dt.date(2021, 1, 1)
    on_threads = tmp_path / "threads"
    shutil.copytree(source, on_threads)
    blueprint = cb.Blueprint.from_yaml(BLUEPRINT)

    result = blueprint.run(cb.Store(source), scheduler=client)
    alone = blueprint.run(cb.Store(on_threads), scheduler="threads")

    # the same output as on threads, and the right one
    assert result.snapshots["per_kind"]["snapshot"] == alone.snapshots["per_kind"]["snapshot"]
    got = result.outputs["per_kind"].compute().set_index("kind").sort_index()
    kept = frame[frame.v > 0]
    want = (
        kept.assign(w=kept.v * 3)
        .groupby("kind")
        .agg(n=("v", "size"), total=("w", "sum"), top=("v", "max"))
    )
    assert list(got.n) == list(want.n)
    assert np.allclose(got.total, want.total)
    assert list(got.top) == list(want.top)

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
