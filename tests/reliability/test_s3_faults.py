"""A store on S3 whose server misbehaves: 503s, dropped connections, a lost answer to the ref's
PUT, an outage. The real ``chanbatch`` command line, in subprocesses, talks to moto through
``s3kit.FaultProxy``, which fails the requests a test picks.

Retries are the client's own (botocore's and s3fs's; chanbatch adds no loop of its own). A
spell of faults ends in retries and a normal result; an outage ends in one ``Error:`` line
naming the store, exit 1, no traceback, and a store as valid as before (no new ref, and
``snapshot verify`` clean). The outage with dropped connections runs with ``--runslow``
(s3fs retries each of botocore's tries, so it takes longest). The outage tests set ``AWS_MAX_ATTEMPTS=2`` so that the client
gives up in seconds (its default retries take a minute against a dead endpoint).

Each result is checked against the raw files read with DuckDB and the ref log read as JSON.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
from loadkit import chain_problems, child_env
from s3kit import FaultProxy

pytest.importorskip("s3fs")


def cli(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    from clikit import CHANBATCH

    return subprocess.run(
        [str(CHANBATCH), *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def day_file(folder: Path, day: int, rows: int = 30) -> Path:
    path = folder / f"{day:03d}.csv"
    pd.DataFrame({"day": [day] * rows, "amount": [day + i / 4 for i in range(rows)]}).to_csv(
        path, index=False
    )
    return path


def ref_log(url: str, dataset: str) -> list[dict[str, Any]]:
    import s3fs

    client = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
    root = url.removeprefix("s3://") + f"/refs/{dataset}"
    return [json.loads(client.cat_file(p)) for p in sorted(client.find(root))]


def rows(url: str, ref: str) -> pd.DataFrame:
    import chanbatch

    got = chanbatch.Store(url).read_pandas(ref)
    return got.sort_values(["day", "amount"]).reset_index(drop=True).astype("float64")


def raw(paths: list[Path]) -> pd.DataFrame:
    listed = ", ".join(f"'{p}'" for p in paths)
    return (
        duckdb.sql(f"select * from read_csv([{listed}]) order by day, amount")
        .df()
        .astype("float64")
    )


def verify_clean(url: str) -> None:
    done = cli("snapshot", "verify", "--store", url, "--json", env=child_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["ok"]


@pytest.fixture
def base(s3_store_url: str, tmp_path: Path) -> list[Path]:
    """Version 1 of ``sales`` (days 1 and 2), frozen straight to the server."""
    files = [day_file(tmp_path, 1), day_file(tmp_path, 2)]
    done = cli(
        "snapshot", "freeze", "sales", *map(str, files), "--store", s3_store_url, env=child_env()
    )
    assert done.returncode == 0, done.stderr
    return files


def through(proxy: FaultProxy, **extra: str) -> dict[str, str]:
    return child_env(AWS_ENDPOINT_URL=proxy.endpoint, **extra)


def writes(method: str, path: str) -> bool:
    return method == "PUT"


def reads(method: str, path: str) -> bool:
    return method in ("GET", "HEAD")


def test_a_spell_of_503s_and_dropped_connections_ends_in_retries(
    s3_store_url: str, s3_fault_proxy: FaultProxy, base: list[Path], tmp_path: Path
) -> None:
    s3_fault_proxy.fail(503, code="SlowDown", times=3, match=writes)
    s3_fault_proxy.fail(0, times=3, match=reads)
    new = day_file(tmp_path, 3)
    done = cli(
        "snapshot",
        "freeze",
        "sales",
        str(new),
        "--store",
        s3_store_url,
        "--json",
        env=through(s3_fault_proxy),
    )
    assert done.returncode == 0, done.stderr
    assert s3_fault_proxy.faults_served == 6
    entries = ref_log(s3_store_url, "sales")
    assert [e["version"] for e in entries] == [1, 2] and not chain_problems(entries)
    assert entries[-1]["snapshot"] == json.loads(done.stdout)["snapshot"]
    pd.testing.assert_frame_equal(rows(s3_store_url, "sales"), raw([*base, new]))
    verify_clean(s3_store_url)


def test_a_lost_answer_to_the_refs_put_commits_once(
    s3_store_url: str, s3_fault_proxy: FaultProxy, base: list[Path], tmp_path: Path
) -> None:
    # the server writes version 2, the client never hears so and sends the PUT again
    s3_fault_proxy.fail(0, after=True, times=1, match=lambda m, p: m == "PUT" and "/refs/" in p)
    new = day_file(tmp_path, 3)
    done = cli(
        "snapshot",
        "freeze",
        "sales",
        str(new),
        "--store",
        s3_store_url,
        "--json",
        env=through(s3_fault_proxy),
    )
    assert s3_fault_proxy.faults_served == 1
    assert done.returncode == 0, done.stderr
    entries = ref_log(s3_store_url, "sales")
    assert not chain_problems(entries), entries
    assert [e["version"] for e in entries] == [1, 2], "the retried PUT made a second version"
    pd.testing.assert_frame_equal(rows(s3_store_url, "sales"), raw([*base, new]))
    verify_clean(s3_store_url)


@pytest.mark.parametrize(
    ("status", "says"),
    # dropped connections retry longer (s3fs retries each of botocore's tries): CI has the
    # 503 case, and the spell test drops connections too
    [(503, "cannot write"), pytest.param(0, "ConnectionClosedError", marks=pytest.mark.slow)],
    ids=["503", "dropped"],
)
def test_an_outage_ends_in_one_clear_error_and_no_ref(
    s3_store_url: str,
    s3_fault_proxy: FaultProxy,
    base: list[Path],
    tmp_path: Path,
    status: int,
    says: str,
) -> None:
    s3_fault_proxy.fail(status, match=writes)
    new = day_file(tmp_path, 3)
    done = cli(
        "snapshot",
        "freeze",
        "sales",
        str(new),
        "--store",
        s3_store_url,
        env=through(s3_fault_proxy, AWS_MAX_ATTEMPTS="2"),
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    assert s3_store_url in lines[0] and says in lines[0], lines[0]
    assert "Traceback" not in done.stderr
    assert s3_fault_proxy.faults_served >= 2  # retried before giving up
    s3_fault_proxy.heal()
    assert [e["version"] for e in ref_log(s3_store_url, "sales")] == [1]
    verify_clean(s3_store_url)
    done = cli(
        "snapshot",
        "freeze",
        "sales",
        str(new),
        "--store",
        s3_store_url,
        env=through(s3_fault_proxy),
    )
    assert done.returncode == 0, done.stderr
    pd.testing.assert_frame_equal(rows(s3_store_url, "sales"), raw([*base, new]))


PER_DAY = """\
name: per_day
inputs:
  sales: sales
