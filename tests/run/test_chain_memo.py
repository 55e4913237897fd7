"""Planning top-down through slice chains (chanbatch/compile/chains.py, issue 17).

A run leaves a chain memo; the next run plans none of the tasks of the slices it knows, except
below the combines it must compute. Whatever the memo says, and whatever happened to the
cache, a run must give exactly the output a cold run gives on a fresh store (same snapshot
id), whose values are checked against pandas on the raw rows, and compute no more than a run
planned task by task.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import chanbatch as cb

BLUEPRINT = """
name: chains
inputs:
  events: events
  again: events
stages:
  kept:
    from: events
    filter: v > 60
  scaled:
    from: kept
    derive:
      w: v * 2 + 1
  totals:
    from: scaled
    group_by: [kind]
    aggregate:
      n: count()
      total: sum(w)
      low: min(v)
      high: max(v)
  kept_again:
    from: again
    filter: v > 60
  scaled_again:
    from: kept_again
    derive:
      w: v * 2 + 1
  ranked:
    from: scaled_again
    sort: [-w, day, kind]
  top:
    from: ranked
    limit: 5
outputs:
  totals: chain_totals
  top: chain_top
"""
DAYS = list(range(1, 49))
ROWS = 8


def events(days: list[int] = DAYS, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = ROWS * len(days)
    return pd.DataFrame(
        {
            "day": np.repeat(days, ROWS),
            "kind": rng.choice(["a", "b", "c", "d"], rows),
            "v": rng.integers(0, 200, rows).astype("int64"),
        }
    )


def check_values(store: cb.Store, frame: pd.DataFrame) -> None:
    """The outputs against pandas on the raw rows."""
    kept = frame[frame["v"] > 60].assign(w=lambda f: f["v"] * 2 + 1)
    grouped = kept.groupby("kind")
    want = pd.DataFrame(
        {
            "n": grouped.size(),
            "total": grouped["w"].sum(),
            "low": grouped["v"].min(),
            "high": grouped["v"].max(),
        }
    ).reset_index()
    got = store.read("chain_totals").compute().sort_values("kind").reset_index(drop=True)
    assert got["kind"].tolist() == want["kind"].tolist()
    for column in ("n", "total", "low", "high"):
        assert got[column].tolist() == want[column].tolist(), column
    top = kept.sort_values(["w", "day", "kind"], ascending=[False, True, True]).head(5)
    got_top = store.read("chain_top").compute()
    assert got_top["w"].tolist() == top["w"].tolist()
    assert got_top["day"].tolist() == top["day"].tolist()


def cold_snapshots(tmp_path: Path, frame: pd.DataFrame) -> dict[str, str]:
    store = cb.Store(str(tmp_path / f"cold-{len(list(tmp_path.iterdir()))}"))
    store.freeze("events", frame, slice_by="day")
    result = cb.Blueprint.from_yaml(BLUEPRINT).run(store, scheduler="sync")
    return {stage: info["snapshot"] for stage, info in result.snapshots.items()}


def snapshots(result: object) -> dict[str, str]:
    return {stage: info["snapshot"] for stage, info in result.snapshots.items()}  # type: ignore[attr-defined]


def chain_memos(root: Path) -> list[Path]:
    return sorted((root / "memo").glob("*.chains.json"))


def recorded_tasks(root: Path, run_id: str) -> list[dict]:
    return json.loads((root / "runs" / f"{run_id}.json").read_bytes())["tasks"]


def computed(result: object) -> dict[str, int]:
    stages = result.stats["stages"]  # type: ignore[attr-defined]
    return {stage: doc["computed"] for stage, doc in stages.items()}


def planned_task_by_task(tmp_path: Path, store_root: Path, name: str) -> object:
    """The same run on a copy of the store without its chain memo (every task planned)."""
    copy = tmp_path / name
    shutil.copytree(store_root, copy)
    for memo in chain_memos(copy):
        memo.unlink()
    return cb.Blueprint.from_yaml(BLUEPRINT).run(cb.Store(str(copy)), scheduler="sync")


CHANGES = {
    "append": (DAYS[:-1], [DAYS[-1]]),
    "insert first": (DAYS[1:], [DAYS[0]]),
    "insert middle": ([d for d in DAYS if d != 25], [25]),
    "replace middle": (DAYS, [20]),
    "append three": (DAYS[:-3], DAYS[-3:]),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_run_planned_top_down_equals_a_cold_run(tmp_path: Path, change: str) -> None:
    before, added = CHANGES[change]
    frame = events()
    root = tmp_path / "warm"
    store = cb.Store(str(root))
    store.freeze("events", frame[frame["day"].isin(before)], slice_by="day")
    blueprint = cb.Blueprint.from_yaml(BLUEPRINT)
    blueprint.run(store, scheduler="sync")
    (memo,) = chain_memos(root)  # a computing run leaves a chain memo, of both chains
    assert len(json.loads(memo.read_bytes())["chains"]) == 2

    if change == "replace middle":  # the same day, other rows
        piece = events([20], seed=99)
        frame = pd.concat([frame[frame["day"] != 20], piece], ignore_index=True)
    else:
        piece = frame[frame["day"].isin(added)]
    store.freeze("events", piece, slice_by="day")
    full = planned_task_by_task(tmp_path, root, "full")
    result = blueprint.run(store, scheduler="sync")

    assert snapshots(result) == cold_snapshots(tmp_path, frame)
    check_values(store, frame)
    # no more work than planning every task, and the same tally of reused tasks
    assert computed(result) == computed(full)
    assert result.stats["reused"] == full.stats["reused"]  # type: ignore[attr-defined]
    # the slices the memo knew were not laid out
    laid_out = len(recorded_tasks(root, result.run_id))
    assert laid_out < len(recorded_tasks(tmp_path / "full", full.run_id))  # type: ignore[attr-defined]


def test_a_new_slice_lays_out_its_path_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 400 slices, a new slice's run lays out its own tasks, the combines on its path and
    their children: a few dozen tasks, where a plan task by task has about 1,250; and it
    reads only the pack indexes holding the results it reuses, never every one of them."""
    text = BLUEPRINT.split("  kept_again:")[0] + "outputs:\n  totals: chain_totals\n"
    blueprint = cb.Blueprint.from_yaml(text.replace("  again: events\n", ""))
    days = list(range(1, 401))
    frame = events(days)
    root = tmp_path / "warm"
    store = cb.Store(str(root))
    store.freeze("events", frame[frame["day"] < 400], slice_by="day")
    first = blueprint.run(store, scheduler="sync")
    store.freeze("events", frame[frame["day"] == 400], slice_by="day")
    assert len(list((root / "cache" / "packs").glob("*.json"))) >= 2

    def every_pack(*args: object) -> None:
        raise AssertionError("the run read every pack index")

    monkeypatch.setattr("chanbatch.cache.view.read_packs", every_pack)
    result = blueprint.run(store, scheduler="sync")
    laid_out = len(recorded_tasks(root, result.run_id))
    assert len(recorded_tasks(root, first.run_id)) > 1_200
    assert laid_out < 150, laid_out
    assert result.stats["stages"]["totals"]["reused"] > 400  # type: ignore[attr-defined]
    got = store.read("chain_totals").compute().sort_values("kind")
    kept = frame[frame["v"] > 60]
    assert got["n"].tolist() == kept.groupby("kind").size().sort_index().tolist()


