"""Build each operation of a stage from its YAML value, reporting every problem found.

One builder per operation keyword. A builder gets the stage's located mapping (for the lines
of the keys it reads) and returns the operation, or None after recording what is wrong.
References to other stages are only checked for shape here; whether they name anything is
decided once all stages are known, in :mod:`chanbatch.blueprint.parse`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from chanbatch.blueprint import checks
from chanbatch.blueprint.checks import Scope, describe
from chanbatch.blueprint.model import (
    DEFAULT_SUFFIXES,
    DURATION_UNITS,
    JOIN_HOWS,
    Aggregate,
    Derive,
    Filter,
    Frame,
    Join,
    Limit,
    Map,
    Offset,
    Operation,
    Rename,
    Select,
    Sort,
    SortKey,
    Union,
    Window,
)
from chanbatch.blueprint.nodes import AggCall, Expr, WindowCall
from chanbatch.blueprint.reader import LocatedMap
from chanbatch.errors import did_you_mean

# Matched with fullmatch: `$` alone also accepts a final newline ("os:system\n").
_FUNCTION_REF = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_JOIN_KEYS = ("right", "on", "how", "suffixes")
_MAP_KEYS = ("function", "version")
_WINDOW_KEYS = ("partition_by", "order_by", "range", "rows", "columns")
_FRAME_KEYS = ("preceding", "following")
_DURATION = re.compile(r"\s*(\d+)\s*(second|minute|hour|day|week)s?\s*")

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
    built = _named_calls(
        scope,
        calls,
        "aggregate",
        checks.aggregate_call,
        taken=group_by or (),
        clash=("is also a group_by column", "give the aggregate another name"),
    )
    if built is None or group_by is None:
        return None
    return Aggregate(group_by=group_by, aggregates=built)


CallT = TypeVar("CallT", AggCall, WindowCall)


def _named_calls(
    scope: Scope,
    calls: LocatedMap,
    field: str,
    parse: Callable[[Scope, Any, int, str], CallT | None],
    *,
    taken: tuple[str, ...],
    clash: tuple[str, str],
) -> dict[str, CallT] | None:
    """``output column -> call`` of an aggregate or a window, each call parsed by ``parse``;
    a name among ``taken`` is refused with ``clash`` (message, hint). None after any problem
    (every one recorded)."""
    built: dict[str, CallT] = {}
    ok = True
    for key, text in calls.items():
        column = checks.name(scope, key, calls.key_line(key), field)
        call = parse(scope, text, calls.value_line(key), f"{field}.{key}")
        if column is not None and column in taken:
            message, hint = clash
            scope.problem(calls.key_line(key), f"{column!r} {message}", field=field, hint=hint)
            column = None
        if column is None or call is None:
            ok = False
        else:
            built[column] = call
    return built if ok else None


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


def _window(value: Any, line: int, stage: LocatedMap, scope: Scope) -> Operation | None:
    spec = checks.mapping(scope, value, line, "window", "a mapping with 'order_by' and 'columns'")
    if spec is None:
        return None
    checks.unknown_keys(scope, spec, _WINDOW_KEYS, field="window")
    ok = True
    for required in ("order_by", "columns"):
        if required not in spec:
            scope.problem(spec.line, f"missing {required!r}", field="window")
            ok = False
    partition_by: tuple[str, ...] | None = ()
    if "partition_by" in spec:
        partition_by = checks.names(
            scope,
            spec["partition_by"],
            spec.value_line("partition_by"),
            "window.partition_by",
            allow_empty=True,
        )
    order_by = None
    if "order_by" in spec:
        order_by = checks.names(
            scope, spec["order_by"], spec.value_line("order_by"), "window.order_by"
        )
    frame = _frame(spec, scope, order_by)
    columns = _window_columns(spec, scope, (*(partition_by or ()), *(order_by or ())))
    if not ok or partition_by is None or order_by is None or frame is None or columns is None:
        return None
    return Window(partition_by=partition_by, order_by=order_by, frame=frame, columns=columns)


def _frame(spec: LocatedMap, scope: Scope, order_by: tuple[str, ...] | None) -> Frame | None:
    """The frame a window's ``range`` or ``rows`` key gives; by default, as in SQL, from the
    partition's first row to the current row's last peer."""
    units = [unit for unit in ("range", "rows") if unit in spec]
    if not units:
        return Frame()
    if len(units) > 1:
        scope.problem(
            spec.key_line("rows"),
            "a window has one frame: 'range' or 'rows', not both",
            field="window.rows",
        )
        return None
    unit = units[0]
    field = f"window.{unit}"
    bounds = checks.mapping(
        scope,
        spec[unit],
        spec.value_line(unit),
        field,
        "a mapping with 'preceding' and/or 'following', such as {preceding: 6}",
    )
    if bounds is None:
        return None
    checks.unknown_keys(scope, bounds, _FRAME_KEYS, field=field)
    if any(key not in _FRAME_KEYS for key in bounds):
        return None
    offsets = {}
    for key in _FRAME_KEYS:
        if key in bounds:
            offset = _offset(bounds[key], bounds.value_line(key), f"{field}.{key}", unit, scope)
            if offset is None:
                return None
            offsets[key] = offset
    reaches = [o for o in offsets.values() if o.value not in (0, None) or o.seconds]
    if unit == "range" and reaches and order_by is not None and len(order_by) != 1:
        scope.problem(
            spec.value_line(unit),
            f"a range frame reaches by values of one column, but order_by has {len(order_by)}",
            field=field,
            hint="order by one column, or count rows with 'rows'",
        )
        return None
    return Frame(
        unit="rows" if unit == "rows" else "range",
        preceding=offsets.get("preceding", Offset()),
        following=offsets.get("following", Offset()),
    )


def _offset(value: Any, line: int, field: str, unit: str, scope: Scope) -> Offset | None:
    """A frame bound: a number of rows or of order values (0 or more), 'unbounded', or for a
    range frame a duration such as '6 days'."""
    if value == "unbounded":
        return Offset(value=None)
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        if unit == "rows" and not isinstance(value, int):
            scope.problem(line, f"expected a whole number of rows, got {value!r}", field=field)
            return None
        return Offset(value=value)
    duration = _DURATION.fullmatch(value) if isinstance(value, str) and unit == "range" else None
    if duration is not None:
        return Offset(value=None, seconds=int(duration[1]) * DURATION_UNITS[duration[2]])
    expected = (
        "a number of rows (0 or more) or 'unbounded'"
        if unit == "rows"
        else "a number (0 or more), a duration such as '6 days', or 'unbounded'"
    )
    scope.problem(line, f"expected {expected}, got {describe(value)}", field=field)
    return None


def _window_columns(
    spec: LocatedMap, scope: Scope, keys: tuple[str, ...]
) -> dict[str, WindowCall] | None:
    if "columns" not in spec:
        return None
    calls = checks.mapping(
        scope,
        spec["columns"],
        spec.value_line("columns"),
        "window.columns",
        "a mapping of output column to function, such as 'week: sum(flights)'",
    )
    if calls is None:
        return None
    return _named_calls(
        scope,
        calls,
        "window.columns",
        checks.window_call,
        taken=keys,
        clash=("is a partition_by or order_by column", "give the result another name"),
    )


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
    "window": _window,
}
