"""The HTML run report (``run --report``, ``chanbatch report``), read back as HTML and SVG.

Expected values come from elsewhere than the report code: per-stage counts from the
``plan --json`` taken before the run, bars and lanes from the run record's JSON read here
with ``json``, snapshot ids from ``snapshot list --json`` and the run's ``--json``. The page
is parsed with ``html.parser`` and its SVG with ``xml.etree``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

import chanbatch as cb
from chanbatch.view.report import render_report

CHANBATCH = Path(sys.executable).with_name("chanbatch")
SVG = "{http://www.w3.org/2000/svg}"

BLUEPRINT = """\
name: {name}
inputs: {{t: t}}
stages:
  kept:
    from: t
    filter: "v > 0"
  scaled:
    from: kept
    derive: {{w: "v * 3"}}
  per_kind:
    from: scaled
    group_by: [kind]
    aggregate: {{n: count(), total: sum(w)}}
outputs:
  per_kind: {name}_out
"""


def chanbatch(*args: str | os.PathLike[str], store: Path, cwd: Path | None = None) -> Any:
    """Run the installed script with ``--json``; return its one JSON document."""
    argv = [str(CHANBATCH), *map(str, args), "--store", str(store), "--json"]
    env = {k: v for k, v in os.environ.items() if k != "CHANBATCH_STORE"}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=180)
    assert proc.returncode == 0, f"{argv}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)


def chanbatch_fails(*args: str | os.PathLike[str], store: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CHANBATCH_STORE"}
    argv = [str(CHANBATCH), *map(str, args), "--store", str(store)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=180)


def frame(days: range, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 40 * len(days)
    return pd.DataFrame(
        {
            "day": np.repeat(np.array(list(days), dtype="int64"), 40),
            "kind": rng.choice(np.array(["a", "b", "c"], dtype=object), n),
            "v": rng.normal(0.5, 1.0, n).round(2),
        }
    )


def blueprint_file(folder: Path, name: str = "report_bp") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(BLUEPRINT.format(name=name))
    return path


# -- reading the page ---------------------------------------------------------------------------


class Page(HTMLParser):
    """Tags, attributes and text of an HTML page, with each table row's cells."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.rows: list[tuple[dict[str, str], list[str]]] = []
        self.text: list[str] = []
        self._row: tuple[dict[str, str], list[str]] | None = None
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        self.tags.append((tag, attributes))
        if tag == "tr":
            self._row = (attributes, [])
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row[1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def rows_of(self, cls: str) -> dict[str, list[str]]:
        """``<tr class=cls data-...>`` rows by their data-stage or data-name."""
        return {
            a.get("data-stage") or a.get("data-name", ""): cells
            for a, cells in self.rows
            if cls in a.get("class", "").split()
        }

    def field(self, name: str) -> str:
        (cells,) = [c for a, c in self.rows if a.get("data-field") == name]
        return cells[1]


def svg_of(text: str, element_id: str) -> ET.Element:
    """The ``<svg>`` inside the element with ``id="element_id"``, parsed as XML."""
    start = text.index(f'id="{element_id}"')
    begin = text.index("<svg", start)
    end = text.index("</svg>", begin) + len("</svg>")
    return ET.fromstring(text[begin:end])


def bars(svg: ET.Element) -> list[dict[str, str]]:
    return [dict(r.attrib) for r in svg.iter(f"{SVG}rect") if r.get("class") == "bar"]


def record_of(store: Path, run_id: str) -> dict[str, Any]:
    """The run record, read as plain JSON (its checksum is just one more member)."""
    return json.loads((store / "runs" / f"{run_id}.json").read_text())


def plan_counts(plan: dict[str, Any]) -> dict[str, Counter]:
    out: dict[str, Counter] = defaultdict(Counter)
    for task in plan["tasks"]:
        out[task["stage"]][task["action"]] += 1
    return out


def state(compute: int, reuse: int) -> str:
    if compute and reuse:
        return "partial"
    return "compute" if compute else "reuse" if reuse else "none"


# -- tests --------------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    store = tmp_path / "snapshots"
    cb.Store(store).freeze("t", frame(range(4)), slice_by="day")
    return store, blueprint_file(tmp_path)


def check_report(
    store: Path, page_text: str, plan: dict[str, Any], run: dict[str, Any]
) -> dict[str, Any]:
    """Every check of one run's report against the plan before it, the run's JSON, the record
    and ``snapshot list``; returns the record."""
    page = Page(page_text)
    record = record_of(store, run["run"])

    # per-stage counts: what the plan said the run would do
    expected = plan_counts(plan)
    stages = page.rows_of("stage")
    assert list(stages) == ["kept", "scaled", "per_kind"]  # the flow's order
    assert set(stages) == set(expected)
    for attrs, cells in [(a, c) for a, c in page.rows if "stage" in a.get("class", "").split()]:
        counts = expected[attrs["data-stage"]]
        assert int(cells[2]) == counts["compute"], (attrs, cells)
        assert int(cells[3]) == counts["reuse"], (attrs, cells)
        assert attrs["data-state"] == state(counts["compute"], counts["reuse"])

    # the timeline: one bar per task the record says ran, one lane per worker
    ran = [t for t in record["tasks"] if t.get("outcome") in ("computed", "cutoff")]
    if ran:
        svg = svg_of(page_text, "timeline-chart")
        drawn = bars(svg)
        assert len(drawn) == len(ran) == sum(c["compute"] for c in expected.values())
        assert Counter((b["data-stage"], b["data-slice"]) for b in drawn) == Counter(
            (t["stage"], "" if t["slice"] is None else str(t["slice"])) for t in ran
        )
        lanes = {g.get("data-lane") for g in svg.iter(f"{SVG}g") if g.get("class") == "lane"}
        workers = {t.get("worker_name") or t["worker"] for t in ran}
        assert lanes == workers
        assert {b["data-lane"] for b in drawn} <= lanes
        width = float(svg.get("width"))
        for bar in drawn:
            assert float(bar["x"]) > 0 and float(bar["x"]) + float(bar["width"]) <= width
    else:
        assert "Nothing ran" in page_text
        assert 'id="timeline-chart"' not in page_text

    # snapshots: inputs as snapshot list says, outputs as the run's --json says
    listed = {d["dataset"]: d for d in chanbatch("snapshot", "list", store=store)["datasets"]}
    inputs = page.rows_of("input")
    assert inputs["t"][1] == "t"
    assert inputs["t"][2] == listed["t"]["snapshot"]
    assert int(inputs["t"][3].replace(",", "")) == listed["t"]["rows"]
    outputs = page.rows_of("output")
    assert set(outputs) == set(run["outputs"])
    for stage, info in run["outputs"].items():
        assert outputs[stage][1] == info["dataset"]
        assert outputs[stage][2] == info["snapshot"] == listed[info["dataset"]]["snapshot"]
        assert int(outputs[stage][3].replace(",", "")) == info["rows"]

    assert page.field("run") == run["run"]
    assert int(page.field("computed")) == run["stats"]["computed"]
    assert int(page.field("reused")) == run["stats"]["reused"]
    assert_self_contained(page)
    return record


def assert_self_contained(page: Page) -> None:
    """No script, no stylesheet link, nothing loaded from anywhere."""
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "img", "iframe", "object", "embed"), (tag, attrs)
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            if name in ("src", "href", "xlink:href"):
                assert value.startswith("#"), (tag, name, value)
    style = "".join(page.text)
    assert "@import" not in style and "url(" not in style


