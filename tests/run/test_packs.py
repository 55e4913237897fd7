"""Batches and packs (issue 17): many small slices run as one task, and their partials are
stored as one object with one index. Nothing a user sees may depend on that: answers, what a
rerun computes, what ``cache ls`` lists and ``evict`` removes, what gc keeps and verify checks.

Expected answers come from plain pandas on the same rows; pack indexes are read here as JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from opskit import cli

import chanbatch as cb
from chanbatch.cli import main as cli_main

SLICES = 40

BLUEPRINT = """\
name: packed
inputs:
  t: t
stages:
  kept:
    from: t
    filter: "x > 0.2"
  scaled:
    from: kept
    derive: {z: "x * 3 + n"}
  per_group:
    from: scaled
    group_by: [g]
    aggregate: {rows: count(), total: sum(z), top: max(n), avg: mean(x)}
outputs:
  per_group: packed_out
"""


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(17)
    rows = SLICES * 50
    return pd.DataFrame(
        {
            "day": np.repeat(np.arange(SLICES, dtype="int64"), 50),
            "g": rng.choice(np.array(["a", "b", "c", "d"], dtype=object), rows),
            "x": rng.random(rows).round(3),
            "n": rng.integers(0, 1000, rows),
        }
    )


def expected(frame: pd.DataFrame) -> pd.DataFrame:
    kept = frame[frame.x > 0.2]
    kept = kept.assign(z=kept.x * 3 + kept.n)
    out = kept.groupby("g").agg(
        rows=("x", "size"), total=("z", "sum"), top=("n", "max"), avg=("x", "mean")
    )
    return out.reset_index().sort_values("g").reset_index(drop=True)


def answer(result: cb.run.runner.RunResult) -> pd.DataFrame:
    got = result.outputs["per_group"].compute().sort_values("g").reset_index(drop=True)
    return got[["g", "rows", "total", "top", "avg"]]


def check(got: pd.DataFrame, frame: pd.DataFrame) -> None:
    want = expected(frame)
    assert got["g"].tolist() == want["g"].tolist()
    assert got["rows"].tolist() == want["rows"].tolist()
    assert got["top"].tolist() == want["top"].tolist()
    np.testing.assert_allclose(got["total"], want["total"], rtol=1e-12)
    np.testing.assert_allclose(got["avg"], want["avg"], rtol=1e-12)


def packs(path: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((path / "cache" / "packs").glob("*.json"))]


def partial_packs(path: Path) -> list[dict]:
    return [doc for doc in packs(path) if doc["kind"] == "partial"]


def computed(path: Path, result: cb.run.runner.RunResult, kind: str = "partial") -> int:
    """How many tasks of ``kind`` of stage per_group the run computed, from its record."""
    record = json.loads((path / "runs" / f"{result.run_id}.json").read_text())
    return sum(
        1
        for t in record["tasks"]
        if t["stage"] == "per_group" and t["kind"] == kind and t.get("outcome") == "computed"
    )


@pytest.fixture
def store(tmp_path: Path, frame: pd.DataFrame) -> cb.Store:
    store = cb.Store(tmp_path / "store")
    store.freeze("t", frame, slice_by="day")
    return store


def test_a_cold_run_packs_its_partials_and_answers_as_pandas(
    store: cb.Store, frame: pd.DataFrame, tmp_path: Path
) -> None:
    result = cb.Blueprint.from_yaml(BLUEPRINT).run(store, scheduler="threads", workers=2)
    check(answer(result), frame)
    indexes = packs(tmp_path / "store")
    members = [m for doc in indexes if doc["kind"] == "partial" for m in doc["members"]]
    # every slice's partial is in a pack, once, with its own rows in the pack's object
    assert len(members) == SLICES
    assert len({m[0] for m in members}) == SLICES
    # and the combines below each batch's slices in another, beside those partials
    record = json.loads((tmp_path / "store" / "runs" / f"{result.run_id}.json").read_text())
    combines = {t["key"] for t in record["tasks"] if t["kind"] == "combine"}
    packed = {m[0] for doc in indexes if doc["kind"] == "combine" for m in doc["members"]}
    assert packed and packed <= combines
    members += [m for doc in indexes if doc["kind"] == "combine" for m in doc["members"]]
    for doc in indexes:
        oid = doc["object"]
        rows = pd.read_parquet(tmp_path / "store" / "objects" / oid[:2] / oid[2:])
        assert sum(m[2] for m in doc["members"]) == len(rows)
        assert doc["roots"]["objects"] == [oid]
        assert sorted(doc["roots"]["answers"]) == sorted(m[0] for m in doc["members"])
    # no entry file of its own for a packed partial
    own = {p.stem for p in (tmp_path / "store" / "cache").glob("*.json")}
    assert not own & {m[0] for m in members}


def test_batched_and_one_by_one_runs_give_the_same_output_id(
    tmp_path: Path, frame: pd.DataFrame
) -> None:
    """A run on one slice at a time (each slice its own dataset version, run after each) ends
    with the same snapshot as one cold run over all of them: keys and contents do not depend
    on which partials were computed together."""
    cold = cb.Store(tmp_path / "cold")
    cold.freeze("t", frame, slice_by="day")
    bp = cb.Blueprint.from_yaml(BLUEPRINT)
    want = bp.run(cold, scheduler="sync")
    grown = cb.Store(tmp_path / "grown")
    for day in range(0, SLICES, 7):
        grown.freeze("t", frame[(frame.day >= day) & (frame.day < day + 7)], slice_by="day")
        last = bp.run(grown, scheduler="threads", workers=2)
    assert last.snapshots["per_group"]["snapshot"] == want.snapshots["per_group"]["snapshot"]
    check(answer(last), frame)


def test_evicting_one_packed_partial_recomputes_only_it(
    store: cb.Store, frame: pd.DataFrame, tmp_path: Path
) -> None:
    bp = cb.Blueprint.from_yaml(BLUEPRINT)
    first = bp.run(store, scheduler="sync")
    victim = partial_packs(tmp_path / "store")[0]["members"][3][0]
    assert cli_main_exit(["cache", "evict", victim[:16], "--store", str(store.url)]) == 0
    remaining = [m[0] for doc in partial_packs(tmp_path / "store") for m in doc["members"]]
    assert victim not in remaining and len(remaining) == SLICES - 1
    # and everything above the partials, so that the run needs them again
    store.evict([e.key for e in store.cache_entries(stage="per_group") if e.kind != "partial"])
    again = bp.run(store, scheduler="sync")
    assert computed(tmp_path / "store", again) == 1
    # the recomputed partial, stored alone, has the content id it had in its pack: the
    # combines above it have the keys they had (keys hash their children's ids)
    assert keys(tmp_path / "store", again, "combine") == keys(tmp_path / "store", first, "combine")
    assert again.snapshots == first.snapshots
    check(answer(again), frame)


def keys(path: Path, result: cb.run.runner.RunResult, kind: str) -> set[str]:
    record = json.loads((path / "runs" / f"{result.run_id}.json").read_text())
    return {t["key"] for t in record["tasks"] if t["stage"] == "per_group" and t["kind"] == kind}


def test_cache_ls_and_du_count_packed_partials_once(store: cb.Store, tmp_path: Path) -> None:
    bp = cb.Blueprint.from_yaml(BLUEPRINT)
    bp.run(store, scheduler="sync")
    entries = store.cache_entries(stage="per_group")
    partials = [e for e in entries if e.kind == "partial"]
    assert len(partials) == SLICES
    usage = store.cache_usage()
    on_disk = 0
    seen = set()
    for entry in entries:
        if entry.object not in seen:
            seen.add(entry.object)
            on_disk += os.path.getsize(
                tmp_path / "store" / "objects" / entry.object[:2] / entry.object[2:]
            )
    # the shares of a pack's members add up to its size (less at most a byte each, rounded
    # down), never to a multiple of it; the total counts every object once
    for total in (usage["stages"]["per_group"]["bytes"], usage["bytes"]):
        assert on_disk - SLICES <= total <= on_disk


def test_gc_keeps_a_pack_while_a_member_is_live_and_verify_passes(
    store: cb.Store, frame: pd.DataFrame, tmp_path: Path
) -> None:
    bp = cb.Blueprint.from_yaml(BLUEPRINT)
    first = bp.run(store, scheduler="sync")
    assert cli_main_exit(["gc", "--store", str(store.url), "--grace", "0s"]) == 0
    for doc in packs(tmp_path / "store"):
        assert (tmp_path / "store" / "objects" / doc["object"][:2] / doc["object"][2:]).exists()
    assert cli_main_exit(["snapshot", "verify", "--store", str(store.url)]) == 0
    again = bp.run(store, scheduler="sync")
    assert again.stats["computed"] == 0
    assert again.snapshots == first.snapshots


def test_a_corrupt_pack_is_recomputed(store: cb.Store, frame: pd.DataFrame, tmp_path: Path) -> None:
    bp = cb.Blueprint.from_yaml(BLUEPRINT)
    first = bp.run(store, scheduler="sync")
    doc = partial_packs(tmp_path / "store")[0]
    path = tmp_path / "store" / "objects" / doc["object"][:2] / doc["object"][2:]
    path.chmod(0o644)
    path.write_bytes(b"not parquet")
    # everything above the partials is evicted, so that the plan needs the partials again
    above = [e.key for e in store.cache_entries(stage="per_group") if e.kind != "partial"]
    store.evict(above)
    again = bp.run(store, scheduler="sync")
    assert computed(tmp_path / "store", again) == len(doc["members"])
    assert again.snapshots == first.snapshots
    check(answer(again), frame)


def cli_main_exit(args: list[str]) -> int:
    try:
        cli_main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_a_damaged_pack_is_traced_to_its_stage_and_healed_as_verify_says(
    store: cb.Store, frame: pd.DataFrame, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    bp = cb.Blueprint.from_yaml(BLUEPRINT)
    first = bp.run(store, scheduler="sync")
    (doc,) = [d for d in packs(root) if len(d["members"]) > 8][:1]
    path = root / "objects" / doc["object"][:2] / doc["object"][2:]
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-10])
    found = cli("snapshot", "verify", "--store", root)
    assert found.code == 1, str(found)
    assert "Traceback" not in found.stderr
    # every member points at the damaged object: one command for all of them, not 40 keys
    assert "chanbatch cache evict --stage per_group" in found.stderr, found.stderr
    store.evict(stage="per_group")
    again = bp.run(store, scheduler="sync")
    assert computed(root, again) == SLICES
    assert again.snapshots == first.snapshots
    check(answer(again), frame)
    # the rerun wrote the same pack again, repairing its object
    assert store.verify().ok


def test_a_pack_read_for_many_entries_is_parsed_once(tmp_path: Path, monkeypatch) -> None:
    """Reading every entry of one pack parses its object once per process (a combine reads
    its children, which share packs); each entry still gets exactly its own rows."""
    import pyarrow as pa

    from chanbatch.cache import index
    from chanbatch.cache.packs import write_pack
    from chanbatch.snapshot.storage import Storage

    storage = Storage(str(tmp_path / "store"))
    table = pa.table({"k": list(range(10)), "v": [float(i) / 3 for i in range(10)]})
    entries = write_pack(
        storage, table, [(f"{i:064x}", 2) for i in range(5)], kind="partial", stage="s"
    )
    parsed = []
    real = index.parse_parquet
    monkeypatch.setattr(index, "parse_parquet", lambda data: parsed.append(1) or real(data))
    monkeypatch.setattr(index, "_PACKS", index._Objects(1 << 20, 1 << 18, lambda t: t.nbytes))
    for i, entry in enumerate(entries):
        got = index.cached_table(storage, entry)
        assert got.to_pydict() == table.slice(2 * i, 2).to_pydict()
    assert len(parsed) == 1

    small = index._Objects(4 * table.nbytes, table.nbytes, lambda t: t.nbytes)  # room for four
    for i in range(10):
        small.put("url", f"{i}", table)
    assert small.get("url", "9") is not None and small.get("url", "0") is None
