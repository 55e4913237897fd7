"""The report's rows in and out per stage, output previews, named lanes, collapsed slice legend
and binned timeline (issue 19, item 6).

Expected rows come from two places the report code does not: the run record read as JSON here
(each stage's last tasks summed in this file), and pandas on the frozen frame. The big timeline
is a record of 40,000 tasks written through the record API (no run of 40,000 tasks), reported
through the CLI, and loaded in headless Chromium when it is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html import unescape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import chanbatch as cb
from chanbatch.cache.runs import FINISHED, RunRecord, run_stats, tally, write_record
from chanbatch.view.report import render_report

CHANBATCH = Path(sys.executable).with_name("chanbatch")
CHROMIUM = next(
    (p for p in ("/usr/bin/chromium", shutil.which("chromium")) if p and Path(p).exists()), None
)

BLUEPRINT = """\
name: pictures
inputs: {t: t}
stages:
  kept: {from: t, filter: "v > 0"}
  per_kind:
    from: kept
    group_by: [kind]
    aggregate: {n: count(), total: sum(v)}
outputs:
  per_kind: pictures_out
"""


def frozen_frame() -> pd.DataFrame:
    """Four days of 25 rows, the same every time."""
    rng = np.random.default_rng(7)
    n = 100
    return pd.DataFrame(
        {
            "day": np.repeat(np.arange(1, 5, dtype="int64"), 25),
            "kind": rng.choice(np.array(["a", "b", "c"], dtype=object), n),
            "v": rng.normal(0.2, 1.0, n).round(2),
        }
    )


def cells(page: str, stage: str) -> dict[str, str]:
    """The stage table's cells of ``stage`` by class (rows-in, rows-out, kept), as text, with
    each cell's title."""
    row = re.search(rf'<tr class="stage" data-stage="{stage}"[^>]*>(.*?)</tr>', page, re.S)
    assert row is not None, stage
    out = {}
    for cls, title, text in re.findall(
        r"<td class='n ([\w-]+)[^']*'(?: title=\"([^\"]*)\")?>(.*?)</td>", row[1]
    ):
        out[cls] = unescape(text)
        out[cls + ".title"] = unescape(title)
    return out


def last_task_rows(record: dict[str, Any], stage: str) -> int:
    """Rows a stage returned: its tasks no other task of the stage reads, summed."""
    tasks = [t for t in record["tasks"] if t["stage"] == stage]
    read = {d for t in tasks for d in t["deps"]}
    return sum(t["rows"] for t in tasks if t["key"] not in read)


def test_rows_in_and_out_match_the_record_and_pandas(tmp_path: Path) -> None:
    df = frozen_frame()
    store = cb.Store(tmp_path / "snapshots")
    store.freeze("t", df, slice_by="day")
    blueprint = cb.Blueprint.from_yaml(BLUEPRINT)
    report = tmp_path / "first.html"
    result = blueprint.run(store, report=report)
    page = report.read_text()
    record = json.loads((tmp_path / "snapshots" / "runs" / f"{result.run_id}.json").read_text())

    kept = int((df["v"] > 0).sum())  # pandas, on the frame as frozen
    groups = int(df.loc[df["v"] > 0, "kind"].nunique())
    assert 0 < kept < len(df)
    filter_cells, agg_cells = cells(page, "kept"), cells(page, "per_kind")
    assert int(filter_cells["rows-in"].replace(",", "")) == len(df) == record["inputs"]["t"]["rows"]
    assert int(filter_cells["rows-out"]) == kept == last_task_rows(record, "kept")
    assert filter_cells["kept"] == f"{kept / len(df):.1%}"
    assert int(agg_cells["rows-in"]) == kept
    assert int(agg_cells["rows-out"]) == groups == last_task_rows(record, "per_kind")
    assert agg_cells["kept"] == ""  # a share is a filter's

    # the preview: the output's first rows, as the store holds them
    section = page[page.index('id="previews"') :]
    table = cb.Store(tmp_path / "snapshots").read("pictures_out").compute()
    assert f"@{record['outputs']['per_kind']['snapshot'][:12]}" in section
    for kind, n in zip(table["kind"], table["n"], strict=True):
        assert re.search(rf"<td>{kind}</td><td class='n'>{n}</td>", section), (kind, n)
    assert f"{groups} of {groups} rows" in section

    # a new day: three filter tasks are reused and recorded no rows, so rows out are not
    # recorded (and say why), while the rows read of the input still are
    store.freeze("t", frozen_frame().assign(day=5), slice_by="day")
    report = tmp_path / "second.html"
    blueprint.run(store, report=report)
    again = cells(report.read_text(), "kept")
    assert int(again["rows-in"]) == 2 * len(df)  # four old days and the new one
    assert again["rows-out"] == "not recorded"
    assert "reused from the cache" in again["rows-out.title"]
    assert again["kept"] == ""


def test_lanes_are_named_by_worker_and_thread(tmp_path: Path) -> None:
    store = cb.Store(tmp_path / "snapshots")
    store.freeze("t", frozen_frame(), slice_by="day")
    report = tmp_path / "r.html"
    result = cb.Blueprint.from_yaml(BLUEPRINT).run(store, report=report, workers=2)
    page = report.read_text()
    record = json.loads((tmp_path / "snapshots" / "runs" / f"{result.run_id}.json").read_text())
    lanes = dict(re.findall(r'class="lane" data-lane="([^"]*)" data-name="([^"]*)"', page))
    assert set(lanes) == {t["worker"] for t in record["tasks"] if "worker" in t}
    assert all(re.fullmatch(r"worker 1, thread [12]", name) for name in lanes.values()), lanes
    assert "ThreadPoolExecutor" not in "".join(lanes.values())
    # the thread that started first is thread 1
    first = min((t for t in record["tasks"] if "began" in t), key=lambda t: t["began"])
    assert lanes[first["worker"]] == "worker 1, thread 1"


