"""Each operation's planning rules, in one place per operation kind.

For every kind in :data:`chanbatch.blueprint.model.OPERATIONS`, one :class:`Rules` subclass
states

- ``runs_per_slice``: whether the stage runs on each slice of a sliced input alone;
- ``broadcast``: which of the stages or inputs it references are read whole into every task;
- ``check_columns``: which columns it reads, reporting each its input lacks;
- ``output``: its type checks, and the schema of its result;
- ``needs``: which columns of each upstream it reads, given the columns read of its result.

:class:`Rules` is abstract in all of them, so a kind that lacks one cannot even be listed, and
:func:`rules_of` raises for an operation that has no rules at all: nothing falls back to a
default (tests/compile/test_operation_rules.py checks that every kind is listed).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Generic, TypeVar

from chanbatch.blueprint.functions import WINDOW_FUNCTIONS
from chanbatch.blueprint.model import (
    OPERATIONS,
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
    Stage,
    Union,
    Window,
)
from chanbatch.compile.schema import Schema, Schemas, StageCheck
from chanbatch.compile.types import Kind, TypeProblem, check_aggregate, infer

Op = TypeVar("Op", bound=Operation)

# Columns read of one upstream (an input or a stage); None: every column.
Need = tuple[str, set[str] | None]


class Rules(ABC, Generic[Op]):
    """The planning rules of one operation kind."""

    operation: ClassVar[type[Operation]]

    @abstractmethod
    def runs_per_slice(self, op: Op, asked: bool) -> bool:
        """Whether the stage runs on each slice of a sliced input alone; ``asked`` is the
        stage's ``per_slice``."""

    @abstractmethod
    def broadcast(self, op: Op) -> tuple[str, ...]:
        """The referenced inputs or stages read whole by every task of the stage."""

    @abstractmethod
    def check_columns(self, op: Op, at: StageCheck, have: Schema) -> None:
        """Report each column that ``op`` reads but its input (``have``) or a side lacks."""

    @abstractmethod
    def output(self, op: Op, at: StageCheck, have: Schema) -> Schema | None:
        """Report each type mismatch; return the result's schema (None: unknown)."""

    @abstractmethod
    def needs(self, op: Op, stage: Stage, out: set[str], schemas: Schemas) -> list[Need]:
        """The columns read of each upstream when ``out`` are read of the result."""


def _names(schemas: Schemas, name: str) -> tuple[str, ...]:
    schema = schemas[name]
    return schema.names if schema is not None else ()


class FilterRules(Rules[Filter]):
    operation = Filter

    def runs_per_slice(self, op: Filter, asked: bool) -> bool:
        return True

    def broadcast(self, op: Filter) -> tuple[str, ...]:
        return ()

    def check_columns(self, op: Filter, at: StageCheck, have: Schema) -> None:
        at.unknown(op.expr.columns(), "filter", have.names)

    def output(self, op: Filter, at: StageCheck, have: Schema) -> Schema | None:
        try:
            result = infer(op.expr, have.kinds)
            if result in ("number", "string", "date", "timestamp"):
                raise TypeProblem(f"a filter needs a condition, not a {result} value")
        except TypeProblem as exc:
            at.mistyped("filter", exc)
        return have

    def needs(self, op: Filter, stage: Stage, out: set[str], schemas: Schemas) -> list[Need]:
        return [(stage.from_, out | set(op.expr.columns()))]


class DeriveRules(Rules[Derive]):
    operation = Derive

    def runs_per_slice(self, op: Derive, asked: bool) -> bool:
        return True

    def broadcast(self, op: Derive) -> tuple[str, ...]:
        return ()

    def check_columns(self, op: Derive, at: StageCheck, have: Schema) -> None:
        names = list(have.names)  # each expression may use the columns derived above it
        for name, expr in op.columns.items():
            at.unknown(expr.columns(), f"derive.{name}", names)
            if name not in names:
                names.append(name)

    def output(self, op: Derive, at: StageCheck, have: Schema) -> Schema | None:
        kinds = dict(have.kinds)
        for name, expr in op.columns.items():
            try:
                kinds[name] = infer(expr, kinds)
            except TypeProblem as exc:
                at.mistyped(f"derive.{name}", exc)
                kinds[name] = None
        added = tuple(name for name in op.columns if name not in have.names)
        return Schema(names=(*have.names, *added), kinds=kinds)

    def needs(self, op: Derive, stage: Stage, out: set[str], schemas: Schemas) -> list[Need]:
        used = set().union(*(e.columns() for e in op.columns.values()))
        return [(stage.from_, (out - set(op.columns)) | used)]


