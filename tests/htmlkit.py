"""Read the HTML of a notebook display back: check it parses, find its tables and facts.

Displays are written to be well-formed XML, so ``xml.etree`` parses them strictly (an unclosed
or stray tag fails the test); ``html.parser`` then lists every element a browser would create.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from html.parser import HTMLParser


@dataclass
class Table:
    heading: str  # the section heading above the table, or its caption
    columns: list[str]
    rows: list[list[str]]  # cell text; a row eliding others is one cell
    titles: list[list[str | None]]  # each cell's first title attribute (a full id, a long text)

    def column(self, name: str) -> list[str]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows if len(r) == len(self.columns)]


def parse(markup: str) -> ET.Element:
    """The display as an element tree; fails the test unless it is well-formed."""
    assert isinstance(markup, str) and markup.startswith('<div class="chanbatch">'), markup[:80]
    return ET.fromstring(markup)


def text(element: ET.Element) -> str:
    return "".join(element.itertext())


def _title_in(cell: ET.Element) -> str | None:
    for el in cell.iter():
        if el.get("title") is not None:
            return el.get("title")
    return None


def tables(markup: str) -> dict[str, Table]:
    """Every table of a display by the heading of its section (or its caption)."""
    root = parse(markup)
    found: dict[str, Table] = {}
    for section in root.iter("div"):
        if section.get("class") != "cb-section":
            continue
        heading = text(section.find("div"))
        for table in section.iter("table"):
            found[heading] = _table(heading, table)
    for table in root.iter("table"):
        caption = table.find("caption")
        if caption is not None:
            found[text(caption)] = _table(text(caption), table)
    return found


def table(markup: str, heading_prefix: str) -> Table:
    """The one table whose heading starts with ``heading_prefix``."""
    matches = [t for h, t in tables(markup).items() if h.startswith(heading_prefix)]
    assert len(matches) == 1, (heading_prefix, list(tables(markup)))
    return matches[0]


def _table(heading: str, table: ET.Element) -> Table:
    columns = [text(th) for th in table.find("thead").iter("th")]
    rows, titles = [], []
    for tr in table.find("tbody").findall("tr"):
        cells = tr.findall("td")
        rows.append([text(td) for td in cells])
        titles.append([_title_in(td) for td in cells])
    return Table(heading=heading, columns=columns, rows=rows, titles=titles)


def facts(markup: str) -> dict[str, str]:
    """The card's one-line facts, ``label: value · ...``, as a dict."""
    root = parse(markup)
    line = next(el for el in root.iter("div") if el.get("class") == "cb-facts")
    out = {}
    for part in text(line).split(" \u00b7 "):
        label, _, value = part.partition(": ")
        out[label] = value
    return out


def title(markup: str) -> str:
    root = parse(markup)
    return text(next(el for el in root.iter("div") if el.get("class") == "cb-title"))


def start_tags(markup: str) -> list[str]:
    """Every element a browser's HTML parser would create, in order."""
    found: list[str] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.append(tag)

    Collect().feed(markup)
    return found