def test_many_appends_in_a_row_stay_exact(tmp_path: Path) -> None:
    frame = events()
    root = tmp_path / "warm"
    store = cb.Store(str(root))
    blueprint = cb.Blueprint.from_yaml(BLUEPRINT)
    start = 44
    store.freeze("events", frame[frame["day"] <= start], slice_by="day")
    blueprint.run(store, scheduler="sync")
    for day in DAYS[start:]:
        store.freeze("events", frame[frame["day"] == day], slice_by="day")
        blueprint.run(store, scheduler="sync")
    assert snapshots(blueprint.run(store, scheduler="sync")) == cold_snapshots(tmp_path, frame)
    check_values(store, frame)


def _warm_and_append(tmp_path: Path) -> tuple[Path, cb.Store, pd.DataFrame]:
    frame = events()
    root = tmp_path / "warm"
    store = cb.Store(str(root))
    store.freeze("events", frame[frame["day"] < DAYS[-1]], slice_by="day")
    cb.Blueprint.from_yaml(BLUEPRINT).run(store, scheduler="sync")
    store.freeze("events", frame[frame["day"] == DAYS[-1]], slice_by="day")
    return root, store, frame


def test_a_damaged_chain_memo_is_ignored(tmp_path: Path) -> None:
    root, store, frame = _warm_and_append(tmp_path)
    for memo in chain_memos(root):
        memo.write_bytes(memo.read_bytes()[:-40] + b"garbage")
    result = cb.Blueprint.from_yaml(BLUEPRINT).run(store, scheduler="sync")
    assert snapshots(result) == cold_snapshots(tmp_path, frame)
    check_values(store, frame)


