"""The registry of the expression language: every function an expression may call and every
aggregate a stage may compute, each described once, with all of its rules.

A :class:`FunctionSpec` holds a function's arity, which arguments must be literals, the kinds
its first argument may have, its result-kind rule (which may refuse a mismatch), and whether the
Arrow path has a kernel for it. An :class:`AggregateSpec` holds an aggregate's arity, whether it
needs numbers, the kind of its result, and whether it decomposes into per-slice partial states.

The parser rejects any name not here; plan-time type checks (:mod:`chanbatch.compile.types`)
apply the kind rules; the engine keeps the kernels in tables keyed by these names
(:mod:`chanbatch.engine.pandas_functions`, :mod:`chanbatch.engine.arrow_eval`,
:mod:`chanbatch.engine.aggregate`), checked against this registry when they are imported and
by tests/engine/test_registry.py. Nothing here imports a dataframe library, so ``validate``
checks a blueprint without one. docs/concepts.md ("Architecture") says how to add an entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from chanbatch.blueprint.kinds import UNCHECKED, Kind, TypeProblem, comparable, same_kind, what
from chanbatch.blueprint.nodes import Call, Expr
from chanbatch.blueprint.nodes import Literal as LiteralNode

#: What a literal-only argument must be: an int, a str, or one of :data:`CAST_TYPES`.
LiteralKind = Literal["int", "str", "cast_type"]

#: A result-kind rule: the call and the kinds of its arguments -> the kind of its value; it
#: raises TypeProblem for arguments it cannot take.
ResultRule = Callable[[Call, list[Kind]], Kind]

_NUMBER = ("number",)
_TEXT = ("string",)
_TEMPORAL = ("date", "timestamp", "string")


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionSpec:
    """One function of the expression language, with every rule the parser, the type checks
    and the engine apply to it."""

    name: str
    min_args: int
    max_args: int | None  # None: any number from min_args up
    literals: tuple[tuple[int, LiteralKind], ...] = ()
    usage: str
    #: kinds the first argument may have (besides unknown ones), and how an error says so
    first: tuple[tuple[str, ...], str] | None = None
    result: ResultRule
    #: True when :data:`chanbatch.engine.arrow_eval.ARROW_FUNCTIONS` has a kernel for it; the
    #: pandas kernel (:data:`chanbatch.engine.pandas_functions.FUNCTION_IMPLEMENTATIONS`) is
    #: always there, and is the definition.
    arrow: bool = False

    def accepts(self, count: int) -> bool:
        """True if the function can be called with ``count`` arguments."""
        return count >= self.min_args and (self.max_args is None or count <= self.max_args)

    def arity(self) -> str:
        """The accepted argument counts in words, for error messages."""
        if self.max_args is None:
            return f"at least {self.min_args} arguments"
        if self.min_args == self.max_args:
            return f"{self.min_args} argument" + ("" if self.min_args == 1 else "s")
        return f"{self.min_args} to {self.max_args} arguments"

    def result_kind(self, call: Call, kinds: list[Kind]) -> Kind:
        """The kind of ``call``'s value given its arguments' kinds; raises TypeProblem."""
        if self.first is not None and kinds and kinds[0] is not None:
            allowed, words = self.first
            if kinds[0] not in (*allowed, "other"):
                raise TypeProblem(
                    f"{self.name}() needs {words}, not {what(call.args[0], kinds[0])}"
                )
        return self.result(call, kinds)


def _gives(kind: Kind) -> ResultRule:
    return lambda call, kinds: kind


def _between(call: Call, kinds: list[Kind]) -> Kind:
    for bound, kind in zip(call.args[1:], kinds[1:], strict=True):
        comparable(call.args[0], kinds[0], bound, kind)
    return "bool"


def _coalesce(call: Call, kinds: list[Kind]) -> Kind:
    return same_kind(call.name, list(call.args), kinds)


def _if_else(call: Call, kinds: list[Kind]) -> Kind:
    condition = kinds[0]
    if condition not in ("bool", *UNCHECKED):
        raise TypeProblem(f"if_else() needs a condition first, not {what(call.args[0], condition)}")
    return same_kind(call.name, list(call.args[1:]), kinds[1:])


#: cast target -> (the kinds it converts from, the kind it gives); docs/blueprints.md, "What
#: cast does"
CASTS: dict[str, tuple[tuple[str, ...], str]] = {
    "int": (("number", "string", "bool"), "number"),
    "float": (("number", "string", "bool"), "number"),
    "str": (("number", "string", "bool", "date", "timestamp"), "string"),
    "bool": (("number", "string", "bool"), "bool"),
    "date": (("string", "date", "timestamp"), "date"),
    "timestamp": (("string", "date", "timestamp"), "timestamp"),
}
CAST_TYPES: tuple[str, ...] = tuple(sorted(CASTS))


def _cast(call: Call, kinds: list[Kind]) -> Kind:
    target_node = call.args[1] if len(call.args) > 1 else None
    if not isinstance(target_node, LiteralNode):
        return None
    target = str(target_node.value)
    sources, gives = CASTS.get(target, ((), None))
    if kinds[0] not in (*sources, *UNCHECKED):
        raise TypeProblem(f"cannot cast {what(call.args[0], kinds[0])} to {target!r}")
    return gives


def _fn(
    name: str,
    low: int,
    high: int | None,
    usage: str,
    result: ResultRule,
    *,
    first: tuple[tuple[str, ...], str] | None = None,
    arrow: bool = False,
    **literals: LiteralKind,
) -> FunctionSpec:
    positions = tuple(sorted((int(key[1:]), kind) for key, kind in literals.items()))
    return FunctionSpec(
        name=name,
        min_args=low,
        max_args=high,
        literals=positions,
        usage=usage,
        first=first,
        result=result,
        arrow=arrow,
    )


_A_STRING = (_TEXT, "a string")
_A_NUMBER = (_NUMBER, "a number")
_A_DATE = (_TEMPORAL, "a date or timestamp")

FUNCTIONS: dict[str, FunctionSpec] = {
    spec.name: spec
    for spec in (
        _fn("is_null", 1, 1, "is_null(x)", _gives("bool"), arrow=True),
        _fn("not_null", 1, 1, "not_null(x)", _gives("bool"), arrow=True),
        _fn("abs", 1, 1, "abs(x)", _gives("number"), first=_A_NUMBER),
        _fn(
            "round",
            1,
            2,
            "round(x) or round(x, digits)",
            _gives("number"),
            first=_A_NUMBER,
            a1="int",
        ),
        _fn("lower", 1, 1, "lower(text)", _gives("string"), first=_A_STRING),
        _fn("upper", 1, 1, "upper(text)", _gives("string"), first=_A_STRING),
        _fn("length", 1, 1, "length(text)", _gives("number"), first=_A_STRING),
        _fn(
            "starts_with",
            2,
            2,
            "starts_with(text, 'prefix')",
            _gives("bool"),
            first=_A_STRING,
            a1="str",
        ),
        _fn("contains", 2, 2, "contains(text, 'part')", _gives("bool"), first=_A_STRING, a1="str"),
        _fn("year", 1, 1, "year(timestamp)", _gives("number"), first=_A_DATE),
        _fn("month", 1, 1, "month(timestamp)", _gives("number"), first=_A_DATE),
        _fn("day", 1, 1, "day(timestamp)", _gives("number"), first=_A_DATE),
        _fn(
            "hour",
            1,
            1,
            "hour(timestamp)",
            _gives("number"),
            first=(("timestamp", "string"), "a timestamp (a date has no hour)"),
        ),
        _fn("date", 1, 1, "date(timestamp)", _gives("date"), first=_A_DATE),
        _fn("year_month", 1, 1, "year_month(timestamp)", _gives("string"), first=_A_DATE),
        _fn("coalesce", 2, None, "coalesce(x, y, ...)", _coalesce),
        _fn("if_else", 3, 3, "if_else(condition, then, otherwise)", _if_else),
        _fn("between", 3, 3, "between(x, low, high)", _between),
        _fn(
            "cast",
            2,
            2,
            "cast(x, 'int'|'float'|'str'|'bool'|'date'|'timestamp')",
            _cast,
            a1="cast_type",
        ),
    )
}


@dataclass(frozen=True, slots=True, kw_only=True)
class AggregateSpec:
    """One aggregate a stage may compute, with every rule the parser, the type checks and the
    planner apply to it. Its kernels (partial state, partial, combine, finish, and the whole-input
    form) are :data:`chanbatch.engine.aggregate.KERNELS` under the same name."""

    name: str
    min_args: int
    max_args: int
    usage: str
    #: True when per-slice partial states combine exactly (DESIGN.md section 6), so that a new
    #: slice costs only itself; False: a stage using it runs on its whole input.
    decomposes: bool
    #: True when its argument must be a number
    numeric: bool = False
    #: the kind of its result; None: the kind of its argument (min, max)
    gives: Kind = "number"
    #: True when its second argument is a fraction between 0 and 1 (a quantile's ``q``)
    fraction: bool = False

    def check(self, arg: Expr, arg_kind: Kind) -> None:
        """Raise TypeProblem when the aggregate cannot apply to ``arg``, of kind ``arg_kind``."""
        if self.numeric and arg_kind in ("string", "bool", "date", "timestamp"):
            raise TypeProblem(f"{self.name}() needs numbers, not {what(arg, arg_kind)}")

    def result_kind(self, arg_kind: Kind) -> Kind:
        """The kind of the aggregate's value over an argument of ``arg_kind``."""
        return arg_kind if self.gives is None else self.gives


