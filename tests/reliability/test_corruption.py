"""Corruption (issue 7, fault 6): damaged files are found, named, and never read as data.

One pristine store is built once: a dataset frozen in two versions, and a blueprint run whose
per-slice partials, combines, memo and run record are in the store. Each case damages one file
of a copy of it, in one of seven ways (a flipped byte at the start, the middle, the end or a
random place; truncated to half; emptied; replaced by another file of the same kind), and then
checks, against values computed here with pandas:

- ``verify`` reports exactly that file, by its path, and nothing else;
- objects, manifests and ref-log entries: reading through the damaged file raises
  ``IntegrityError``, while reading around it still gives the right rows;
- cache entries and cached results: the run gives the same output snapshot as the undamaged
  store; a damaged result it needs is a miss, recomputed and stored again, after which the
  store verifies; a memo is only a hint, so the run reuses everything without it.

A last case damages one file of every kind at once and checks that ``chanbatch snapshot verify``
names each of them, exits 1, and prints no traceback.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from clikit import run as cli
from storekit import assert_same_rows

import chanbatch as cb
from chanbatch.errors import ChanbatchError, IntegrityError

BLUEPRINT = """
name: spend
inputs:
  events: events
stages:
  big:
    from: events
    filter: "amount > 10"
  priced:
    from: big
    derive: {total: "amount * qty"}
  by_user:
    from: priced
    group_by: [user]
    aggregate:
      n: count()
      spend: sum(total)
      avg: mean(amount)
outputs:
  by_user: spend_by_user
"""

MODES = ("flip-first", "flip-middle", "flip-last", "flip-random", "truncate", "empty", "swap")
DAMAGED_DAY = 3  # a slice in both versions of ``events``; day 1 stays whole
INTACT_DAY = 1


def events() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 4000
    return pd.DataFrame(
        {
            "day": np.repeat(np.arange(1, 9), n // 8),
            "user": rng.choice(list("abcdefg"), n),
            "amount": rng.gamma(2.0, 10.0, n).round(2),
            "qty": rng.integers(1, 5, n),
        }
    )


def spend(df: pd.DataFrame) -> pd.DataFrame:
    """The blueprint's output, computed with pandas."""
    big = df[df["amount"] > 10].assign(total=lambda d: d["amount"] * d["qty"])
    out = big.groupby("user", as_index=False).agg(
        n=("amount", "size"), spend=("total", "sum"), avg=("amount", "mean")
    )
    return out.sort_values("user", ignore_index=True)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_bytes())


def object_file(root: Path, oid: str) -> Path:
    return root / "objects" / oid[:2] / oid[2:]


def manifest_file(root: Path, mid: str) -> Path:
    return root / "manifests" / mid[:2] / f"{mid[2:]}.json"


