"""``chanbatch graph``: each stage's colour in DOT, Mermaid and --json is the state that
``chanbatch plan --json`` gives it, on a fresh store, after a run, and after one new slice;
images are real images; without Graphviz's dot the user gets Mermaid and a one-line hint.

The DOT and Mermaid texts are read back with this file's regular expressions, and images with
the PNG header, matplotlib and an XML parser.
"""

from __future__ import annotations

import html
import re
import shutil
import struct
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from clikit import assert_one_error_line, base_env, ok, ok_json, run

# The documented palette (docs/cli.md), written out rather than imported.
PALETTE = {"reuse": "#009E73", "compute": "#E69F00", "partial": "#F0E442", "none": "#BBBBBB"}

BLUEPRINT = """\
name: delays
inputs:
  flights: flights
  airlines: airlines
stages:
  late: {from: flights, filter: "delay > 0"}
  named:
    from: late
    join: {right: airlines, on: carrier, how: left}
  by_carrier:
    from: named
    group_by: [carrier]
    aggregate: {n: count(), worst: max(delay)}
  top: {from: by_carrier, sort: [-n]}
outputs:
  top: carrier_delays
"""
STAGES = ("late", "named", "by_carrier", "top")

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None, reason="graphviz's dot is not installed"
)

DOT_NODE = re.compile(r'^\s+(n\d+) \[fillcolor="(#[0-9A-Fa-f]{6})".*label=<<b>([^<]*)</b>')
MERMAID_NODE = re.compile(r'^\s+(n\d+)(?:\[\(|\(|\[/)"([^"<]*)(?:<br/>[^"]*)?"')


def period_file(src: Path, period: str) -> Path:
    """Ten rows of one period as Parquet, the same rows every time."""
    rng = np.random.default_rng(int(period.replace("-", "")))
    frame = pd.DataFrame(
        {
            "carrier": rng.choice(["AA", "B6", "DL"], 10),
            "delay": rng.normal(5, 20, 10).round(1),
        }
    )
    path = src / f"{period}.parquet"
    frame.to_parquet(path, index=False)
    return path


def make_project(root: Path, store: Path) -> Path:
    """Freeze three periods of flights and an airlines table; return the blueprint's path."""
    src = root / "project-src"
    src.mkdir()
    ok("snapshot", "freeze", "flights", *(period_file(src, p) for p in PERIODS3), store=store)
    airlines = src / "airlines.csv"
    pd.DataFrame({"carrier": ["AA", "B6"], "name": ["American", "JetBlue"]}).to_csv(
        airlines, index=False
    )
    ok("snapshot", "freeze", "airlines", airlines, "--slice", "all", store=store)
    path = root / "delays.yaml"
    path.write_text(BLUEPRINT)
    return path


@pytest.fixture
def project(tmp_path: Path, store: Path) -> Path:
    """A project of its own, for a test that runs and freezes more."""
    return make_project(tmp_path, store)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(blueprint, store) of a project that the tests below only read."""
    root = tmp_path_factory.mktemp("graph-project")
    return make_project(root, root / "snapshots"), root / "snapshots"


PERIODS3 = ("2024-01", "2024-02", "2024-03")


def plan_states(blueprint: Path, store: Path) -> dict[str, str]:
    """Each stage's state, worked out here from ``plan --json``'s tasks."""
    tasks = ok_json("plan", blueprint, store=store)["tasks"]
    tally = Counter((t["stage"], t["action"]) for t in tasks)
    states = {}
    for stage in STAGES:
        compute, reuse = tally[(stage, "compute")], tally[(stage, "reuse")]
        if compute + reuse == 0:
            states[stage] = "none"
        elif compute == 0:
            states[stage] = "reuse"
        else:
            states[stage] = "compute" if reuse == 0 else "partial"
    return states


def dot_fills(text: str) -> dict[str, str]:
    """Node name (bold first line of its label) -> fill colour, from DOT node lines."""
    fills = {}
    for line in text.splitlines():
        if m := DOT_NODE.match(line):
            fills[html.unescape(m[3])] = m[2].upper()
    return fills


def mermaid_fills(text: str) -> dict[str, str]:
    """Node name -> fill colour of its class, from Mermaid node, class and classDef lines."""
    colours = dict(re.findall(r"^\s+classDef (\w+) fill:(#[0-9A-Fa-f]{6})", text, re.M))
    class_of = {}
    for members, cls in re.findall(r"^\s+class ([\w,]+) (\w+)$", text, re.M):
        class_of.update(dict.fromkeys(members.split(","), cls))
    fills = {}
    for line in text.splitlines():
        if m := MERMAID_NODE.match(line):
            fills[m[2]] = colours[class_of[m[1]]].upper()
    return fills


def check_graph(blueprint: Path, store: Path) -> dict[str, str]:
    """Assert that DOT, Mermaid and --json colour every stage by the plan's state."""
    states = plan_states(blueprint, store)
    want = {stage: PALETTE[state] for stage, state in states.items()}
    dot = ok("graph", blueprint, store=store)
    assert dot.stderr == ""
    assert dot.stdout.startswith("digraph flow {")
    fills = dot_fills(dot.stdout)
    assert {k: fills[k] for k in STAGES} == want
    assert fills["flights"] == fills["airlines"] == fills["carrier_delays"] == "#FFFFFF"
    mermaid = ok("graph", blueprint, "--format", "mermaid", store=store).stdout
    assert {k: v for k, v in mermaid_fills(mermaid).items() if k in STAGES} == want
    doc = ok_json("graph", blueprint, store=store)
    assert doc["blueprint"] == "delays" and doc["output"] is None and doc["format"] == "dot"
    by_id = {node["id"]: node for node in doc["nodes"]}
    assert {s: by_id[f"stage:{s}"]["state"] for s in STAGES} == states
    return states


