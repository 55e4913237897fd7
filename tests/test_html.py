"""chanbatch.html: everything given is escaped, tables elide their middle rows, ids shorten."""

from __future__ import annotations

import subprocess
import sys

from chanbatch import html as h
from tests.htmlkit import parse, start_tags, table, text

HOSTILE = "<b>&\"x'</b><script>alert(1)</script>"


def test_escape_creates_no_element_and_keeps_the_text() -> None:
    markup = h.card(HOSTILE, h.table([HOSTILE], [(HOSTILE,)], caption=HOSTILE))
    tags = start_tags(markup)
    assert "b" not in tags and "script" not in tags
    assert tags.count("table") == 1 and tags.count("td") == 1
    root = parse(markup)
    cell = next(root.iter("td"))
    assert text(cell) == HOSTILE
    assert text(next(root.iter("th"))) == HOSTILE
    assert text(next(root.iter("caption"))) == HOSTILE


def test_attribute_values_are_escaped() -> None:
    markup = h.card("t", h.tag("span", "x", title=HOSTILE))
    span = next(e for e in parse(markup).iter("span"))
    assert span.get("title") == HOSTILE
    assert "b" not in start_tags(markup)


def test_markup_is_not_escaped_twice() -> None:
    inner = h.tag("i", "a & b")
    assert h.escape(inner) == inner
    assert str(h.tag("b", inner)) == "<b><i>a &amp; b</i></b>"


def test_short_id_keeps_the_full_id_in_its_title() -> None:
    full = "0123456789abcdef" * 4
    el = parse(h.card("t", h.short_id(full))).find(".//code")
    assert el.get("title") == full
    assert text(el) == full[:12] + "\u2026"
    assert h.short_id(None) == "-"


def test_a_long_table_shows_its_first_and_last_rows_and_counts_the_rest() -> None:
    rows = [(f"k{i}", i * 1000) for i in range(1000)]
    t = table(h.card("t", h.section("Rows", h.table(["key", "n"], rows, max_rows=10))), "Rows")
    assert t.column("key") == [f"k{i}" for i in [*range(5), *range(995, 1000)]]
    assert t.column("n") == [f"{i * 1000:,}" for i in [*range(5), *range(995, 1000)]]
    (more,) = [r for r in t.rows if len(r) == 1]
    assert more == ["\u2026 990 more rows"]
    assert len(t.rows) == 11


def test_a_short_table_is_whole_and_numbers_align_right() -> None:
    markup = h.card("t", h.table(["a", "n"], [("x", 1), ("y", None)], max_rows=10))
    root = parse(markup)
    cells = list(root.iter("td"))
    assert [text(c) for c in cells] == ["x", "1", "y", "-"]
    assert cells[1].get("class") == "cb-num" and cells[0].get("class") is None


def test_bytes_read_as_the_cli_shows_them() -> None:
    assert h.human_bytes(512) == "512 B"
    assert h.human_bytes(5.1 * 1024 * 1024) == "5.1 MB"


def test_the_style_is_scoped_to_the_display() -> None:
    css = text(parse(h.card("t")).find("style"))
    rules = [r for r in css.split("}") if r.strip()]
    assert rules and all(
        all(sel.strip().startswith(".chanbatch") for sel in r.split("{")[0].split(","))
        for r in rules
    )
    assert "url(" not in css and "@import" not in css  # no external CSS


def test_html_is_standard_library_only() -> None:
    code = "import sys, chanbatch.html; print(sorted(m for m in sys.modules if '.' not in m))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "chanbatch" in loaded
    for heavy in ("pandas", "pyarrow", "dask", "numpy"):
        assert f"'{heavy}'" not in loaded
