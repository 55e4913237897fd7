"""Failures at run time and plan time, through the API and the ``chanbatch`` command, and the
``plan --json`` / ``run --json`` documents of DESIGN.md section 3."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from opskit import assert_error_line, base_frame, cli

import chanbatch as cb
from chanbatch.engine.execute import StageFailed
from chanbatch.errors import UsageError

HERE = Path(__file__).resolve().parent
HEX64 = re.compile(r"^[0-9a-f]{64}$")

BOOM = """\
name: boom
inputs:
  flights: t
stages:
  clean:
    from: flights
    filter: "not_null(x)"
  explode:
    from: clean
    map: {function: "udfs:explode_on_slice_two", version: "1"}
  totals:
    from: explode
    group_by: [g]
    aggregate: {rows: count()}
outputs:
  totals: boom_totals
"""

GOOD = """\
name: good
inputs:
  flights: t
stages:
  late:
    from: flights
    filter: "x > 0"
  per_group:
    from: late
    group_by: [g]
    aggregate: {rows: count(), total: sum(y)}
  kept:
    from: late
    select: [id, g, x]
outputs:
  per_group: good_per_group
  kept: good_kept
"""


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return base_frame()


@pytest.fixture
def store(tmp_path: Path, frame: pd.DataFrame) -> cb.Store:
    store = cb.Store(tmp_path / "store")
    store.freeze("t", frame, slice_by="s")
    return store


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- a stage that raises at run time ------------------------------------------------------------


def test_a_map_that_raises_names_the_stage_and_the_slice(
    store: cb.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    with pytest.raises(StageFailed) as info:
        cb.Blueprint.from_yaml(BOOM).run(store, scheduler="sync", allow_modules=("udfs",))
    message = str(info.value)
    assert "stage 'explode'" in message
    assert "slice 2" in message
    assert "ValueError" in message and "cannot handle these rows" in message
    assert info.value.exit_code == 1


def test_a_map_that_returns_no_frame_names_the_stage(
    store: cb.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    text = BOOM.replace("explode_on_slice_two", "not_a_frame")
    with pytest.raises(
        StageFailed, match=r"stage 'explode' failed on slice [123]: .*not a DataFrame"
    ):
        cb.Blueprint.from_yaml(text).run(store, scheduler="threads", allow_modules=("udfs",))


def test_an_expression_that_fails_on_the_data_names_the_stage_and_the_slice(
    store: cb.Store,
) -> None:
    text = GOOD.replace('filter: "x > 0"', "derive: {n: \"cast(g, 'int')\"}")
    with pytest.raises(
        StageFailed,
        match=r"stage 'late' failed on slice [123]: ExprEvalError: cannot read '[abc]' as a number",
    ):
        cb.Blueprint.from_yaml(text).run(store, scheduler="sync")


def test_cli_runtime_failure_is_one_error_line_and_exit_1(store: cb.Store, tmp_path: Path) -> None:
    path = write(tmp_path, "boom.yaml", BOOM)
    result = cli(
        "run",
        path,
        "--store",
        store.url,
        "--allow-module",
        "udfs",
        "--scheduler",
        "sync",
        pythonpath=str(HERE),
    )
    assert_error_line(result, 1, "stage 'explode'", "slice 2", "cannot handle these rows")
    # nothing was frozen
    assert "boom_totals" not in cb.Store(store.url).datasets()


def test_a_failed_run_keeps_what_it_finished(
    store: cb.Store, frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DESIGN.md section 6: a run records each finished partial at once, so running again
    computes only what is missing."""
    monkeypatch.syspath_prepend(str(HERE))
    import udfs

    monkeypatch.setitem(udfs.STATE, "fail", True)
    bp = cb.Blueprint.from_yaml(BOOM.replace("explode_on_slice_two", "fail_late_on_slice_two"))
    cold = bp.plan(store).document()["summary"]
    with pytest.raises(StageFailed, match="slice 2"):
        bp.run(store, scheduler="threads", workers=3, allow_modules=("udfs",))

    doc = bp.plan(store).document()
    partials = {
        t["slice"]: t["action"]
        for t in doc["tasks"]
        if t["stage"] == "totals" and t["slice"] is not None
    }
    assert partials == {1: "reuse", 2: "compute", 3: "reuse"}
    assert doc["summary"]["compute"] < cold["compute"]

    monkeypatch.setitem(udfs.STATE, "fail", False)
    result = bp.run(store, scheduler="sync", allow_modules=("udfs",))
    assert result.stats["computed"] == doc["summary"]["compute"]
    got = result.outputs["totals"].compute()
    clean = frame[frame.x.notna()]
    want = clean.groupby("g", dropna=False).size()
    assert sorted(got.rows.tolist()) == sorted(want.tolist())