def test_states_follow_the_plan_fresh_run_and_new_slice(
    project: Path, store: Path, src: Path
) -> None:
    fresh = check_graph(project, store)
    assert set(fresh.values()) == {"compute"}
    ok("run", project, store=store)
    assert set(check_graph(project, store).values()) == {"reuse"}
    ok("snapshot", "freeze", "flights", period_file(src, "2024-04"), store=store)
    grown = check_graph(project, store)
    # the new slice's filter is computed, the three old ones reused; the sort reads it all
    assert grown["late"] == "partial"
    assert grown["top"] == "compute"


def test_json_lists_nodes_and_edges(shared: tuple[Path, Path], tmp_path: Path) -> None:
    project, store = shared
    out = tmp_path / "flow.dot"
    doc = ok_json("graph", project, "-o", out, store=store)
    assert doc["output"] == str(out) and doc["format"] == "dot"
    assert out.read_text().startswith("digraph flow {")
    ids = [node["id"] for node in doc["nodes"]]
    assert ids == [
        "input:flights",
        "input:airlines",
        *(f"stage:{s}" for s in STAGES),
        "output:top",
    ]
    for node in doc["nodes"]:
        assert set(node) >= {"id", "kind", "label", "state", "compute", "reuse"}
    assert sorted(map(tuple, doc["edges"])) == sorted(
        [
            ("input:flights", "stage:late"),
            ("stage:late", "stage:named"),
            ("input:airlines", "stage:named"),
            ("stage:named", "stage:by_carrier"),
            ("stage:by_carrier", "stage:top"),
            ("stage:top", "output:top"),
        ]
    )
    flights = next(n for n in doc["nodes"] if n["id"] == "input:flights")
    snapshot = ok_json("snapshot", "inspect", "flights", store=store)["snapshot"]
    assert f"flights@{snapshot[:12]}" in flights["label"] and "3 slices" in flights["label"]


@needs_dot
def test_png_file_is_a_real_image(shared: tuple[Path, Path], tmp_path: Path) -> None:
    project, store = shared
    out = tmp_path / "flow.png"
    result = ok("graph", project, "-o", out, store=store)
    assert result.stdout == result.stderr == ""
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 50
    mpimg = pytest.importorskip("matplotlib.image")
    pixels = mpimg.imread(out)
    assert pixels.shape[:2] == (height, width)
    rgb = (pixels[..., :3] * 255).round().astype(np.uint8).reshape(-1, 3)
    colours = {tuple(int(v) for v in px) for px in np.unique(rgb, axis=0)}
    assert len(colours) > 2
    orange = tuple(int(PALETTE["compute"][i : i + 2], 16) for i in (1, 3, 5))
    assert orange in colours  # a fresh store: every stage computes


@needs_dot
def test_svg_and_html_hold_one_group_per_node(shared: tuple[Path, Path], tmp_path: Path) -> None:
    project, store = shared
    doc = ok_json("graph", project, store=store)
    svg = tmp_path / "flow.svg"
    ok("graph", project, "-o", svg, store=store)
    root = ET.parse(svg).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    groups = [g for g in root.iter(f"{ns}g") if "node" in (g.get("class") or "").split()]
    assert sorted(g.get("id") for g in groups) == sorted(n["id"] for n in doc["nodes"])
    page = tmp_path / "flow.html"
    ok("graph", project, "-o", page, store=store)
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.count("<svg") == 1
    assert "<script" not in text and "<link" not in text and "@import" not in text
    assert not re.search(r"""(?:src|href)\s*=\s*["']?https?:""", text)
    inline = text[text.index("<svg") : text.index("</svg>") + len("</svg>")]
    assert len([g for g in ET.fromstring(inline).iter(f"{ns}g") if "node" in g.get("class", "")])


