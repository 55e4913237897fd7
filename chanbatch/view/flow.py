"""The flow graph of a blueprint: its inputs, stages and outputs, each stage coloured by state.

:func:`flow_graph` builds a :class:`Flow` from a blueprint and per-stage :class:`StageCounts`;
:func:`plan_flow` takes the counts from a plan, so the colours say what the next run would do.
A :class:`Flow` is plain data; it writes itself as Graphviz DOT or Mermaid text (same nodes,
edges and colours, same bytes for the same input) and renders SVG or PNG through Graphviz.

States of a stage, from its task counts:

- ``reuse`` (green): every task comes from the cache;
- ``compute`` (orange): every task is computed;
- ``partial`` (yellow): some of each;
- ``none`` (grey): the stage has no tasks (an input with no slices).

The colours are the Okabe-Ito palette, told apart with every common colour-vision deficiency;
each label also spells its counts out, so the picture never depends on colour alone.

Names and labels are user text. DOT node ids are generated (``n0``, ``n1``...), labels are
HTML-like with every user character entity-escaped, and Mermaid labels escape everything
outside a plain set as ``#NNN;``: a stage or dataset named with ``"``, ``<`` or ``]`` cannot
break either text.
"""

from __future__ import annotations

import html
import json
import shutil
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chanbatch.blueprint.model import (
    Aggregate,
    Blueprint,
    Stage,
)
from chanbatch.blueprint.summary import operation_text
from chanbatch.errors import ChanbatchError
from chanbatch.ids import short

if TYPE_CHECKING:
    from chanbatch.run.results import PlanReport
    from chanbatch.snapshot import SnapshotStore

STATES = ("reuse", "compute", "partial", "none")

#: Fill colour of a stage per state (Okabe-Ito), and of input and output nodes.
COLOURS: dict[str, str] = {
    "reuse": "#009E73",
    "compute": "#E69F00",
    "partial": "#F0E442",
    "none": "#BBBBBB",
    "input": "#FFFFFF",
    "output": "#FFFFFF",
}

LEGEND_TEXT = {
    "reuse": "reuse: from the cache",
    "compute": "compute",
    "partial": "partial: some of each",
    "none": "no tasks",
}

GRAPHVIZ_HINT = (
    "install graphviz: apt-get install graphviz / brew install graphviz, "
    "or use -o flow.mmd / --format mermaid"
)

RENDER_FORMATS = ("svg", "png")
SIDE_ROLES = ("right", "union")
#: Characters of an operation's text a node shows; the whole text is its tooltip (SVG, HTML)
#: and in ``--json``.
DETAIL_LIMIT = 44


class GraphvizMissing(ChanbatchError):
    """Graphviz's ``dot`` program is not installed, so a graph cannot be rendered to an image."""

    def __init__(self, message: str = "graphviz's dot program is not installed") -> None:
        super().__init__(message, hint=GRAPHVIZ_HINT)


@dataclass(frozen=True, slots=True, kw_only=True)
class StageCounts:
    """A stage's tasks: computed (by the next run, or by a past one) and taken from the cache.

    ``provisional`` counts the computed tasks a run may still find in the cache (their inputs
    are recomputed, and may come out unchanged); ``partials`` the per-slice partials of an
    aggregate that combines them. ``seconds`` is the time a past run spent in the stage.
    """

    compute: int = 0
    reuse: int = 0
    seconds: float | None = None
    provisional: int = 0
    partials: int = 0

    @property
    def state(self) -> str:
        """``reuse`` (nothing to compute), ``compute`` (nothing reused), ``partial``, or
        ``none`` (no tasks at all)."""
        if self.compute == 0:
            return "reuse" if self.reuse else "none"
        return "partial" if self.reuse else "compute"

    @property
    def text(self) -> str:
        """The counts as a label line: ``12 reuse · 1 compute · 3.2 s``."""
        parts = []
        if self.reuse or not self.compute:
            parts.append(f"{self.reuse} reuse")
        if self.compute:
            parts.append(f"{self.compute} compute")
        if self.seconds is not None:
            parts.append(f"{self.seconds:.3g} s")
        return " · ".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """One box of the graph. ``id`` is ``input:NAME``, ``stage:NAME`` or ``output:STAGE``."""

    id: str
    kind: str  # input | stage | output
    name: str
    lines: tuple[str, ...]  # label text, the first line being the name
    state: str  # a stage's state (STATES), or "input" / "output"
    counts: StageCounts | None = None
    operation: str | None = None
    detail: str | None = None  # the operation's whole text (the label may show it shortened)
    snapshot: str | None = None  # an output's current snapshot id

    @property
    def label(self) -> str:
        return "\n".join(self.lines)

    @property
    def css_class(self) -> str:
        """Classes of its SVG group: ``stage reuse``, ``input``, ``output``."""
        return self.kind if self.state == self.kind else f"{self.kind} {self.state}"

    @property
    def fill(self) -> str:
        return COLOURS[self.state]

    def document(self) -> dict[str, Any]:
        counts = self.counts or StageCounts()
        doc: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "label": self.label,
            "state": self.state,
            "compute": counts.compute,
            "reuse": counts.reuse,
        }
        if self.operation is not None:
            doc["operation"] = self.operation
        if self.detail is not None:
            doc["detail"] = self.detail
        if self.snapshot is not None:
            doc["snapshot"] = self.snapshot
        if counts.seconds is not None:
            doc["seconds"] = counts.seconds
        return doc