@dataclass(frozen=True)
class Pristine:
    root: Path
    data: pd.DataFrame
    v1: str  # snapshot ids of the two versions of ``events``
    v2: str
    output: str  # snapshot id of ``spend_by_user``
    targets: dict[str, tuple[Path, Path]]  # kind -> (file to damage, same-kind file to swap in)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    root = tmp_path_factory.mktemp("pristine") / "store"
    data = events()
    store = cb.Store(str(root))
    first = store.freeze("events", data[data["day"] <= 6], slice_by="day")
    # a run before the last two days: their partials go into a pack of their own
    cb.Blueprint.from_yaml(BLUEPRINT).run(store, scheduler="sync")
    second = store.freeze("events", data[data["day"] > 6], slice_by="day")
    result = cb.Blueprint.from_yaml(BLUEPRINT).run(store, scheduler="sync")
    result2 = cb.Blueprint.from_yaml(BLUEPRINT).run(store, scheduler="sync")
    assert result2.stats["computed"] == 0  # another record, for the run-record swap

    head = read_json(manifest_file(root, second.snapshot))
    slices = {s["key"]: s["id"] for s in head["slices"]}
    objects = {
        day: read_json(manifest_file(root, sid))["parts"][0]["object"]
        for day, sid in slices.items()
    }
    # the partials are packed (chanbatch.cache.packs): the first six days in one pack, the
    # last two in another (the combines over them in packs of their own); the damaged one is
    # the pack with the damaged day's partial
    partials = sorted(
        (p for p in (root / "cache" / "packs").glob("*.json") if read_json(p)["kind"] == "partial"),
        key=lambda p: -len(read_json(p)["members"]),
    )
    assert [len(read_json(p)["members"]) for p in partials] == [6, 2]
    partial_objects = [object_file(root, read_json(p)["object"]) for p in partials]
    refs = sorted((root / "refs" / "events").glob("*.json"))
    runs = sorted((root / "runs").glob("*.json"))[-2:]
    (memo,) = [p for p in (root / "memo").glob("*.json") if p.name.count(".") == 1]
    (outcome,) = (root / "memo").glob("*.last.json")  # what the last computing run left
    (chains,) = (root / "memo").glob("*.chains.json")  # its slice chains (top-down planning)
    targets = {
        "object": (object_file(root, objects[DAMAGED_DAY]), object_file(root, objects[5])),
        "slice-manifest": (
            manifest_file(root, slices[DAMAGED_DAY]),
            manifest_file(root, slices[5]),
        ),
        "snapshot-manifest": (
            manifest_file(root, second.snapshot),
            manifest_file(root, first.snapshot),
        ),
        "ref-head": (refs[1], refs[0]),
        "ref-old": (refs[0], refs[1]),
        "cache-entry": (partials[0], partials[1]),
        "result-object": (partial_objects[0], partial_objects[1]),
        "memo": (memo, partials[0]),
        "outcome": (outcome, memo),
        "chain-memo": (chains, memo),
        "run-record": (runs[0], runs[1]),
    }
    # the cases rely on these being different files with different bytes
    for kind, (target, other) in targets.items():
        assert target.read_bytes() != other.read_bytes(), kind
    assert result.snapshots["by_user"]["snapshot"]
    return Pristine(
        root=root,
        data=data,
        v1=first.snapshot,
        v2=second.snapshot,
        output=result.snapshots["by_user"]["snapshot"],
        targets=targets,
    )