def no_dot_env(tmp_path: Path) -> dict[str, str]:
    """The environment with a PATH that holds no ``dot`` (an empty directory)."""
    empty = tmp_path / "bin-without-dot"
    empty.mkdir(exist_ok=True)
    return base_env(PATH=str(empty))


def test_without_dot_an_image_falls_back_to_mermaid(
    shared: tuple[Path, Path], tmp_path: Path
) -> None:
    project, store = shared
    env = no_dot_env(tmp_path)
    out = tmp_path / "out" / "flow.svg"
    out.parent.mkdir()
    result = run("graph", project, "-o", out, store=store, env=env)
    assert result.code == 0, str(result)
    assert result.stdout == ""
    assert len(result.err_lines) == 1, str(result)
    line = result.err_lines[0]
    assert "dot" in line and "apt-get install graphviz" in line and "flow.mmd" in line
    assert not out.exists()
    mermaid = (tmp_path / "out" / "flow.mmd").read_text()
    assert "flowchart LR" in mermaid
    assert set(mermaid_fills(mermaid)) >= set(STAGES)
    # without -o: the Mermaid text on stdout, the hint on stderr
    printed = run("graph", project, "--format", "png", store=store, env=env)
    assert printed.code == 0, str(printed)
    assert "flowchart LR" in printed.stdout and len(printed.err_lines) == 1
    # --json says what was written
    as_json = run("graph", project, "-o", tmp_path / "x.png", "--json", store=store, env=env)
    assert as_json.code == 0 and len(as_json.err_lines) == 1, str(as_json)
    doc = as_json.json()
    assert doc["format"] == "mermaid" and doc["output"] == str(tmp_path / "x.mmd")
    assert (tmp_path / "x.mmd").read_text().startswith("---\ntitle:")


def test_text_formats_need_no_dot(shared: tuple[Path, Path], tmp_path: Path) -> None:
    project, store = shared
    env = no_dot_env(tmp_path)
    dot = ok("graph", project, store=store, env=env)
    assert dot.stderr == "" and dot.stdout.startswith("digraph flow {")
    mmd = tmp_path / "flow.mmd"
    ok("graph", project, "-o", mmd, store=store, env=env)
    assert set(mermaid_fills(mmd.read_text())) >= set(STAGES)


def test_bad_usage_gives_one_error_line(shared: tuple[Path, Path], tmp_path: Path) -> None:
    project, store = shared
    bad_suffix = run("graph", project, "-o", tmp_path / "flow.txt", store=store)
    assert_one_error_line(bad_suffix, 2, "flow.txt", "--format")
    ref = run("graph", project, "--set", "flights=nope", store=store)
    plan = run("plan", project, "--set", "flights=nope", store=store)
    assert assert_one_error_line(ref, 2, "nope") == assert_one_error_line(plan, 2)
    missing = run("graph", tmp_path / "missing.yaml", store=store)
    assert missing.code == 2 and "Traceback" not in missing.stderr


def dot_labels(text: str) -> dict[str, list[str]]:
    """Node name -> the lines of its label, as plain text, from DOT node lines."""
    labels = {}
    for line in text.splitlines():
        if m := re.search(r"label=<(.*)>\]$", line):
            lines = [html.unescape(re.sub(r"</?b>", "", part)) for part in m[1].split("<br/>")]
            labels[lines[0]] = lines
    return labels


def test_stages_show_their_operation_and_the_output_its_snapshot(
    project: Path, store: Path
) -> None:
    before = dot_labels(ok("graph", project, store=store).stdout)
    # each operation as the YAML above writes it
    assert before["late"][1:3] == ["filter", "delay > 0"]
    assert before["named"][1:3] == ["join", "left join airlines on carrier"]
    assert before["by_carrier"][2] == "by carrier: n = count(), worst = max(delay)"
    assert before["top"][1:3] == ["sort", "-n"]
    # not written yet: the output node names its dataset and nothing more, and graph succeeds
    assert before["carrier_delays"] == ["carrier_delays"]
    node = {n["id"]: n for n in ok_json("graph", project, store=store)["nodes"]}
    assert "snapshot" not in node["output:top"]
    assert node["stage:late"]["detail"] == "delay > 0"

    ok("run", project, store=store)
    snapshot = ok_json("snapshot", "inspect", "carrier_delays", store=store)["snapshot"]
    after = dot_labels(ok("graph", project, store=store).stdout)
    assert after["carrier_delays"] == ["carrier_delays", f"@{snapshot[:12]}"]
    node = {n["id"]: n for n in ok_json("graph", project, store=store)["nodes"]}
    assert node["output:top"]["snapshot"] == snapshot
    mermaid = ok("graph", project, "--format", "mermaid", store=store).stdout
    assert f"@{snapshot[:12]}" in mermaid
