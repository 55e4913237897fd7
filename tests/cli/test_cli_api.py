"""The CLI is a shell over the Python API (``chanbatch.api``): what a command prints with
``--json`` is what the API method it calls returns, and both agree with the data itself.

The CLI runs as the real console script in a subprocess; the API runs in this process on the
same store. Expected values come from the source frames and the blueprint text, not from
chanbatch.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from clikit import PERIODS, ok, ok_json, run

import chanbatch as cb
from chanbatch.blueprint.model import Blueprint as BlueprintModel
from chanbatch.errors import InvalidNameError, RefNotFoundError

LATE = """\
name: delays
inputs:
  flights: flights
stages:
  late:
    from: flights
    filter: "delay > 0"
  ordered:
    from: late
    sort: [id]
outputs:
  ordered: late_flights
"""


@pytest.fixture
def frozen(store: Path, monthly_csv: dict[str, tuple[pd.DataFrame, Path]]) -> Path:
    """``flights``, frozen from one CSV file per period (one slice each)."""
    ok("snapshot", "freeze", "flights", *(p for _, p in monthly_csv.values()), store=store)
    return store


@pytest.fixture
def late(tmp_path: Path) -> Path:
    path = tmp_path / "late.yaml"
    path.write_text(LATE, encoding="utf-8")
    return path


def test_the_public_blueprint_is_the_api_class_around_the_model(late: Path) -> None:
    from chanbatch.api import RunnableBlueprint

    bp = cb.Blueprint.from_yaml(late)
    assert cb.Blueprint is RunnableBlueprint
    assert isinstance(bp, cb.Blueprint)
    assert isinstance(bp.model, BlueprintModel) and not isinstance(bp, BlueprintModel)
    assert bp.name == "delays"


def test_validate_prints_the_api_document(late: Path) -> None:
    text = yaml.safe_load(LATE)
    expected = {
        "ok": True,
        "blueprint": text["name"],
        "inputs": text["inputs"],
        "stages": list(text["stages"]),
        "outputs": text["outputs"],
    }
    assert ok_json("validate", late) == expected
    assert {"ok": True, **cb.Blueprint.from_yaml(late).document()} == expected


def test_list_prints_the_store_catalog(
    frozen: Path, monthly_csv: dict[str, tuple[pd.DataFrame, Path]]
) -> None:
    printed = ok_json("snapshot", "list", store=frozen)
    catalog = cb.Store(str(frozen)).catalog()
    assert printed["datasets"] == catalog
    (row,) = catalog
    assert row["dataset"] == "flights" and row["version"] == 1
    assert row["slices"] == len(PERIODS)
    assert row["rows"] == sum(len(df) for df, _ in monthly_csv.values())
    assert len(row["snapshot"]) == 64


def test_list_of_a_dataset_prints_its_versions(
    frozen: Path, monthly_csv: dict[str, tuple[pd.DataFrame, Path]]
) -> None:
    _, first = monthly_csv[PERIODS[0]]
    ok("snapshot", "freeze", "flights", first, "--slice", "extra", store=frozen)
    printed = ok_json("snapshot", "list", "flights", store=frozen)
    versions = cb.Store(str(frozen)).versions("flights")
    assert printed == {"dataset": "flights", "versions": versions}
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[1]["added"] != [] and versions[0]["snapshot"] != versions[1]["snapshot"]


def test_versions_refuses_what_the_cli_refuses(frozen: Path) -> None:
    store = cb.Store(str(frozen))
    with pytest.raises(RefNotFoundError) as missing:
        store.versions("nope")
    with pytest.raises(InvalidNameError) as bad:
        store.versions("../x")
    for name, exc in (("nope", missing.value), ("../x", bad.value)):
        printed = run("snapshot", "list", name, store=frozen)
        assert printed.code == exc.exit_code
        assert printed.stderr.startswith(f"Error: {' '.join(str(exc).split())}")
        assert name in printed.stderr


def test_plan_explain_run_and_cache_agree_with_the_api(
    frozen: Path, late: Path, monthly_csv: dict[str, tuple[pd.DataFrame, Path]]
) -> None:
    bp = cb.Blueprint.from_yaml(late)
    store = cb.Store(str(frozen))
    plan = ok_json("plan", late, store=frozen)
    assert plan == bp.plan(store).document()
    assert plan["summary"]["reuse"] == 0 and plan["summary"]["compute"] > 0
    assert ok_json("explain", f"late@{PERIODS[0]}", late, store=frozen) == {
        "tasks": bp.explain(store, "late", PERIODS[0])
    }
    ran = ok_json("run", late, store=frozen)
    late_rows = sum(int((df["delay"] > 0).sum()) for df, _ in monthly_csv.values())
    assert ran["outputs"]["ordered"]["rows"] == late_rows
    entries = ok_json("cache", "ls", store=frozen)["entries"]
    assert entries == [e.document() for e in store.cache_entries()]
    assert {e["stage"] for e in entries} >= {"late"}
    assert ok_json("cache", "du", store=frozen) == store.cache_usage()
    evicted = store.evict(stage="late")
    assert sorted(evicted) == sorted(e["key"] for e in entries if e["stage"] == "late")
    assert [
        e for e in ok_json("cache", "ls", store=frozen)["entries"] if e["stage"] == "late"
    ] == []


def test_graph_json_is_the_api_flow(frozen: Path, late: Path) -> None:
    flow = cb.Blueprint.from_yaml(late).flow(cb.Store(str(frozen)))
    printed = ok_json("graph", late, store=frozen)
    assert printed == {**flow.document(), "output": None, "format": "dot"}
    assert printed["blueprint"] == "delays"
    assert ["stage:late", "stage:ordered"] in printed["edges"]


def test_report_writes_the_api_report(frozen: Path, late: Path, tmp_path: Path) -> None:
    ran = ok_json("run", late, store=frozen)
    by_cli, by_api = tmp_path / "cli.html", tmp_path / "api.html"
    printed = ok_json("report", "-o", by_cli, store=frozen)
    record = cb.Store(str(frozen)).report(by_api)
    assert printed == {"run": ran["run"], "blueprint": "delays", "report": str(by_cli)}
    assert record["run"] == ran["run"]
    for path in (by_cli, by_api):
        assert ran["run"] in path.read_text(encoding="utf-8")
