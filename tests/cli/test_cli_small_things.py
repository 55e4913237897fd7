"""Issue 19, item 7: the small things a new user stumbles on, each through the real script.

- counts agree in number ("1 slice", "1 output");
- ``plan`` names a reason once per stage, however many tasks' reasons share it;
- slice keys are listed in their natural order (1, 2, 10), not in the order tasks are walked
  nor as text;
- ``freeze`` calls a slice of a key the head had, with other content, "replaced";
- ``inspect`` shows lineage as sentences, not a Python dict;
- a read command on a store that is not there fails with its absolute path (exit 1), while
  ``freeze`` makes it and says so;
- a dataset that is not found: the store's absolute path and the close names;
- a ``map`` module off the worker's path: the current directory, and PYTHONPATH;
- ``--scheduler`` completes.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from clikit import CHANBATCH, assert_one_error_line, base_env, ok, ok_json, run

SUMS = """\
name: sums
inputs:
  t: t
stages:
  tot:
    from: t
    group_by: [g]
    aggregate:
      s: sum(x)
outputs:
  tot: t_sums
"""

MAPPED = """\
name: mapped
inputs:
  t: t
stages:
  doubled:
    from: t
    map: {function: "myudfs:double", version: "1"}
outputs:
  doubled: t_doubled
