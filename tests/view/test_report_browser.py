"""The run report in headless Chromium: it loads offline with no errors, fetches nothing, shows
hostile slice keys as text, and renders to a picture with the state and slice colours.

Skips, saying why, when Chromium or the playwright package is missing (``apt-get install
chromium``; playwright comes with the test extra).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import chanbatch as cb

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed"
)
CHROMIUM = next(
    (p for p in ("/usr/bin/chromium", shutil.which("chromium")) if p and Path(p).exists()), None
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)

HOSTILE = "<script>alert(1)</script>"
BLUEPRINT = """\
name: browser
inputs: {t: t}
stages:
  kept:
    from: t
    filter: "v > 0"
  per_kind:
    from: kept
    group_by: [kind]
    aggregate: {n: count(), total: sum(v)}
outputs:
  per_kind: browser_out
"""
# the flow graph's state fills (docs/cli.md) and the timeline's first slice colours
PARTIAL, COMPUTE, REUSE = "#F0E442", "#E69F00", "#009E73"


def frame(keys: list[str], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 30 * len(keys)
    return pd.DataFrame(
        {
            "day": np.repeat(np.array(keys, dtype=object), 30),
            "kind": rng.choice(np.array(["a", "b"], dtype=object), n),
            "v": rng.normal(0.5, 1.0, n).round(2),
        }
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of a run after one slice was added: partial, computed and reused stages,
    and a slice key that is a script tag."""
    root = tmp_path_factory.mktemp("browser")
    store = cb.Store(root / "snapshots")
    store.freeze("t", frame(["2024-01", "2024-02", "2024-03"], 0), slice_by="day")
    blueprint = cb.Blueprint.from_yaml(BLUEPRINT)
    blueprint.run(store)
    store.freeze("t", frame([HOSTILE], 1), slice_by="day")
    path = root / "report.html"
    blueprint.run(store, report=path)
    return path


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def test_report_loads_offline_without_errors(report: Path) -> None:
    url = report.resolve().as_uri()
    errors: list[str] = []
    requests: list[str] = []
    dialogs: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.on(
                "console",
                lambda m: (
                    errors.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(url, wait_until="load")
            page.wait_for_timeout(200)  # anything deferred would have fired by now
            shot = page.screenshot(full_page=True)
            body = page.inner_text("body")
            bar_titles = page.eval_on_selector_all(
                "#timeline-chart rect.bar title", "els => els.map(e => e.textContent)"
            )
            scripts = page.eval_on_selector_all("script", "els => els.length")
        finally:
            browser.close()

    assert errors == []
    assert requests == [url]
    assert dialogs == []
    assert scripts == 0
    assert HOSTILE in body  # shown as text, in the legend and the tables
    assert any(f"slice {HOSTILE}" in t for t in bar_titles)
    assert all(" s · " in t for t in bar_titles)

    import matplotlib.image

    image = matplotlib.image.imread(io.BytesIO(shot), format="png")
    height, width = image.shape[:2]
    assert width >= 1000 and height > 800
    pixels = (image[..., :3] * 255).round().astype(np.uint8).reshape(-1, 3)
    colours = {tuple(int(c) for c in px) for px in np.unique(pixels, axis=0)}
    assert len(colours) > 50  # text, graph, bars: far from blank
    white = np.all(pixels == 255, axis=1).mean()
    assert white < 0.97
    # the partial stages' fill (table badges, and the graph), the first slice's bars, and with
    # dot the graph's legend (without it the graph is Mermaid text)
    expected = [PARTIAL, "#0072B2"] + ([REUSE, COMPUTE] if shutil.which("dot") else [])
    for colour in expected:
        assert rgb(colour) in colours, colour
