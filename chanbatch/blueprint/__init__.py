"""Blueprints: the pure-data description of a dataflow, its parser and its expression language.

Nothing here imports pandas, pyarrow or dask: a blueprint is data. Evaluating an expression on
rows is the engine's work (:mod:`chanbatch.engine`).

- :func:`load_blueprint` (a path or YAML text) / :func:`parse_blueprint` (YAML text) -> Blueprint,
  raising :class:`BlueprintError` with every :class:`Problem` found.
- :func:`parse_expr`: expression text -> tree, raising :class:`ExprError`.
- :func:`blueprint_json_schema`: a JSON Schema (draft 2020-12) of the YAML syntax.
"""

from __future__ import annotations

from chanbatch.blueprint.expr import ExprError, ExprEvalError, parse_aggregate, parse_expr
from chanbatch.blueprint.model import (
    OPERATIONS,
    Aggregate,
    Blueprint,
    Derive,
    Filter,
    Join,
    Limit,
    Map,
    Operation,
    Rename,
    Select,
    Sort,
    SortKey,
    Stage,
    Union,
    Window,
)
from chanbatch.blueprint.nodes import AggCall, Expr, WindowCall
from chanbatch.blueprint.parse import load_blueprint, parse_blueprint
from chanbatch.blueprint.problems import BlueprintError, Problem
from chanbatch.blueprint.schema import blueprint_json_schema

__all__ = [
    "OPERATIONS",
    "AggCall",
    "Aggregate",
    "Blueprint",
    "BlueprintError",
    "Derive",
    "Expr",
    "ExprError",
    "ExprEvalError",
    "Filter",
    "Join",
    "Limit",
    "Map",
    "Operation",
    "Problem",
    "Rename",
    "Select",
    "Sort",
    "SortKey",
    "Stage",
    "Union",
    "Window",
    "WindowCall",
    "blueprint_json_schema",
    "load_blueprint",
    "parse_aggregate",
    "parse_blueprint",
    "parse_expr",
]
