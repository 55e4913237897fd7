"""The tables of list, inspect, plan, explain, cache ls and the run preview at 80 columns
(issue 19, item 3): no line is wider, and every name and number that the ``--json`` form of the
same command reports is shown whole (never cut with an ellipsis, never folded across lines)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from clikit import base_env, in_pty, ok, ok_json

import chanbatch as cb

BLUEPRINTS = Path(__file__).resolve().parents[2] / "blueprints"
NARROW = base_env(COLUMNS="80")

Q1 = """\
name: q1
inputs:
  lineitem: lineitem
stages:
  pricing:
    from: lineitem
    group_by: [l_returnflag, l_linestatus]
    aggregate:
      sum_qty: sum(l_quantity)
      sum_base_price: sum(l_extendedprice)
      avg_price: mean(l_extendedprice)
      count_order: count()
  ordered:
    from: pricing
    sort: [l_returnflag, l_linestatus]
outputs:
  ordered: q1_pricing
"""


def lineitem() -> pd.DataFrame:
    """Q1's shape: four groups whose sums run to millions (quantities) and billions (prices)."""
    rng = np.random.default_rng(1)
    n = 40_000
    return pd.DataFrame(
        {
            "l_returnflag": rng.choice(["A", "N", "R"], n),
            "l_linestatus": rng.choice(["F", "O"], n),
            "l_quantity": rng.integers(1, 51, n) * 37,
            "l_extendedprice": rng.uniform(900.0, 104_950.0, n).round(2),
            "l_shipmonth": rng.integers(1, 4, n),
        }
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo store after two runs (one blueprint planned but never run), and Q1's input."""
    store = tmp_path_factory.mktemp("fit") / "snapshots"
    ok("demo", store=store)
    cb.Store(store).freeze("lineitem", lineitem(), slice_by="l_shipmonth")
    for name in ("monthly_delay", "busiest_routes"):
        ok("run", BLUEPRINTS / f"{name}.yaml", store=store)
    return store


def narrow(*args: str | os.PathLike[str], store: Path) -> str:
    """The command's text at 80 columns, checked to stay within them."""
    out = ok(*args, store=store, env=NARROW).stdout
    assert within(out, 80), out
    return out


def within(text: str, width: int) -> bool:
    return max((len(line) for line in text.splitlines()), default=0) <= width


def whole(text: str, value: object) -> bool:
    """``value`` appears in ``text`` on one line, not as part of a longer word or number."""
    token = re.escape(str(value))
    return re.search(rf"(?<![\w.,]){token}(?![\w.,…])", text) is not None


def number(value: object) -> str:
    """A JSON number as the tables write it: counts with thousands separators are checked
    by the caller; a float by its shortest exact form."""
    return repr(value) if isinstance(value, float) else str(value)


def test_snapshot_list(store: Path) -> None:
    from chanbatch.html import human_bytes

    out = narrow("snapshot", "list", store=store)
    datasets = ok_json("snapshot", "list", store=store)["datasets"]
    assert {"flights_daily", "busiest_routes", "monthly_delay"} <= {d["dataset"] for d in datasets}
    for d in datasets:
        assert whole(out, d["dataset"]), d["dataset"]
        assert whole(out, d["snapshot"][:12]), d
        for value in (d["version"], d["slices"], f"{d['rows']:,}", human_bytes(d["bytes"])):
            assert whole(out, value), (d["dataset"], value)
    assert "…" not in out and "..." not in out


def test_snapshot_list_turns_vertical_when_it_cannot_fit(store: Path) -> None:
    out = ok("snapshot", "list", store=store, env=base_env(COLUMNS="40")).stdout
    assert within(out, 40), out
    assert "── row 1 " in out
    assert re.search(r"^dataset: +flights_daily$", out, re.M), out
    assert re.search(r"^rows: +336,776$", out, re.M), out


def test_history(store: Path) -> None:
    out = narrow("snapshot", "list", "flights", store=store)
    (version,) = ok_json("snapshot", "list", "flights", store=store)["versions"]
    assert whole(out, version["snapshot"][:12]) and whole(out, version["author"])


@pytest.mark.parametrize("dataset", ["flights", "weather", "lineitem"])
def test_snapshot_inspect(store: Path, dataset: str) -> None:
    from chanbatch.html import human_bytes

    out = narrow("snapshot", "inspect", dataset, store=store)
    doc = ok_json("snapshot", "inspect", dataset, store=store)
    for c in doc["columns"]:
        assert whole(out, c["name"]), c
        assert whole(out, f"{c['nulls']:,}"), c
        for stat in (c["min"], c["max"]):
            if isinstance(stat, int | float) and not isinstance(stat, bool):
                assert whole(out, number(stat)), (c["name"], stat)
    for s in doc["slices"]:
        assert whole(out, s["id"][:12]) and whole(out, f"{s['rows']:,}"), s
        assert whole(out, human_bytes(s["bytes"])), s
    assert "…" not in out


def test_plan_shortens_its_long_reasons(store: Path) -> None:
    blueprint = BLUEPRINTS / "carrier_delays.yaml"  # never run: its combines may be reused
    out = narrow("plan", blueprint, store=store)
    doc = ok_json("plan", blueprint, store=store)
    reasons = {t["reason"] for t in doc["tasks"]}
    assert any(r.endswith("; reused if its inputs come out unchanged") for r in reasons)
    for stage in {t["stage"] for t in doc["tasks"]}:
        assert whole(out, stage), stage
        computed = sum(t["action"] == "compute" for t in doc["tasks"] if t["stage"] == stage)
        assert re.search(rf"^{stage} +{computed} +0 ", out, re.M), out
    assert "may reuse" in out and "reused if its inputs come out u" not in out.split("\n\n")[0]
    assert "may reuse: reused if its inputs come out unchanged" in out  # said once, under it
    assert "…" not in out and "..." not in out

    every = narrow("plan", blueprint, "--all", store=store)
    for t in doc["tasks"]:
        if t["slice"] is not None:
            assert re.search(rf"^{t['stage']} +{t['slice']} +{t['kind']} ", every, re.M), t
    assert "may reuse" in every


def test_explain(store: Path) -> None:
    blueprint = BLUEPRINTS / "monthly_delay.yaml"
    out = narrow("explain", "by_month@1", blueprint, store=store)
    (doc,) = ok_json("explain", "by_month@1", blueprint, store=store)["tasks"]
    assert whole(out, doc["key"])
    assert all(whole(out, dep["key"][:12]) for dep in doc["components"]["upstream"])


def test_cache_ls(store: Path) -> None:
    out = narrow("cache", "ls", store=store)
    entries = ok_json("cache", "ls", store=store)["entries"]
    assert entries
    for e in entries:
        assert whole(out, e["key"][:12]) and whole(out, e["stage"]), e
        assert re.search(rf"^{e['key'][:12]} .* {e['rows']:,} ", out, re.M), e
    du = narrow("cache", "du", store=store)
    assert re.search(r"^cache: \d+ entries, [\d.]+ [KMG]?B$", du, re.M), du


@pytest.mark.parametrize("columns", ["80", "110"])
def test_run_preview_shows_q1_numbers_whole(store: Path, tmp_path: Path, columns: str) -> None:
    blueprint = tmp_path / "q1.yaml"
    blueprint.write_text(Q1)
    out = ok("run", blueprint, store=store, env=base_env(COLUMNS=columns)).stdout
    assert within(out, int(columns)), out
    rows = ok_json("show", "q1_pricing", store=store)["rows"]
    assert len(rows) == 6 and max(r["sum_qty"] for r in rows) > 1_000_000
    assert max(r["sum_base_price"] for r in rows) > 100_000_000
    for row in rows[:5]:  # the preview's five
        for name, value in row.items():
            assert whole(out, name), name
            assert whole(out, number(value)), (name, value)


def test_in_a_real_terminal(store: Path, tmp_path: Path) -> None:
    listed = in_pty("snapshot", "list", "--store", store)
    assert within(listed, 80), listed
    for d in ok_json("snapshot", "list", store=store)["datasets"]:
        assert whole(listed, d["dataset"]) and whole(listed, f"{d['rows']:,}"), d
    plan = in_pty("plan", BLUEPRINTS / "carrier_delays.yaml", "--store", store)
    assert within(plan, 80) and "may reuse" in plan, plan
    blueprint = tmp_path / "q1.yaml"
    blueprint.write_text(Q1.replace("q1_pricing", "q1_in_a_terminal"))
    ran = in_pty("run", blueprint, "--store", store, "--no-progress")
    # the last frame of any display was cleared: the result lines are what stays
    result = ran[ran.index("run ") :]
    assert within(result, 80), ran
    rows = ok_json("show", "q1_in_a_terminal", store=store)["rows"]
    for row in rows[:5]:
        assert all(whole(result, number(v)) for v in row.values()), (row, result)