def synthetic_record(run: str, tasks: int, slices: int, workers: int = 4) -> RunRecord:
    """A finished record of ``tasks`` per-slice tasks spread over ``slices`` slices and
    ``workers`` distributed workers, 10 ms each, back to back per worker."""
    listed = []
    for i in range(tasks):
        worker = i % workers
        began = 0.5 + (i // workers) * 0.01
        listed.append(
            {
                "stage": "kept",
                "slice": i % slices,
                "kind": "apply",
                "key": f"k{i}",
                "deps": [f"s{i % slices}"],
                "action": "compute",
                "outcome": "computed",
                "seconds": 0.01,
                "rows": 10,
                "worker": f"tcp://127.0.0.1:{4000 + worker}",
                "worker_name": str(worker),
                "began": round(began, 3),
                "ended": round(began + 0.01, 3),
            }
        )
    return RunRecord(
        run=run,
        status=FINISHED,
        started_at="2026-01-01T00:00:00.000+00:00",
        blueprint="pictures",
        text=BLUEPRINT,
        source="pictures.yaml",
        scheduler="processes",
        inputs={"t": {"dataset": "t", "snapshot": "ab" * 32, "rows": 10 * tasks}},
        tasks=listed,
        outputs={},
        stats=run_stats(tally(listed), 0.6 + tasks / workers * 0.01),
    )


def test_legend_collapses_past_a_dozen_slices() -> None:
    page = render_report(synthetic_record("r", tasks=2525, slices=2525).document())
    legend = page[page.index('<ul class="legend">') :]
    legend = legend[: legend.index("</ul>")]
    assert legend.count('class="swatch"') == 12
    assert "… and 2,513 more" in legend
    # distributed workers keep their names
    assert set(re.findall(r'data-name="(worker \d)"', page)) == {f"worker {i}" for i in range(4)}


def test_a_40000_task_report_is_binned_and_small(tmp_path: Path) -> None:
    store = cb.Store(tmp_path / "snapshots")
    store.freeze("t", frozen_frame(), slice_by="day")
    record = synthetic_record("20260101T000000-big", tasks=40_000, slices=2525)
    write_record(store.storage, record)
    out = tmp_path / "big.html"
    env = {k: v for k, v in os.environ.items() if k != "CHANBATCH_STORE"}
    proc = subprocess.run(
        [str(CHANBATCH), "report", record.run, "-o", str(out), "--store", str(store.url)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    page = out.read_text()
    size = out.stat().st_size
    assert size < 1_000_000, size  # against some 8 MB for one bar per task
    assert 'id="timeline-binned"' in page and "Binned: 40,000 tasks ran" in page
    assert page.count('class="bar"') == 0
    bins = page.count('class="bin"')
    assert 0 < bins <= 4 * 240
    assert "… and 2,513 more" in page
    # the axis starts at the run's start
    assert re.search(r'text-anchor="middle" fill="#555">0(\.0+)? s</text>', page)

    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            view = browser.new_page(viewport={"width": 1100, "height": 800})
            errors: list[str] = []
            view.on("pageerror", lambda e: errors.append(str(e)))
            view.goto(out.resolve().as_uri(), wait_until="load")
            shown = view.eval_on_selector_all("#timeline-chart rect.bin", "els => els.length")
            names = view.eval_on_selector_all(
                "#timeline-chart g.lane text", "els => els.map(e => e.firstChild.textContent)"
            )
            more = view.inner_text("ul.legend li.more")
            binned = view.inner_text("#timeline-binned")
        finally:
            browser.close()
    assert errors == []
    assert shown == bins
    assert names == ["worker 0", "worker 1", "worker 2", "worker 3"]
    assert more == "… and 2,513 more"
    assert "Binned" in binned


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_rows_lanes_and_preview_in_chromium(tmp_path: Path) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api")
    df = frozen_frame()
    store = cb.Store(tmp_path / "snapshots")
    store.freeze("t", df, slice_by="day")
    report = tmp_path / "r.html"
    cb.Blueprint.from_yaml(BLUEPRINT).run(store, report=report, workers=2)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            view = browser.new_page(viewport={"width": 1100, "height": 800})
            view.goto(report.resolve().as_uri(), wait_until="load")
            rows_out = view.inner_text('tr[data-stage="kept"] td.rows-out')
            rows_in = view.inner_text('tr[data-stage="kept"] td.rows-in')
            kept = view.inner_text('tr[data-stage="kept"] td.kept')
            lanes = view.eval_on_selector_all(
                "#timeline-chart g.lane text", "els => els.map(e => e.firstChild.textContent)"
            )
            preview = view.inner_text('#previews .preview[data-stage="per_kind"]')
        finally:
            browser.close()
    n = int((df["v"] > 0).sum())
    assert (int(rows_in), int(rows_out), kept) == (len(df), n, f"{n / len(df):.1%}")
    assert lanes and all(re.fullmatch(r"worker 1, thread [12]", name) for name in lanes)
    assert "pictures_out" in preview and "kind" in preview