def test_run_report_matches_plan_record_and_snapshots(project: tuple[Path, Path]) -> None:
    store, bp = project
    report = store.parent / "first.html"
    plan = chanbatch("plan", bp, store=store)
    run = chanbatch("run", bp, "--report", report, store=store)
    record = check_report(store, report.read_text(), plan, run)
    assert all(t["outcome"] == "computed" for t in record["tasks"])

    # a new slice: per-slice stages compute one task and reuse the rest
    cb.Store(store).freeze("t", frame(range(4, 5), seed=1), slice_by="day")
    plan = chanbatch("plan", bp, store=store)
    assert {t["action"] for t in plan["tasks"]} == {"compute", "reuse"}
    report = store.parent / "second.html"
    run = chanbatch("run", bp, "--report", report, store=store)
    check_report(store, report.read_text(), plan, run)
    assert 'data-state="partial"' in report.read_text()

    # nothing left to do: every task reused, no bar
    plan = chanbatch("plan", bp, store=store)
    report = store.parent / "third.html"
    run = chanbatch("run", bp, "--report", report, store=store)
    check_report(store, report.read_text(), plan, run)


def test_processes_keep_each_slice_in_one_lane(tmp_path: Path) -> None:
    store = tmp_path / "snapshots"
    cb.Store(store).freeze("t", frame(range(8)), slice_by="day")
    bp = blueprint_file(tmp_path)
    plan = chanbatch("plan", bp, store=store)
    report = tmp_path / "procs.html"
    run = chanbatch(
        "run", bp, "--scheduler", "processes", "--workers", "2", "--report", report, store=store
    )
    record = check_report(store, report.read_text(), plan, run)
    drawn = bars(svg_of(report.read_text(), "timeline-chart"))
    lanes_of_slice = defaultdict(set)
    for bar in drawn:
        if bar["data-slice"]:
            lanes_of_slice[bar["data-slice"]].add(bar["data-lane"])
    assert len(lanes_of_slice) == 8
    assert all(len(lanes) == 1 for lanes in lanes_of_slice.values()), lanes_of_slice
    # the lanes are the cluster's workers, named 0 and 1
    assert {b["data-lane"] for b in drawn} <= {"0", "1"}
    assert {t["worker_name"] for t in record["tasks"]} == {b["data-lane"] for b in drawn}
    # bars sit where the record's times say: a slice's stages run one after another
    by_slice = defaultdict(dict)
    for bar in drawn:
        by_slice[bar["data-slice"]][bar["data-stage"]] = float(bar["x"])
    for sl, xs in by_slice.items():
        if sl:
            assert xs["kept"] <= xs["scaled"] <= xs["per_kind"], (sl, xs)