def damage(path: Path, mode: str, other: Path, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    if mode.startswith("flip"):
        at = {
            "flip-first": 0,
            "flip-middle": len(data) // 2,
            "flip-last": len(data) - 1,
            "flip-random": rng.randrange(len(data)),
        }[mode]
        data[at] ^= 1 << rng.randrange(8)
    elif mode == "truncate":
        del data[len(data) // 2 :]
    elif mode == "empty":
        data.clear()
    else:
        data[:] = other.read_bytes()
    path.write_bytes(bytes(data))


def copy_store(pristine: Pristine, tmp_path: Path) -> tuple[Path, cb.Store]:
    root = tmp_path / "store"
    shutil.copytree(pristine.root, root)
    return root, cb.Store(str(root))


def rerun(store: cb.Store) -> Any:
    return cb.Blueprint.from_yaml(BLUEPRINT).run(store, scheduler="sync")


def check_reads(kind: str, store: cb.Store, pristine: Pristine) -> None:
    """What reading through, and around, the damaged file gives."""
    data = pristine.data
    if kind in ("object", "slice-manifest"):
        for ref in ("events", f"events@{pristine.v1[:12]}", f"events[{DAMAGED_DAY}]"):
            with pytest.raises(IntegrityError):
                store.read_pandas(ref)
        intact = store.read_pandas(f"events[{INTACT_DAY}]")
        assert_same_rows(intact, data[data["day"] == INTACT_DAY])
    elif kind == "snapshot-manifest":
        with pytest.raises(IntegrityError):
            store.read_pandas("events")
        assert_same_rows(store.read_pandas(f"events@{pristine.v1[:12]}"), data[data["day"] <= 6])
    elif kind == "ref-head":
        with pytest.raises(IntegrityError):
            store.read_pandas("events")
        # a run must not fall back to an older version, or to anything else
        with pytest.raises(IntegrityError):
            rerun(store)
        return
    elif kind == "ref-old":
        with pytest.raises(IntegrityError):
            store.read_pandas(f"events@{pristine.v1[:12]}")
        assert_same_rows(store.read_pandas("events"), data)
    # the damage is in the input: the cached results still give the right output, or the run
    # stops with an integrity error; it never returns other numbers
    try:
        result = rerun(store)
    except ChanbatchError as exc:
        assert isinstance(exc, IntegrityError), exc
    else:
        assert result.snapshots["by_user"]["snapshot"] == pristine.output


CASES = [
    (kind, mode)
    for kind in (
        "object",
        "slice-manifest",
        "snapshot-manifest",
        "ref-head",
        "ref-old",
        "cache-entry",
        "result-object",
        "memo",
        "outcome",
        "chain-memo",
        "run-record",
    )
    for mode in MODES
]


@pytest.mark.parametrize(("kind", "mode"), CASES, ids=[f"{k}-{m}" for k, m in CASES])
def test_damage_is_found_named_and_never_read(
    kind: str, mode: str, pristine: Pristine, tmp_path: Path
) -> None:
    root, store = copy_store(pristine, tmp_path)
    target, other = pristine.targets[kind]
    path = root / target.relative_to(pristine.root)
    damage(path, mode, root / other.relative_to(pristine.root), random.Random(f"{kind}{mode}"))
    rel = path.relative_to(root).as_posix()

    report = store.verify()
    assert not report.ok
    assert [f["path"] for f in report.files()] == [rel], report.document()

    if kind in ("memo", "outcome"):
        # a memo and an outcome are hints: the entries answer; a damaged outcome is no
        # repeat, so the run is planned, and leaves both anew
        result = rerun(store)
        assert result.snapshots["by_user"]["snapshot"] == pristine.output
        assert result.stats["computed"] == 0
        assert store.verify().ok, "the run rewrites its memo and its outcome"
    elif kind == "chain-memo":
        # a hint too: a repeat does not read it; a run that plans finds it unreadable, plans
        # every task (nothing to compute) and leaves it anew
        assert rerun(store).snapshots["by_user"]["snapshot"] == pristine.output
        for outcome in (root / "memo").glob("*.last.json"):
            outcome.unlink()  # the next run plans
        result = rerun(store)
        assert result.snapshots["by_user"]["snapshot"] == pristine.output
        assert result.stats["computed"] == 0
        assert store.verify().ok, "the planned run rewrites the chain memo"
    elif kind in ("cache-entry", "result-object"):
        # the damaged partial is not needed while the combines above it are cached ...
        result = rerun(store)
        assert result.snapshots["by_user"]["snapshot"] == pristine.output
        # ... and once they are gone it is a miss: recomputed and stored again, not read
        # (entry files, and the packs of the combines that batches run below their slices)
        for entry in [*(root / "cache").glob("*.json"), *(root / "cache" / "packs").glob("*")]:
            if entry != path and read_json(entry)["kind"] != "partial":
                entry.unlink()
        result = rerun(store)
        assert result.snapshots["by_user"]["snapshot"] == pristine.output
        out = store.read_pandas("spend_by_user").sort_values("user", ignore_index=True)
        pd.testing.assert_frame_equal(out, spend(pristine.data), check_dtype=False)
        if kind == "result-object":
            assert path.read_bytes() == target.read_bytes(), "the object is repaired"
        else:
            again, before = read_json(path), read_json(target)
            assert again["object"] == before["object"] and again["members"] == before["members"]
        assert store.verify().ok
    elif kind == "run-record":
        result = rerun(store)
        assert result.snapshots["by_user"]["snapshot"] == pristine.output
    else:
        check_reads(kind, store, pristine)


def test_verify_names_every_damaged_file_at_once(pristine: Pristine, tmp_path: Path) -> None:
    root, _store = copy_store(pristine, tmp_path)
    rng = random.Random(6)
    damaged = []
    for kind, (target, _other) in pristine.targets.items():
        if kind == "slice-manifest":
            continue  # its object's damage would hide behind it; each is covered alone above
        path = root / target.relative_to(pristine.root)
        damage(path, "flip-random", path, rng)
        damaged.append(path.relative_to(root).as_posix())

    result = cli("snapshot", "verify", "--json", store=root)
    assert result.code == 1, str(result)
    doc = result.json()
    assert doc["ok"] is False
    assert sorted(f["path"] for f in doc["files"]) == sorted(damaged)

    human = cli("snapshot", "verify", store=root)
    assert human.code == 1
    assert "Traceback" not in human.stderr
    for rel in damaged:
        assert rel in human.stderr, (rel, human.stderr)
