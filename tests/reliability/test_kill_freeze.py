"""Issue 7, fault 1: SIGKILL ``chanbatch snapshot freeze`` anywhere in its life (DESIGN.md
section 2: a crash at any point leaves the store valid, with at most unreferenced files).

Each trial copies a starting store whose dataset has one version, and freezes ten Parquet files
into it (about 15 MB: one slice unchanged, three replaced, six new) with the real console
script, which it kills after a delay (see ``reliakit``). Where the kill landed is read from the
store's files. After each kill:

- ``chanbatch snapshot verify`` passes, and the ref log holds the starting version, byte for
  byte, and at most one more: the very snapshot an undisturbed freeze commits;
- every file of the starting store is unchanged, and its head reads back as pandas reads the
  source files;
- the same freeze, run again, succeeds with the snapshot id and slice ids of an undisturbed
  freeze of the same files into a copy of the starting store; and after ``chanbatch gc`` the
  store holds exactly the objects and manifests of that undisturbed store.
"""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from clikit import manifest_file, ok_json
from reliakit import (
    EXITED,
    Landing,
    Phases,
    Shot,
    argv,
    assert_campaign,
    contents,
    fresh_copy,
    kill,
    listing,
    timed_together,
)
from storekit import assert_same_rows

import chanbatch as cb

DATASET = "events"
ROWS = 60_000  # per slice: about 1.5 MB of Parquet
BASE_KEYS = [f"k{i:02d}" for i in range(6)]
UNCHANGED = ["k02"]  # frozen again with the same bytes
REPLACED = ["k03", "k04", "k05"]
NEW = [f"k{i:02d}" for i in range(6, 12)]
SEED = 7_2013

#: Where a kill landed, from the earliest: nothing new in the store, temporary files only, new
#: objects, new slice manifests, the new snapshot's manifest, the new ref.
#: A campaign must hit each of: before any object; objects written but no ref yet; the ref
#: written (killed on the way out).
PHASES = Phases(
    order=("clean", "tmp", "objects", "slices", "snapshot", "ref"),
    required=(("clean", "tmp"), ("objects", "slices", "snapshot"), ("ref",)),
)
JOBS = 2
#: What gc sweeps after a kill, and must leave as an undisturbed freeze does.
SWEPT = ("objects", "manifests")