def test_report_command_picks_runs(tmp_path: Path) -> None:
    store = tmp_path / "snapshots"
    cb.Store(store).freeze("t", frame(range(3)), slice_by="day")
    first = chanbatch("run", blueprint_file(tmp_path, "alpha"), store=store, cwd=tmp_path)
    second = chanbatch("run", blueprint_file(tmp_path, "beta"), store=store, cwd=tmp_path)

    latest = chanbatch("report", "-o", tmp_path / "latest.html", store=store, cwd=tmp_path)
    assert latest["run"] == second["run"] and latest["blueprint"] == "beta"
    assert Page((tmp_path / "latest.html").read_text()).field("run") == second["run"]

    alpha = chanbatch(
        "report", "--blueprint", "alpha", "-o", tmp_path / "a.html", store=store, cwd=tmp_path
    )
    assert alpha["run"] == first["run"]
    text = (tmp_path / "a.html").read_text()
    # the blueprint file the record names is still there, unchanged: the graph is drawn
    assert 'id="flow-graph"' in text or 'id="mermaid"' in text
    assert "alpha_out" in text

    by_prefix = chanbatch(
        "report", first["run"][:17], "-o", tmp_path / "p.html", store=store, cwd=tmp_path
    )
    assert by_prefix["run"] == first["run"]

    missing = chanbatch_fails("report", "nosuchrun", "-o", tmp_path / "x.html", store=store)
    assert missing.returncode == 2
    assert missing.stderr.startswith("Error: no run 'nosuchrun'")
    assert len(missing.stderr.splitlines()) == 1
    assert not (tmp_path / "x.html").exists()

    # a report path that cannot be written is refused before anything runs
    runs = sorted((store / "runs").iterdir())
    bad = chanbatch_fails(
        "run", tmp_path / "alpha.yaml", "--report", tmp_path / "no" / "r.html", store=store
    )
    assert bad.returncode == 2 and "Error: cannot write the report" in bad.stderr
    assert sorted((store / "runs").iterdir()) == runs


