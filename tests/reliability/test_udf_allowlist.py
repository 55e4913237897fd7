"""Issue 7, item 11: a ``map`` naming a module that is not allowed is refused before anything runs.

The blueprint filters a dataset, then maps it with ``udfs_hostile:clean``, a module that writes a
marker file when it is imported. ``chanbatch run`` without ``--allow-module udfs_hostile`` (or with
near misses: a prefix, a sibling, a submodule, another case) exits 2 naming the module and the
option, and afterwards: the marker does not exist (the module was never imported, not even by
planning), and every file of the store outside runs/ is byte for byte what it was (no task ran:
no cache entry, no memo, no output). That no run record is left either is a test of its own:
the run writes its record only after the allowlist has passed. The control run, with the module allowed, creates the
marker and the output, so the checks can see an import and a run.

``module:function`` strings with path tricks are refused by ``validate`` when they are not a
dotted module and a name (``../x:f``), and by the allowlist at run time when they are (``os:system``,
``builtins:eval``, ``subprocess:run``).
"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from clikit import tree
from hostilekit import HERE, assert_clean_error, case, diff_trees, record_counts, run_many

import chanbatch as cb
from chanbatch.errors import UsageError

MODULE = "udfs_hostile"
MARKER_ENV = "CHANBATCH_HOSTILE_MARKER"


def blueprint(function: str) -> str:
    return (
        "name: hostile_udf\n"
        "inputs: {events: events}\n"
        "stages:\n"
        "  positive: {from: events, filter: 'x > 0'}\n"
        f"  cleaned: {{from: positive, map: {{function: {function!r}, version: 1}}}}\n"
        "outputs: {cleaned: cleaned_events}\n"
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with dataset ``events`` (three slices), and nothing else."""
    root = tmp_path_factory.mktemp("udf")
    frame = pd.DataFrame({"day": [1, 1, 2, 2, 3, 3], "x": [1.0, -1.0, 2.0, 3.0, -4.0, 5.0]})
    cb.Store(str(root / "store")).freeze("events", frame, slice_by="day")
    return root / "store"


#: --allow-module values that must not allow ``udfs_hostile``.
NEAR_MISSES: dict[str, list[str]] = {
    "none": [],
    "prefix": ["--allow-module", "udfs"],
    "longer": ["--allow-module", "udfs_hostile_other"],
    "submodule": ["--allow-module", "udfs_hostile.sub"],
    "empty": ["--allow-module", ""],
    "case": ["--allow-module", "UDFS_HOSTILE"],
    "dotted-prefix": ["--allow-module", "udfs_hostile."],
    "other-modules": ["--allow-module", "os", "--allow-module", "builtins"],
}

#: Not a dotted module and a function name: refused by validate (and so by run).
MALFORMED = [
    "../x:f",
    "/etc/passwd:f",
    "udfs_hostile:../x",
    "udfs_hostile::clean",
    "udfs_hostile:clean.__call__",
    "udfs_hostile:",
    ":clean",
    "udfs_hostile",
    "os/path:join",
    "os system:f",
    "os;import:f",
    "C:\\x:f",
    "os:system\n",
    "\x00os:system",
    "оs:system",  # Cyrillic о
    "udfs_hostile:clean()",
    "udfs_hostile:clean x",
]

#: Well-formed, but their modules are not on the allowlist: refused when the run starts.
NOT_ALLOWED = [
    "os:system",
    "builtins:eval",
    "builtins:exec",
    "subprocess:run",
    "importlib:import_module",
    "os.path:join",
    "posix:system",
    "pickle:loads",
    "ctypes:CDLL",
    "sys:exit",
    "chanbatch.cli:main",
    "sоs:system",  # Cyrillic о after an ASCII s: a valid identifier, and still not allowed
    "udfs_hostile:clean",
]


def _run_record(change: str) -> bool:
    """A change under runs/: checked on its own, by test_a_refused_run_leaves_no_run_record."""
    return change.split(" ", 1)[1].startswith("runs/")


def _copy(base: Path, into: Path) -> Path:
    shutil.copytree(base, into)
    return into


