"""A quick smoke of bench_incremental_ops.py (issue 18): every item, tiny, one round; no figure
judged.

The benchmark itself is run by hand; here it runs at TPC-H SF 0.01 on the days from 1998-10-01
on (about 60 day slices), caching into a temporary folder and writing a temporary doc, and the
test checks that every item's answers were checked (a failed check exits 1), that its runs
after one new slice computed only a few tasks, and that the section was written at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest.importorskip("duckdb")

import bench_incremental_ops as bench
from benchkit import find_tool


@pytest.mark.skipif(find_tool("tpchgen-cli") is None, reason="tpchgen-cli is not installed")
def test_every_item_checks_its_answers_and_writes_the_section(tmp_path: Path) -> None:
    doc = tmp_path / "docs" / "performance.md"
    doc.parent.mkdir()
    doc.write_text("# Performance\n\n## Another section\n\nKept.\n")
    argv = ["--sf", "0.01", "--quick", "--from", "1998-10-01"]
    code, results = bench.bench([*argv, "--cache", str(tmp_path / "cache"), "--out", str(doc)])

    assert code == 0
    assert [r.item.name for r in results] == list(bench.NAMES)
    for r in results:
        assert r.cold and r.new and r.duckdb and r.freeze, r.item.name
        # one new slice: its own tasks and the combines on its path, not the whole input
        assert 0 < r.computed("new") < r.computed("cold") / 4, (r.item.name, r.new_tasks)
        if r.item.check != "exact":
            assert r.errors, r.item.name  # the approximation's error was measured
    text = doc.read_text()
    assert text.startswith("# Performance\n\n## Another section\n\nKept.\n")
    assert text.count(bench.BEGIN) == 1 and text.count(bench.END) == 1
    section = text.split(f"## {bench.SECTION}\n", 1)[1]
    assert section.rstrip().endswith(bench.END)
    for r in results:
        assert f"| {r.item.label} |" in section
    assert "| machine | |" in section and "Command (from the repository root" in section
