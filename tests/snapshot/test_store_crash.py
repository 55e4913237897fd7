"""Crash safety: a freeze killed with SIGKILL at a random point leaves a valid store.

A subprocess freezes batches of slices in a loop (new keys, and replacements of the keys the
earlier snapshot holds) and is killed at a random moment. After every kill the store must
verify, every version in the ref log must be whole, and the snapshot frozen before any crash
must read back exactly as it was.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from storekit import assert_same_rows, files, popen

import chanbatch

HERE = str(Path(__file__).parent)
SEED = 20130101

WORKER = """
import sys
sys.path.insert(0, sys.argv[3])
import chanbatch
from test_store_crash import batch_for

store = chanbatch.Store(sys.argv[1])
first = int(sys.argv[2])
print("ready", flush=True)
n = first
while True:
    store.freeze("events", batch_for(n), slice_by="key")
    n += 1
"""


def baseline() -> pd.DataFrame:
    """What the earlier snapshot holds: keys 0..9, 500 rows each."""
    keys = np.repeat(np.arange(10), 500)
    return pd.DataFrame(
        {
            "key": keys,
            "value": np.arange(len(keys), dtype="float64") / 7,
            "label": [f"base-{i}" for i in range(len(keys))],
        }
    )


def batch_for(n: int) -> pd.DataFrame:
    """Batch ``n`` of the crashing writer: even batches add 4 new keys, odd ones rewrite 0..4."""
    rng = np.random.default_rng(n)
    first = 0 if n % 2 else 1000 + 4 * n
    keys = np.repeat(np.arange(5 if n % 2 else 4) + first, 2000)
    return pd.DataFrame(
        {
            "key": keys,
            "value": rng.normal(size=len(keys)),
            "label": [f"b{n}-{i}" for i in range(len(keys))],
        }
    )


def crash_once(store: chanbatch.Store, first_batch: int, delay: float) -> None:
    proc = popen(WORKER, store.url, str(first_batch), HERE, env={"PYTHONPATH": HERE})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read() if proc.stderr else line
        time.sleep(delay)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "worker exited"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close() if proc.stdout else None
        proc.stderr.close() if proc.stderr else None
    assert proc.returncode == -signal.SIGKILL


def assert_intact(store: chanbatch.Store, before: str, base_files: dict[str, bytes]) -> None:
    report = store.verify()
    assert report.ok, report.document()
    history = store.history("events")
    assert [e.version for e in history] == list(range(1, len(history) + 1))
    assert history[0].snapshot == before
    # every file of the earlier snapshot is byte for byte what it was
    root = Path(store.url)
    for rel, data in base_files.items():
        assert (root / rel).read_bytes() == data, f"{rel} changed"
    assert_same_rows(store.read_pandas(f"events@{before[:12]}"), baseline())
    head = store.read_pandas("events")  # re-hashes every object of the head as it reads
    assert len(head) == store.resolve("events").manifest.rows


def run_crashes(store: chanbatch.Store, iterations: int) -> None:
    info = store.freeze("events", baseline(), slice_by="key")
    base_files = files(store.url)
    rng = random.Random(SEED)
    for i in range(iterations):
        crash_once(store, first_batch=1000 * i, delay=rng.uniform(0.05, 1.0))
        assert_intact(store, info.snapshot, base_files)

    store.gc(grace_seconds=0)  # sweeps what the crashes left (objects, manifests, tmp files)
    assert_intact(store, info.snapshot, base_files)
    tmp = Path(store.url) / "tmp"
    assert not tmp.exists() or not any(tmp.iterdir()), "gc left crash debris in tmp/"


def test_sigkill_during_freeze_leaves_a_valid_store(local_store: chanbatch.Store) -> None:
    run_crashes(local_store, iterations=4)


@pytest.mark.slow
def test_many_sigkills_during_freeze(local_store: chanbatch.Store) -> None:
    run_crashes(local_store, iterations=12)
