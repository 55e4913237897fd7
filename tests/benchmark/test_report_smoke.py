"""report.py's writers, on made-up numbers: no benchmark runs here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_scaling
import report
from benchkit import Ratio, write_section

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _image(path: Path) -> object:
    image = pytest.importorskip("matplotlib.image")
    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = image.imread(path)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 200
    assert pixels.std() > 0.01  # not a blank canvas
    return pixels


def test_met_follows_the_targets_comparison() -> None:
    assert Ratio("a", 1.0, 1.0, "", "≤ 1×").met is True
    assert Ratio("a", 1.0, 1.0, "", "< 1 s", strict=True).met is False
    assert Ratio("a", 1.2, 1.1, "", "≤ 1.1×").met is False
    assert Ratio("a", 0.5, None, "", "—").met is None


def test_ratio_chart_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    ratios = [
        Ratio("cold ÷ dask", 0.8, 1.1, "0.8 s ÷ 1.0 s", "≤ 1.10×"),
        Ratio("no-op ÷ cold", 0.009, 0.05, "", "≤ 0.05×"),
        Ratio("freeze ÷ write_table", 1.6, 1.35, "", "≤ 1.35×"),
        Ratio("cold ÷ DuckDB", 4.0, None, "", "—"),
    ]
    path = tmp_path / "img" / "ratios.png"
    report.ratio_chart(ratios, path)
    _image(path)


def test_scaling_chart_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = bench_scaling.Scaling(rows=1000)
    for n in (10, 100, 1000):
        result.points[n] = {
            name: bench_scaling.Point([n * k * 0.001, n * k * 0.0012])
            for k, name in enumerate(bench_scaling.engines(), start=1)
        }
    path = tmp_path / "scaling.png"
    report.scaling_chart(result, path)
    _image(path)


def test_summary_goes_first_and_keeps_hand_written_notes(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text(
        "# Performance\n\nIntro.\n\n## Store\n\n<!-- s: begin -->\nold\n<!-- s: end -->\n\n"
        "### Analysis (by hand)\n\nKeep me.\n"
    )
    for body in ("first\n", "second\n"):
        write_section(
            doc,
            body,
            section=report.SECTION,
            begin=report.BEGIN,
            end=report.END,
            header="# Performance\n",
            first=True,
        )
    text = doc.read_text()
    assert text.count(report.BEGIN) == 1 and "first" not in text and "second" in text
    assert text.index("Intro.") < text.index(report.SECTION) < text.index("## Store")
    assert text.endswith("### Analysis (by hand)\n\nKeep me.\n")
    assert "<!-- s: begin -->\nold\n<!-- s: end -->" in text


def test_summary_table_gives_each_verdict() -> None:
    lines = report.summary_table(
        [
            Ratio("cold", 0.8, 1.1, "0.8 s", "≤ 1.10×", "bench_q1.py"),
            Ratio("append", 0.06, 0.05, "0.06 s", "≤ 0.05×", "bench_q1.py"),
            Ratio("duckdb", 5.0, None, "", "—", "bench_q1.py"),
        ]
    )
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert [(c[0], c[1], c[4]) for c in cells] == [
        ("cold", "0.80×", "yes"),
        ("append", "0.060×", "**no**"),
        ("duckdb", "5.00×", "—"),
    ]
