"""The flow graph: nodes, edges and colours in DOT and Mermaid, hostile names, rendered images.

DOT and Mermaid are read back with this file's own regular expressions, edges are checked
against the blueprint's YAML read with PyYAML, and states against counts tallied here, so no
expectation comes from the code under test.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from chanbatch.blueprint.expr import parse_aggregate, parse_expr
from chanbatch.blueprint.model import Aggregate, Blueprint, Filter, Join, Stage, Union
from chanbatch.blueprint.parse import load_blueprint
from chanbatch.run import plan_blueprint, run_blueprint
from chanbatch.snapshot import SnapshotStore
from chanbatch.view import flow as flowmod
from chanbatch.view.flow import GraphvizMissing, StageCounts, flow_graph, plan_flow

# The palette docs/cli.md documents (Okabe-Ito), written out here rather than imported.
PALETTE = {"reuse": "#009E73", "compute": "#E69F00", "partial": "#F0E442", "none": "#BBBBBB"}

BLUEPRINT = """
name: routes
inputs:
  flights: flights
  airlines: airlines
stages:
  late: {from: flights, filter: "delay > 0"}
  early: {from: flights, filter: "delay <= 0"}
  both: {from: late, union: [early]}
  named:
    from: late
    join: {right: airlines, on: carrier, how: left}
  by_carrier:
    from: named
    group_by: [carrier]
    aggregate: {n: count(), worst: max(delay)}
  ranked: {from: by_carrier, sort: [-n]}
outputs:
  ranked: carrier_ranking
  both: all_rows
"""

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None, reason="graphviz's dot is not installed"
)

DOT_NODE = re.compile(r'^\s+(n\d+) \[fillcolor="(#[0-9A-Fa-f]{6})".*label=<(.*)>\]$')
DOT_EDGE = re.compile(r"^\s+(n\d+) -> (n\d+)(?: \[.*\])?$")
MERMAID_NODE = re.compile(r'^\s+(n\d+)(?:\[\(|\(|\[/)"([^"]*)"(?:\)\]|\)|/\])$')
MERMAID_EDGE = re.compile(r"^\s+(n\d+) (?:-->|-\. \w+ \.->) (n\d+)$")


def expected_state(compute: int, reuse: int) -> str:
    if compute + reuse == 0:
        return "none"
    if compute == 0:
        return "reuse"
    return "compute" if reuse == 0 else "partial"


def yaml_edges(text: str) -> set[tuple[str, str]]:
    """(source, target) names of every edge, read from the YAML itself."""
    doc = yaml.safe_load(text)
    edges = set()
    for name, stage in doc["stages"].items():
        edges.add((stage["from"], name))
        if "join" in stage:
            edges.add((stage["join"]["right"], name))
        if "union" in stage:
            others = stage["union"]
            for other in [others] if isinstance(others, str) else others:
                edges.add((other, name))
    for stage, dataset in doc["outputs"].items():
        edges.add((stage, dataset))
    return edges


def parse_dot(text: str) -> tuple[dict[str, tuple[str, list[str]]], list[tuple[str, str]]]:
    """Node token -> (fill colour, label lines as plain text), and edges between tokens."""
    nodes, edges = {}, []
    for line in text.splitlines():
        if m := DOT_NODE.match(line):
            lines = [re.sub(r"</?b>", "", part) for part in m[3].split("<br/>")]
            nodes[m[1]] = (m[2].upper(), [html.unescape(part) for part in lines])
        elif m := DOT_EDGE.match(line):
            edges.append((m[1], m[2]))
    return nodes, edges


def parse_mermaid(text: str) -> tuple[dict[str, tuple[str, list[str]]], list[tuple[str, str]]]:
    """Node token -> (fill colour of its class, label lines), and edges between tokens."""
    fills = dict(re.findall(r"^\s+classDef (\w+) fill:(#[0-9A-Fa-f]{6})", text, re.M))
    classes = {}
    for members, cls in re.findall(r"^\s+class ([\w,]+) (\w+)$", text, re.M):
        for member in members.split(","):
            assert member not in classes, f"{member} in two classes"
            classes[member] = cls
    nodes, edges = {}, []
    for line in text.splitlines():
        if m := MERMAID_NODE.match(line):
            decoded = re.sub(r"#(\d+);", lambda e: chr(int(e[1])), m[2])
            nodes[m[1]] = (fills[classes[m[1]]].upper(), decoded.split("<br/>"))
        elif m := MERMAID_EDGE.match(line):
            edges.append((m[1], m[2]))
    return nodes, edges


def check_text(parsed, counts: dict[str, StageCounts], blueprint_text: str) -> None:
    """Each stage's colour is its state's, and the edges are the blueprint's."""
    nodes, edges = parsed
    model = yaml.safe_load(blueprint_text)
    names = {token: lines[0] for token, (_, lines) in nodes.items()}
    assert sorted(names.values()) == sorted(
        [*model["inputs"], *model["stages"], *model["outputs"].values()]
    )
    for fill, lines in nodes.values():
        name = lines[0]
        if name in model["stages"]:
            c = counts.get(name, StageCounts())
            assert fill == PALETTE[expected_state(c.compute, c.reuse)], (name, fill)
            assert f"{c.reuse} reuse" in lines[-1] or f"{c.compute} compute" in lines[-1]
        else:
            assert fill == "#FFFFFF", (name, fill)
    assert {(names[a], names[b]) for a, b in edges} == yaml_edges(blueprint_text)
    assert len(edges) == len(set(edges))