stages:
  per_day:
    from: sales
    group_by: [day]
    aggregate: {n: count(), total: sum(amount)}
outputs:
  per_day: sales_per_day
"""


def test_a_run_whose_results_cannot_be_stored_fails_clearly_and_commits_nothing(
    s3_store_url: str, s3_fault_proxy: FaultProxy, base: list[Path], tmp_path: Path
) -> None:
    """A run stores its results behind its tasks (chanbatch.cache.behind): a write refused
    there still fails the run, with one ``Error:`` line, before any output is frozen; the
    store stays valid and the next run gives DuckDB's answer."""
    blueprint = tmp_path / "per_day.yaml"
    blueprint.write_text(PER_DAY)
    s3_fault_proxy.fail(503, match=lambda m, p: m == "PUT" and "/cache/" in p)
    done = cli(
        "run", str(blueprint), "--store", s3_store_url,
        env=through(s3_fault_proxy, AWS_MAX_ATTEMPTS="2"),
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    assert s3_store_url in lines[0] and "cannot write" in lines[0], lines[0]
    s3_fault_proxy.heal()
    assert ref_log(s3_store_url, "sales_per_day") == []
    verify_clean(s3_store_url)
    done = cli(
        "run", str(blueprint), "--store", s3_store_url, "--json", env=through(s3_fault_proxy)
    )
    assert done.returncode == 0, done.stderr
    snapshot = json.loads(done.stdout)["outputs"]["per_day"]["snapshot"]
    import chanbatch

    got = chanbatch.Store(s3_store_url).read_pandas(f"sales_per_day@{snapshot}")
    got = got.sort_values("day").reset_index(drop=True)[["day", "n", "total"]]
    listed = ", ".join(f"'{p}'" for p in base)
    want = duckdb.sql(
        f"select day, count(*) as n, sum(amount) as total from read_csv([{listed}]) "
        "group by day order by day"
    ).df()
    pd.testing.assert_frame_equal(got.astype("float64"), want.astype("float64"))