def source(seed: int) -> pd.DataFrame:
    """One slice's rows: ints, floats, strings and UTC timestamps."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": np.arange(ROWS, dtype="int64") + seed * 1_000_000,
            "value": rng.normal(size=ROWS),
            "label": pd.Series([f"s{seed}-{i % 997}" for i in range(ROWS)], dtype="str"),
            "when": pd.to_datetime(
                1_700_000_000_000_000 + rng.integers(0, 10**12, ROWS), unit="us", utc=True
            ),
        }
    )


def write_sources(folder: Path, seeds: dict[str, int]) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for key, seed in seeds.items():
        path = folder / f"{key}.parquet"
        source(seed).to_parquet(path, index=False)
        paths.append(path)
    return paths


def read_sources(paths: list[Path]) -> pd.DataFrame:
    """What a snapshot of these stem-keyed files holds, read by pandas: the files in key order."""
    by_key = {p.stem: p for p in paths}
    return pd.concat([pd.read_parquet(by_key[k]) for k in sorted(by_key)], ignore_index=True)


def freeze_args(store: Path, files: list[Path]) -> list[str]:
    return argv("snapshot", "freeze", DATASET, *files, "--store", store, "--json")


def ids(document: dict[str, Any]) -> tuple[str, list[tuple[str, str, int, int]]]:
    """The snapshot id and each slice's (key, id, rows, bytes) of a ``freeze --json`` document
    (``new`` is left out: a retry after a committed kill finds every slice there already)."""
    return document["snapshot"], [
        (s["key"], s["id"], s["rows"], s["bytes"]) for s in document["slices"]
    ]


@dataclass(frozen=True)
class Setup:
    start: Path  # the starting store: one version of DATASET
    base_files: dict[str, bytes]  # all of its files
    previous: str  # its head snapshot
    previous_rows: pd.DataFrame  # what that head holds, read by pandas from the source files
    files: list[Path]  # what the freeze under test freezes
    expected: dict[str, Any]  # the undisturbed freeze's --json document
    reference: dict[str, bytes]  # the undisturbed store's objects and manifests
    lives: list[float]  # CPU seconds of undisturbed freezes
    work: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    root = tmp_path_factory.mktemp("kill_freeze")
    base_paths = write_sources(root / "base", {k: i for i, k in enumerate(BASE_KEYS)})
    seeds = {k: BASE_KEYS.index(k) for k in UNCHANGED}
    seeds.update({k: 100 + i for i, k in enumerate(REPLACED + NEW)})
    files = write_sources(root / "new", dict(sorted(seeds.items())))
    start = root / "start"
    first = ok_json("snapshot", "freeze", DATASET, *base_paths, store=start)

    # Two undisturbed freezes at once, under the load of the kills: their CPU time is the span
    # the kills are spread over, and they must agree on every id.
    copies = [fresh_copy(start, root / f"undisturbed{i}") for i in range(JOBS)]
    runs = timed_together([freeze_args(c, files) for c in copies])
    for _seconds, result in runs:
        assert result.code == 0 and result.stderr == "", str(result)
    documents = [r.json() for _s, r in runs]
    assert all(ids(d) == ids(documents[0]) for d in documents)
    expected = documents[0]
    assert {s["key"]: (s["new"], s["replaced"]) for s in expected["slices"]} == {
        **dict.fromkeys(UNCHANGED, (False, False)),
        **dict.fromkeys(REPLACED, (False, True)),
        **dict.fromkeys(NEW, (True, False)),
    }

    reference = copies[0]
    verify = ok_json("snapshot", "verify", store=reference)
    assert verify["ok"] is True, verify
    # the undisturbed head holds the rows pandas reads from the files
    head = cb.Store(reference).read_pandas(DATASET)
    kept = [p for p in base_paths if p.stem not in seeds]
    assert_same_rows(head, read_sources(kept + files))
    swept = ok_json("gc", "--grace", "0s", store=reference)  # nothing to sweep: no crash here
    assert not any(swept["removed"].values()), swept

    return Setup(
        start=start,
        base_files={rel: (start / rel).read_bytes() for rel in listing(start)},
        previous=first["snapshot"],
        previous_rows=read_sources(base_paths),
        files=files,
        expected=expected,
        reference=contents(reference, *SWEPT),
        lives=[seconds for seconds, _r in runs],
        work=root,
    )


def landed(store: Path, setup: Setup) -> str:
    """The phase a kill landed in, from the files it left (the latest one it reached)."""
    new = listing(store) - set(setup.base_files)
    snapshot = manifest_file(store, setup.expected["snapshot"]).relative_to(store).as_posix()
    if any(rel.startswith("refs/") for rel in new):
        return "ref"
    if snapshot in new:
        return "snapshot"
    if any(rel.startswith("manifests/") for rel in new):
        return "slices"
    if any(rel.startswith("objects/") for rel in new):
        return "objects"
    if new:
        assert all(rel.startswith("tmp/") for rel in new), sorted(new)
        return "tmp"
    return "clean"


def assert_intact(store: Path, setup: Setup, phase: str) -> None:
    """The store after a kill: valid, its starting files unchanged, at most the expected new
    version, and the previous head reads back as the source files."""
    verify = ok_json("snapshot", "verify", store=store)
    assert verify["ok"] is True and not verify["corrupt"] and not verify["missing"], verify
    for rel, data in setup.base_files.items():
        assert (store / rel).read_bytes() == data, f"{rel} changed"
    refs = sorted(rel for rel in listing(store) if rel.startswith("refs/"))
    assert len(refs) == (2 if phase in ("ref", EXITED) else 1), refs
    if len(refs) == 2:
        committed = json.loads((store / refs[1]).read_bytes())
        assert committed["snapshot"] == setup.expected["snapshot"], committed
        assert committed["parent"] == setup.previous, committed
    previous = cb.Store(store).read_pandas(f"{DATASET}@{setup.previous}")
    assert_same_rows(previous, setup.previous_rows)


def kill_once(setup: Setup, index: int, shot: Shot) -> Landing:
    store = fresh_copy(setup.start, setup.work / f"kill{index}")
    at, finished = kill(
        freeze_args(store, setup.files), shot, phases=PHASES, landed=lambda: landed(store, setup)
    )
    if finished is not None:
        assert finished.code == 0, str(finished)
    phase = EXITED if finished is not None else landed(store, setup)
    assert_intact(store, setup, phase)

    where = f"kill at {at:.2f} CPU s ({phase})"
    retry = ok_json("snapshot", "freeze", DATASET, *setup.files, store=store)
    assert ids(retry) == ids(setup.expected), where
    refs = [json.loads(data) for data in contents(store, "refs").values()]
    assert sorted(r["snapshot"] for r in refs) == sorted([setup.previous, retry["snapshot"]]), where
    # what the kill left is debris that gc sweeps, after which the store is the undisturbed one
    ok_json("gc", "--grace", "0s", store=store)
    assert contents(store, *SWEPT) == setup.reference, where
    assert not [rel for rel in listing(store) if rel.startswith("tmp/")], where
    shutil.rmtree(store)  # keep the work folder small
    return Landing(index=index, at=at, phase=phase)


@pytest.mark.parametrize("kills", [12, pytest.param(50, marks=pytest.mark.slow)])
def test_sigkill_during_freeze(setup: Setup, kills: int) -> None:
    trial = functools.partial(kill_once, setup)
    assert_campaign(
        "freeze", trial, kills=kills, lives=setup.lives, phases=PHASES, seed=SEED, jobs=JOBS
    )