COUNTS = {
    "late": StageCounts(compute=0, reuse=3),
    "early": StageCounts(compute=3, reuse=0),
    "both": StageCounts(compute=1),
    "named": StageCounts(compute=1, reuse=2),
    "by_carrier": StageCounts(compute=2, reuse=2, partials=3),
    # ranked has no counts: grey
}


@pytest.mark.parametrize(
    ("compute", "reuse", "state"),
    [(0, 0, "none"), (0, 5, "reuse"), (4, 0, "compute"), (1, 11, "partial")],
)
def test_state_follows_counts(compute: int, reuse: int, state: str) -> None:
    assert StageCounts(compute=compute, reuse=reuse).state == state


def test_dot_colours_labels_and_edges() -> None:
    flow = flow_graph(load_blueprint(BLUEPRINT), COUNTS, inputs={"flights": "flights@abc"})
    text = flow.dot()
    check_text(parse_dot(text), COUNTS, BLUEPRINT)
    nodes, _ = parse_dot(text)
    labels = {lines[0]: lines for _, lines in nodes.values()}
    assert labels["flights"] == ["flights", "flights@abc"]
    assert labels["airlines"] == ["airlines", "airlines"] or labels["airlines"] == ["airlines"]
    assert labels["by_carrier"][1:] == [
        "aggregate · 3 partials → combine",
        "by carrier: n = count(), worst = max(delay)",
        "2 reuse · 2 compute",
    ]
    assert labels["ranked"][1:] == ["sort", "-n", "0 reuse"]
    # the legend names every state in its colour
    for state, colour in PALETTE.items():
        assert f'bgcolor="{colour}"' in text, state


def test_a_past_run_shows_seconds() -> None:
    counts = {"late": StageCounts(compute=2, reuse=1, seconds=1.25)}
    flow = flow_graph(load_blueprint(BLUEPRINT), counts)
    nodes, _ = parse_dot(flow.dot())
    late = next(lines for _, lines in nodes.values() if lines[0] == "late")
    assert late[1:] == ["filter", "delay > 0", "1 reuse · 2 compute · 1.25 s"]
    assert flow.node("stage:late").document()["seconds"] == 1.25


def test_mermaid_has_the_same_nodes_edges_and_colours() -> None:
    flow = flow_graph(load_blueprint(BLUEPRINT), COUNTS)
    mermaid = parse_mermaid(flow.mermaid())
    check_text(mermaid, COUNTS, BLUEPRINT)
    dot_nodes, dot_edges = parse_dot(flow.dot())
    assert {k: v[0] for k, v in mermaid[0].items()} == {k: v[0] for k, v in dot_nodes.items()}
    assert sorted(mermaid[1]) == sorted(dot_edges)


def test_document_lists_nodes_and_edges() -> None:
    doc = flow_graph(load_blueprint(BLUEPRINT), COUNTS).document()
    by_id = {n["id"]: n for n in doc["nodes"]}
    assert by_id["stage:named"] | {"label": None} == {
        "id": "stage:named",
        "kind": "stage",
        "label": None,
        "state": "partial",
        "compute": 1,
        "reuse": 2,
        "operation": "join",
        "detail": "left join airlines on carrier",
    }
    assert ["input:airlines", "stage:named"] in doc["edges"]
    assert ["stage:ranked", "output:ranked"] in doc["edges"]
    assert all(a in by_id and b in by_id for a, b in doc["edges"])


