"""Early cutoff: a recomputed stored result with the same content as before stops the
recomputation there. And the projection fix that content keys rely on: a cached per-slice
result read with fewer columns is never reused where more are needed.

Expected values come from plain pandas on the same frame.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from opskit import base_frame

import chanbatch as cb

BLUEPRINT = """\
name: cutoff
inputs:
  t: t
stages:
  kept:
    from: t
    filter: "{condition}"
  scaled:
    from: kept
    derive: {{z: "y * 2"}}
  per_group:
    from: scaled
    group_by: [g]
    aggregate: {{rows: count(), total: sum(z), top: max(x)}}
outputs:
  per_group: cutoff_per_group
"""


def blueprint(condition: str) -> cb.Blueprint:
    return cb.Blueprint.from_yaml(BLUEPRINT.format(condition=condition))


def expected(frame: pd.DataFrame) -> pd.DataFrame:
    kept = frame[frame.x > 1]
    out = (
        kept.assign(z=kept.y * 2)
        .groupby("g", dropna=False)
        .agg(rows=("id", "size"), total=("z", "sum"), top=("x", "max"))
        .reset_index()
    )
    return out.sort_values("g", na_position="last").reset_index(drop=True)


def result_of(run: cb.run.runner.RunResult) -> pd.DataFrame:
    got = run.outputs["per_group"].compute()
    got = got.sort_values("g", na_position="last").reset_index(drop=True)
    return got[["g", "rows", "total", "top"]]


def check(got: pd.DataFrame, frame: pd.DataFrame) -> None:
    want = expected(frame)
    assert list(got.g.fillna("<null>")) == list(want.g.fillna("<null>"))
    assert list(got.rows) == list(want.rows)
    assert list(got.total) == list(want.total)
    assert list(got.top) == pytest.approx(list(want.top))


@pytest.fixture
def frame() -> pd.DataFrame:
    return base_frame(rows=60, seed=3)


@pytest.fixture
def store(tmp_path: Path, frame: pd.DataFrame) -> cb.Store:
    store = cb.Store(tmp_path / "store")
    store.freeze("t", frame, slice_by="s")
    return store


def kinds(run: cb.run.runner.RunResult, stage: str) -> dict[str, int]:
    return run.stats["stages"][stage]


def test_an_equivalent_filter_stops_at_the_partials(store: cb.Store, frame: pd.DataFrame) -> None:
    first = blueprint("x > 1").run(store, scheduler="sync")
    check(result_of(first), frame)

    # ``x >= 1.5`` keeps the same rows (x is a whole number or a half), but it is another spec
    edited = blueprint("x >= 1.5")
    doc = edited.plan(store).document()
    later = [t for t in doc["tasks"] if t["stage"] == "per_group" and t["kind"] != "partial"]
    assert later and all(t["provisional"] and t["action"] == "compute" for t in later)
    assert all("reused if its inputs come out unchanged" in t["reason"] for t in later)

    again = edited.run(store, scheduler="sync")
    slices = frame.s.nunique()
    assert kinds(again, "kept")["computed"] == slices
    assert kinds(again, "scaled")["computed"] == slices
    # the partials are recomputed and come out byte for byte as before: the combine and the
    # finish above them are found in the cache instead of computed
    assert kinds(again, "per_group") == {
        "computed": slices,
        "reused": len(later),
        "cutoff": len(later),
        "seconds": kinds(again, "per_group")["seconds"],
    }
    assert again.stats["cutoff"] == len(later)
    assert again.snapshots == first.snapshots
    check(result_of(again), frame)

    # the record keeps the resolved keys: the next run reuses everything
    assert edited.run(store, scheduler="sync").stats["computed"] == 0


def test_a_filter_that_changes_rows_is_not_cut_off(store: cb.Store, frame: pd.DataFrame) -> None:
    blueprint("x > 1").run(store, scheduler="sync")
    again = blueprint("x > 2").run(store, scheduler="sync")
    assert again.stats["cutoff"] == 0
    got = result_of(again)
    kept = frame[frame.x > 2]
    assert sorted(got.rows) == sorted(kept.groupby("g", dropna=False).size())


def test_late_rows_that_the_filter_drops_cut_off_above_their_slice(
    store: cb.Store, frame: pd.DataFrame
) -> None:
    bp = blueprint("x > 1")
    first = bp.run(store, scheduler="sync")
    # slice 2 again, with extra rows that ``x > 1`` drops: a new slice id, the same partial
    late = base_frame(rows=8, seed=11).assign(s=2, x=-3.0, id=range(1000, 1008))
    store.freeze("t", pd.concat([frame[frame.s == 2], late], ignore_index=True), slice_by="s")
    again = bp.run(store, scheduler="sync")
    assert kinds(again, "kept")["computed"] == 1
    assert kinds(again, "per_group")["computed"] == 1  # the partial of slice 2
    assert kinds(again, "per_group")["cutoff"] >= 1  # its finish, at least
    assert again.snapshots == first.snapshots
    check(result_of(again), pd.concat([frame, late], ignore_index=True))


def test_an_edit_that_reads_a_new_column_does_not_reuse_a_narrower_checkpoint(
    store: cb.Store, frame: pd.DataFrame
) -> None:
    narrow = cb.Blueprint.from_yaml(
        BLUEPRINT.format(condition="x > 1").replace("top: max(x)", "top: max(y)")
    )
    narrow.run(store, scheduler="sync")  # the filter read only the columns this one needs
    wide = blueprint("x > 1")  # ... and this one needs x as well
    check(result_of(wide.run(store, scheduler="sync")), frame)