class SelectRules(Rules[Select]):
    operation = Select

    def runs_per_slice(self, op: Select, asked: bool) -> bool:
        return True

    def broadcast(self, op: Select) -> tuple[str, ...]:
        return ()

    def check_columns(self, op: Select, at: StageCheck, have: Schema) -> None:
        at.unknown(op.columns, "select", have.names)

    def output(self, op: Select, at: StageCheck, have: Schema) -> Schema | None:
        return Schema.of((c, have.kinds.get(c)) for c in op.columns)

    def needs(self, op: Select, stage: Stage, out: set[str], schemas: Schemas) -> list[Need]:
        return [(stage.from_, set(op.columns) & out)]


class RenameRules(Rules[Rename]):
    operation = Rename

    def runs_per_slice(self, op: Rename, asked: bool) -> bool:
        return True

    def broadcast(self, op: Rename) -> tuple[str, ...]:
        return ()

    def check_columns(self, op: Rename, at: StageCheck, have: Schema) -> None:
        at.unknown(tuple(op.mapping), "rename", have.names)

    def output(self, op: Rename, at: StageCheck, have: Schema) -> Schema | None:
        renamed = [(op.mapping.get(c, c), kind) for c, kind in have.pairs()]
        # a new name whose old one is missing (a problem, reported) still names a column, of
        # no known kind, so that the stages after it are checked as meant
        missing = [new for old, new in op.mapping.items() if old not in have.names]
        kinds = dict(renamed)
        for name in missing:
            kinds.setdefault(name, None)
        return Schema(names=(*(name for name, _ in renamed), *missing), kinds=kinds)

    def needs(self, op: Rename, stage: Stage, out: set[str], schemas: Schemas) -> list[Need]:
        back = {new: old for old, new in op.mapping.items()}
        return [(stage.from_, {back.get(c, c) for c in out})]


class JoinRules(Rules[Join]):
    operation = Join

    def runs_per_slice(self, op: Join, asked: bool) -> bool:
        # A right or outer join must see every slice at once: a right row that matches
        # nothing in one slice may match in another, and must come out once, not per slice
        # (unless both sides are sliced by a join key: see plan.partner_slices).
        return op.how in ("inner", "left") or asked

    def broadcast(self, op: Join) -> tuple[str, ...]:
        return (op.right,)

    def check_columns(self, op: Join, at: StageCheck, have: Schema) -> None:
        at.unknown(op.on, "join.on", have.names)
        right = at.schemas[op.right]
        if right is not None:
            at.unknown(op.on, "join.on", right.names, side=f"right side {op.right!r}")

    def output(self, op: Join, at: StageCheck, have: Schema) -> Schema | None:
        right = at.schemas[op.right]
        if right is None:
            return None
        for key in op.on:
            a, b = have.kinds.get(key), right.kinds.get(key)
            if a is not None and b is not None and a != b and "other" not in (a, b):
                at.mistyped(
                    "join.on",
                    TypeProblem(f"join key {key!r} is {a} on the left but {b} on the right"),
                )
        left_names, right_names = op.output_names(have.names, right.names)
        return Schema.of(
            [(left_names[c], kind) for c, kind in have.pairs()]
            + [(right_names[c], kind) for c, kind in right.pairs() if c in right_names]
        )

    def needs(self, op: Join, stage: Stage, out: set[str], schemas: Schemas) -> list[Need]:
        left_names, right_names = op.output_names(
            _names(schemas, stage.from_), _names(schemas, op.right)
        )
        return [
            (stage.from_, {c for c, new in left_names.items() if new in out} | set(op.on)),
            (op.right, {c for c, new in right_names.items() if new in out} | set(op.on)),
        ]