@pytest.mark.parametrize("field", [0, 1])
def test_a_chain_memo_that_lies_is_caught(tmp_path: Path, field: int) -> None:
    """A memo whose partial keys (0) or contents (1) are wrong, but well sealed: the plan
    finds out where it lays a slice out, and plans again without it."""
    from chanbatch.hashing import seal, unseal

    root, store, frame = _warm_and_append(tmp_path)
    (memo,) = chain_memos(root)
    doc = unseal(memo.read_bytes())
    column = ("partials", "contents")[field]  # the memo is stored by columns
    for columns in doc["chains"].values():
        columns[column] = ["f" * 64] * len(columns[column])
    memo.write_bytes(seal(doc))
    result = cb.Blueprint.from_yaml(BLUEPRINT).run(store, scheduler="sync")
    assert snapshots(result) == cold_snapshots(tmp_path, frame)
    check_values(store, frame)


def test_an_emptied_cache_is_recomputed_whole(tmp_path: Path) -> None:
    _root, store, frame = _warm_and_append(tmp_path)
    evicted = store.evict(everything=True)
    assert evicted
    result = cb.Blueprint.from_yaml(BLUEPRINT).run(store, scheduler="sync")
    assert snapshots(result) == cold_snapshots(tmp_path, frame)
    check_values(store, frame)
    # every slice's partial was computed again, although the memo knew them
    assert computed(result)["totals"] >= len(DAYS)


def test_gc_keeps_what_a_run_planned_top_down_reuses(tmp_path: Path) -> None:
    """A run that planned most slices from the memo still roots their cached results: after
    gc, the next new slice recomputes its own path only."""
    root, store, frame = _warm_and_append(tmp_path)
    blueprint = cb.Blueprint.from_yaml(BLUEPRINT)
    blueprint.run(store, scheduler="sync")
    for record in (root / "runs").glob("*.json"):  # only the last run's record is young
        if record != max((root / "runs").glob("*.json")):
            record.unlink()
    store.gc(grace_seconds=0)
    extra = events([DAYS[-1] + 1], seed=5)
    store.freeze("events", extra, slice_by="day")
    frame = pd.concat([frame, extra], ignore_index=True)
    result = blueprint.run(store, scheduler="sync")
    assert computed(result)["totals"] <= 12  # the partial, its path of combines, the finish
    assert snapshots(result) == cold_snapshots(tmp_path, frame)
    check_values(store, frame)


def test_explain_after_a_run_planned_top_down(tmp_path: Path) -> None:
    """The last run did not record the tasks of the slices it planned from its chain memo:
    explain still says that such a slice's tasks are as they were, and a new one's are not."""
    _root, store, _frame = _warm_and_append(tmp_path)
    blueprint = cb.Blueprint.from_yaml(BLUEPRINT)
    blueprint.run(store, scheduler="sync")  # planned top-down: records the new slice's path
    new_day = DAYS[-1] + 1
    store.freeze("events", events([new_day], seed=3), slice_by="day")
    for stage in ("kept", "scaled", "totals"):
        docs = blueprint.explain(store, stage, "3")
        assert docs and all(doc["changed"] == [] for doc in docs), docs
        docs = blueprint.explain(store, stage, str(new_day))
        assert docs and all(doc["changed"] for doc in docs), docs


def test_the_chain_memo_is_stored_by_columns_and_read_back_as_it_was_left(
    tmp_path: Path,
) -> None:
    """The memo a run leaves, read back, is the one its plan made (records of three and more
    members, packs shared by slices); a memo of the earlier layout (an object per slice) is
    still read, so an upgrade plans top-down from its first run."""
    from chanbatch.cache.index import chains_path, read_chains, write_chains
    from chanbatch.hashing import seal
    from chanbatch.snapshot.storage import Storage

    frame = events()
    root = tmp_path / "warm"
    store = cb.Store(str(root))
    store.freeze("events", frame, slice_by="day")
    cb.Blueprint.from_yaml(BLUEPRINT).run(store, scheduler="sync")
    storage = Storage(str(root))
    left = read_chains(storage, "chains")
    assert sorted(len(records) for records in left.values()) == [len(DAYS), len(DAYS)]
    (memo,) = chain_memos(root)
    doc = json.loads(memo.read_bytes())
    for digest, columns in doc["chains"].items():
        # every slice of the input once, in the plan's order, its pack named once
        assert sorted(columns["slices"]) == sorted(left[digest])
        assert len(columns["packs"]) == len(set(columns["packs"])) < len(DAYS)
        assert [left[digest][sid][2] for sid in columns["slices"]] == [
            columns["packs"][i] for i in columns["pack"]
        ]

    # hand-made records, kept checkpoints and an empty pack included, through a round trip
    made = {
        "c1": {"s1": ["k1", "i1", "p1"], "s2": ["k2", "i2", "", "kept2"], "s3": ["k3", "i3", "p1"]},
        "c2": {},
    }
    write_chains(storage, "chains", made)
    assert read_chains(storage, "chains") == made
    earlier = {"blueprint": "chains", "chains": made, "roots": {}}
    (root / chains_path("chains")).write_bytes(seal(earlier))
    assert read_chains(storage, "chains") == made


