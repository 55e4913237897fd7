"""Tables of the store's own facts (list, history, inspect, plan, cache ls) fitted to the
terminal's width.

Each column says what kind of values it holds, and the kind decides how the column gives way
when the table is wider than the terminal:

- ``name`` (datasets, stages, slice keys, kinds) and ``id`` (short ids): never cut nor wrapped;
- ``number`` (counts, sizes): never cut nor wrapped, and right-aligned;
- ``text`` (reasons, types, values, times): wraps at its spaces, and folds a word longer than
  the column; a number in it still sets the column's least width, so it is never folded.

The widths come from the layout of ``chanbatch show`` (:func:`.rows.fit`), and Rich draws the
table with each column at that width (``no_wrap`` for the whole kinds, ``overflow="fold"`` for
text): Rich's own shrinking would cut a name or a number with an ellipsis. When the columns do not
fit even with their text wrapped, the table turns vertical: one block of ``column: value`` lines
per row (:func:`.rows.block_lines`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from rich import box
from rich.cells import cell_len
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from chanbatch.cli.render.rows import GAP, Column, block_lines, fit
from chanbatch.cli.render.terminal import console

Kind = Literal["name", "id", "number", "text"]

#: A word of a text cell that is a number (``1,458``, ``-0.25``, ``1.5e+07``, ``5.8 MB``'s 5.8).
_NUMBER = re.compile(r"^[-+]?[\d,]*\.?\d+(e[-+]?\d+)?$")


@dataclass(frozen=True, slots=True)
class Col:
    """A column's heading and the kind of its values (see the module docstring)."""

    name: str
    kind: Kind = "name"


def fitted(
    columns: Sequence[Col], table_rows: Sequence[Sequence[str]], *, title: str | None = None
) -> RenderableType:
    """``table_rows`` (cells as Rich markup, one per column) as a table no wider than the
    terminal, or as one block per row when even wrapped text does not make it fit; either is
    followed by a blank line."""
    width = console.width
    texts = [[Text.from_markup(value) for value in row] for row in table_rows]
    laid = [
        Column(
            name=c.name,
            cells=[row[i].plain for row in texts],
            atomic=c.kind != "text",
            right=c.kind == "number",
            least=_longest_number(row[i].plain for row in texts) if c.kind == "text" else 0,
        )
        for i, c in enumerate(columns)
    ]
    widths = fit(laid, width)
    if widths is None:
        head = [Text.from_markup(title, style="italic")] if title else []
        return Group(*head, *block_lines(laid, width), Text(""))
    # a title wider than the table goes above it, whole, rather than wrapped to its width
    across = sum(widths) + GAP * (len(widths) - 1)
    above = [Text.from_markup(title, style="italic")] if title and cell_len(title) > across else []
    # no edges and padding collapsed: columns are GAP cells apart, as fit assumes
    table = Table(
        box=box.SIMPLE_HEAD,
        title=None if above else title,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for c, w in zip(columns, widths, strict=True):
        if c.kind == "text":
            table.add_column(c.name, width=w, overflow="fold")
        else:
            table.add_column(
                c.name, width=w, no_wrap=True, justify="right" if c.kind == "number" else "left"
            )
    for row in texts:
        table.add_row(*row)
    return Group(*above, table, Text(""))  # a blank line after it, as after the blocks


def _longest_number(cells: Iterable[str]) -> int:
    words = (word for cell in cells for word in cell.split())
    return max((cell_len(w) for w in words if _NUMBER.match(w)), default=0)