"""

#: A count of one followed by a plural noun, anywhere in what the CLI printed.
ONE_PLURAL = re.compile(
    r"(?<![\d,.])1 (slices|rows|inputs|stages|outputs|tasks|files|entries|objects|manifests)\b"
)


def slice_files(src: Path, keys: range) -> list[Path]:
    """One CSV per key, named by it (so each is the slice of that int key)."""
    paths = []
    for key in keys:
        path = src / f"{key}.csv"
        pd.DataFrame({"g": ["a", "b"], "x": [float(key), 1.0]}).to_csv(path, index=False)
        paths.append(path)
    return paths


@pytest.fixture
def sums(tmp_path: Path) -> Path:
    path = tmp_path / "sums.yaml"
    path.write_text(SUMS)
    return path


# -- 1. counts ----------------------------------------------------------------------------------


def test_a_count_of_one_takes_the_singular(store: Path, src: Path, sums: Path) -> None:
    only = src / "only.csv"
    pd.DataFrame({"g": ["a"], "x": [1.0]}).to_csv(only, index=False)
    outputs = []

    freeze = ok("snapshot", "freeze", "t", only, store=store).stdout
    assert "t: created snapshot " in freeze and "(version 1); 1 slice given, 1 new\n" in freeze
    inspect = ok("snapshot", "inspect", "t", store=store).stdout
    assert re.search(r"^version 1  ·  1 row  ·  [\d.]+ [KM]?B  ·  1 slice$", inspect, re.M)
    validate = ok("validate", sums).stdout
    assert validate == "ok: blueprint 'sums': 1 input, 1 stage, 1 output\n"
    result = ok("run", sums, store=store).stdout
    assert re.search(r"^tot → t_sums@[0-9a-f]{12} \(1 row\)$", result, re.M)
    outputs += [freeze, inspect, validate, result]
    outputs.append(ok("plan", sums, store=store).stdout)
    outputs.append(ok("cache", "ls", store=store).stdout)
    outputs.append(ok("snapshot", "verify", store=store).stdout)
    for text in outputs:
        assert not ONE_PLURAL.search(text), text


# -- 2. plan names each reason once -------------------------------------------------------------


def test_plan_names_a_reason_once_per_stage(store: Path, src: Path, sums: Path) -> None:
    first, fourth = slice_files(src, range(1, 4)), slice_files(src, range(4, 5))
    ok("snapshot", "freeze", "t", *first, store=store)
    ok("run", sums, store=store)
    ok("snapshot", "freeze", "t", *fourth, store=store)

    plan = ok("plan", sums, store=store).stdout
    (row,) = [line.split(None, 3) for line in plan.splitlines() if line.startswith("tot ")]
    # the partial of slice 4, and the two tasks above it ("new slice 4; reused if ...", which
    # the table shortens to "may reuse")
    why = "new slice 4 (3); may reuse (2)"
    assert [*row[:3], row[3].rstrip()] == ["tot", "3", "4", why]


# -- 3. slice keys in natural order ------------------------------------------------------------


def test_new_slices_are_listed_in_key_order(store: Path, src: Path, sums: Path) -> None:
    ok("snapshot", "freeze", "t", *slice_files(src, range(1, 4)), store=store)
    ok("run", sums, store=store)
    ok("snapshot", "freeze", "t", *slice_files(src, range(4, 13)), store=store)

    tasks = ok_json("plan", sums, store=store)["tasks"]
    whole = [t["reason"] for t in tasks if t["slice"] is None and t["action"] == "compute"]
    assert whole, tasks
    for reason in whole:  # each combine names the new slices below it, in order
        listed = re.fullmatch(r"new slices? ([\d, ]+)(, \.\.\.)?; reused if .*", reason)
        assert listed, reason
        keys = [int(k) for k in listed[1].split(", ")]
        assert keys == sorted(keys) and keys[0] >= 4, reason
    finish = next(t for t in tasks if t["kind"] == "finish")
    assert finish["reason"] == (
        "new slices 4, 5, 6, 7, 8, ...; reused if its inputs come out unchanged"
    )


def test_removed_slices_are_listed_in_key_order(store: Path, src: Path, sums: Path) -> None:
    paths = slice_files(src, range(1, 13))
    ok("snapshot", "freeze", "t", *paths, store=store)
    ok("snapshot", "freeze", "u", *paths[:3], store=store)
    ok("run", sums, store=store)

    tasks = ok_json("plan", sums, "--set", "t=u", store=store)["tasks"]
    finish = next(t for t in tasks if t["kind"] == "finish")
    # as text, the keys 4 to 12 would start "10, 11, 12, 4, 5"
    assert (finish["action"], finish["reason"]) == ("compute", "removed slices 4, 5, 6, 7, 8, ...")


# -- 4. freeze: replaced, not new ---------------------------------------------------------------


def test_freeze_calls_a_changed_slice_replaced(store: Path, src: Path) -> None:
    paths = slice_files(src, range(1, 4))
    ok("snapshot", "freeze", "t", *paths, store=store)
    pd.DataFrame({"g": ["a"], "x": [99.0]}).to_csv(paths[1], index=False)
    more = slice_files(src, range(4, 5))

    doc = ok_json("snapshot", "freeze", "t", *paths, *more, store=store)
    assert [(s["key"], s["new"], s["replaced"]) for s in doc["slices"]] == [
        (1, False, False),
        (2, False, True),
        (3, False, False),
        (4, True, False),
    ]
    # the same change again, seen on the terminal
    pd.DataFrame({"g": ["b"], "x": [7.0]}).to_csv(paths[1], index=False)
    text = ok("snapshot", "freeze", "t", *paths, store=store).stdout
    status = {line.split()[0]: line.split()[-1] for line in text.splitlines()[3:6]}
    assert status == {"1": "unchanged", "2": "replaced", "3": "unchanged"}, text
    assert "(version 3); 3 slices given, 0 new, 1 replaced\n" in text


# -- 5. inspect: lineage as sentences ----------------------------------------------------------


def test_inspect_tells_lineage_in_words(store: Path, src: Path, sums: Path) -> None:
    ok("snapshot", "freeze", "t", *slice_files(src, range(1, 3)), store=store)
    frozen = ok("snapshot", "inspect", "t", store=store).stdout.splitlines()
    assert re.fullmatch(
        r"frozen by \S+ at \d{4}-\d\d-\d\d \d\d:\d\d; no parent \(the first version\)", frozen[2]
    ), frozen
    done = ok_json("run", sums, store=store)
    out = done["outputs"]["tot"]
    t_id = ok_json("snapshot", "inspect", "t", store=store)["snapshot"]

    text = ok("snapshot", "inspect", "t_sums", store=store).stdout
    lines = text.splitlines()
    assert re.fullmatch(r"run by \S+ at [\d: -]+; no parent \(the first version\)", lines[2])
    assert re.fullmatch(
        rf"written by run {done['run']} of blueprint sums \(hash [0-9a-f]{{12}}\), stage tot, "
        rf"from input t \(snapshot {t_id[:12]}\)",
        lines[3],
    ), text
    assert "{" not in text and "blueprint_hash" not in text
    assert lines[0].startswith(f"t_sums  snapshot {out['snapshot']}")


# -- 6. a store that is not there ---------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("snapshot", "list"),
        ("snapshot", "inspect", "flights"),
        ("snapshot", "verify"),
        ("show", "flights"),
        ("plan", "{bp}"),
        ("run", "{bp}"),
        ("cache", "ls"),
        ("gc",),
    ],
    ids=lambda a: " ".join(a[:2]).replace("{bp}", "BP"),
)
def test_reading_a_store_that_is_not_there(tmp_path: Path, sums: Path, args: tuple) -> None:
    argv = [str(sums) if a == "{bp}" else a for a in args]
    result = run(*argv, "--store", "snapshot", cwd=tmp_path)  # a typo of ./snapshots
    line = assert_one_error_line(result, 1)
    assert line == (
        f"Error: no store at {tmp_path / 'snapshot'}; run chanbatch init or chanbatch demo to "
        "make one, or pass --store (or set $CHANBATCH_STORE) to an existing store"
    )
    assert not (tmp_path / "snapshot").exists()  # reading never creates it
    # an empty store (as init makes it) is a store: nothing in it, and no error
    (tmp_path / "snapshot").mkdir()
    listed = ok("snapshot", "list", "--store", "snapshot", cwd=tmp_path).stdout
    assert listed == "No datasets in snapshot. Try chanbatch demo.\n"


def test_freeze_into_a_new_store_says_where_it_made_it(tmp_path: Path, src: Path) -> None:
    (only,) = slice_files(src, range(1, 2))
    first = ok("snapshot", "freeze", "t", only, "--store", "new/snapshots", cwd=tmp_path)
    assert first.stdout.endswith(f"\ncreated store at {tmp_path / 'new' / 'snapshots'}\n")
    assert first.stderr == ""
    again = ok("snapshot", "freeze", "t", only, "--store", "new/snapshots", cwd=tmp_path)
    assert "created store" not in again.stdout + again.stderr

    doc = ok_json("snapshot", "freeze", "t", only, store=tmp_path / "other")  # stderr empty
    assert doc["dataset"] == "t" and (tmp_path / "other").is_dir()
    quiet = ok("snapshot", "freeze", "t", only, "-q", store=tmp_path / "third")
    assert "created store" not in quiet.stdout + quiet.stderr


# -- 7. a dataset that is not found ------------------------------------------------------------


def test_a_missing_dataset_names_the_store_and_close_names(tmp_path: Path, src: Path) -> None:
    paths = slice_files(src, range(1, 2))
    for name in ("flights", "flights_daily", "weather"):
        ok("snapshot", "freeze", name, *paths, "--store", "snapshots", cwd=tmp_path)
    result = run("snapshot", "inspect", "flight", cwd=tmp_path)
    line = assert_one_error_line(result, 2)
    assert line == (
        f"Error: dataset 'flight' not found in store {tmp_path / 'snapshots'}; "
        "did you mean 'flights' or 'flights_daily'?"
    )
    far = assert_one_error_line(run("snapshot", "inspect", "zzz", cwd=tmp_path), 2)
    assert far.endswith("; known datasets: flights, flights_daily, weather")


# -- 8. a map module that is not importable ---------------------------------------------------


def test_a_map_module_off_the_path_says_where_python_looked(tmp_path: Path, src: Path) -> None:
    (tmp_path / "mapped.yaml").write_text(MAPPED)
    (tmp_path / "myudfs.py").write_text("def double(df):\n    return df.assign(x=df.x * 2)\n")
    ok("snapshot", "freeze", "t", *slice_files(src, range(1, 2)), "--store", "s", cwd=tmp_path)
    env = base_env()
    env.pop("PYTHONPATH", None)
    argv = ("run", "mapped.yaml", "--allow-module", "myudfs", "--store", "s")

    result = run(*argv, cwd=tmp_path, env=env)
    line = assert_one_error_line(result, 1)
    assert line == (
        "Error: stage 'doubled' failed on slice 1: ImportError: cannot import module 'myudfs' "
        "of map function 'myudfs:double' from the worker's Python path (the current directory "
        f"{os.path.realpath(tmp_path)} is not on it); install the package that has it into this "
        "Python environment, or set PYTHONPATH to the directory that holds it "
        "(PYTHONPATH=. chanbatch run ...)"
    )
    doc = ok_json(*argv, cwd=tmp_path, env={**env, "PYTHONPATH": "."})
    assert doc["outputs"]["doubled"]["rows"] == 2


# -- 9. completion of --scheduler --------------------------------------------------------------


def complete(line: str) -> list[str]:
    """What Click's bash protocol offers for the last word of ``line``."""
    env = base_env(
        _CHANBATCH_COMPLETE="bash_complete", COMP_WORDS=line, COMP_CWORD=str(line.count(" "))
    )
    proc = subprocess.run([str(CHANBATCH)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return proc.stdout.splitlines()


def test_scheduler_completes_its_names() -> None:
    assert complete("chanbatch run x.yaml --scheduler ") == [
        "plain,threads",
        "plain,processes",
        "plain,sync",
        "plain,kubernetes",
    ]
    assert complete("chanbatch run x.yaml --scheduler p") == ["plain,processes"]
    assert complete("chanbatch run --scheduler t") == ["plain,threads"]
