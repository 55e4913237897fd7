"""A run on an ``s3://`` store (a moto server, through s3fs) with 2 worker processes (issue 20,
item 3).

The same blueprint on the same data gives the same input and output snapshot ids on S3 as on a
local store, and the values DuckDB computes from the raw rows. The run reaches the store only
through storage options: its environment has neither the endpoint nor credentials, so the
worker processes can read and write the store only if the options reached them. ``run --json``
shows the options with the credentials hidden, and no file the run wrote holds them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from opskit import assert_same, sql
from s3kit import clear_s3fs_cache

import chanbatch as cb

pytest.importorskip("s3fs")

CHANBATCH = Path(sys.executable).with_name("chanbatch")
KEY, SECRET = "option-key-0000000001", "option-secret-9999999999"
#: what gives a process the test server without any option (see s3kit)
_AMBIENT = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "CHANBATCH_STORE")

BLUEPRINT = """\
name: on_s3
inputs:
  t: t
stages:
  kept:
    from: t
    filter: "x > 0"
  scaled:
    from: kept
    derive: {z: "x * 2 + y"}
  by_g:
    from: scaled
    group_by: [g]
    aggregate:
      n: count()
      total: sum(z)
      avg: mean(x)
      top: max(y)
  daily:
    from: scaled
    group_by: [day, g]
    per_slice: true
    aggregate:
      n: count()
      total: sum(z)
outputs:
  by_g: s3_by_g
  daily: s3_daily
"""


def frame(rows: int = 400) -> pd.DataFrame:
    """Rows of four day slices; ``x`` spans magnitudes, so a sum in another order differs."""
    rng = np.random.default_rng(20)
    return pd.DataFrame(
        {
            "day": rng.integers(1, 5, rows).astype("int64"),
            "g": pd.Series(rng.choice(["a", "b", "c"], rows), dtype="str"),
            "x": rng.normal(0, 1, rows) * 10.0 ** rng.integers(-3, 6, rows),
            "y": rng.integers(0, 100, rows).astype("int64"),
        }
    )


def bare_env() -> dict[str, str]:
    """This environment without the test server's endpoint and credentials."""
    env = {k: v for k, v in os.environ.items() if k not in _AMBIENT}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
    return env


def test_processes_run_on_s3_matches_local_store(
    s3_server: str, s3_store_url: str, tmp_path: Path
) -> None:
    data = frame()
    bp_path = tmp_path / "on_s3.yaml"
    bp_path.write_text(BLUEPRINT)

    local = cb.Store(tmp_path / "local", storage_options={})
    local_in = local.freeze("t", data, slice_by="day")
    local_run = cb.Blueprint.from_yaml(BLUEPRINT).run(local, scheduler="threads")

    given = {"endpoint_url": s3_server, "key": KEY, "secret": SECRET}
    remote = cb.Store(s3_store_url, storage_options=given)
    assert remote.freeze("t", data, slice_by="day").snapshot == local_in.snapshot

    args = [
        "run",
        str(bp_path),
        "--store",
        s3_store_url,
        "--scheduler",
        "processes",
        "--workers",
        "2",
        "--json",
    ]
    for name, value in given.items():
        args += ["--storage-option", f"{name}={value}"]
    proc = subprocess.run(
        [str(CHANBATCH), *args], capture_output=True, text=True, env=bare_env(), timeout=180
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)

    assert doc["stats"]["reused"] == 0 and doc["stats"]["computed"] > 0
    for name, info in local_run.snapshots.items():
        assert doc["outputs"][name]["snapshot"] == info["snapshot"], name
    assert doc["store"] == {
        "url": s3_store_url,
        "options": {"endpoint_url": s3_server, "key": "***", "secret": "***"},
    }
    assert KEY not in proc.stdout + proc.stderr and SECRET not in proc.stdout + proc.stderr

    clear_s3fs_cache()
    reader = cb.Store(s3_store_url, storage_options=given)
    by_g = reader.read("s3_by_g").compute()
    daily = reader.read("s3_daily").compute()
    want_by_g = sql(
        "SELECT g, count(*) AS n, sum(x * 2 + y) AS total, avg(x) AS avg, max(y) AS top "
        "FROM t WHERE x > 0 GROUP BY g",
        t=data,
    )
    want_daily = sql(
        "SELECT day, g, count(*) AS n, sum(x * 2 + y) AS total FROM t WHERE x > 0 GROUP BY day, g",
        t=data,
    )
    assert_same(by_g, want_by_g, by=["g"], rtol=1e-12)
    assert_same(daily, want_daily, by=["day", "g"], rtol=1e-12)

    # the options travelled to the workers beside the graph: nothing stored holds a secret
    fs = reader.storage.fs
    for path in fs.find(reader.storage.root):
        body = fs.cat_file(path)
        assert KEY.encode() not in body and SECRET.encode() not in body, path