def test_old_record_without_times_and_a_changed_blueprint(tmp_path: Path) -> None:
    store = tmp_path / "snapshots"
    cb.Store(store).freeze("t", frame(range(3)), slice_by="day")
    bp = blueprint_file(tmp_path)
    run = chanbatch("run", bp, store=store, cwd=tmp_path)
    record = record_of(store, run["run"])
    for task in record["tasks"]:
        task.pop("began", None), task.pop("ended", None)
    record.pop("checksum")
    record.pop("text")
    # as written before run records were sealed or carried task times and the blueprint text
    (store / "runs" / f"{run['run']}.json").write_text(json.dumps(record))
    bp.write_text(bp.read_text().replace("v > 0", "v > 1"))

    out = tmp_path / "old.html"
    chanbatch("report", run["run"], "-o", out, store=store, cwd=tmp_path)
    page = Page(out.read_text())
    text = "".join(page.text)
    assert "No timings recorded" in text
    assert "has changed since this run" in text
    assert 'id="timeline-chart"' not in out.read_text()
    computed = Counter(t["stage"] for t in record["tasks"] if t["outcome"] == "computed")
    assert {s: int(c[2]) for s, c in page.rows_of("stage").items()} == computed

    bp.unlink()
    chanbatch("report", run["run"], "-o", out, store=store, cwd=tmp_path)
    assert "is not here" in out.read_text()


def test_a_record_keeps_its_blueprint_text(tmp_path: Path) -> None:
    """A run's report draws its flow from the record alone, after the file changed or went."""
    if shutil.which("dot") is None:
        pytest.skip("drawing the flow needs Graphviz's dot: apt-get install graphviz")
    store = tmp_path / "snapshots"
    cb.Store(store).freeze("t", frame(range(3)), slice_by="day")
    bp = blueprint_file(tmp_path)
    source = bp.read_text()
    run = chanbatch("run", bp, store=store, cwd=tmp_path)
    assert record_of(store, run["run"])["text"] == source
    bp.write_text(source.replace("v > 0", "v > 1"))
    out = tmp_path / "changed.html"
    chanbatch("report", run["run"], "-o", out, store=store, cwd=tmp_path)
    page = out.read_text()
    assert 'id="flow-graph"' in page and "has changed since" not in page
    bp.unlink()
    chanbatch("report", run["run"], "-o", out, store=store, cwd=tmp_path)
    page = out.read_text()
    assert 'id="flow-graph"' in page and "is not here" not in page
    stages = yaml.safe_load(source)["stages"]
    for stage in stages:
        assert f'id="stage:{stage}"' in page


def test_without_dot_the_graph_is_mermaid_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = cb.Store(tmp_path / "snapshots")
    store.freeze("t", frame(range(2)), slice_by="day")
    blueprint = cb.Blueprint.from_yaml(BLUEPRINT.format(name="nodot"))
    result = blueprint.run(store)
    record = record_of(tmp_path / "snapshots", result.run_id)
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot on it
    text = render_report(record, blueprint=blueprint.model)
    page = Page(text)
    assert 'id="flow-graph"' not in text
    start = text.index('<pre id="mermaid">')
    block = text[start : text.index("</pre>", start)]
    for stage in ("kept", "scaled", "per_kind"):
        assert stage in block
    assert "apt-get install graphviz" in "".join(page.text)


def test_hostile_names_are_text(tmp_path: Path) -> None:
    store = cb.Store(tmp_path / "snapshots")
    hostile = "<script>alert(1)</script>"
    keys = ["2024-01", hostile, "a\"b'&c"]
    store.freeze(
        "t",
        pd.DataFrame({"day": keys * 4, "kind": ["a", "b"] * 6, "v": np.arange(12.0) - 3}),
        slice_by="day",
    )
    blueprint = cb.Blueprint.from_yaml(BLUEPRINT.format(name="hostile"))
    out = tmp_path / "hostile.html"
    result = blueprint.run(store, report=out)
    text = out.read_text()
    page = Page(text)
    assert_self_contained(page)
    assert hostile not in text  # only escaped
    drawn = bars(svg_of(text, "timeline-chart"))
    assert {b["data-slice"] for b in drawn} - {""} == set(keys)
    assert any(hostile in t for t in page.text)
    assert Page(text).field("run") == result.run_id
