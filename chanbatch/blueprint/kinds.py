"""The coarse kinds of values that plan-time type checks reason about, and their mismatches.

Kinds are coarse on purpose (number, string, bool, date, timestamp): enough to refuse comparing
a string column with a number or summing a string, without guessing what a dataframe library
would do in the corners. ``"other"`` (a type the checks do not know, such as a ``map``'s output)
and ``None`` (unknown: a null literal) are accepted everywhere.
"""

from __future__ import annotations

from chanbatch.blueprint.nodes import Column, Expr, Literal

Kind = str | None  # "number" | "string" | "bool" | "date" | "timestamp" | "other" | None

#: A kind nothing is checked against.
UNCHECKED: tuple[Kind, ...] = ("other", None)


class TypeProblem(Exception):
    """A type mismatch in an expression; the message says which operands."""


def what(expr: Expr, kind: Kind) -> str:
    """``expr`` with its kind, as an error message names it."""
    if isinstance(expr, Column):
        return f"{kind} column {expr.name!r}"
    if isinstance(expr, Literal):
        return f"{kind} {expr.render()}"
    return f"a {kind} ({expr.render()})"


def comparable(a: Expr, ka: Kind, b: Expr, kb: Kind) -> None:
    """Raise TypeProblem unless values of kinds ``ka`` and ``kb`` can be compared."""
    if ka is None or kb is None or ka == kb or "other" in (ka, kb):
        return
    temporal = {"date", "timestamp"}
    if (ka in temporal and kb in temporal | {"string"}) or (kb in temporal and ka == "string"):
        return  # a string literal is read as a date or timestamp
    raise TypeProblem(f"cannot compare {what(a, ka)} with {what(b, kb)}")


def same_kind(name: str, args: list[Expr], kinds: list[Kind]) -> Kind:
    """The one kind of the values that function ``name`` mixes row by row; raises TypeProblem
    when they differ."""
    known = [(a, k) for a, k in zip(args, kinds, strict=True) if k not in UNCHECKED]
    if not known:
        return None
    first, kind = known[0]
    for arg, other in known[1:]:
        if other != kind:
            raise TypeProblem(
                f"{name}() mixes {what(first, kind)} with {what(arg, other)}: "
                f"give it values of one type (cast() converts)"
            )
    return kind
