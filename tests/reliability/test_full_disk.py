"""Full disk (issue 7, fault 7): a write that finds no space fails clearly and publishes nothing.

The store lives on a small tmpfs mounted for this module. Each trial copies one base store onto
it, fills the disk with a ballast file until only some amount is left, and runs the real
``chanbatch snapshot freeze`` (or ``chanbatch run``). The amounts left are spread from nothing to
a little more than the command needs, so the disk fills at different points of the command:
before the first object, between objects, at the manifests or the ref. After each trial:

- a failure is exit 1 and one ``Error:`` line that says the disk is full, with no traceback;
- the ref log is exactly what it was (a failure) or one version longer (a success);
- nothing is left in ``tmp/``, and ``chanbatch snapshot verify`` passes;
- every version still reads back exactly as its source files (read with pyarrow, not chanbatch);
- after the ballast is removed, the same command succeeds and gives the same snapshot ids as on
  a roomy disk.

Mounting needs root. Elsewhere the module is skipped with the reason; ``unshare -rm pytest ...``
runs it as an unprivileged user that owns its own mount namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from clikit import Result, assert_one_error_line, ok_json
from clikit import run as cli

DISK_BYTES = 24 << 20
FULL = "No space left on device"

BLUEPRINT = """
name: totals
inputs:
  events: events
stages:
  priced:
    from: events
    derive: {total: "amount * qty"}
  by_user:
    from: priced
    group_by: [user]
    aggregate:
      n: count()
      spend: sum(total)
outputs:
  by_user: totals_by_user
  priced: priced_events
"""


def mount_tmpfs(path: Path, size: int) -> str | None:
    """Mount a tmpfs of ``size`` bytes at ``path``; the reason it cannot be, or None."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root; run `unshare -rm pytest ...` to test a full disk"
    if shutil.which("mount") is None:
        return "no mount(8) on this machine"
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    return None if proc.returncode == 0 else f"cannot mount a tmpfs: {proc.stderr.strip()}"


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("disk")
    reason = mount_tmpfs(path, DISK_BYTES)
    if reason is not None:
        pytest.skip(reason)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def batch(day: int, rows: int = 40_000) -> pd.DataFrame:
    """One day of events: random floats, so Parquet cannot compress them away."""
    rng = np.random.default_rng(day)
    return pd.DataFrame(
        {
            "day": np.full(rows, day),
            "user": rng.choice([f"u{i:03d}" for i in range(200)], rows),
            "amount": rng.random(rows) * 100,
            "qty": rng.integers(1, 9, rows),
        }
    )