def chain_delta(root: Path) -> Path | None:
    found = sorted((root / "memo").glob("*.chains.delta.json"))
    return found[0] if found else None


def test_a_few_new_slices_leave_a_delta_beside_the_memo(tmp_path: Path) -> None:
    """A run that changed a few slices' records writes only those, beside the memo it read;
    read together they are the memo a cold run leaves (each slice's partial key and content),
    and once the changes outgrow their share of the memo, the whole memo is written again and
    the delta removed. Every run's output stays the cold run's, and pandas'."""
    from chanbatch.cache.index import read_chains
    from chanbatch.snapshot.storage import Storage

    frame = events(list(range(1, 71)))
    root = tmp_path / "warm"
    store = cb.Store(str(root))
    blueprint = cb.Blueprint.from_yaml(BLUEPRINT)
    store.freeze("events", frame[frame["day"] <= 40], slice_by="day")
    blueprint.run(store, scheduler="sync")
    (memo,) = chain_memos(root)
    base = memo.read_bytes()
    assert chain_delta(root) is None

    rewritten_at = None
    for day in range(41, 71):
        store.freeze("events", frame[frame["day"] == day], slice_by="day")
        result = blueprint.run(store, scheduler="sync")
        seen = frame[frame["day"] <= day]
        assert snapshots(result) == cold_snapshots(tmp_path, seen), day
        delta = chain_delta(root)
        if memo.read_bytes() != base:
            rewritten_at = day
            assert delta is None  # the whole memo again: the delta is gone
            break
        assert delta is not None
        assert store.verify().ok  # the delta is a sealed document, stored under its name
        doc = json.loads(delta.read_bytes())
        # only the new slices' records: one per chain and new day
        assert sorted(len(c["slices"]) for c in doc["chains"].values()) == [day - 40] * 2

        # the memo read back is the one a cold run leaves (packs are only hints)
        cold = tmp_path / f"cold-memo-{day}"
        cold_store = cb.Store(str(cold))
        cold_store.freeze("events", seen, slice_by="day")
        blueprint.run(cold_store, scheduler="sync")
        got = read_chains(Storage(str(root)), "chains")
        want = read_chains(Storage(str(cold)), "chains")
        assert got.keys() == want.keys()
        for chain, records in want.items():
            assert {s: r[:2] for s, r in got[chain].items()} == {
                s: r[:2] for s, r in records.items()
            }
    # 40 slices a chain, two chains: the delta may hold 80 / 8 = 10 records, 5 new days
    assert rewritten_at == 46
    check_values(store, frame[frame["day"] <= rewritten_at])


def test_a_delta_over_another_memo_or_damaged_is_not_used(tmp_path: Path) -> None:
    """A delta is used only over the memo it was written beside: not after that memo was
    replaced or damaged, nor when it is damaged itself; the run is exact either way."""
    from chanbatch.cache.index import read_chains
    from chanbatch.snapshot.storage import Storage

    frame = events()
    root = tmp_path / "warm"
    store = cb.Store(str(root))
    blueprint = cb.Blueprint.from_yaml(BLUEPRINT)
    store.freeze("events", frame[frame["day"] <= 46], slice_by="day")
    blueprint.run(store, scheduler="sync")
    store.freeze("events", frame[frame["day"] == 47], slice_by="day")
    blueprint.run(store, scheduler="sync")
    delta = chain_delta(root)
    assert delta is not None
    storage = Storage(str(root))
    with_delta = read_chains(storage, "chains")
    new_ids = [
        sid
        for records in json.loads(delta.read_bytes())["chains"].values()
        for sid in records["slices"]
    ]
    assert new_ids and all(any(sid in r for r in with_delta.values()) for sid in new_ids)

    # the base replaced by another memo (one slice fewer than it had): the delta is ignored
    (memo,) = chain_memos(root)
    kept_delta = delta.read_bytes()
    from chanbatch.cache.index import write_chains

    first = next(iter(next(iter(with_delta.values()))))
    other = {
        c: {s: r for s, r in recs.items() if s not in new_ids and s != first}
        for c, recs in with_delta.items()
    }
    write_chains(storage, "chains", other, drop_delta=False)
    assert delta.read_bytes() == kept_delta  # still there, written beside the memo before
    assert read_chains(storage, "chains") == other

    # a damaged delta is ignored; the next run is exact and leaves a good memo again
    delta.write_bytes(kept_delta[:-30] + b"garbage")
    store.freeze("events", frame[frame["day"] == 48], slice_by="day")
    result = blueprint.run(store, scheduler="sync")
    assert snapshots(result) == cold_snapshots(tmp_path, frame)
    check_values(store, frame)
    assert memo.exists()