class AggregateRules(Rules[Aggregate]):
    operation = Aggregate

    def runs_per_slice(self, op: Aggregate, asked: bool) -> bool:
        return asked

    def broadcast(self, op: Aggregate) -> tuple[str, ...]:
        return ()

    def check_columns(self, op: Aggregate, at: StageCheck, have: Schema) -> None:
        at.unknown(op.group_by, "group_by", have.names)
        for name, agg in op.aggregates.items():
            at.unknown(agg.columns(), f"aggregate.{name}", have.names)

    def output(self, op: Aggregate, at: StageCheck, have: Schema) -> Schema | None:
        kinds: dict[str, Kind] = {c: have.kinds.get(c) for c in op.group_by}
        for name, agg in op.aggregates.items():
            try:
                check_aggregate(agg.func, agg.arg, have.kinds)
            except TypeProblem as exc:
                at.mistyped(f"aggregate.{name}", exc)
            if agg.func in ("min", "max") and agg.arg is not None:
                try:
                    kinds[name] = infer(agg.arg, have.kinds)
                except TypeProblem:
                    kinds[name] = None
            else:
                kinds[name] = "number"
        return Schema(names=(*op.group_by, *op.aggregates), kinds=kinds)

    def needs(self, op: Aggregate, stage: Stage, out: set[str], schemas: Schemas) -> list[Need]:
        used = set(op.group_by)
        for agg in op.aggregates.values():
            used |= set(agg.columns())
        return [(stage.from_, used)]


class SortRules(Rules[Sort]):
    operation = Sort

    def runs_per_slice(self, op: Sort, asked: bool) -> bool:
        return asked

    def broadcast(self, op: Sort) -> tuple[str, ...]:
        return ()

    def check_columns(self, op: Sort, at: StageCheck, have: Schema) -> None:
        at.unknown(tuple(k.column for k in op.by), "sort", have.names)

    def output(self, op: Sort, at: StageCheck, have: Schema) -> Schema | None:
        return have

    def needs(self, op: Sort, stage: Stage, out: set[str], schemas: Schemas) -> list[Need]:
        return [(stage.from_, out | {k.column for k in op.by})]


class LimitRules(Rules[Limit]):
    operation = Limit

    def runs_per_slice(self, op: Limit, asked: bool) -> bool:
        return asked

    def broadcast(self, op: Limit) -> tuple[str, ...]:
        return ()

    def check_columns(self, op: Limit, at: StageCheck, have: Schema) -> None:
        return None  # reads no column by name

    def output(self, op: Limit, at: StageCheck, have: Schema) -> Schema | None:
        return have

    def needs(self, op: Limit, stage: Stage, out: set[str], schemas: Schemas) -> list[Need]:
        return [(stage.from_, set(out))]


class UnionRules(Rules[Union]):
    operation = Union

    def runs_per_slice(self, op: Union, asked: bool) -> bool:
        return False  # its inputs are sliced apart from one another

    def broadcast(self, op: Union) -> tuple[str, ...]:
        return ()

    def check_columns(self, op: Union, at: StageCheck, have: Schema) -> None:
        for other in op.others:
            schema = at.schemas[other]
            if schema is not None and set(schema.names) != set(have.names):
                missing = sorted(set(have.names) ^ set(schema.names))
                at.report(
                    "union",
                    f"{other!r} does not have the same columns as {at.stage.from_!r}",
                    "columns that differ: " + ", ".join(missing),
                    at=f"union.{other}",
                )

    def output(self, op: Union, at: StageCheck, have: Schema) -> Schema | None:
        return have

    def needs(self, op: Union, stage: Stage, out: set[str], schemas: Schemas) -> list[Need]:
        return [(up, set(out)) for up in stage.upstream]


class MapRules(Rules[Map]):
    operation = Map

    def runs_per_slice(self, op: Map, asked: bool) -> bool:
        return True

    def broadcast(self, op: Map) -> tuple[str, ...]:
        return ()

    def check_columns(self, op: Map, at: StageCheck, have: Schema) -> None:
        return None  # the function may read any column: nothing to check before it runs

    def output(self, op: Map, at: StageCheck, have: Schema) -> Schema | None:
        return None  # known only once the function has run

    def needs(self, op: Map, stage: Stage, out: set[str], schemas: Schemas) -> list[Need]:
        return [(up, None) for up in stage.upstream]


