"""Build each operation of a stage from its YAML value, reporting every problem found.

One builder per operation keyword. A builder gets the stage's located mapping (for the lines
of the keys it reads) and returns the operation, or None after recording what is wrong.
References to other stages are only checked for shape here; whether they name anything is
decided once all stages are known, in :mod:`chanbatch.blueprint.parse`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from chanbatch.blueprint import checks
from chanbatch.blueprint.checks import Scope, describe
from chanbatch.blueprint.model import (
    DEFAULT_SUFFIXES,
    JOIN_HOWS,
    Aggregate,
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
    Union,
)
from chanbatch.blueprint.nodes import AggCall, Expr
from chanbatch.blueprint.reader import LocatedMap
from chanbatch.errors import did_you_mean

# Matched with fullmatch: `$` alone also accepts a final newline ("os:system\n").
_FUNCTION_REF = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_JOIN_KEYS = ("right", "on", "how", "suffixes")
_MAP_KEYS = ("function", "version")

Builder = Callable[[Any, int, LocatedMap, Scope], Operation | None]


def build_operation(kind: str, stage: LocatedMap, scope: Scope) -> Operation | None:
    """The operation ``kind`` of a stage's mapping, or None if it has problems (recorded)."""
    return _BUILDERS[kind](stage[kind], stage.value_line(kind), stage, scope)


def _filter(value: Any, line: int, stage: LocatedMap, scope: Scope) -> Operation | None:
    expr = checks.expression(scope, value, line, "filter")
    return Filter(expr=expr) if expr is not None else None


def _derive(value: Any, line: int, stage: LocatedMap, scope: Scope) -> Operation | None:
    columns = checks.mapping(scope, value, line, "derive", "a mapping of column name to expression")
    if columns is None:
        return None
    built: dict[str, Expr] = {}
    ok = True
    for key, text in columns.items():
        column = checks.name(scope, key, columns.key_line(key), "derive")
        expr = checks.expression(scope, text, columns.value_line(key), f"derive.{key}")
        if column is None or expr is None:
            ok = False
        else:
            built[column] = expr
    return Derive(columns=built) if ok else None


def _select(value: Any, line: int, stage: LocatedMap, scope: Scope) -> Operation | None:
    columns = checks.names(scope, value, line, "select")
    return Select(columns=columns) if columns is not None else None


def _rename(value: Any, line: int, stage: LocatedMap, scope: Scope) -> Operation | None:
    pairs = checks.mapping(scope, value, line, "rename", "a mapping of old name to new name")
    if pairs is None:
        return None
    built: dict[str, str] = {}
    ok = True
    for old, new in pairs.items():
        old_name = checks.name(scope, old, pairs.key_line(old), "rename")
        new_name = checks.name(scope, new, pairs.value_line(old), f"rename.{old}", "a new name")
        if old_name is None or new_name is None:
            ok = False
        elif new_name in built.values():
            scope.problem(
                pairs.value_line(old),
                f"two columns are renamed to {new_name!r}",
                field=f"rename.{old}",
            )
            ok = False
        else:
            built[old_name] = new_name
    return Rename(mapping=built) if ok else None


def _join(value: Any, line: int, stage: LocatedMap, scope: Scope) -> Operation | None:
    spec = checks.mapping(scope, value, line, "join", "a mapping with 'right' and 'on'")
    if spec is None:
        return None
    checks.unknown_keys(scope, spec, _JOIN_KEYS, field="join")
    ok = True
    for required in ("right", "on"):
        if required not in spec:
            scope.problem(spec.line, f"missing {required!r}", field="join")
            ok = False
    right = on = None
    if "right" in spec:
        right = checks.name(
            scope, spec["right"], spec.value_line("right"), "join.right", "an input or stage name"
        )
    if "on" in spec:
        on = checks.names(scope, spec["on"], spec.value_line("on"), "join.on")
    how = spec.get("how", "inner")
    if how not in JOIN_HOWS:
        expected = f"expected one of: {', '.join(JOIN_HOWS)}"
        if isinstance(how, str):
            message, hint = f"unknown join type {how!r}", did_you_mean(how, JOIN_HOWS) or expected
        else:
            message, hint = f"expected a join type, got {describe(how)}", expected
        scope.problem(spec.value_line("how"), message, field="join.how", hint=hint)
        ok = False
    suffixes = _suffixes(spec, scope)
    if not ok or right is None or on is None or suffixes is None:
        return None
    return Join(right=right, on=on, how=how, suffixes=suffixes)