# -- bad usage: exit 2 ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "run"])
def test_cli_bad_blueprint_exits_2(store: cb.Store, tmp_path: Path, command: str) -> None:
    path = write(tmp_path, "bad.yaml", GOOD.replace("    filter:", "    filtr:"))
    extra = [] if command == "validate" else ["--store", store.url]
    result = cli(command, path, *extra)
    assert_error_line(result, 2, "bad.yaml:7", "stage 'late'", "'filtr'", "did you mean 'filter'?")


def test_cli_set_of_an_unknown_input_exits_2_with_did_you_mean(
    store: cb.Store, tmp_path: Path
) -> None:
    path = write(tmp_path, "good.yaml", GOOD)
    result = cli("run", path, "--store", store.url, "--set", "flight=t")
    assert_error_line(result, 2, "'flight'", "did you mean 'flights'?")


def test_set_to_an_unknown_dataset_names_the_input(store: cb.Store) -> None:
    with pytest.raises(UsageError, match=r"'flights'.*'nowhere'") as info:
        cb.Blueprint.from_yaml(GOOD).plan(store, sets={"flights": "nowhere"})
    assert info.value.exit_code == 2


def test_set_of_an_unknown_input_via_the_api(store: cb.Store) -> None:
    with pytest.raises(UsageError, match="'flight'") as info:
        cb.Blueprint.from_yaml(GOOD).plan(store, sets={"flight": "t"})
    assert "did you mean 'flights'?" in (info.value.hint or "")


def test_cli_plan_with_an_unknown_column_names_it_the_stage_and_the_columns(
    store: cb.Store, tmp_path: Path, frame: pd.DataFrame
) -> None:
    path = write(tmp_path, "typo.yaml", GOOD.replace('filter: "x > 0"', 'filter: "xx > 0"'))
    result = cli("plan", path, "--store", store.url)
    line = assert_error_line(result, 2, "'xx'", "stage 'late'", "did you mean 'x'?")
    assert "available: " + ", ".join(frame.columns) in line
    # the same from run, before anything runs
    with pytest.raises(UsageError, match="'xx'"):
        cb.Blueprint.from_yaml(path).run(store, scheduler="sync")
    assert cb.Store(store.url).datasets() == ["t"]


def test_unknown_column_downstream_of_a_select(store: cb.Store) -> None:
    text = GOOD.replace(
        "select: [id, g, x]", "select: [id, g, x]\n  again:\n    from: kept\n    filter: 'y > 0'"
    )
    text = text.replace("  kept: good_kept", "  again: good_again")
    with pytest.raises(UsageError) as info:
        cb.Blueprint.from_yaml(text).plan(store)
    message = str(info.value)
    for needle in ("'y'", "stage 'again'", "available: id, g, x"):
        assert needle in message or needle in (info.value.hint or ""), message


# -- the JSON documents --------------------------------------------------------------------------

PLAN_TASK_KEYS = {"stage", "slice", "action", "reason"}


def check_plan_document(doc: dict, stages: set[str]) -> list[dict]:
    assert {"tasks", "summary"} <= set(doc)
    assert set(doc["summary"]) == {"compute", "reuse", "provisional"}
    tasks = doc["tasks"]
    assert isinstance(tasks, list) and tasks
    for task in tasks:
        assert set(task) >= PLAN_TASK_KEYS, task
        assert task["stage"] in stages
        assert task["action"] in ("compute", "reuse")
        assert isinstance(task["reason"], str) and task["reason"]
        assert task["slice"] is None or isinstance(task["slice"], int | str)
    assert doc["summary"]["compute"] == sum(t["action"] == "compute" for t in tasks)
    assert doc["summary"]["reuse"] == sum(t["action"] == "reuse" for t in tasks)
    assert doc["summary"]["provisional"] == sum(t["provisional"] for t in tasks)
    assert all(t["action"] == "compute" for t in tasks if t["provisional"])
    return tasks