def test_dot_text_is_deterministic_across_interpreters() -> None:
    flow = flow_graph(load_blueprint(BLUEPRINT), COUNTS)
    assert flow.dot() == flow.dot()
    code = (
        "import sys; from chanbatch.blueprint.parse import load_blueprint; "
        "from chanbatch.view.flow import flow_graph, StageCounts as S; "
        "c = {'late': S(reuse=3), 'early': S(compute=3), 'both': S(compute=1), "
        "'named': S(compute=1, reuse=2), 'by_carrier': S(compute=2, reuse=2, partials=3)}; "
        "f = flow_graph(load_blueprint(sys.stdin.read()), c); "
        "sys.stdout.write(f.dot() + '\\0' + f.mermaid())"
    )
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], input=BLUEPRINT, capture_output=True, text=True, env=env
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout == flow.dot() + "\0" + flow.mermaid()


HOSTILE = ['st"age<b>&', "x.y-z", "back\\slash", "]]>--><!--", "new\nline", 'end"']


def hostile_blueprint() -> Blueprint:
    """Names no YAML blueprint allows, built directly: the graph must still be well formed."""
    a, b, c, d, e, f = HOSTILE
    agg = Aggregate(group_by=("k",), aggregates={"n": parse_aggregate("count()")})
    stages = {
        a: Stage(name=a, from_='in"put', operation=Filter(expr=parse_expr("v > 0"))),
        b: Stage(name=b, from_=a, operation=Join(right="<side>", on=("k",))),
        c: Stage(name=c, from_=b, operation=Union(others=(a,))),
        d: Stage(name=d, from_=c, operation=agg),
        e: Stage(name=e, from_=d, operation=Filter(expr=parse_expr("n > 1"))),
        f: Stage(name=f, from_=e, operation=Filter(expr=parse_expr("n > 2"))),
    }
    return Blueprint(
        name='bp "<x>"',
        inputs={'in"put': "flights", "<side>": "airlines"},
        stages=stages,
        outputs={f: "out.put-1", d: "mid"},
    )


def hostile_flow() -> flowmod.Flow:
    counts = {HOSTILE[0]: StageCounts(compute=1, reuse=1), HOSTILE[1]: StageCounts(reuse=2)}
    labels = {'in"put': 'flights@"quoted" <b>\\', "<side>": "a\nb"}
    return flow_graph(hostile_blueprint(), counts, inputs=labels, title='t"itle<')


def test_hostile_names_stay_inside_their_labels() -> None:
    flow = hostile_flow()
    dot_nodes, dot_edges = parse_dot(flow.dot())
    assert len(dot_nodes) == len(flow.nodes) == 2 + 6 + 2
    names = sorted(lines[0] for _, lines in dot_nodes.values())
    # a control character shows as its escape, so a label line stays one line
    shown = [name.replace("\n", "\\n") for name in HOSTILE]
    assert names == sorted(['in"put', "<side>", *shown, "out.put-1", "mid"])
    assert len(dot_edges) == len(flow.edges)
    m_nodes, m_edges = parse_mermaid(flow.mermaid())
    assert sorted(lines[0] for _, lines in m_nodes.values()) == names
    assert sorted(m_edges) == sorted(dot_edges)
    input_lines = {lines[0]: lines for _, lines in dot_nodes.values()}
    assert input_lines['in"put'] == ['in"put', 'flights@"quoted" <b>\\']


@needs_dot
def test_hostile_dot_is_accepted_by_graphviz() -> None:
    flow = hostile_flow()
    svg = subprocess.run(
        ["dot", "-Tsvg"], input=flow.dot().encode(), capture_output=True, check=False
    )
    assert svg.returncode == 0, svg.stderr.decode()
    assert b"Warning" not in svg.stderr and b"Error" not in svg.stderr, svg.stderr.decode()
    root = ET.fromstring(svg.stdout)
    texts = "".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    for name in HOSTILE[:4]:
        assert name in texts, name


def svg_node_groups(svg: bytes) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [
        g
        for g in root.iter("{http://www.w3.org/2000/svg}g")
        if "node" in (g.get("class") or "").split()
    ]


