"""A JSON Schema (draft 2020-12) of the blueprint YAML, for editors and other tools.

The schema checks shape only: keys, types and name patterns. What it cannot express (whether
an expression parses, whether ``from`` names a stage, cycles) is checked by the parser, which
remains the authority; a file the schema accepts can still be refused, never the reverse.
"""

from __future__ import annotations

import json
from typing import Any

from chanbatch.blueprint.checks import DATASET_NAME, STAGE_NAME
from chanbatch.blueprint.functions import AGGREGATES, WINDOW_FUNCTIONS
from chanbatch.blueprint.model import JOIN_HOWS, OPERATIONS

Schema = dict[str, Any]

_SCHEMA_ID = "https://chanbatch.io/schemas/blueprint.json"
_REF_PATTERN = DATASET_NAME.pattern.rstrip("$") + r"(?:@[0-9a-f]{8,64}|\[[^\[\]]+\])?$"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/$defs/{name}"}


def _names(item: Schema) -> Schema:
    """One name, or a non-empty list of distinct names."""
    return {
        "oneOf": [
            item,
            {"type": "array", "items": item, "minItems": 1, "uniqueItems": True},
        ]
    }


def _frame() -> Schema:
    offset = {
        "oneOf": [
            {"type": "number", "minimum": 0},
            {"const": "unbounded"},
            {"type": "string", "pattern": r"^\s*\d+\s*(?:second|minute|hour|day|week)s?\s*$"},
        ]
    }
    return {
        "type": "object",
        "minProperties": 1,
        "additionalProperties": False,
        "properties": {"preceding": offset, "following": offset},
    }


def _window() -> Schema:
    function_pattern = r"^\s*(?:" + "|".join(WINDOW_FUNCTIONS) + r")\s*\(.*\)\s*$"
    return {
        "type": "object",
        "required": ["order_by", "columns"],
        "additionalProperties": False,
        "not": {"required": ["range", "rows"]},
        "properties": {
            "partition_by": {
                "oneOf": [
                    _ref("column"),
                    {"type": "array", "items": _ref("column"), "uniqueItems": True},
                ]
            },
            "order_by": _names(_ref("column")),
            "range": _frame(),
            "rows": _frame(),
            "columns": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": {"type": "string", "pattern": function_pattern},
                "description": "output column -> function such as sum(col), lag(col)",
            },
        },
    }


def _operations() -> dict[str, Schema]:
    aggregate_pattern = r"^\s*(?:" + "|".join(AGGREGATES) + r")\s*\(.*\)\s*$"
    return {
        "filter": _ref("expression"),
        "derive": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": _ref("expression"),
            "description": "new column -> expression, computed in order",
        },
        "select": _names(_ref("column")),
        "rename": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": _ref("column"),
            "description": "old column name -> new column name",
        },
        "join": {
            "type": "object",
            "required": ["right", "on"],
            "additionalProperties": False,
            "properties": {
                "right": _ref("stageName"),
                "on": _names(_ref("column")),
                "how": {"enum": list(JOIN_HOWS), "default": "inner"},
                "suffixes": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 2,
                    "maxItems": 2,
                    "uniqueItems": True,
                    "default": ["", "_right"],
                },
            },
        },
        "aggregate": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {"type": "string", "pattern": aggregate_pattern},
            "description": "output column -> aggregate such as count(), mean(col)",
        },
        "sort": _names({"type": "string", "pattern": r"^-?[^-].*$"}),
        "limit": {"type": "integer", "minimum": 0},
        "union": _names(_ref("stageName")),
        "map": {
            "type": "object",
            "required": ["function", "version"],
            "additionalProperties": False,
            "properties": {
                "function": {
                    "type": "string",
                    "pattern": r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$",
                },
                "version": {"type": ["string", "integer"], "minLength": 1},
            },
        },
        "window": _window(),
    }


def blueprint_json_schema() -> Schema:
    """The JSON Schema (draft 2020-12) of a blueprint document, as a fresh dict."""
    operations = _operations()
    stage_properties: Schema = {
        "from": _ref("stageName"),
        "per_slice": {"type": "boolean", "default": False},
        "description": {"type": "string"},
        "group_by": {
            "oneOf": [
                _ref("column"),
                {"type": "array", "items": _ref("column"), "uniqueItems": True},
            ]
        },
        **operations,
    }
    stage: Schema = {
        "type": "object",
        "required": ["from"],
        "additionalProperties": False,
        "properties": stage_properties,
        # Exactly one operation: exactly one of these one-key requirements holds.
        "oneOf": [{"required": [kind]} for kind in OPERATIONS],
        "dependentRequired": {"group_by": ["aggregate"]},
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": _SCHEMA_ID,
        "title": "chanbatch blueprint",
        "type": "object",
        "required": ["name", "inputs", "stages", "outputs"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": DATASET_NAME.pattern},
            "description": {"type": "string"},
            "inputs": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": _ref("stageName"),
                "additionalProperties": {"type": "string", "pattern": _REF_PATTERN},
            },
            "stages": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": _ref("stageName"),
                "additionalProperties": _ref("stage"),
            },
            "outputs": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": _ref("stageName"),
                "additionalProperties": {"type": "string", "pattern": DATASET_NAME.pattern},
            },
        },
        "$defs": {
            "stage": stage,
            "stageName": {"type": "string", "pattern": STAGE_NAME.pattern},
            "column": {"type": "string", "minLength": 1},
            "expression": {
                "type": ["string", "number", "boolean"],
                "description": "an expression in the blueprint language, such as 'x > 0'",
            },
        },
    }


def blueprint_schema_text() -> str:
    """The schema as the exact text of ``schema/blueprint.schema.json`` and ``chanbatch schema``.

    Keys are sorted, so that the committed file changes only when the schema does, not when the
    code that builds it is reordered; two-space indent and a final newline, for readable diffs.
    """
    return json.dumps(blueprint_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
