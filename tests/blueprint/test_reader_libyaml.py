"""The blueprint reader gives the same result with libyaml's parser as with PyYAML's.

libyaml reads a blueprint of thousands of stages five times faster, but the two parsers differ
on a few constructs. The reader sends documents with those to PyYAML and reads again with
PyYAML what libyaml refuses, so that data, lines, duplicate keys and errors are all the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypokit import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chanbatch.blueprint import reader

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted(
    p for p in REPO.rglob("*.yaml") if ".venv" not in p.parts and "node_modules" not in p.parts
)
PIECES = [
    *"ab:- \n\t[]{},&*!'\"#|>%@`?<=0123.",
    "  ",
    "\n  ",
    "\n- ",
    ": ",
    "<<: *x",
    "&x ",
    "true",
    "on",
    "é",
    "\x07",
    "\ufeff",
    "\u2028",
    "\x85",
    "---\n",
    "...\n",
    "stages:\n",
    "  s:\n    from: a\n",
    '    filter: "x > 1"\n',
    "|\n  a\n",
    ">-\n  b\n",
    "!!str ",
    "? a\n: b\n",
    "!x ",
    "'a''b'",
    "# c\n",
]


def located(value: Any) -> Any:
    """``value`` with every line it remembers, as plain comparable data."""
    if isinstance(value, reader.LocatedMap):
        return (
            "map",
            value.line,
            [(k, value.key_line(k), value.value_line(k), located(v)) for k, v in value.items()],
        )
    if isinstance(value, reader.LocatedList):
        return ("list", value.line, value.item_lines, [located(v) for v in value])
    return (type(value).__name__, value)


def outcome(read: Any, text: str) -> tuple[Any, ...]:
    try:
        data, duplicates = read(text)
    except Exception as exc:
        return ("error", type(exc).__name__, str(exc))
    return ("ok", located(data), duplicates)


def pyyaml_only(text: str) -> tuple[Any, list[reader.DuplicateKey]]:
    return reader._read_with(reader._Loader, text)


def test_libyaml_is_used() -> None:
    if len(reader._LOADERS) == 1:
        pytest.skip("PyYAML is built without libyaml")
    text = "stages:\n  s:\n    from: a\n    filter: 'x > 1'\n"
    assert reader._PYTHON_ONLY.search(text) is None


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_repository_documents_read_the_same(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert outcome(reader.read_yaml, text) == outcome(pyyaml_only, text)


@settings(max_examples=examples(3000), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(PIECES), max_size=30).map("".join))
def test_random_documents_read_the_same(text: str) -> None:
    assert outcome(reader.read_yaml, text) == outcome(pyyaml_only, text)


@pytest.mark.parametrize("text", ["[stages:\n]", "{a:\n}", "[a, b:\n  ]", "x: [a:\n ]\n"])
def test_a_flow_collection_over_lines_reads_the_same(text: str) -> None:
    """libyaml puts an empty value in a flow collection that spans lines on the next line,
    PyYAML on its key's (found by the random test above): such documents are read by PyYAML."""
    assert outcome(reader.read_yaml, text) == outcome(pyyaml_only, text)