@needs_dot
def test_svg_has_one_node_group_per_node() -> None:
    flow = flow_graph(load_blueprint(BLUEPRINT), COUNTS)
    groups = svg_node_groups(flow.render("svg"))
    assert len(groups) == len(flow.nodes)
    assert sorted(g.get("id") for g in groups) == sorted(n.id for n in flow.nodes)
    states = {g.get("id"): g.get("class").split() for g in groups}
    assert states["stage:named"] == ["node", "stage", "partial"]
    assert states["stage:ranked"] == ["node", "stage", "none"]


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's signature and IHDR chunk, read by hand."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


@needs_dot
def test_png_is_a_real_image_with_colours(tmp_path: Path) -> None:
    data = flow_graph(load_blueprint(BLUEPRINT), COUNTS).render("png")
    width, height = png_size(data)
    assert width > 100 and height > 50
    mpimg = pytest.importorskip("matplotlib.image")
    (tmp_path / "flow.png").write_bytes(data)
    pixels = mpimg.imread(tmp_path / "flow.png")
    assert pixels.shape[:2] == (height, width)
    rgb = (pixels[..., :3] * 255).round().astype(np.uint8).reshape(-1, 3)
    colours = {tuple(int(v) for v in px) for px in np.unique(rgb, axis=0)}
    assert len(colours) > 2
    # the state colours are drawn, not only named: each appears as a fill
    for state in ("reuse", "compute", "partial", "none"):
        want = tuple(int(PALETTE[state][i : i + 2], 16) for i in (1, 3, 5))
        assert want in colours, state


def test_render_without_dot_raises_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flowmod.shutil, "which", lambda name: None)
    flow = flow_graph(load_blueprint(BLUEPRINT), COUNTS)
    with pytest.raises(GraphvizMissing) as caught:
        flow.render("png")
    assert "apt-get install graphviz" in (caught.value.hint or "")
    assert "--format mermaid" in (caught.value.hint or "")
    assert flow.mermaid().startswith("---\ntitle:")  # text needs no binary


def period_rows(period: str) -> pd.DataFrame:
    """Ten rows of one period, the same every time it is asked for."""
    rng = np.random.default_rng(int(period.replace("-", "")))
    return pd.DataFrame(
        {
            "period": [period] * 10,
            "carrier": rng.choice(["AA", "B6", "DL"], 10),
            "delay": rng.normal(0, 20, 10).round(1),
        }
    )


def freeze_inputs(store: SnapshotStore, periods: list[str]) -> pd.DataFrame:
    frame = pd.concat([period_rows(p) for p in periods], ignore_index=True)
    store.freeze("flights", frame, slice_by="period")
    store.freeze(
        "airlines", pd.DataFrame({"carrier": ["AA", "B6"], "name": ["A", "B"]}), slice="all"
    )
    return frame


def test_plan_flow_counts_what_the_plan_decides(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "store"))
    freeze_inputs(store, ["2024-01", "2024-02", "2024-03"])
    bp = load_blueprint(BLUEPRINT)
    run_blueprint(bp, store)
    freeze_inputs(store, ["2024-01", "2024-02", "2024-03", "2024-04"])
    report = plan_blueprint(bp, store)
    tally = Counter((t["stage"], t["action"]) for t in report.document()["tasks"])
    flow = plan_flow(report)
    for node in flow.nodes:
        if node.kind == "stage":
            compute, reuse = tally[(node.name, "compute")], tally[(node.name, "reuse")]
            assert (node.counts.compute, node.counts.reuse) == (compute, reuse), node.name
            assert node.state == expected_state(compute, reuse)
    # one new slice: per-slice stages mix reuse and compute, and so does the union of parts
    # sliced alike, which runs slice by slice
    states = {n.name: n.state for n in flow.nodes if n.kind == "stage"}
    assert states["late"] == states["by_carrier"] == states["both"] == "partial"
    assert tally[("both", "compute")] == 1
    assert flow.node("stage:by_carrier").counts.partials == 4
    snapshot = report.document()["inputs"]["flights"]["snapshot"]
    assert flow.node("input:flights").lines[1] == f"flights@{snapshot[:12]} · 4 slices"


# -- each stage's operation, and each output's snapshot ----------------------------------------

