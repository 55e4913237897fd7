"""A quick smoke of bench_slices.py (issue 17): every shape, tiny, one round; no figure judged.

The benchmark itself is run by hand; here it runs at TPC-H SF 0.01 with 300 slices in place of
100,000, caching into a temporary folder and writing a temporary doc, and the test checks that
every answer check ran and passed and that the section and its chart were written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest.importorskip("duckdb")
pytest.importorskip("matplotlib")

import bench_slices
from benchkit import find_tool

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(find_tool("tpchgen-cli") is None, reason="tpchgen-cli is not installed")
def test_every_shape_checks_its_answers_and_writes_the_section(tmp_path: Path) -> None:
    doc = tmp_path / "docs" / "performance.md"
    doc.parent.mkdir()
    doc.write_text("# Performance\n\n## Another section\n\nKept.\n")
    argv = ["--sf", "0.01", "--repeat", "1", "--quick", "--slices-100k", "300"]
    code, report = bench_slices.bench(
        [*argv, "--cache", str(tmp_path / "cache"), "--out", str(doc)]
    )

    assert code == 0
    checked = " ".join(report.verified)
    for what in (
        "month: cold run",
        "month: no-op rerun",
        "month, append slice added:",
        "day: cold run",
        "day, append slice added:",
        "decimal: cold run's sums",
        "month, middle slice added:",
        "100k: no-op",
        "100k: one new slice",
        "freeze:",
        "cluster: cold run",
        "month, append slice added on processes:",
        "month, append slice added on tcp://",
    ):
        assert what in checked, what
    assert {f.shape for f in report.figures} == set(bench_slices.SHAPES)
    assert all(f.seconds and f.ratios for f in report.figures)
    text = doc.read_text()
    assert text.count(bench_slices.BEGIN) == 1 and "## Another section\n\nKept." in text
    assert "![ratios of the slice shapes" in text and "| machine | |" in text
    chart = doc.parent / "img" / bench_slices.CHART
    assert chart.read_bytes()[:8] == PNG_MAGIC
