"""Concurrent writers, gc and a killed freeze on a store on a real S3 API (moto, through s3fs).

Every process here is the real ``chanbatch`` command line, started as a subprocess; the moto
server's endpoint and fake credentials reach it through the environment (see ``s3kit``).

- **8 writers and gc.** 8 processes freeze 3 day files each (their own days) into one dataset,
  released at the same moment, while ``chanbatch gc --grace 30s`` runs again and again beside
  them. The store already holds a first version (aged a day, so that gc may look at all of
  it) and a day-old object no version names. Afterwards: the ref log (read as JSON with s3fs,
  not through chanbatch) holds versions 1..9 without a gap, each entry's parent the one before;
  the head has every day, and each day's rows equal the raw file read with DuckDB; every gc
  pass exited 0; the unreferenced old object is gone (gc really swept) and ``snapshot verify``
  is clean (it deleted nothing referenced).
- **SIGKILL.** A freeze of many slices is killed as soon as its first new object is in the
  bucket, before its ref: ``snapshot verify`` is clean, the earlier version reads back as its
  raw files, and a second freeze of the same files completes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3
import duckdb
import pandas as pd
import pytest
from loadkit import GcLoop, Processes, chain_problems, child_env, wait_until
from s3kit import age_s3

pytest.importorskip("s3fs")

WRITERS = 8
DAYS_PER_WRITER = 3
DAY = 86400.0

#: A writer: the real CLI's entry point, called once the test creates the go file (so that all
#: 8 are past their imports and race for the same ref versions).
WRITER = r"""
import sys, time
from pathlib import Path
from chanbatch.cli.main import main
go = Path(sys.argv[1])
Path(str(go) + "." + sys.argv[2]).touch()
while not go.exists():
    time.sleep(0.005)
main(sys.argv[3:])
"""


def fs() -> Any:
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)


def day_file(folder: Path, day: int, *, rows: int = 40) -> Path:
    """A raw day file ``<day>.csv``: integers and floats that depend on the day."""
    path = folder / f"{day:03d}.csv"
    pd.DataFrame(
        {
            "day": [day] * rows,
            "store_id": [(day * 7 + i) % 13 for i in range(rows)],
            "amount": [round(day * 1.5 + i * 0.25, 2) for i in range(rows)],
        }
    ).to_csv(path, index=False)
    return path


def ref_log(url: str, dataset: str) -> list[dict[str, Any]]:
    """The ref-log entries as stored (JSON read with s3fs), oldest first."""
    root = url.removeprefix("s3://") + f"/refs/{dataset}"
    client = fs()
    entries = []
    for path in sorted(client.find(root)):
        doc = json.loads(client.cat_file(path))
        assert int(path.rsplit("/", 1)[-1].removesuffix(".json")) == doc["version"], path
        entries.append(doc)
    return entries


def objects(url: str) -> set[str]:
    root = url.removeprefix("s3://") + "/objects"
    return {"".join(p.rsplit("/", 2)[-2:]) for p in fs().find(root)}  # ab/cdef... -> abcdef...


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    from clikit import CHANBATCH

    return subprocess.run(
        [str(CHANBATCH), *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def verify_clean(url: str, env: dict[str, str]) -> dict[str, Any]:
    done = cli("snapshot", "verify", "--store", url, "--json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["ok"] and not doc["corrupt"], doc
    return doc


def raw_rows(paths: list[Path]) -> pd.DataFrame:
    """The raw files' rows, read by DuckDB (not by chanbatch), in a fixed order."""
    listed = ", ".join(f"'{p}'" for p in paths)
    return (
        duckdb.sql(f"select * from read_csv([{listed}]) order by day, store_id, amount")
        .df()
        .astype({"day": "int64", "store_id": "int64", "amount": "float64"})
    )


def stored_rows(url: str, ref: str) -> pd.DataFrame:
    import chanbatch

    got = chanbatch.Store(url).read_pandas(ref)
    return (
        got.astype({"day": "int64", "store_id": "int64", "amount": "float64"})
        .sort_values(["day", "store_id", "amount"])
        .reset_index(drop=True)
    )


