"""Small HTML builders for notebook display and reports: escaped text, tables. No imports
beyond the standard library, so every layer may use it.

Everything a builder is given is escaped unless it is :class:`Markup`, the one type that says
"this is already HTML". Builders return Markup, so they nest without double escaping. The output
is well-formed XML as well as HTML (every element closed, no named entities beyond XML's), so a
test can check it with any parser.

A card carries one small ``<style>`` scoped to the ``chanbatch`` class. It sets no colours of its
own: text inherits the notebook's, and shading is translucent grey, so the same HTML reads in
light and dark themes of Jupyter and VS Code.
"""

from __future__ import annotations

import html as _html
from collections.abc import Iterable, Sequence
from typing import Any

#: Rows a table shows before it elides the middle ones.
MAX_ROWS = 20
SHORT_ID = 12


class Markup(str):
    """Text that is already HTML: builders insert it as is."""

    __slots__ = ()


STYLE = Markup(
    "<style>"
    ".chanbatch{font-family:var(--jp-ui-font-family,system-ui,sans-serif);font-size:13px;"
    "line-height:1.4;color:inherit;margin:2px 0;}"
    ".chanbatch .cb-title{font-weight:600;font-size:14px;margin:0 0 2px 0;}"
    ".chanbatch .cb-title code{font-size:inherit;}"
    ".chanbatch .cb-facts{opacity:0.8;margin:0 0 6px 0;}"
    ".chanbatch .cb-section{margin:6px 0 0 0;}"
    ".chanbatch .cb-section > .cb-heading{font-weight:600;margin:8px 0 2px 0;}"
    ".chanbatch table{border-collapse:collapse;margin:0;font-size:12px;color:inherit;"
    "background:transparent;}"
    ".chanbatch th,.chanbatch td{text-align:left;padding:2px 10px 2px 0;vertical-align:top;"
    "border:none;border-bottom:1px solid rgba(127,127,127,0.25);background:transparent;"
    "color:inherit;white-space:nowrap;}"
    ".chanbatch td.cb-wrap{white-space:normal;max-width:48em;}"
    ".chanbatch th{font-weight:600;border-bottom:1px solid rgba(127,127,127,0.6);}"
    ".chanbatch td.cb-num,.chanbatch th.cb-num{text-align:right;"
    "font-variant-numeric:tabular-nums;}"
    ".chanbatch tbody tr:nth-child(even) td{background:rgba(127,127,127,0.07);}"
    ".chanbatch tr.cb-more td{text-align:center;font-style:italic;opacity:0.7;}"
    ".chanbatch caption{text-align:left;font-weight:600;padding:6px 0 2px 0;caption-side:top;}"
    ".chanbatch code{font-family:var(--jp-code-font-family,ui-monospace,monospace);"
    "font-size:12px;background:transparent;color:inherit;padding:0;}"
    ".chanbatch .cb-tag{padding:0 5px;border-radius:3px;font-size:11px;}"
    ".chanbatch .cb-compute{background:rgba(230,140,20,0.3);}"
    ".chanbatch .cb-reuse{background:rgba(40,170,90,0.3);}"
    ".chanbatch .cb-new{background:rgba(60,130,230,0.3);}"
    ".chanbatch ul{margin:2px 0;padding-left:18px;}"
    "</style>"
)


def escape(value: Any) -> Markup:
    """``value`` as HTML text; Markup passes through, anything else is escaped (quotes too)."""
    if isinstance(value, Markup):
        return value
    return Markup(_html.escape("" if value is None else str(value), quote=True))


def tag(name: str, content: Any = "", **attrs: Any) -> Markup:
    """``<name attrs>content</name>``; attribute values and content are escaped.

    Attribute names come from the caller's code, never from data: ``class_`` stands for
    ``class``, and attributes whose value is None are left out.
    """
    parts = [name]
    for key, value in attrs.items():
        if value is not None:
            parts.append(f'{key.rstrip("_").replace("_", "-")}="{escape(value)}"')
    return Markup(f"<{' '.join(parts)}>{escape(content)}</{name}>")


def join(parts: Iterable[Any], sep: str = "") -> Markup:
    """The parts, each escaped unless Markup, joined by ``sep`` (which is escaped too)."""
    return Markup(escape(sep).join(escape(p) for p in parts))