class WindowRules(Rules[Window]):
    operation = Window

    def runs_per_slice(self, op: Window, asked: bool) -> bool:
        return asked  # else its frames may reach into other slices: see compile.plan

    def broadcast(self, op: Window) -> tuple[str, ...]:
        return ()

    def check_columns(self, op: Window, at: StageCheck, have: Schema) -> None:
        at.unknown(op.partition_by, "window.partition_by", have.names)
        at.unknown(op.order_by, "window.order_by", have.names)
        for name, call in op.columns.items():
            at.unknown(call.columns(), f"window.columns.{name}", have.names)

    def output(self, op: Window, at: StageCheck, have: Schema) -> Schema | None:
        self._check_frame(op, at, have)
        kinds = dict(have.kinds)
        for name, call in op.columns.items():
            spec = WINDOW_FUNCTIONS[call.func]
            arg_kind: Kind = None
            if call.arg is not None:
                try:
                    arg_kind = infer(call.arg, have.kinds)
                    spec.check(call.arg, arg_kind)
                except TypeProblem as exc:
                    at.mistyped(f"window.columns.{name}", exc)
            kinds[name] = spec.result_kind(arg_kind)
        added = tuple(name for name in op.columns if name not in have.names)
        return Schema(names=(*have.names, *added), kinds=kinds)

    @staticmethod
    def _check_frame(op: Window, at: StageCheck, have: Schema) -> None:
        """A range frame that reaches past a row's peers measures by its order column: a number,
        a date (counted in days) or a timestamp (given a duration)."""
        frame = op.frame
        bounds = (frame.preceding, frame.following)
        if frame.unit != "range" or len(op.order_by) != 1:
            return
        column = op.order_by[0]
        kind = have.kinds.get(column)
        if kind in ("string", "bool"):
            if any(b.seconds is not None or b.value not in (0, None) for b in bounds):
                at.report(
                    "window.range",
                    f"a range frame measures by its order column, but {column!r} is {kind}",
                    "order by a number, date or timestamp, or count rows with 'rows'",
                )
            return
        for bound in bounds:
            if kind == "number" and bound.seconds is not None:
                at.report(
                    "window.range",
                    f"order column {column!r} is a number, not a time: "
                    f"{bound.render()} does not measure it",
                    "give a number",
                )
            elif kind == "timestamp" and bound.value not in (0, None):
                at.report(
                    "window.range",
                    f"order column {column!r} is a timestamp: give a duration such as "
                    f"'{bound.value} days', not {bound.value}",
                    "units: seconds, minutes, hours, days, weeks",
                )
            elif kind == "date" and (
                (bound.seconds is not None and bound.seconds % 86400)
                or not isinstance(bound.value, int | None)
            ):
                at.report(
                    "window.range",
                    f"order column {column!r} is a date: a frame reaches whole days, "
                    f"not {bound.render()}",
                    "give a whole number of days",
                )

    def needs(self, op: Window, stage: Stage, out: set[str], schemas: Schemas) -> list[Need]:
        used = set(op.partition_by) | set(op.order_by)
        for call in op.columns.values():
            used |= set(call.columns())
        return [(stage.from_, (out - set(op.columns)) | used)]


#: Operation kind -> its rules; one entry per kind in OPERATIONS.
RULES: dict[str, Rules[Any]] = {
    rules.operation.kind: rules
    for rules in (
        FilterRules(),
        DeriveRules(),
        SelectRules(),
        RenameRules(),
        JoinRules(),
        AggregateRules(),
        SortRules(),
        LimitRules(),
        UnionRules(),
        MapRules(),
        WindowRules(),
    )
}


def rules_of(op: Operation) -> Rules[Any]:
    """The planning rules of ``op``'s kind; raises TypeError for an operation without any."""
    rules = RULES.get(op.kind)
    if rules is None or not isinstance(op, rules.operation):
        raise TypeError(
            f"operation {type(op).__name__} ({op.kind!r}) has no planning rules; "
            f"every kind in OPERATIONS ({', '.join(OPERATIONS)}) needs an entry in RULES"
        )
    return rules


def runs_per_slice(stage: Stage) -> bool:
    """Whether ``stage`` runs on each slice of a sliced input alone."""
    return bool(rules_of(stage.operation).runs_per_slice(stage.operation, stage.per_slice))