def test_eight_writers_and_gc_beside_them_lose_nothing(s3_store_url: str, tmp_path: Path) -> None:
    url, env = s3_store_url, child_env()
    raw = tmp_path / "raw"
    raw.mkdir()
    base = [day_file(raw, day) for day in (1, 2)]
    done = cli("snapshot", "freeze", "sales", *map(str, base), "--store", url, env=env)
    assert done.returncode == 0, done.stderr
    first = ref_log(url, "sales")[0]["snapshot"]
    # debris of a killed freeze: an object no version names
    junk = b"debris of a killed freeze"
    debris = blake3.blake3(junk).hexdigest()
    fs().pipe_file(f"{url.removeprefix('s3://')}/objects/{debris[:2]}/{debris[2:]}", junk)
    age_s3(url, DAY)  # everything so far is a day old: only references keep it

    go = tmp_path / "go"
    days = {w: [10 + w * DAYS_PER_WRITER + i for i in range(DAYS_PER_WRITER)] for w in range(8)}
    with Processes(tmp_path / "logs") as procs, GcLoop(url, "30s", env) as gc:  # type: ignore[arg-type]
        writers = [
            procs.python(
                WRITER,
                str(go),
                str(w),
                "snapshot",
                "freeze",
                "sales",
                *(str(day_file(raw, d)) for d in days[w]),
                "--store",
                url,
                "--json",
                name=f"writer-{w}",
                env=env,
            )
            for w in range(WRITERS)
        ]
        wait_until(
            lambda: all(Path(f"{go}.{w}").exists() for w in range(WRITERS)),
            what="every writer ready",
            watch=writers,
        )
        go.touch()
        results = [writer.finish(timeout=300) for writer in writers]
        for w, result in enumerate(results):
            assert result.code == 0, f"writer {w}: {result}"
        gc.wait_passes(1, after=time.monotonic())  # one more whole pass after the writers
    passes = gc.passes
    assert passes and all(p.code == 0 for p in passes), [p.stderr for p in passes if p.code]

    entries = ref_log(url, "sales")
    assert not chain_problems(entries), chain_problems(entries)
    assert len(entries) == 1 + WRITERS
    reported = {json.loads(r.stdout)["snapshot"] for r in results}
    assert reported == {e["snapshot"] for e in entries[1:]}
    every = [1, 2, *(d for w in range(WRITERS) for d in days[w])]
    pd.testing.assert_frame_equal(
        stored_rows(url, "sales"), raw_rows([raw / f"{d:03d}.csv" for d in every])
    )
    # nothing referenced was deleted, old or new; the old debris was (gc really swept)
    verify_clean(url, env)
    pd.testing.assert_frame_equal(stored_rows(url, f"sales@{first}"), raw_rows(base))
    assert debris not in objects(url)
    assert sum(p.report.get("removed", {}).get("objects", 0) for p in passes) == 1


def first_object(proc: subprocess.Popen[bytes], url: str, before: set[str]) -> Callable[[], bool]:
    """Whether ``proc`` has exited or a new object is in the store."""
    return lambda: proc.poll() is not None or bool(objects(url) - before)


def test_a_freeze_killed_before_its_ref_leaves_a_valid_store(
    s3_store_url: str, tmp_path: Path
) -> None:
    from clikit import CHANBATCH

    url, env = s3_store_url, child_env()
    raw = tmp_path / "raw"
    raw.mkdir()
    base = [day_file(raw, day) for day in (1, 2)]
    done = cli("snapshot", "freeze", "sales", *map(str, base), "--store", url, env=env)
    assert done.returncode == 0, done.stderr
    first = ref_log(url, "sales")[0]["snapshot"]
    before = objects(url)

    landed = None
    for attempt in range(3):  # a freeze that finishes before the kill is tried again, larger
        more = [day_file(raw, 100 * (attempt + 1) + d, rows=400) for d in range(30)]
        proc = subprocess.Popen(
            [str(CHANBATCH), "snapshot", "freeze", "sales", *map(str, more), "--store", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        try:
            wait_until(
                first_object(proc, url, before), what="the freeze's first object", timeout=120
            )
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=60)
        versions = [e["version"] for e in ref_log(url, "sales")]
        if proc.returncode == -signal.SIGKILL and len(versions) == 1:
            landed = more
            break
        before = objects(url)  # it finished (or committed) first: try again with new days
    assert landed is not None, "no kill landed between the first object and the ref"
    assert objects(url) - before, "the kill left no object: it landed before any write"

    verify_clean(url, env)
    assert [e["version"] for e in ref_log(url, "sales")] == [1]
    pd.testing.assert_frame_equal(stored_rows(url, f"sales@{first}"), raw_rows(base))
    done = cli("snapshot", "freeze", "sales", *map(str, landed), "--store", url, env=env)
    assert done.returncode == 0, done.stderr
    pd.testing.assert_frame_equal(stored_rows(url, "sales"), raw_rows([*base, *landed]))
    verify_clean(url, env)
