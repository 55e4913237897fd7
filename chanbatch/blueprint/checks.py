"""Small value checks shared by the blueprint parser; each reports into a :class:`Scope`.

A check never raises for a bad value: it records a problem and returns None, so that parsing
goes on and the user sees every mistake at once.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from chanbatch.blueprint.expr import ExprError, parse_aggregate, parse_expr, parse_window_call
from chanbatch.blueprint.nodes import AggCall, Expr, Literal, WindowCall
from chanbatch.blueprint.problems import ProblemLog
from chanbatch.blueprint.reader import LocatedList, LocatedMap
from chanbatch.errors import did_you_mean

# Dataset names (DESIGN.md section 2), defined once in the bottom layer and re-exported here
# for the blueprint's parser and schema; anything a user types passes this before it is a path.
from chanbatch.ids import DATASET_NAME as DATASET_NAME

#: Names of inputs and stages, which other stages refer to.
STAGE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,127}$")


@dataclass(frozen=True, slots=True)
class Scope:
    """Where checks are running: the problem log and, inside a stage, the stage's name."""

    log: ProblemLog
    stage: str | None = None

    def problem(
        self, line: int | None, message: str, *, field: str | None = None, hint: str | None = None
    ) -> None:
        """Record a problem at ``line``, in this scope's stage, about ``field``."""
        self.log.add(line, message, stage=self.stage, field=field, hint=hint)


def describe(value: Any) -> str:
    """How a YAML value reads in a message: ``a list``, ``the number 3``, ``nothing``."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def unknown_keys(
    scope: Scope, mapping: LocatedMap, allowed: Iterable[str], *, field: str | None = None
) -> set[str]:
    """Report every key of ``mapping`` not in ``allowed``; return the keys suggested instead."""
    allowed = list(allowed)
    suggested: set[str] = set()
    for key in mapping:
        if key in allowed:
            continue
        close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
        suggested.update(close)
        hint = did_you_mean(str(key), allowed) or f"expected one of: {', '.join(allowed)}"
        scope.problem(mapping.key_line(key), f"unknown key {key!r}", field=field, hint=hint)
    return suggested


def mapping(scope: Scope, value: Any, line: int, field: str, expected: str) -> LocatedMap | None:
    """``value`` if it is a non-empty mapping; else report what ``expected`` it to be."""
    if isinstance(value, LocatedMap) and value:
        return value
    got = "an empty mapping" if isinstance(value, dict) else describe(value)
    scope.problem(line, f"expected {expected}, got {got}", field=field)
    return None


def name(
    scope: Scope, value: Any, line: int, field: str, what: str = "a column name"
) -> str | None:
    """``value`` if it is a non-empty string; else report it."""
    if isinstance(value, str) and value:
        return value
    scope.problem(line, f"expected {what}, got {describe(value)}", field=field)
    return None


def names(
    scope: Scope,
    value: Any,
    line: int,
    field: str,
    what: str = "column",
    *,
    allow_empty: bool = False,
) -> tuple[str, ...] | None:
    """A name or a list of distinct names, as a tuple; else report the bad items."""
    if isinstance(value, str):
        value_list: list[Any] = [value]
        lines = [line]
    elif isinstance(value, LocatedList):
        value_list, lines = list(value), [value.item_line(i) for i in range(len(value))]
    else:
        scope.problem(
            line, f"expected a {what} name or a list of them, got {describe(value)}", field=field
        )
        return None
    if not value_list and not allow_empty:
        scope.problem(line, f"expected at least one {what} name, got an empty list", field=field)
        return None
    result: list[str] = []
    ok = True
    for item, item_line in zip(value_list, lines, strict=True):
        checked = name(scope, item, item_line, field, f"a {what} name")
        if checked is None:
            ok = False
        elif checked in result:
            scope.problem(item_line, f"{what} {checked!r} is listed twice", field=field)
            ok = False
        else:
            result.append(checked)
    return tuple(result) if ok else None


def expression(scope: Scope, value: Any, line: int, field: str) -> Expr | None:
    """Parse ``value`` as an expression; a bare YAML number or boolean is a literal."""
    if isinstance(value, bool | int | float):
        try:
            return Literal(value=value)
        except ValueError:  # .inf or .nan in the YAML
            pass
    if not isinstance(value, str):
        scope.problem(
            line,
            f"expected an expression, got {describe(value)}",
            field=field,
            hint="write it as a quoted string",
        )
        return None
    try:
        return parse_expr(value, strict=True)
    except ExprError as exc:
        scope.problem(line, exc.message, field=field, hint=exc.hint)
        return None


def window_call(scope: Scope, value: Any, line: int, field: str) -> WindowCall | None:
    """Parse ``value`` as a window function such as ``sum(flights)`` or ``lag(delay)``."""
    if not isinstance(value, str):
        scope.problem(
            line, f"expected a function such as sum(column), got {describe(value)}", field=field
        )
        return None
    try:
        return parse_window_call(value, strict=True)
    except ExprError as exc:
        scope.problem(line, exc.message, field=field, hint=exc.hint)
        return None


def aggregate_call(scope: Scope, value: Any, line: int, field: str) -> AggCall | None:
    """Parse ``value`` as an aggregate such as ``mean(dep_delay)``."""
    if not isinstance(value, str):
        scope.problem(
            line, f"expected an aggregate such as mean(column), got {describe(value)}", field=field
        )
        return None
    try:
        return parse_aggregate(value, strict=True)
    except ExprError as exc:
        scope.problem(line, exc.message, field=field, hint=exc.hint)
        return None
