"""The functions an expression may call, and the aggregates a stage may compute.

This table is the allowlist: the parser rejects any call it does not name, and the evaluator
implements exactly these. Keeping it free of pandas lets ``validate`` check a blueprint without
importing any dataframe library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: What a literal-only argument must be: an int, a str, or one of :data:`CAST_TYPES`.
LiteralKind = Literal["int", "str", "cast_type"]

CAST_TYPES: tuple[str, ...] = ("bool", "date", "float", "int", "str", "timestamp")


@dataclass(frozen=True, slots=True, kw_only=True)
class Signature:
    """How many arguments a function takes, and which of them must be written as literals."""

    name: str
    min_args: int
    max_args: int | None  # None: any number from min_args up
    literals: tuple[tuple[int, LiteralKind], ...] = ()
    usage: str

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


def _sig(name: str, low: int, high: int | None, usage: str, **literals: LiteralKind) -> Signature:
    positions = tuple(sorted((int(key[1:]), kind) for key, kind in literals.items()))
    return Signature(name=name, min_args=low, max_args=high, literals=positions, usage=usage)


FUNCTIONS: dict[str, Signature] = {
    sig.name: sig
    for sig in (
        _sig("is_null", 1, 1, "is_null(x)"),
        _sig("not_null", 1, 1, "not_null(x)"),
        _sig("abs", 1, 1, "abs(x)"),
        _sig("round", 1, 2, "round(x) or round(x, digits)", a1="int"),
        _sig("lower", 1, 1, "lower(text)"),
        _sig("upper", 1, 1, "upper(text)"),
        _sig("length", 1, 1, "length(text)"),
        _sig("starts_with", 2, 2, "starts_with(text, 'prefix')", a1="str"),
        _sig("contains", 2, 2, "contains(text, 'part')", a1="str"),
        _sig("year", 1, 1, "year(timestamp)"),
        _sig("month", 1, 1, "month(timestamp)"),
        _sig("day", 1, 1, "day(timestamp)"),
        _sig("hour", 1, 1, "hour(timestamp)"),
        _sig("date", 1, 1, "date(timestamp)"),
        _sig("coalesce", 2, None, "coalesce(x, y, ...)"),
        _sig("if_else", 3, 3, "if_else(condition, then, otherwise)"),
        _sig("between", 3, 3, "between(x, low, high)"),
        _sig(
            "cast", 2, 2, "cast(x, 'int'|'float'|'str'|'bool'|'date'|'timestamp')", a1="cast_type"
        ),
    )
}

#: Aggregate name -> (fewest, most) arguments. ``count()`` counts rows, ``count(x)`` non-nulls.
AGGREGATES: dict[str, tuple[int, int]] = {
    "count": (0, 1),
    "sum": (1, 1),
    "mean": (1, 1),
    "min": (1, 1),
    "max": (1, 1),
    "var": (1, 1),
    "std": (1, 1),
    "count_distinct": (1, 1),
}

#: Aggregates whose per-slice partials combine exactly (DESIGN.md section 6); the rest need
#: the whole input at once.
DECOMPOSABLE_AGGREGATES: frozenset[str] = frozenset(
    {"count", "sum", "mean", "min", "max", "var", "std"}
)
