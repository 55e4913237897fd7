"""Which datasets a run may write (chanbatch.run.owners): never one of its inputs, and a dataset
it did not write before only with ``--overwrite DATASET``.

Every case runs the real ``chanbatch`` script on a store on disk, and checks the refusal's one
``Error:`` line and exit 2, and, from the ref-log files themselves, that nothing was written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clikit import assert_one_error_line, files, ok, ok_json, run

LATE = """\
name: {name}
inputs:
  flights: {ref}
stages:
  late:
    from: flights
    filter: "delay > 0"
outputs:
  late: {output}
"""


def blueprint(tmp_path: Path, *, name: str = "delays", ref: str = "flights", output: str) -> Path:
    path = tmp_path / f"{name}-{output}.yaml"
    path.write_text(LATE.format(name=name, ref=ref, output=output), encoding="utf-8")
    return path


def refs_of(store: Path, dataset: str) -> dict[str, bytes]:
    """The ref-log files of ``dataset``, read from disk."""
    return {k: v for k, v in files(store / "refs" / dataset).items()}


def head_lineage(store: Path, dataset: str) -> dict:
    log = refs_of(store, dataset)
    return json.loads(log[max(log)])["lineage"]


@pytest.fixture
def frozen(store: Path, monthly_csv: dict) -> Path:
    """``flights``, frozen from one CSV file per period."""
    ok("snapshot", "freeze", "flights", *(p for _, p in monthly_csv.values()), store=store)
    return store


@pytest.mark.parametrize("ref", ["flights", "flights[2024-01]", "flights@{prefix}"])
def test_output_named_like_its_input_is_refused_everywhere(
    frozen: Path, tmp_path: Path, ref: str
) -> None:
    if "{prefix}" in ref:
        head = json.loads(max(refs_of(frozen, "flights").items())[1])["snapshot"]
        ref = ref.format(prefix=head[:12])
    path = blueprint(tmp_path, ref=ref, output="flights")
    before = files(frozen)
    for command in ("validate", "plan", "run"):
        store = () if command == "validate" else ("--store", frozen)
        result = run(command, path, *store)
        line = assert_one_error_line(
            result, 2, "stage 'late'", "'flights'", "its own input", "a dataset of its own"
        )
        assert f"{path}:9:" in line, line  # the file and the line of `late: flights`
    assert files(frozen) == before  # not a byte written: the raw data's head is untouched


def test_an_input_rebound_to_an_output_is_refused(frozen: Path, tmp_path: Path) -> None:
    path = blueprint(tmp_path, output="late_flights")
    ok("run", path, store=frozen)
    before = files(frozen)
    for command in ("plan", "run"):
        result = run(command, path, "--set", "flights=late_flights", store=frozen)
        assert_one_error_line(
            result, 2, "input 'flights'", "'late_flights'", "stage 'late'", "its own input"
        )
    assert files(frozen) == before


def test_a_hand_frozen_dataset_needs_overwrite_once(
    frozen: Path, tmp_path: Path, monthly_csv: dict
) -> None:
    (_, first), *_ = monthly_csv.values()
    ok("snapshot", "freeze", "late_flights", first, store=frozen)
    path = blueprint(tmp_path, output="late_flights")
    before = refs_of(frozen, "late_flights")
    for command in ("plan", "run"):
        result = run(command, path, store=frozen)
        assert_one_error_line(
            result,
            2,
            "stage 'late'",
            "dataset 'late_flights'",
            "version 1",
            "`snapshot freeze`",
            "--overwrite late_flights",
        )
    assert refs_of(frozen, "late_flights") == before

    # opting in takes it over, keeping its history ...
    doc = ok_json("run", path, "--overwrite", "late_flights", store=frozen)
    assert doc["outputs"]["late"]["dataset"] == "late_flights"
    log = refs_of(frozen, "late_flights")
    assert len(log) == 2 and all(log[k] == v for k, v in before.items())
    assert head_lineage(frozen, "late_flights")["blueprint"] == "delays"
    # ... and from then on the head is this blueprint's: reruns need no flag
    ok("run", path, store=frozen)
    ok("plan", path, store=frozen)


def test_another_blueprints_output_needs_overwrite(frozen: Path, tmp_path: Path) -> None:
    mine = blueprint(tmp_path, name="delays", output="late_flights")
    theirs = blueprint(tmp_path, name="other", output="late_flights")
    ok("run", mine, store=frozen)
    before = refs_of(frozen, "late_flights")
    result = run("run", theirs, store=frozen)
    assert_one_error_line(
        result, 2, "dataset 'late_flights'", "blueprint 'delays' wrote it", "not an output of"
    )
    assert refs_of(frozen, "late_flights") == before
    ok("run", mine, store=frozen)  # its own blueprint reruns as before


def test_overwrite_of_a_dataset_the_blueprint_does_not_write(frozen: Path, tmp_path: Path) -> None:
    path = blueprint(tmp_path, output="late_flights")
    result = run("run", path, "--overwrite", "late_flight", store=frozen)
    assert_one_error_line(result, 2, "--overwrite late_flight", "did you mean 'late_flights'")
    assert not (frozen / "refs" / "late_flights").exists()


def test_python_api_takes_overwrite(frozen: Path, tmp_path: Path, monthly_csv: dict) -> None:
    import chanbatch as cb
    from chanbatch.errors import UsageError

    (_, first), *_ = monthly_csv.values()
    ok("snapshot", "freeze", "late_flights", first, store=frozen)
    bp = cb.Blueprint.from_yaml(blueprint(tmp_path, output="late_flights"))
    store = cb.Store(str(frozen))
    with pytest.raises(UsageError, match="would overwrite dataset 'late_flights'") as caught:
        bp.plan(store)
    assert "--overwrite late_flights" in str(caught.value.hint)
    with pytest.raises(UsageError, match="`snapshot freeze`"):
        bp.run(store, scheduler="sync")
    bp.plan(store, overwrite=["late_flights"])
    result = bp.run(store, scheduler="sync", overwrite=["late_flights"])
    assert result.snapshots["late"]["dataset"] == "late_flights"
    bp.run(store, scheduler="sync")