def short_id(value: str | None, length: int = SHORT_ID) -> Markup:
    """An id shortened to ``length`` characters, the full id in its ``title`` (a tooltip)."""
    if not value:
        return Markup("-")
    text = value if len(value) <= length else value[:length] + "\u2026"
    return tag("code", text, title=value)


def ref(dataset: str, snapshot: str | None) -> Markup:
    """``dataset@short-id``, the form a REF takes."""
    return join([dataset, "@", short_id(snapshot)])


def number(value: int | float) -> str:
    """A count with thousands separators; a float to 4 significant digits."""
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return f"{value:,}"


def human_bytes(n: float) -> str:
    """A size such as ``5.1 MB`` (binary units, as the CLI shows them)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover - the loop returns at TB


def badge(text: str, kind: str) -> Markup:
    """A small tag such as ``compute`` or ``reuse``; ``kind`` picks its shading."""
    return tag("span", text, class_=f"cb-tag cb-{kind}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(value: Any, numeric: bool, wrap: bool) -> Markup:
    classes = " ".join(c for c, on in (("cb-num", numeric), ("cb-wrap", wrap)) if on) or None
    if isinstance(value, bool):
        text: Any = "yes" if value else "no"
    elif _is_number(value):
        text = number(value)
    elif value is None:
        text = "-"
    else:
        text = value
    return tag("td", text, class_=classes)


def table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    caption: str | None = None,
    max_rows: int | None = MAX_ROWS,
    wrap: Sequence[str] = (),
) -> Markup:
    """A table of ``rows``; numbers are right-aligned with thousands separators.

    With more than ``max_rows`` rows (None: no limit), the first and last few are shown around
    one row saying how many were left out, so the HTML stays small however many rows there
    are. Columns named in ``wrap`` may wrap their text; the others keep to one line.
    """
    width = len(columns)
    head_rows: Sequence[Sequence[Any]] = rows
    tail_rows: Sequence[Sequence[Any]] = ()
    more = 0
    if max_rows is not None and len(rows) > max_rows:
        first = max(1, (max_rows + 1) // 2)
        last = max(0, max_rows - first)
        head_rows, tail_rows = rows[:first], rows[len(rows) - last :]
        more = len(rows) - first - last
    shown = [*head_rows, *tail_rows]
    # a column is numeric (right-aligned) when every value it shows is a number or missing
    numeric = [
        any(_is_number(r[i]) for r in shown)
        and all(_is_number(r[i]) or r[i] is None for r in shown)
        for i in range(width)
    ]
    wrapping = [name in wrap for name in columns]

    def render(row: Sequence[Any]) -> Markup:
        return tag("tr", join(_cell(v, numeric[i], wrapping[i]) for i, v in enumerate(row)))

    body = [render(r) for r in head_rows]
    if more:
        note = tag("td", f"\u2026 {more:,} more rows", colspan=width)
        body.append(tag("tr", note, class_="cb-more"))
    body.extend(render(r) for r in tail_rows)
    head = join(
        tag("th", name, class_="cb-num" if numeric[i] else None) for i, name in enumerate(columns)
    )
    return tag(
        "table",
        join(
            [
                tag("caption", caption) if caption else "",
                tag("thead", tag("tr", head)),
                tag("tbody", join(body)),
            ]
        ),
    )


def facts(items: Iterable[tuple[str, Any]]) -> Markup:
    """A one-line list of facts, ``label: value · label: value``; None values are skipped, and
    an empty label shows the value alone."""
    parts = [
        join([label, ": ", value]) if label else escape(value)
        for label, value in items
        if value is not None
    ]
    return tag("div", join(parts, " \u00b7 "), class_="cb-facts")


def section(heading: str, *content: Any) -> Markup:
    """A titled part of a card."""
    return tag(
        "div",
        join([tag("div", heading, class_="cb-heading"), *content]),
        class_="cb-section",
    )


def bullets(items: Iterable[Any]) -> Markup:
    """An unordered list."""
    return tag("ul", join(tag("li", item) for item in items))


def card(title: Any, *content: Any) -> Markup:
    """A whole display: the scoped style, a title, then the content, in one ``div``."""
    return tag(
        "div", join([STYLE, tag("div", title, class_="cb-title"), *content]), class_="chanbatch"
    )
