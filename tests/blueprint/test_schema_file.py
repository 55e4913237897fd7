"""The committed schema file: up to date, pointed at by every example, and not vacuous.

Editors read ``schema/blueprint.schema.json`` through the ``# yaml-language-server: $schema=``
line at the top of each blueprint. These tests read that file from disk (never the code that
builds it) and validate with ``jsonschema``, the library editors' validators follow.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from chanbatch.blueprint.reader import read_yaml
from chanbatch.blueprint.schema import blueprint_schema_text

REPO = Path(__file__).resolve().parents[2]
SCHEMA_FILE = REPO / "schema" / "blueprint.schema.json"
BLUEPRINTS = sorted(p for p in (REPO / "blueprints").iterdir() if p.is_file())
CHANBATCH = Path(sys.executable).with_name("chanbatch")
REGENERATE = "chanbatch schema -o schema/blueprint.schema.json"
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")


def load(path: Path) -> Any:
    """A blueprint as editors read it: YAML 1.2, where a join's ``on:`` is a string, not True."""
    document, _ = read_yaml(path.read_text(encoding="utf-8"))
    return json.loads(json.dumps(document))


def committed_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the [k8s] extra")
    schema = committed_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_committed_schema_is_up_to_date() -> None:
    assert SCHEMA_FILE.is_file(), f"{SCHEMA_FILE} is missing; run: {REGENERATE}"
    assert SCHEMA_FILE.read_bytes() == blueprint_schema_text().encode("utf-8"), (
        f"schema/blueprint.schema.json is out of date; run: {REGENERATE}"
    )


def test_cli_prints_and_writes_the_committed_bytes(tmp_path: Path) -> None:
    printed = subprocess.run(
        [str(CHANBATCH), "schema"], capture_output=True, check=True, cwd=tmp_path
    )
    assert printed.stdout == SCHEMA_FILE.read_bytes()
    target = tmp_path / "out.json"
    subprocess.run([str(CHANBATCH), "schema", "-o", str(target)], check=True, capture_output=True)
    assert target.read_bytes() == SCHEMA_FILE.read_bytes()
    # The chosen format: sorted keys, two-space indent, one final newline.
    text = SCHEMA_FILE.read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_every_blueprint_points_at_the_committed_schema() -> None:
    assert len(BLUEPRINTS) >= 4
    for path in BLUEPRINTS:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        match = MODELINE.match(first)
        assert match, f"{path.name}: first line is {first!r}, not the yaml-language-server line"
        target = (path.parent / match[1]).resolve()
        assert target == SCHEMA_FILE.resolve(), f"{path.name}: $schema points at {target}"


@pytest.mark.parametrize("path", BLUEPRINTS, ids=lambda p: p.name)
def test_every_example_validates_against_the_committed_schema(path: Path) -> None:
    errors = [e.message for e in validator().iter_errors(load(path))]
    assert errors == [], path.name


def _carrier_delays() -> dict[str, Any]:
    return load(REPO / "blueprints" / "carrier_delays.yaml")


def _unknown_stage_key(doc: dict[str, Any]) -> None:
    doc["stages"]["late"]["filtr"] = doc["stages"]["late"].pop("filter")


def _missing_from(doc: dict[str, Any]) -> None:
    del doc["stages"]["fast"]["from"]


def _two_operations(doc: dict[str, Any]) -> None:
    doc["stages"]["late"]["limit"] = 5


def _unknown_top_level_key(doc: dict[str, Any]) -> None:
    doc["output"] = doc.pop("outputs")


def _bad_output_name(doc: dict[str, Any]) -> None:
    doc["outputs"]["by_carrier"] = "../carrier_delays"


@pytest.mark.parametrize(
    ("breakage", "needle"),
    [
        (_unknown_stage_key, "unknown key 'filtr'"),
        (_missing_from, "missing 'from'"),
        (_two_operations, "2 operations"),
        (_unknown_top_level_key, "unknown key 'output'"),
        (_bad_output_name, "not a valid dataset name"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else "",
)
def test_schema_and_validate_both_refuse(tmp_path: Path, breakage: Any, needle: str) -> None:
    doc = _carrier_delays()
    assert list(validator().iter_errors(doc)) == []  # the unbroken file passes
    breakage(doc)
    assert list(validator().iter_errors(doc)), "the schema accepted a broken blueprint"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "CHANBATCH_STORE"}
    proc = subprocess.run(
        [str(CHANBATCH), "validate", str(path)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("Error: "), proc.stderr
    assert needle in proc.stderr, proc.stderr
