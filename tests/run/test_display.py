"""The notebook display of plans, runs and blueprints, checked against independent sources:
``chanbatch plan --json`` counted here, the run record on disk, ``store.resolve``, and the
blueprint's YAML read with a plain YAML parser."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import chanbatch as cb
from tests.cli.clikit import ok
from tests.htmlkit import facts, parse, start_tags, table, text, title

HOSTILE = '<b>&"x'

BLUEPRINT = """\
name: delays
inputs:
  flights: flights
  airlines: airlines
stages:
  late:
    from: flights
    filter: "dep_delay > 0 and carrier != '<b>&\\\"x'"
  fast:
    from: late
    derive: {speed: "distance / 2", late_by: "dep_delay * 60"}
  named:
    from: fast
    join: {right: airlines, on: carrier, how: left}
  by_carrier:
    from: named
    group_by: [carrier, name]
    aggregate:
      flights: count()
      mean_delay: mean(dep_delay)
  routes:
    from: late
    group_by: [carrier]
    aggregate:
      mid_delay: median(dep_delay)
outputs:
  by_carrier: carrier_delays
  routes: carrier_routes
"""


def flights(months: int, rows_per_month: int = 40) -> pd.DataFrame:
    """Months 1 to ``months``; a month's rows are the same whatever ``months`` is."""
    frames = []
    for month in range(1, months + 1):
        rng = np.random.default_rng(month)
        n = rows_per_month
        frames.append(
            pd.DataFrame(
                {
                    "month": np.full(n, month),
                    "carrier": rng.choice(["AA", "B6", "DL", HOSTILE], n),
                    "dest": rng.choice(["BOS", "SFO", "ORD"], n),
                    "dep_delay": rng.normal(5, 20, n).round(1),
                    "distance": rng.integers(100, 3000, n),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


AIRLINES = pd.DataFrame({"carrier": ["AA", "B6", "DL"], "name": ["American", "JetBlue", "Delta"]})


@pytest.fixture
def setup(tmp_path: Path) -> tuple[cb.Store, cb.Blueprint, Path]:
    store = cb.Store(tmp_path / "store")
    store.freeze("flights", flights(5), slice_by="month")
    store.freeze("airlines", AIRLINES, slice="all")
    path = tmp_path / "delays.yaml"
    path.write_text(BLUEPRINT)
    return store, cb.Blueprint.from_yaml(path), path


def cli_plan_counts(store: cb.Store, path: Path) -> dict[str, Counter[str]]:
    """Per stage, how many tasks ``chanbatch plan --json`` computes and reuses."""
    doc = ok("plan", path, "--json", store=store.url).json()
    counts: dict[str, Counter[str]] = {}
    for task in doc["tasks"]:
        counts.setdefault(task["stage"], Counter())[task["action"]] += 1
    return counts


def as_int(cell: str) -> int:
    return int(cell.replace(",", ""))


def test_plan_display_counts_what_plan_json_counts(setup) -> None:
    store, bp, path = setup
    bp.run(store)
    store.freeze("flights", flights(7), slice_by="month")  # two new months
    expected = cli_plan_counts(store, path)
    report = bp.plan(store)
    markup = report._repr_html_()
    stages = table(markup, "Stages")
    got = {row[0]: Counter(compute=as_int(row[1]), reuse=as_int(row[2])) for row in stages.rows}
    assert got == {
        stage: Counter(compute=c["compute"], reuse=c["reuse"]) for stage, c in expected.items()
    }
    assert any(c["compute"] and c["reuse"] for c in expected.values())  # a mixed plan
    # the two new months are one reason of the filter stage, counted twice
    why = dict(zip(stages.column("stage"), stages.column("why"), strict=True))
    assert "compute new slices \u00d72" in why["late"]
    totals = facts(markup)
    assert as_int(totals["compute"]) == sum(c["compute"] for c in expected.values())
    assert as_int(totals["reuse"]) == sum(c["reuse"] for c in expected.values())
    inputs = table(markup, "Inputs")
    head = store.resolve("flights")
    assert inputs.rows[0][:3] == ["flights", f"flights@{head.snapshot[:12]}\u2026", "7"]
    assert inputs.titles[0][1] == head.snapshot
    notes = [text(li) for li in parse(markup).iter("li")]
    assert len(notes) == 1 and "median" in notes[0]

    line = repr(report)
    compute = sum(c["compute"] for c in expected.values())
    reuse = sum(c["reuse"] for c in expected.values())
    assert re.fullmatch(
        rf"Plan\(delays: {compute} compute( \(\d+ provisional\))?, {reuse} reuse\)", line
    )


def test_a_fully_cached_plan_says_so(setup) -> None:
    store, bp, _ = setup
    bp.run(store)
    report = bp.plan(store)
    assert repr(report).endswith(": 0 compute, " + f"{len(report.tasks())} reuse)")
    assert "nothing to compute" in text(parse(report._repr_html_()))


def test_run_display_matches_the_run_record(setup) -> None:
    store, bp, _ = setup
    bp.run(store)
    store.freeze("flights", flights(6), slice_by="month")
    result = bp.run(store)
    record = json.loads((Path(store.url) / "runs" / f"{result.run_id}.json").read_text())
    assert result.document()["stats"] == record["stats"]  # the record is the independent side
    markup = result._repr_html_()
    assert title(markup) == f"Run {result.run_id}"
    stats = table(markup, "Stages")
    rows = {r[0]: r[1:] for r in stats.rows}
    for stage, c in record["stats"]["stages"].items():
        assert [as_int(v) for v in rows[stage][:3]] == [c["computed"], c["reused"], c["cutoff"]]
        assert float(rows[stage][3]) == pytest.approx(c["seconds"], abs=5e-4)
    assert [as_int(v) for v in rows["total"][:2]] == [
        record["stats"]["computed"],
        record["stats"]["reused"],
    ]
    outputs = table(markup, "Outputs")
    for row, titles in zip(outputs.rows, outputs.titles, strict=True):
        stage, snapshot, rows_text = row
        dataset = record["outputs"][stage]["dataset"]
        head = store.resolve(dataset).snapshot
        assert snapshot == f"{dataset}@{head[:12]}\u2026" and titles[1] == head
        assert as_int(rows_text) == len(store.read_pandas(dataset))
    assert outputs.column("stage") == ["by_carrier", "routes"]

    line = repr(result)
    st = record["stats"]
    assert line.startswith(
        f"RunResult(run {result.run_id}: {st['computed']} computed, {st['reused']} reused, "
    )
    for stage, info in record["outputs"].items():
        head = store.resolve(info["dataset"]).snapshot
        assert f"{stage} -> {info['dataset']}@{head[:12]}" in line


def test_run_display_reads_nothing(setup) -> None:
    store, bp, _ = setup
    result = bp.run(store)

    class Gone:
        def __getattr__(self, name: str) -> None:
            raise AssertionError(f"a display touched the store: .{name}")

    result.store = Gone()
    assert "RunResult(run" in repr(result) and "<table>" in result._repr_html_()
    assert not result._frames  # no dask frame was built


def test_blueprint_display_follows_the_yaml(setup) -> None:
    _, bp, path = setup
    doc = yaml.safe_load(path.read_text())
    markup = bp._repr_html_()
    assert "b" not in start_tags(markup)  # the filter's '<b>' literal stays text
    stages = table(markup, "Stages")
    assert stages.column("stage") == list(doc["stages"])
    assert stages.column("from") == [s["from"] for s in doc["stages"].values()]
    ops = [
        next(k for k in s if k not in ("from", "per_slice", "group_by"))
        for s in doc["stages"].values()
    ]
    assert stages.column("operation") == ops
    spec = dict(zip(stages.column("stage"), stages.column("spec"), strict=True))
    assert HOSTILE in spec["late"] and "dep_delay > 0" in spec["late"]
    assert all(f"{c} = " in spec["fast"] for c in doc["stages"]["fast"]["derive"])
    assert "airlines" in spec["named"] and "carrier" in spec["named"]
    assert all(
        f"{name} = {call}" in spec["by_carrier"]
        for name, call in doc["stages"]["by_carrier"]["aggregate"].items()
    )
    assert spec["by_carrier"].startswith("by carrier, name")
    inputs = table(markup, "Inputs")
    assert dict(inputs.rows) == doc["inputs"]
    assert dict(table(markup, "Outputs").rows) == doc["outputs"]
    assert (
        repr(bp)
        == "Blueprint(delays: 2 inputs, 5 stages; outputs: by_carrier -> carrier_delays, routes -> carrier_routes)"
    )


def test_every_example_blueprint_displays(setup) -> None:
    root = Path(__file__).resolve().parents[2] / "blueprints"
    for path in sorted(root.glob("*.yaml")):
        bp = cb.Blueprint.from_yaml(path)
        doc = yaml.safe_load(path.read_text())
        assert table(bp._repr_html_(), "Stages").column("stage") == list(doc["stages"]), path


def test_the_notebooks_page_is_what_the_repl_prints(tmp_path: Path, monkeypatch) -> None:
    """docs/notebooks.md runs as written: its setup block, then each ``>>>`` line prints the
    line below it, ids, sizes, the run id and seconds aside."""
    root = Path(__file__).resolve().parents[2]
    page = (root / "docs" / "notebooks.md").read_text()
    setup = re.search(r"```python\n(.*?)```", page, re.S).group(1)
    session = re.search(r"```pycon\n(.*?)```", page, re.S).group(1).splitlines()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blueprints").symlink_to(root / "blueprints")
    namespace: dict[str, object] = {}
    exec(setup, namespace)
    wild = [
        (r"[0-9a-f]{12}", "<id>"),
        (r"\d{8}T\d{6}-[0-9a-f]{8}", "<run>"),
        (r"\d+\.\d+ (KB|MB|s)\b", "<amount>"),
    ]

    def loose(line: str) -> str:
        for pattern, stand_in in wild:
            line = re.sub(pattern, stand_in, line)
        return line

    pairs = list(zip(session[::2], session[1::2], strict=True))
    assert len(pairs) >= 7
    for prompt, expected in pairs:
        assert prompt.startswith(">>> ")
        got = repr(eval(prompt[4:].split("  #")[0], namespace))
        assert loose(got) == loose(expected), prompt


def test_hostile_slice_keys_in_reasons_stay_text(tmp_path: Path) -> None:
    store = cb.Store(tmp_path / "store")
    frame = pd.DataFrame({"k": ["a", HOSTILE], "v": [1, 2]})
    store.freeze("events", frame, slice_by="k")
    bp = cb.Blueprint.from_yaml(
        "name: ev\ninputs: {events: events}\n"
        "stages: {big: {from: events, filter: 'v > 0'}}\noutputs: {big: ev_big}\n"
    )
    bp.run(store)
    store.freeze("events", frame.assign(v=[1, 3]), slice_by="k")  # the hostile slice changes
    markup = bp.plan(store)._repr_html_()
    assert "b" not in start_tags(markup)
    (why,) = table(markup, "Stages").column("why")
    # one line per reason (the <br/> between them holds no text)
    assert why == f"compute changed slice {HOSTILE}" + "reuse cached"