def _agg(
    name: str,
    low: int,
    usage: str,
    *,
    decomposes: bool = True,
    numeric: bool = False,
    gives: Kind = "number",
    fraction: bool = False,
) -> AggregateSpec:
    return AggregateSpec(
        name=name,
        min_args=low,
        max_args=2 if fraction else 1,
        usage=usage,
        decomposes=decomposes,
        numeric=numeric,
        gives=gives,
        fraction=fraction,
    )


#: ``count()`` counts rows, ``count(x)`` non-null values.
AGGREGATES: dict[str, AggregateSpec] = {
    spec.name: spec
    for spec in (
        _agg("count", 0, "count() or count(x)"),
        _agg("sum", 1, "sum(x)", numeric=True),
        _agg("mean", 1, "mean(x)", numeric=True),
        _agg("min", 1, "min(x)", gives=None),
        _agg("max", 1, "max(x)", gives=None),
        _agg("var", 1, "var(x)", numeric=True),
        _agg("std", 1, "std(x)", numeric=True),
        _agg("count_distinct", 1, "count_distinct(x)"),
        _agg("approx_count_distinct", 1, "approx_count_distinct(x)"),
        _agg("approx_median", 1, "approx_median(x)", numeric=True),
        _agg("approx_quantile", 2, "approx_quantile(x, 0.9)", numeric=True, fraction=True),
        _agg("median", 1, "median(x)", decomposes=False, numeric=True),
        _agg("quantile", 2, "quantile(x, 0.9)", decomposes=False, numeric=True, fraction=True),
    )
}