def test_cli_plan_and_run_json(store: cb.Store, tmp_path: Path, frame: pd.DataFrame) -> None:
    path = write(tmp_path, "good.yaml", GOOD)
    stages = {"late", "per_group", "kept"}

    cold = cli("plan", path, "--store", store.url, "--json")
    assert cold.code == 0 and cold.stderr == "", str(cold)
    tasks = check_plan_document(cold.json(), stages)
    # a cold plan cannot know the partials' contents: the combine above them and the finish
    # are provisional, as their keys hash those contents
    above = [t for t in tasks if t["stage"] == "per_group" and t["kind"] != "partial"]
    assert cold.json()["summary"] == {"compute": len(tasks), "reuse": 0, "provisional": 2}
    assert [t["kind"] for t in above] == ["combine", "finish"]
    assert all(t["provisional"] for t in above)
    late = [t for t in tasks if t["stage"] == "late"]
    assert sorted(t["slice"] for t in late) == [1, 2, 3]

    first = cli("run", path, "--store", store.url, "--json", "--scheduler", "sync")
    assert first.code == 0 and first.stderr == "", str(first)
    doc = first.json()
    assert {"outputs", "stats"} <= set(doc)
    assert set(doc["outputs"]) == {"per_group", "kept"}
    kept = frame[frame.x > 0]
    want_rows = {"per_group": kept.g.nunique(dropna=False), "kept": len(kept)}
    datasets = {"per_group": "good_per_group", "kept": "good_kept"}
    for name, out in doc["outputs"].items():
        assert set(out) == {"dataset", "snapshot", "rows"}
        assert out["dataset"] == datasets[name]
        assert HEX64.match(out["snapshot"])
        assert out["rows"] == want_rows[name]
    stats = doc["stats"]
    assert {"computed", "reused", "seconds"} <= set(stats)
    assert stats["computed"] == len(tasks) > 0 and stats["reused"] == 0
    assert isinstance(stats["seconds"], int | float) and stats["seconds"] >= 0

    # the frozen outputs are what the document says
    reopened = cb.Store(store.url)
    for out in doc["outputs"].values():
        assert reopened.resolve(out["dataset"]).snapshot == out["snapshot"]
    got = reopened.read("good_per_group").compute()
    want = (
        kept.groupby("g", dropna=False).agg(rows=("id", "size"), total=("y", "sum")).reset_index()
    )
    merged = got.astype({"g": object}).merge(want, on="g", how="outer", suffixes=("", "_want"))
    assert len(merged) == len(want) and (merged.rows == merged.rows_want).all()
    assert (merged.total == merged.total_want).all()

    again = cli("run", path, "--store", store.url, "--json")
    assert again.code == 0, str(again)
    redo = again.json()
    assert redo["stats"]["computed"] == 0
    assert redo["stats"]["reused"] == len(tasks)
    assert redo["outputs"] == doc["outputs"]

    warm = cb.Blueprint.from_yaml(path).plan(cb.Store(store.url)).document()
    assert [(t["stage"], t["slice"]) for t in check_plan_document(warm, stages)] == [
        (t["stage"], t["slice"]) for t in tasks
    ]
    assert warm["summary"] == {"compute": 0, "reuse": len(tasks), "provisional": 0}


def test_plan_after_a_new_slice_computes_only_what_the_slice_touches(
    store: cb.Store, frame: pd.DataFrame
) -> None:
    bp = cb.Blueprint.from_yaml(GOOD)
    bp.run(store, scheduler="sync")
    extra = base_frame(rows=6, seed=99).assign(s=4)
    store.freeze("t", extra, slice_by="s")
    doc = bp.plan(store).document()
    computed = [(t["stage"], t["slice"]) for t in doc["tasks"] if t["action"] == "compute"]
    per_slice = {(stage, s) for stage, s in computed if s is not None}
    assert per_slice == {("late", 4), ("per_group", 4), ("kept", 4)}
    result = bp.run(store, scheduler="sync")
    assert result.stats["computed"] == doc["summary"]["compute"]
    got = result.outputs["kept"].compute()
    both = pd.concat([frame, extra], ignore_index=True)
    assert sorted(got.id) == sorted(both[both.x > 0].id)
