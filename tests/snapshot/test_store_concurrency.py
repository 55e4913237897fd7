"""Concurrent writers: 4 processes freeze 25 slices each into one dataset; no update is lost."""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
from storekit import assert_same_rows, popen

import chanbatch

HERE = str(Path(__file__).parent)
WORKERS = 4
PER_WORKER = 25

WORKER = """
import os, sys, time
sys.path.insert(0, sys.argv[4])
import chanbatch
from test_store_concurrency import PER_WORKER, WORKERS, frame_for

url, worker, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
store = chanbatch.Store(url)
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.001)
for i in range(PER_WORKER):
    key = i * WORKERS + worker  # the workers' keys interleave
    info = store.freeze("events", frame_for(key), slice=key)
    assert info.created, info
print("done", flush=True)
"""


def frame_for(key: int) -> pd.DataFrame:
    """The rows of slice ``key``: 40 rows whose values say which key and row they are."""
    return pd.DataFrame(
        {
            "key": [key] * 40,
            "row": range(40),
            "value": [key * 1000 + i for i in range(40)],
            "label": [f"{key}-{i}" for i in range(40)],
        }
    )


def test_four_writers_lose_no_update(local_store: chanbatch.Store, tmp_path: Path) -> None:
    go = tmp_path / "go"
    procs = [
        popen(WORKER, local_store.url, str(w), str(go), HERE, env={"PYTHONPATH": HERE})
        for w in range(WORKERS)
    ]
    try:
        for proc in procs:  # start them all at once, after the imports
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.strip() == "ready", proc.stderr.read() if proc.stderr else line
        go.touch()
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err
            assert out.strip() == "done"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    total = WORKERS * PER_WORKER
    history = local_store.history("events")
    assert [e.version for e in history] == list(range(1, total + 1))
    for before, after in itertools.pairwise(history):
        assert after.parent == before.snapshot
    added = [key for e in history for key in e.added]
    assert sorted(added) == list(range(total))

    assert [e.key for e in local_store.slices("events")] == list(range(total))
    expected = pd.concat([frame_for(k) for k in range(total)])
    assert_same_rows(local_store.read_pandas("events"), expected)
    report = local_store.verify()
    assert report.ok, report.document()
    tmp = Path(local_store.url) / "tmp"
    assert not tmp.exists() or not any(tmp.iterdir()), "a writer left a temporary file behind"