def _suffixes(spec: LocatedMap, scope: Scope) -> tuple[str, str] | None:
    if "suffixes" not in spec:
        return DEFAULT_SUFFIXES
    value = spec["suffixes"]
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(item, str) for item in value)
        and value[0] != value[1]
    ):
        return (value[0], value[1])
    scope.problem(
        spec.value_line("suffixes"),
        f"expected two different suffixes such as ['', '_right'], got {describe(value)}",
        field="join.suffixes",
    )
    return None


def _aggregate(value: Any, line: int, stage: LocatedMap, scope: Scope) -> Operation | None:
    group_by: tuple[str, ...] | None = ()
    if "group_by" in stage:
        group_by = checks.names(
            scope, stage["group_by"], stage.value_line("group_by"), "group_by", allow_empty=True
        )
    calls = checks.mapping(
        scope,
        value,
        line,
        "aggregate",
        "a mapping of output column to aggregate, such as 'n: count()'",
    )
    if calls is None:
        return None
    built: dict[str, AggCall] = {}
    ok = group_by is not None
    for key, text in calls.items():
        column = checks.name(scope, key, calls.key_line(key), "aggregate")
        call = checks.aggregate_call(scope, text, calls.value_line(key), f"aggregate.{key}")
        if column is not None and group_by and column in group_by:
            scope.problem(
                calls.key_line(key),
                f"{column!r} is also a group_by column",
                field="aggregate",
                hint="give the aggregate another name",
            )
            column = None
        if column is None or call is None:
            ok = False
        else:
            built[column] = call
    if not ok or group_by is None:
        return None
    return Aggregate(group_by=group_by, aggregates=built)


def _sort(value: Any, line: int, stage: LocatedMap, scope: Scope) -> Operation | None:
    columns = checks.names(scope, value, line, "sort", "sort column")
    if columns is None:
        return None
    keys: list[SortKey] = []
    for column in columns:
        descending = column.startswith("-")
        bare = column[1:] if descending else column
        if not bare:
            scope.problem(
                line,
                f"sort key {column!r} names no column",
                field="sort",
                hint="write 'column' for ascending, '-column' for descending",
            )
            return None
        if any(key.column == bare for key in keys):
            scope.problem(line, f"column {bare!r} is sorted on twice", field="sort")
            return None
        keys.append(SortKey(column=bare, ascending=not descending))
    return Sort(by=tuple(keys))


def _limit(value: Any, line: int, stage: LocatedMap, scope: Scope) -> Operation | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return Limit(n=value)
    scope.problem(line, f"expected a row count of 0 or more, got {describe(value)}", field="limit")
    return None


def _union(value: Any, line: int, stage: LocatedMap, scope: Scope) -> Operation | None:
    others = checks.names(scope, value, line, "union", "stage")
    return Union(others=others) if others is not None else None


def _map(value: Any, line: int, stage: LocatedMap, scope: Scope) -> Operation | None:
    spec = checks.mapping(scope, value, line, "map", "a mapping with 'function' and 'version'")
    if spec is None:
        return None
    checks.unknown_keys(scope, spec, _MAP_KEYS, field="map")
    ok = True
    for required in _MAP_KEYS:
        if required not in spec:
            hint = (
                "bump it whenever the function's output changes" if required == "version" else None
            )
            scope.problem(spec.line, f"missing {required!r}", field="map", hint=hint)
            ok = False
    function = spec.get("function")
    if "function" in spec and not (isinstance(function, str) and _FUNCTION_REF.fullmatch(function)):
        scope.problem(
            spec.value_line("function"),
            f"expected 'package.module:function', got {describe(function)}",
            field="map.function",
        )
        ok = False
    version = spec.get("version")
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    if "version" in spec and not (isinstance(version, str) and version):
        # A float would lose digits (1.10 reads as 1.1), so only text and whole numbers pass.
        scope.problem(
            spec.value_line("version"),
            f"expected a version string such as '1', got {describe(version)}",
            field="map.version",
            hint="quote it",
        )
        ok = False
    if not ok:
        return None
    return Map(function=str(function), version=str(version))


_BUILDERS: dict[str, Builder] = {
    "filter": _filter,
    "derive": _derive,
    "select": _select,
    "rename": _rename,
    "join": _join,
    "aggregate": _aggregate,
    "sort": _sort,
    "limit": _limit,
    "union": _union,
    "map": _map,
}