def test_refused_runs_import_nothing_and_change_nothing(
    base: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    plans: list[tuple[str, str]] = []  # (kind, function) of each case
    cases, stores, markers = [], [], []

    def add(kind: str, function: str, command: str, extra: list[str]) -> None:
        work = tmp_path / f"case{len(cases)}"
        work.mkdir()
        bp = work / "bp.yaml"
        bp.write_text(blueprint(function), encoding="utf-8")
        store = _copy(base, work / "store")
        marker = work / "marker"
        args = [command, bp] + (["--store", store] if command != "validate" else []) + extra
        cases.append(case(*args, cwd=work, env={MARKER_ENV: str(marker)}))
        plans.append((kind, function))
        stores.append(store)
        markers.append(marker)

    for extra in NEAR_MISSES.values():
        add("near-miss", f"{MODULE}:clean", "run", extra)
    add("plan", f"{MODULE}:clean", "plan", [])
    add("validate-ok", f"{MODULE}:clean", "validate", [])
    for function in MALFORMED:
        add("malformed", function, "validate", [])
        add("malformed", function, "run", ["--allow-module", "os"])
    for function in NOT_ALLOWED:
        add("not-allowed", function, "run", [])

    before = tree(base)
    results = run_many(cases, env={"PYTHONPATH": str(HERE)})
    counts: Counter[str] = Counter()
    for (kind, function), result, store, marker in zip(
        plans, results, stores, markers, strict=True
    ):
        label = f"{kind} {function!r}: {result}"
        assert not marker.exists(), f"the module was imported: {label}"
        changed = [c for c in diff_trees(before, tree(store)) if not _run_record(c)]
        assert not changed, f"{changed} {label}"
        counts[kind] += 1
        if kind in ("plan", "validate-ok"):
            assert result.code == 0, label
            continue
        if kind == "malformed":
            assert_clean_error(result, 2, "map.function", "expected 'package.module:function'")
            continue
        # the allowlist: names the function, its module, and how to allow it
        module = function.partition(":")[0]
        line = assert_clean_error(result, 2, "is not on the allowlist", f"module {module!r}")
        assert f"map function {function!r} is not allowed" in line, label
        assert f"--allow-module {module}" in line, label
        assert result.stdout == "", label
    assert counts["near-miss"] == len(NEAR_MISSES)
    record_counts(request, counts)


def test_the_allowed_run_imports_the_module(base: Path, tmp_path: Path) -> None:
    """The control: allowed, the same blueprint imports the module and freezes the output."""
    store = _copy(base, tmp_path / "store")
    bp = tmp_path / "bp.yaml"
    bp.write_text(blueprint(f"{MODULE}:clean"))
    marker = tmp_path / "marker"
    work = case(
        "run", bp, "--store", store, "--allow-module", MODULE, "--json",
        cwd=tmp_path, env={MARKER_ENV: str(marker)},
    )  # fmt: skip
    (result,) = run_many([work], env={"PYTHONPATH": str(HERE)})
    assert result.code == 0, str(result)
    assert marker.exists()
    assert result.json()["outputs"]["cleaned"]["rows"] == 4
    assert any(path.startswith("runs/") for path in tree(store))


def test_the_api_refuses_before_importing(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _copy(base, tmp_path / "store")
    marker = tmp_path / "marker"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    before = tree(store)
    model = cb.Blueprint.from_yaml(blueprint(f"{MODULE}:clean"))
    for allow in [(), ("udfs",), ("udfs_hostile.sub",), ("os", "builtins")]:
        with pytest.raises(UsageError, match=r"module 'udfs_hostile' is not on the allowlist"):
            model.run(str(store), scheduler="sync", allow_modules=allow)
        assert MODULE not in sys.modules
        assert not marker.exists()
        assert not [c for c in diff_trees(before, tree(store)) if not _run_record(c)]


def test_a_refused_run_leaves_no_run_record(base: Path, tmp_path: Path) -> None:
    store = _copy(base, tmp_path / "store")
    bp = tmp_path / "bp.yaml"
    bp.write_text(blueprint(f"{MODULE}:clean"))
    (result,) = run_many([case("run", bp, "--store", store, cwd=tmp_path)])
    assert_clean_error(result, 2, "is not on the allowlist")
    assert not (store / "runs").exists() or not any((store / "runs").iterdir())
