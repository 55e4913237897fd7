"""The JSON Schema of blueprints: well formed, and in agreement with the parser on examples.

``jsonschema`` is not a dependency; when it is installed it validates too. Otherwise a small
validator below covers exactly the keywords the schema uses, and refuses any other keyword so
that the two cannot silently drift apart.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from chanbatch.blueprint import blueprint_json_schema
from chanbatch.blueprint.reader import read_yaml

HERE = Path(__file__).parent
EXAMPLE = HERE / "good" / "carrier_delays.yaml"

_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "null": type(None),
}
_ANNOTATIONS = {"$schema", "$id", "title", "description", "default"}


def _type_ok(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False
    return isinstance(value, _TYPES[name])


def _errors(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str = "$") -> list[str]:
    errors: list[str] = []
    for keyword, rule in schema.items():
        if keyword in _ANNOTATIONS or keyword == "$defs":
            continue
        if keyword == "$ref":
            target = root
            for part in rule.removeprefix("#/").split("/"):
                target = target[part]
            errors += _errors(value, target, root, path)
        elif keyword == "type":
            names = rule if isinstance(rule, list) else [rule]
            if not any(_type_ok(value, name) for name in names):
                errors.append(f"{path}: not {rule}")
        elif keyword == "enum":
            if value not in rule:
                errors.append(f"{path}: not in {rule}")
        elif keyword == "pattern":
            if isinstance(value, str) and not re.search(rule, value):
                errors.append(f"{path}: does not match {rule}")
        elif keyword == "minLength":
            if isinstance(value, str) and len(value) < rule:
                errors.append(f"{path}: too short")
        elif keyword == "minimum":
            if isinstance(value, int | float) and value < rule:
                errors.append(f"{path}: below {rule}")
        elif keyword in ("minItems", "maxItems", "uniqueItems", "items"):
            if isinstance(value, list):
                if keyword == "minItems" and len(value) < rule:
                    errors.append(f"{path}: fewer than {rule} items")
                if keyword == "maxItems" and len(value) > rule:
                    errors.append(f"{path}: more than {rule} items")
                if keyword == "uniqueItems" and rule and len(set(map(repr, value))) < len(value):
                    errors.append(f"{path}: items repeat")
                if keyword == "items":
                    for index, item in enumerate(value):
                        errors += _errors(item, rule, root, f"{path}[{index}]")
        elif keyword in (
            "required",
            "properties",
            "additionalProperties",
            "minProperties",
            "propertyNames",
            "dependentRequired",
        ):
            if isinstance(value, dict):
                errors += _object_errors(keyword, rule, value, schema, root, path)
        elif keyword in ("oneOf", "anyOf"):
            passing = sum(not _errors(value, option, root, path) for option in rule)
            if (keyword == "oneOf" and passing != 1) or (keyword == "anyOf" and not passing):
                errors.append(f"{path}: {passing} of {keyword} match")
        else:
            raise AssertionError(f"the test validator does not know {keyword!r}")
    return errors


def _object_errors(
    keyword: str, rule: Any, value: dict, schema: dict, root: dict, path: str
) -> list[str]:
    errors: list[str] = []
    if keyword == "required":
        errors += [f"{path}: missing {key}" for key in rule if key not in value]
    elif keyword == "minProperties" and len(value) < rule:
        errors.append(f"{path}: fewer than {rule} keys")
    elif keyword == "properties":
        for key, sub in rule.items():
            if key in value:
                errors += _errors(value[key], sub, root, f"{path}.{key}")
    elif keyword == "additionalProperties":
        known = schema.get("properties", {})
        for key, item in value.items():
            if key in known:
                continue
            if rule is False:
                errors.append(f"{path}: unexpected key {key}")
            elif isinstance(rule, dict):
                errors += _errors(item, rule, root, f"{path}.{key}")
    elif keyword == "propertyNames":
        for key in value:
            errors += _errors(key, rule, root, f"{path}.<{key}>")
    elif keyword == "dependentRequired":
        for key, needed in rule.items():
            if key in value:
                errors += [f"{path}: {key} needs {n}" for n in needed if n not in value]
    return errors


def _validate(document: Any) -> list[str]:
    schema = blueprint_json_schema()
    errors = _errors(document, schema, schema)
    try:
        import jsonschema
    except ImportError:
        return errors
    validator = jsonschema.Draft202012Validator(schema)
    assert (not errors) == validator.is_valid(document), errors
    return errors


def _load(text: str) -> Any:
    return read_yaml(text)[0]


def test_schema_is_draft_2020_12_and_json() -> None:
    schema = blueprint_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert json.loads(json.dumps(schema)) == schema
    assert blueprint_json_schema() is not schema  # a fresh dict each call


def test_design_example_validates() -> None:
    assert _validate(_load(EXAMPLE.read_text())) == []


@pytest.mark.parametrize(
    ("change", "replacement"),
    [
        ("stages:", "stagse:"),
        ("    filter:", "    filtre:"),
        ("    derive:", "    filter: x\n    derive:"),
        ("    aggregate:\n", "    limit: 1\n    unused:\n"),
        ("how: left", "how: lft"),
        ("mean(dep_delay)", "avg(dep_delay)"),
        ("by_carrier: carrier_delays", "by_carrier: carrier delays"),
        ("flights: flights\n", "flights: flights@XYZ\n"),
    ],
)
def test_schema_refuses_what_the_parser_refuses(change: str, replacement: str) -> None:
    text = EXAMPLE.read_text()
    assert change in text
    assert _validate(_load(text.replace(change, replacement, 1))) != []


def test_group_by_needs_aggregate() -> None:
    document = _load(EXAMPLE.read_text())
    del document["stages"]["by_carrier"]["aggregate"]
    document["stages"]["by_carrier"]["limit"] = 3
    assert any("group_by needs aggregate" in error for error in _validate(document))