EVERY_KIND = """
name: every_kind
inputs: {t: t, names: names}
stages:
  kept: {from: t, filter: "v > 0 and kind != 'x'"}
  scaled: {from: kept, derive: {w: "v * 3", big: "w > 1"}}
  cols: {from: scaled, select: [day, kind, w]}
  renamed: {from: cols, rename: {w: weight}}
  both: {from: renamed, union: [renamed]}
  named: {from: both, join: {right: names, on: [kind, day], how: outer}}
  per_kind: {from: named, group_by: [kind], aggregate: {n: count(), total: sum(weight)}}
  ranked: {from: per_kind, sort: [-n, kind]}
  few: {from: ranked, limit: 1000}
  rolling:
    from: both
    window:
      partition_by: kind
      order_by: day
      rows: {preceding: 2}
      columns: {near: sum(weight)}
  udf: {from: few, map: {function: "our_team.analytics.cleaning.functions:drop_outliers_by_zscore", version: "2"}}
outputs: {udf: cleaned, rolling: rolled}
"""

# What each stage's node says of its operation, written out from the YAML above.
EXPECTED_DETAIL = {
    "kept": ("filter", "v > 0 and kind != 'x'"),
    "scaled": ("derive", "w = v * 3, big = w > 1"),
    "cols": ("select", "day, kind, w"),
    "renamed": ("rename", "w → weight"),
    "both": ("union", "renamed + renamed"),
    "named": ("join", "outer join names on kind, day"),
    "per_kind": ("aggregate", "by kind: n = count(), total = sum(weight)"),
    "ranked": ("sort", "-n, kind"),
    "few": ("limit", "first 1,000"),
    "udf": ("map", "our_team.analytics.cleaning.functions:drop_outliers_by_zscore@2"),
}


def test_each_stage_shows_its_operation_in_dot_mermaid_and_json() -> None:
    flow = flow_graph(load_blueprint(EVERY_KIND), {})
    nodes, _ = parse_dot(flow.dot())
    labels = {lines[0]: lines for _, lines in nodes.values()}
    mermaid = {lines[0]: lines for _, lines in parse_mermaid(flow.mermaid())[0].values()}
    doc = {n["id"]: n for n in flow.document()["nodes"]}
    for stage, (kind, detail) in EXPECTED_DETAIL.items():
        assert labels[stage][1].startswith(kind), labels[stage]
        assert doc[f"stage:{stage}"]["detail"] == detail
        shown = labels[stage][2]
        if len(detail) <= flowmod.DETAIL_LIMIT:
            assert shown == detail
        else:  # shortened to fit, never longer than the limit
            assert len(shown) <= flowmod.DETAIL_LIMIT and "…" in shown
        assert mermaid[stage][2] == shown
    # a long map function keeps its name and version; the module path gives way
    assert labels["udf"][2].endswith("drop_outliers_by_zscore@2")
    assert labels["udf"][2].startswith("…")
    window = doc["stage:rolling"]["detail"]
    assert window.startswith("by kind order day")
    assert "rows 2 preceding to 0 following" in window and window.endswith("near = sum(weight)")
    # the whole text is each node's tooltip in DOT
    tooltips = dict(re.findall(r'id="stage:(\w+)", tooltip="([^"]*)"', flow.dot()))
    assert tooltips["udf"] == EXPECTED_DETAIL["udf"][1]
    assert tooltips["kept"] == "v > 0 and kind != 'x'"


@needs_dot
def test_svg_tooltips_hold_the_whole_operation() -> None:
    flow = flow_graph(load_blueprint(EVERY_KIND), {})
    svg = ET.fromstring(flow.render("svg"))
    tips = {
        a.get("{http://www.w3.org/1999/xlink}title")
        for a in svg.iter("{http://www.w3.org/2000/svg}a")
    }
    for _, detail in EXPECTED_DETAIL.values():
        assert detail in tips, detail
    texts = {t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")}
    assert "v > 0 and kind != 'x'" in texts
    assert "by kind: n = count(), total = sum(weight)" in texts


def test_outputs_show_their_snapshot_only_when_they_have_one() -> None:
    snapshot = "ab" * 32
    flow = flow_graph(load_blueprint(EVERY_KIND), {}, snapshots={"udf": snapshot})
    nodes, _ = parse_dot(flow.dot())
    labels = {lines[0]: lines for _, lines in nodes.values()}
    assert labels["cleaned"] == ["cleaned", f"@{snapshot[:12]}"]
    assert labels["rolled"] == ["rolled"]  # not written yet: nothing, and no error
    doc = {n["id"]: n for n in flow.document()["nodes"]}
    assert doc["output:udf"]["snapshot"] == snapshot
    assert "snapshot" not in doc["output:rolling"]
