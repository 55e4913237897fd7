"""A dataset's rows on the terminal (``chanbatch show``): a table that fits the width.

Numbers, dates, timestamps and booleans are never cut or wrapped, and a column's name is never
cut. Text wraps within its column when the columns do not all fit at their full width. When even
that does not fit (too many columns for the terminal), the rows are printed one block each, a
``column: value`` line per column, text wrapping under its value.

The layout is computed here, on plain strings measured in terminal cells, rather than left to a
Rich table, whose columns shrink with an ellipsis: a cut number is a wrong number.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.text import Text

from chanbatch.cli.commands import count
from chanbatch.cli.render.terminal import console, quiet, rows

#: Columns are this many cells apart.
GAP = 2
#: A text column is not wrapped narrower than this (nor than its name).
MIN_TEXT = 10


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    cells: list[str]
    atomic: bool  # a number, date, time or bool: never wrapped, right-aligned if a number
    right: bool
    least: int = 0  # a text column no narrower than this (a number in it is never folded)

    @property
    def natural(self) -> int:
        return max([cell_len(self.name), *(cell_len(c) for c in self.cells)])

    @property
    def minimum(self) -> int:
        if self.atomic:
            return self.natural
        return max(cell_len(self.name), min(self.natural, MIN_TEXT), self.least)


def value_text(value: Any) -> str:
    """One value as the table shows it: whole (a float by its shortest exact form, a
    timestamp to its last digit), null as ``null``, control characters escaped."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, bytes):
        return value.hex()
    text = str(value)
    if any(unicodedata.category(ch)[0] == "C" for ch in text):
        text = "".join(ascii(ch)[1:-1] if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    return text


def columns_of(table: Any) -> list[Column]:
    """The table's columns as text, with how each may be laid out (from its Arrow type)."""
    import pyarrow as pa

    out = []
    for field, column in zip(table.schema, table.columns, strict=True):
        t = field.type
        number = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
        atomic = number or pa.types.is_temporal(t) or pa.types.is_boolean(t)
        cells = [value_text(v) for v in column.to_pylist()]
        out.append(Column(name=field.name, cells=cells, atomic=atomic, right=number))
    return out


def fit(columns: Sequence[Column], width: int) -> list[int] | None:
    """Each column's width in a table ``width`` cells wide, or None when the columns cannot
    fit even with their text wrapped. Spare width goes first to the text columns that need least to be whole."""
    gaps = GAP * (len(columns) - 1)
    natural = [c.natural for c in columns]
    if sum(natural) + gaps <= width:
        return natural
    widths = [c.minimum for c in columns]
    spare = width - gaps - sum(widths)
    if spare < 0:
        return None
    # water-filling: the columns that want least get all they want, the rest share what is left
    wants = {i: natural[i] - widths[i] for i in range(len(columns)) if natural[i] > widths[i]}
    order = sorted(wants, key=lambda i: wants[i])
    for left, index in enumerate(order):
        give = min(wants[index], spare // (len(order) - left))
        widths[index] += give
        spare -= give
    for index in reversed(order):  # what integer division left over
        give = min(natural[index] - widths[index], spare)
        widths[index] += give
        spare -= give
    return widths


def wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` cells, broken at spaces where it can be."""
    if cell_len(text) <= width:
        return [text]
    return [line.plain.rstrip() for line in Text(text).wrap(console, width, overflow="fold")]


def table_lines(columns: Sequence[Column], width: int) -> list[Text]:
    """The rows as a table (a header, a rule, a line or more per row), or as one block per row
    when the columns do not fit in ``width``."""
    widths = fit(columns, width)
    if widths is None:
        return block_lines(columns, width)
    out = [_joined([(c.name, w, c.right) for c, w in zip(columns, widths, strict=True)], "bold")]
    out.append(Text(" " * GAP).join(Text("─" * w, style="dim") for w in widths))
    count = len(columns[0].cells) if columns else 0
    wrapped = any(
        cell_len(cell) > w for c, w in zip(columns, widths, strict=True) for cell in c.cells
    )
    for row in range(count):
        pieces = [wrap(c.cells[row], w) for c, w in zip(columns, widths, strict=True)]
        height = max(len(p) for p in pieces)
        for line in range(height):
            out.append(
                _joined(
                    [
                        (p[line] if line < len(p) else "", w, c.right)
                        for p, c, w in zip(pieces, columns, widths, strict=True)
                    ]
                )
            )
        if wrapped and row < count - 1:
            out.append(Text(""))
    return out


def block_lines(columns: Sequence[Column], width: int) -> list[Text]:
    """One block per row: a rule naming the row, then ``name: value`` for each column."""
    label = min(max((cell_len(c.name) for c in columns), default=0) + 1, max(width // 3, 8))
    room = max(width - label - 1, 8)
    count = len(columns[0].cells) if columns else 0
    out: list[Text] = []
    for row in range(count):
        heading = f"── row {row + 1} "
        out.append(Text(heading + "─" * max(width - cell_len(heading), 0), style="dim"))
        for c in columns:
            name = f"{c.name}:"
            cell = c.cells[row]
            if cell_len(name) > label:  # a name longer than the label column: value below it
                out.append(Text(name, style="bold"))
                out.extend(Text(" " * (label + 1) + piece) for piece in _value(c, cell, room))
                continue
            pieces = _value(c, cell, room)
            line = Text(name.ljust(label), style="bold")
            line.append(" " + pieces[0], style="")
            out.append(line)
            out.extend(Text(" " * (label + 1) + piece) for piece in pieces[1:])
    return out


def _value(column: Column, cell: str, room: int) -> list[str]:
    return [cell] if column.atomic else wrap(cell, room)


def _joined(cells: list[tuple[str, int, bool]], style: str = "") -> Text:
    line = Text()
    for index, (text, width, right) in enumerate(cells):
        pad = " " * max(width - cell_len(text), 0)
        line.append((pad + text) if right else (text + pad), style=style)
        if index < len(cells) - 1:
            line.append(" " * GAP)
    line.rstrip()
    return line


def show_rows(selection: Any, label: str) -> None:
    """Print ``selection``'s rows to fit the terminal, then a line saying how many of how many
    rows they are (``-q`` leaves it out). ``label`` names the REF."""
    table = selection.table
    if table.num_rows:
        for line in table_lines(columns_of(table), console.width):
            console.print(line, soft_wrap=True)
    if not quiet():
        console.print(Text(footer(selection, label), style="dim"), soft_wrap=True)


def footer(selection: Any, label: str) -> str:
    """``20 of 336,776 rows of flights@1a2b... (use --limit N for more)`` and its variants."""
    shown, total, matched = selection.shown, selection.total, selection.matched
    more = " (use --limit N for more)"
    noun = "row" if total == 1 else "rows"
    if matched is None:
        return (
            f"first {count(shown, 'matching row')} of {label}, found in "
            f"{selection.slices_read} of {count(selection.slices, 'slice')}" + more
        )
    if matched == total:
        if shown == total:
            return f"{rows(total)} {noun} of {label}" if total else f"{label} has no rows"
        return f"{rows(shown)} of {rows(total)} {noun} of {label}" + more
    matches = "matching row" if matched == 1 else "matching rows"
    if shown == matched:
        head = f"{rows(matched)} {matches}" if matched else "no rows match"
        return f"{head} of {rows(total)} in {label}"
    return f"{rows(shown)} of {rows(matched)} {matches} of {rows(total)} in {label}" + more
