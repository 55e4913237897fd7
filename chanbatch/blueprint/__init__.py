"""Blueprints: the pure-data description of a dataflow, its parser and its expression language.

Importing this package imports neither pandas nor dask, so that ``chanbatch validate`` stays
fast; :func:`evaluate` and :func:`evaluate_mask` load pandas on their first call.

- :func:`load_blueprint` / :meth:`Blueprint.from_yaml`: YAML (a path or text) -> Blueprint,
  raising :class:`BlueprintError` with every :class:`Problem` found.
- :func:`parse_expr`: expression text -> tree, raising :class:`ExprError`.
- :func:`evaluate`: tree + pandas DataFrame -> Series, raising :class:`ExprEvalError`.
- :func:`blueprint_json_schema`: a JSON Schema (draft 2020-12) of the YAML syntax.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
)
from chanbatch.blueprint.nodes import AggCall, Expr
from chanbatch.blueprint.parse import load_blueprint, parse_blueprint
from chanbatch.blueprint.problems import BlueprintError, Problem
from chanbatch.blueprint.schema import blueprint_json_schema

if TYPE_CHECKING:
    import pandas as pd

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
    "blueprint_json_schema",
    "evaluate",
    "evaluate_mask",
    "load_blueprint",
    "parse_aggregate",
    "parse_blueprint",
    "parse_expr",
]


def evaluate(expr: Expr, frame: pd.DataFrame, *, strict: bool = False) -> Any:
    """The value of ``expr`` on every row of ``frame`` (see ``evaluation.evaluate``).

    Raises ExprEvalError for a missing column, mismatched types, a failed cast, or (with
    ``strict``) a division by zero.
    """
    from chanbatch.blueprint.evaluation import evaluate as _evaluate

    return _evaluate(expr, frame, strict=strict)


def evaluate_mask(expr: Expr, frame: pd.DataFrame, *, strict: bool = False) -> Any:
    """A bool Series of the rows where ``expr`` is true, null counting as false.

    Raises ExprEvalError as :func:`evaluate` does, and when ``expr`` is not a condition.
    """
    from chanbatch.blueprint.evaluation import evaluate_mask as _evaluate_mask

    return _evaluate_mask(expr, frame, strict=strict)