@dataclass(frozen=True)
class Base:
    store: Path  # on a roomy disk
    old: list[Path]  # the files of the snapshot already in the store
    new: list[Path]  # the files the trials freeze


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    root = tmp_path_factory.mktemp("full-disk-base")
    files = []
    for day in range(1, 7):
        path = root / f"{day}.parquet"
        pq.write_table(pa.Table.from_pandas(batch(day), preserve_index=False), path)
        files.append(path)
    store = root / "store"
    ok_json("snapshot", "freeze", "events", *files[:2], store=store)
    return Base(store=store, old=files[:2], new=files[2:])


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def leave_free(disk: Path, amount: int) -> Path:
    """Fill ``disk`` with a ballast file until about ``amount`` bytes are left."""
    ballast = disk / f"ballast-{uuid.uuid4().hex}"
    size = max(free_bytes(disk) - amount, 0)
    with open(ballast, "wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, size) if size else None
    return ballast


def ref_log(store: Path, dataset: str) -> dict[str, bytes]:
    folder = store / "refs" / dataset
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.json"))}


def tmp_files(store: Path) -> list[Path]:
    return [p for p in (store / "tmp").rglob("*") if p.is_file()]


def stored_rows(store: Path, dataset: str) -> pd.DataFrame:
    """The head of ``dataset``, read from the store's files with pyarrow alone."""
    head = list(ref_log(store, dataset).values())[-1]
    sid = json.loads(head)["snapshot"]
    snap = json.loads((store / "manifests" / sid[:2] / f"{sid[2:]}.json").read_bytes())
    tables = []
    for entry in snap["slices"]:
        sl = json.loads(
            (store / "manifests" / entry["id"][:2] / f"{entry['id'][2:]}.json").read_bytes()
        )
        for part in sl["parts"]:
            oid = part["object"]
            tables.append(pq.read_table(store / "objects" / oid[:2] / oid[2:]))
    return pa.concat_tables(tables).to_pandas()


def same_rows(got: pd.DataFrame, files: list[Path]) -> None:
    expected = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    key = ["day", "user", "amount", "qty"]
    pd.testing.assert_frame_equal(
        got[key].sort_values(key, ignore_index=True),
        expected[key].sort_values(key, ignore_index=True),
        check_dtype=False,
    )


def assert_failed_cleanly(result: Result) -> None:
    line = assert_one_error_line(result, 1, FULL)
    assert "nothing partial was published" in line, line


@pytest.fixture(scope="module")
def roomy(base: Base, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The freeze and the run on a roomy disk: the ids every trial must end up with."""
    store = tmp_path_factory.mktemp("roomy") / "store"
    shutil.copytree(base.store, store)
    freeze = ok_json("snapshot", "freeze", "events", *base.new, store=store)
    blueprint = store.parent / "totals.yaml"
    blueprint.write_text(BLUEPRINT)
    run = ok_json("run", str(blueprint), store=store)
    return {"freeze": freeze, "run": run}


def trial_levels(need: int) -> list[int]:
    """Free space to leave: none, a few pages, then spread over what the command needs."""
    return [0, 4096, 64 << 10] + [int(need * f) for f in (0.2, 0.4, 0.6, 0.8, 0.95, 1.3)]


def count_files(store: Path, folder: str) -> int:
    return sum(1 for p in (store / folder).rglob("*") if p.is_file())


def test_freeze_into_a_full_disk(
    disk: Path, base: Base, roomy: dict[str, object], request: pytest.FixtureRequest
) -> None:
    need = sum(f.stat().st_size for f in base.new)
    levels = trial_levels(need)
    if not request.config.getoption("--runslow"):
        levels = levels[::2]  # 5 of the 9 levels in CI
    outcomes = []
    for amount in levels:
        store = disk / "store"
        shutil.copytree(base.store, store)
        before = ref_log(store, "events")
        objects = count_files(store, "objects")
        ballast = leave_free(disk, amount)

        result = cli("snapshot", "freeze", "events", *base.new, "--json", store=store)
        after = ref_log(store, "events")
        if result.code == 0:
            outcomes.append("ok")
            assert len(after) == len(before) + 1 and all(after[k] == v for k, v in before.items())
            assert result.json()["snapshot"] == roomy["freeze"]["snapshot"]  # type: ignore[index]
        else:
            assert_failed_cleanly(result)
            # where the disk filled: before any new object, or after some were written
            outcomes.append("full" if count_files(store, "objects") == objects else "full-later")
            assert after == before, "a failed freeze published a version"
            same_rows(stored_rows(store, "events"), base.old)
        assert tmp_files(store) == [], "a temporary file was left behind"
        verify = cli("snapshot", "verify", "--json", store=store)
        assert verify.code == 0 and verify.json()["ok"] is True, str(verify)

        ballast.unlink()  # room again: the same freeze now succeeds, with the same ids
        retry = ok_json("snapshot", "freeze", "events", *base.new, store=store)
        assert retry["snapshot"] == roomy["freeze"]["snapshot"]  # type: ignore[index]
        same_rows(stored_rows(store, "events"), base.old + base.new)
        assert cli("snapshot", "verify", store=store).code == 0
        shutil.rmtree(store)
    print("freeze outcomes by free space:", dict(zip(levels, outcomes, strict=True)))
    # the trials really filled the disk, and at more than one point of the freeze
    assert {"full", "full-later", "ok"} <= set(outcomes), outcomes


def test_run_into_a_full_disk(
    disk: Path, base: Base, roomy: dict[str, object], request: pytest.FixtureRequest
) -> None:
    blueprint = disk.parent / "totals.yaml"
    blueprint.write_text(BLUEPRINT)
    outputs = roomy["run"]["outputs"]  # type: ignore[index]
    need = sum(f.stat().st_size for f in base.old + base.new)  # what the run writes, roughly
    levels = trial_levels(need)
    if not request.config.getoption("--runslow"):
        levels = [levels[0], levels[6]]  # a run costs seconds: nothing left, and plenty
    outcomes = []
    for amount in levels:
        store = disk / "store"
        shutil.copytree(base.store, store)
        ok_json("snapshot", "freeze", "events", *base.new, store=store)
        written = count_files(store, "objects") + count_files(store, "cache")
        ballast = leave_free(disk, amount)

        result = cli("run", str(blueprint), "--json", store=store)
        if result.code == 0:
            outcomes.append("ok")
            assert result.json()["outputs"] == outputs
        else:
            # where the disk filled: before the run stored anything, or after some results
            # (the threads write in no fixed order, so any new object or entry counts)
            later = count_files(store, "objects") + count_files(store, "cache") > written
            outcomes.append("full-later" if later else "full")
            line = assert_one_error_line(result, 1, FULL)
            print(line)
            assert "Traceback" not in line
            assert not (store / "refs" / "totals_by_user").exists() or ref_log(
                store, "totals_by_user"
            ), "an output ref folder without a version"
        assert tmp_files(store) == [], "a temporary file was left behind"
        verify = cli("snapshot", "verify", "--json", store=store)
        assert verify.code == 0 and verify.json()["ok"] is True, str(verify)

        ballast.unlink()
        again = ok_json("run", str(blueprint), store=store)
        assert again["outputs"] == outputs
        assert cli("snapshot", "verify", store=store).code == 0
        shutil.rmtree(store)
    print("run outcomes by free space:", dict(zip(levels, outcomes, strict=True)))
    assert {"full", "full-later"} <= set(outcomes), outcomes
