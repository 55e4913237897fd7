"""``chanbatch plan`` reports every unknown column at once, each at its own field's line.

A typo in one stage used to hide the typos after it: the stages below a bad one were not
checked, so each was found only after the one before it was fixed. Like ``validate``, plan now
lists every problem in one error (exit 2).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from clikit import ok, run

BLUEPRINT = """\
name: typos
inputs:
  flights: flights
stages:
  late:
    from: flights
    filter: "dep_dealy > 0"
  fast:
    from: late
    derive:
      speed: "distance / 2"
      gap: "arr_dealy - dep_delay"
  by_carrier:
    from: fast
    group_by:
      - origin
      - carier
    aggregate:
      flights: count()
      miles: sum(distance)
outputs:
  by_carrier: typo_out
"""


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_plan_reports_every_unknown_column_with_its_line(
    store: Path, src: Path, tmp_path: Path
) -> None:
    frame = pd.DataFrame(
        {
            "distance": [100.0, 2000.0, 350.0],
            "dep_delay": [5.0, -3.0, 40.0],
            "arr_delay": [2.0, -8.0, 35.0],
            "carrier": ["AA", "B6", "DL"],
            "origin": ["JFK", "LGA", "EWR"],
        }
    )
    data = src / "2013-01.parquet"
    frame.to_parquet(data, index=False)
    ok("snapshot", "freeze", "flights", data, store=store)
    path = tmp_path / "typos.yaml"
    path.write_text(BLUEPRINT, encoding="utf-8")

    result = run("plan", path, store=store, cwd=tmp_path)

    assert result.code == 2, str(result)
    assert "Traceback" not in result.stderr, str(result)
    assert result.stdout == "", str(result)
    lines = result.err_lines
    assert lines[0].startswith("Error: ") and "3 problems" in lines[0], str(result)
    expected = {
        "dep_dealy": ("late", "filter", line_of(BLUEPRINT, "dep_dealy")),
        "arr_dealy": ("fast", "derive.gap", line_of(BLUEPRINT, "arr_dealy")),
        "carier": ("by_carrier", "group_by", line_of(BLUEPRINT, "- carier")),
    }
    for name, (stage, field, line) in expected.items():
        found = [entry for entry in lines if f"unknown column {name!r}" in entry]
        assert len(found) == 1, str(result)
        assert f"typos.yaml:{line}: stage {stage!r}, field {field!r}" in found[0], found[0]
    # in file order, as validate lists its problems
    order = [next(i for i, e in enumerate(lines) if repr(n) in e) for n in expected]
    assert order == sorted(order)