@dataclass(frozen=True, slots=True, kw_only=True)
class Edge:
    """Data flowing from ``source`` to ``target`` (node ids). ``role`` is ``from`` (the stage's
    main input), ``right`` (a join's right side), ``union`` (a union's other inputs) or
    ``output``."""

    source: str
    target: str
    role: str = "from"


@dataclass(frozen=True, slots=True, kw_only=True)
class Flow:
    """An immutable description of a blueprint's flow: nodes and edges, in a fixed order."""

    name: str
    title: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]

    def _tokens(self) -> dict[str, str]:
        """Node id -> the generated id DOT and Mermaid use, so user text never names a node."""
        return {node.id: f"n{i}" for i, node in enumerate(self.nodes)}

    def node(self, node_id: str) -> Node:
        """The node with id ``node_id``; raises KeyError if there is none."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def document(self) -> dict[str, Any]:
        """Nodes and edges as plain data (the ``--json`` of ``chanbatch graph``)."""
        return {
            "blueprint": self.name,
            "nodes": [node.document() for node in self.nodes],
            "edges": [[edge.source, edge.target] for edge in self.edges],
        }

    def dot(self) -> str:
        """Graphviz DOT text: deterministic, every user string escaped."""
        tokens = self._tokens()
        out = [
            "digraph flow {",
            f"  graph [rankdir=LR, fontname=Helvetica, fontsize=12, labelloc=t, "
            f"label=<{self._dot_legend()}>]",
            '  node [fontname=Helvetica, fontsize=11, style="filled,rounded", shape=box, '
            'color="#333333", fontcolor="#000000"]',
            '  edge [color="#555555", arrowsize=0.7, fontname=Helvetica, fontsize=9]',
        ]
        for node in self.nodes:
            shape = {"input": "cylinder", "output": "note"}.get(node.kind, "box")
            style = "filled" if node.kind != "stage" else "filled,rounded"
            tip = node.detail if node.detail is not None else node.snapshot
            tooltip = f"tooltip={_dot_string(_visible(tip))}, " if tip else ""
            out.append(
                f'  {tokens[node.id]} [fillcolor="{node.fill}", shape={shape}, '
                f'style="{style}", class="{node.css_class}", id={_dot_string(node.id)}, '
                f"{tooltip}label=<{_dot_label(node.lines)}>]"
            )
        for edge in self.edges:
            side = edge.role in SIDE_ROLES
            attrs = f' [style=dashed, label="{edge.role}"]' if side else ""
            out.append(f"  {tokens[edge.source]} -> {tokens[edge.target]}{attrs}")
        out.append("}")
        return "\n".join(out) + "\n"

    def _dot_legend(self) -> str:
        cells = "".join(
            f'<td bgcolor="{COLOURS[state]}">&nbsp;{html.escape(LEGEND_TEXT[state])}&nbsp;</td>'
            for state in STATES
        )
        title = f"<b>{_html(self.title)}</b>"
        return (
            '<table border="0" cellspacing="4" cellpadding="2">'
            f'<tr><td colspan="{len(STATES)}">{title}</td></tr><tr>{cells}</tr></table>'
        )

    def mermaid(self) -> str:
        """Mermaid flowchart text with the same nodes, edges and colours (``classDef``)."""
        tokens = self._tokens()
        out = ["---", f"title: {json.dumps(self.title)}", "---", "flowchart LR"]
        for node in self.nodes:
            token, text = tokens[node.id], _mermaid_label(node.lines)
            opening, closing = {"input": ("[(", ")]"), "output": ("[/", "/]")}.get(
                node.kind, ("(", ")")
            )
            out.append(f'  {token}{opening}"{text}"{closing}')
        for edge in self.edges:
            arrow = f"-. {edge.role} .->" if edge.role in SIDE_ROLES else "-->"
            out.append(f"  {tokens[edge.source]} {arrow} {tokens[edge.target]}")
        out.append("  subgraph legend [legend]")
        for state in STATES:
            out.append(f'    legend_{state}["{_mermaid_label((LEGEND_TEXT[state],))}"]')
        out.append("  end")
        for name, colour in COLOURS.items():
            out.append(f"  classDef {name} fill:{colour},stroke:#333333,color:#000000")
        for state in (*STATES, "input", "output"):
            members = [tokens[n.id] for n in self.nodes if n.state == state]
            if state in STATES:
                members.append(f"legend_{state}")
            if members:
                out.append(f"  class {','.join(members)} {state}")
        return "\n".join(out) + "\n"

    def render(self, fmt: str) -> bytes:
        """The graph drawn by Graphviz as ``svg`` or ``png`` bytes.

        Raises GraphvizMissing when the ``dot`` program is not installed, and ValueError for
        another format.
        """
        if fmt not in RENDER_FORMATS:
            raise ValueError(f"cannot render {fmt!r}: use one of {', '.join(RENDER_FORMATS)}")
        if shutil.which("dot") is None:
            raise GraphvizMissing()
        import graphviz

        try:
            return graphviz.Source(self.dot()).pipe(format=fmt)
        except graphviz.ExecutableNotFound as exc:
            raise GraphvizMissing() from exc

    def html(self) -> str:
        """A self-contained HTML page with the SVG inline: no scripts, fonts or links.

        Raises GraphvizMissing when the ``dot`` program is not installed.
        """
        svg = self.render("svg").decode("utf-8")
        svg = svg[svg.index("<svg") :]  # drop the XML declaration and doctype
        title = html.escape(self.title)
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{title}</title>\n"
            "<style>body{font-family:sans-serif;margin:1.5rem}svg{max-width:100%;height:auto}"
            "</style>\n</head>\n<body>\n"
            f"<h1>{title}</h1>\n{svg}\n</body>\n</html>\n"
        )


def flow_graph(
    blueprint: Blueprint,
    counts: Mapping[str, StageCounts],
    *,
    inputs: Mapping[str, str] | None = None,
    outputs: Mapping[str, str] | None = None,
    snapshots: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Flow:
    """The flow of ``blueprint``, its stages labelled and coloured by ``counts`` (stage name ->
    counts; a stage without counts is ``none``) and by what their operation does.

    ``inputs`` maps an input name to its label (such as ``flights@e16752eb12ab · 12 slices``;
    by default the blueprint's REF); ``outputs`` maps a stage to the dataset it is frozen as
    (by default the blueprint's outputs), and ``snapshots`` a stage to its output's snapshot
    id, shown short (an output without one shows none).
    """
    snapshots = dict(snapshots or {})
    inputs = dict(inputs or {})
    outputs = dict(blueprint.outputs if outputs is None else outputs)
    nodes: list[Node] = []
    edges: list[Edge] = []
    for name, ref in blueprint.inputs.items():
        label = inputs.get(name, ref)
        lines = (name, label) if label != name else (name,)
        nodes.append(Node(id=f"input:{name}", kind="input", name=name, lines=lines, state="input"))
    for name in blueprint.topological_order():
        stage = blueprint.stages[name]
        stage_counts = counts.get(name, StageCounts())
        detail = operation_detail(stage)
        nodes.append(
            Node(
                id=f"stage:{name}",
                kind="stage",
                name=name,
                lines=(
                    name,
                    _operation_text(stage, stage_counts),
                    shorten(detail),
                    stage_counts.text,
                ),
                state=stage_counts.state,
                counts=stage_counts,
                operation=stage.operation.kind,
                detail=detail,
            )
        )
        seen = set()
        for i, upstream in enumerate(stage.upstream):
            source = f"input:{upstream}" if upstream in blueprint.inputs else f"stage:{upstream}"
            if source not in seen:  # a union may read the same input twice
                seen.add(source)
                role = "from" if i == 0 else stage.operation.kind.replace("join", "right")
                edges.append(Edge(source=source, target=f"stage:{name}", role=role))
    for stage_name, dataset in outputs.items():
        node_id = f"output:{stage_name}"
        snapshot = snapshots.get(stage_name)
        lines = (dataset, f"@{short(snapshot)}") if snapshot else (dataset,)
        nodes.append(
            Node(
                id=node_id,
                kind="output",
                name=dataset,
                lines=lines,
                state="output",
                snapshot=snapshot or None,
            )
        )
        edges.append(Edge(source=f"stage:{stage_name}", target=node_id, role="output"))
    return Flow(
        name=blueprint.name,
        title=title if title is not None else blueprint.name,
        nodes=tuple(nodes),
        edges=tuple(edges),
    )


def plan_flow(report: PlanReport, store: SnapshotStore | None = None) -> Flow:
    """The flow of a plan, each stage coloured by what the next run would do; with ``store``,
    each output shows its dataset's current snapshot (none for a dataset not yet written).

    Raises StoreError for a damaged ref log of an output."""
    counts = {name: StageCounts(**values) for name, values in report.stage_tally().items()}
    inputs = {}
    for name, resolved in report.plan.inputs.items():
        slices = len(resolved.manifest.slices)
        plural = "slice" if slices == 1 else "slices"
        inputs[name] = f"{resolved.dataset}@{short(resolved.snapshot)} · {slices} {plural}"
    blueprint = report.plan.blueprint
    snapshots = output_heads(store, blueprint.outputs) if store is not None else {}
    return flow_graph(
        blueprint,
        counts,
        inputs=inputs,
        snapshots=snapshots,
        title=f"{blueprint.name}: next run",
    )


def output_heads(store: SnapshotStore, outputs: Mapping[str, str]) -> dict[str, str]:
    """Stage -> the current snapshot id of the dataset it is frozen as, for the datasets that
    have one (an output not yet written has none). Raises StoreError for a damaged ref log."""
    from chanbatch.snapshot import refs

    heads = {}
    for stage, dataset in outputs.items():
        entry = refs.head(store.storage, dataset)
        if entry is not None:
            heads[stage] = str(entry.snapshot)
    return heads


def operation_detail(stage: Stage) -> str:
    """What ``stage``'s operation does (see :func:`chanbatch.blueprint.summary.operation_text`)."""
    return operation_text(stage)


def shorten(text: str, limit: int = DETAIL_LIMIT) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis (the whole text is the tooltip).

    A ``module:function@version`` keeps its version and function, dropping the module path
    from the left."""
    if len(text) <= limit:
        return text
    if ":" in text and "@" in text and " " not in text:  # a map's function
        return "…" + text[-(limit - 1) :]
    return text[: limit - 1].rstrip() + "…"


def _operation_text(stage: Stage, counts: StageCounts) -> str:
    op = stage.operation
    text = op.kind
    if stage.per_slice:
        text += " per slice"
    elif isinstance(op, Aggregate) and not op.decomposable:
        text += " (whole input)"
    if counts.partials:
        text += f" · {counts.partials} partials → combine"
    return text


def _visible(text: str) -> str:
    """``text`` with control characters shown as escapes (``\\n``): a label line stays a line."""
    return "".join(ascii(ch)[1:-1] if unicodedata.category(ch)[0] == "C" else ch for ch in text)


def _html(text: str) -> str:
    """User text for a Graphviz HTML-like label: every markup character an entity."""
    return html.escape(_visible(text), quote=True)


def _dot_label(lines: tuple[str, ...]) -> str:
    first, *rest = lines
    parts = [f"<b>{_html(first)}</b>", *(_html(line) for line in rest if line)]
    return "<br/>".join(parts)


def _dot_string(text: str) -> str:
    """A DOT quoted string: only ``"`` is an escape there, so a backslash is doubled first."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
    return f'"{escaped}"'


_MERMAID_PLAIN = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _.,:@·→()-")


def _mermaid_label(lines: tuple[str, ...]) -> str:
    """Mermaid label text: anything outside a plain set becomes an entity code (``#34;``)."""

    def escape(line: str) -> str:
        return "".join(ch if ch in _MERMAID_PLAIN else f"#{ord(ch)};" for ch in _visible(line))

    return "<br/>".join(escape(line) for line in lines if line)