#: The aggregates whose per-slice partials combine exactly; the rest need the whole input.
DECOMPOSABLE_AGGREGATES: frozenset[str] = frozenset(
    name for name, spec in AGGREGATES.items() if spec.decomposes
)


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowSpec:
    """One function a ``window`` stage may compute per row. Frame aggregates (count, sum, mean,
    min, max) read the rows of each row's frame; ``lag``/``lead`` read the row ``offset`` rows
    before or after in its partition, and ``row_number`` its position there (they ignore the
    frame, as in SQL). Its kernel is in :mod:`chanbatch.engine.window` under the same name."""

    name: str
    min_args: int
    max_args: int
    usage: str
    #: True when it reads the rows of each row's frame; False: rows by position
    framed: bool
    numeric: bool = False
    #: the kind of its result; None: the kind of its argument
    gives: Kind = "number"

    def check(self, arg: Expr, arg_kind: Kind) -> None:
        """Raise TypeProblem when the function cannot apply to ``arg``, of kind ``arg_kind``."""
        if self.numeric and arg_kind in ("string", "bool", "date", "timestamp"):
            raise TypeProblem(f"{self.name}() needs numbers, not {what(arg, arg_kind)}")

    def result_kind(self, arg_kind: Kind) -> Kind:
        """The kind of the function's value over an argument of ``arg_kind``."""
        return arg_kind if self.gives is None else self.gives


#: The functions of a ``window`` stage. ``count()`` counts the frame's rows, ``count(x)`` its
#: non-null values; ``lag(x, n)``/``lead(x, n)`` take an optional whole-number offset (1).
WINDOW_FUNCTIONS: dict[str, WindowSpec] = {
    spec.name: spec
    for spec in (
        WindowSpec(name="count", min_args=0, max_args=1, usage="count() or count(x)", framed=True),
        WindowSpec(name="sum", min_args=1, max_args=1, usage="sum(x)", framed=True, numeric=True),
        WindowSpec(name="mean", min_args=1, max_args=1, usage="mean(x)", framed=True, numeric=True),
        WindowSpec(name="min", min_args=1, max_args=1, usage="min(x)", framed=True, gives=None),
        WindowSpec(name="max", min_args=1, max_args=1, usage="max(x)", framed=True, gives=None),
        WindowSpec(
            name="lag",
            min_args=1,
            max_args=2,
            usage="lag(x) or lag(x, 2)",
            framed=False,
            gives=None,
        ),
        WindowSpec(
            name="lead",
            min_args=1,
            max_args=2,
            usage="lead(x) or lead(x, 2)",
            framed=False,
            gives=None,
        ),
        WindowSpec(name="row_number", min_args=0, max_args=0, usage="row_number()", framed=False),
    )
}
