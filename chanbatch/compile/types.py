"""Plan-time type checks: catch what would only fail on a worker, with the stage named.

Types are coarse on purpose (number, string, bool, date, timestamp): enough to refuse comparing a
string column with a number or summing a string, without guessing what pandas would do in the
corners. Anything unknown (a ``map``'s output, a null literal) is accepted.
"""

from __future__ import annotations

from chanbatch.blueprint.functions import AGGREGATES, FUNCTIONS
from chanbatch.blueprint.kinds import UNCHECKED, Kind, TypeProblem, comparable, what
from chanbatch.blueprint.nodes import (
    BinOp,
    BoolOp,
    Call,
    Column,
    Compare,
    Expr,
    InList,
    Literal,
    Negate,
    Not,
)

__all__ = ["Kind", "TypeProblem", "check_aggregate", "infer", "kind_of_arrow"]


def kind_of_arrow(type_name: str) -> Kind:
    """The coarse kind of a column from its Arrow type's string form."""
    t = type_name.lower()
    if t.startswith(("int", "uint", "float", "double", "halffloat", "decimal")):
        return "number"
    if t in ("string", "large_string", "utf8", "large_utf8", "string_view"):
        return "string"
    if t == "bool":
        return "bool"
    if t.startswith("date"):
        return "date"
    if t.startswith("timestamp"):
        return "timestamp"
    return "other"


def infer(expr: Expr, columns: dict[str, Kind]) -> Kind:
    """The kind of ``expr`` over ``columns``; raises TypeProblem on a certain mismatch."""
    match expr:
        case Column():
            return columns.get(expr.name)
        case Literal():
            return _literal(expr)
        case Negate():
            inner = infer(expr.operand, columns)
            if inner in ("string", "bool", "date", "timestamp"):
                raise TypeProblem(f"cannot negate {what(expr.operand, inner)}")
            return "number"
        case BinOp():
            # ``a + b + c`` is ((a + b) + c): a long sum is a deep chain, followed in a loop
            first, links = expr.chain()
            kind = infer(first, columns)
            for link in links:
                kind = _arithmetic(link, kind, infer(link.right, columns))
            return kind
        case Compare():
            kinds = [infer(o, columns) for o in expr.operands]
            for i in range(len(kinds) - 1):
                comparable(expr.operands[i], kinds[i], expr.operands[i + 1], kinds[i + 1])
            return "bool"
        case InList():
            kind = infer(expr.operand, columns)
            for value in expr.values:
                literal = Literal(value=value)
                comparable(expr.operand, kind, literal, _literal(literal))
            return "bool"
        case BoolOp() | Not():
            _conditions(expr, columns)
            return "bool"
        case Call():
            # every name the parser lets through is in the registry: no silent default
            kinds = [infer(a, columns) for a in expr.args]
            return FUNCTIONS[expr.name].result_kind(expr, kinds)
    raise TypeError(f"not an expression node: {expr!r}")


def _literal(expr: Literal) -> Kind:
    value = expr.value
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    return "number" if isinstance(value, int | float) else "string"


def _conditions(expr: BoolOp | Not, columns: dict[str, Kind]) -> None:
    word = expr.op if isinstance(expr, BoolOp) else "not"
    for child in expr.children():
        kind = infer(child, columns)
        if kind not in ("bool", *UNCHECKED):
            raise TypeProblem(
                f"{word!r} needs conditions, not {what(child, kind)} "
                f"(compare it: {child.render()} > 0, or is_null({child.render()}))"
            )


def _arithmetic(expr: BinOp, left: Kind, right: Kind) -> Kind:
    """The kind of ``left op right``, given the kinds of both sides."""
    if expr.op == "+" and "string" in (left, right):
        return _concatenation(expr, left, right)
    for side, kind in ((expr.left, left), (expr.right, right)):
        if kind in ("string", "bool"):
            raise TypeProblem(f"cannot apply {expr.op!r} to {what(side, kind)}")
    for side, kind in ((expr.left, left), (expr.right, right)):
        if kind in ("date", "timestamp"):
            raise TypeProblem(
                f"cannot apply {expr.op!r} to {what(side, kind)}: dates and timestamps take "
                "no arithmetic (compare them, or take parts with year(), month(), day())"
            )
    return "number"


def _concatenation(expr: BinOp, left: Kind, right: Kind) -> Kind:
    """``text + text`` joins the two; text and anything else is refused, with the cast."""
    for side, kind in ((expr.left, left), (expr.right, right)):
        if kind not in ("string", "other", None):
            raise TypeProblem(
                f"cannot add {what(side, kind)} to text: "
                f"write cast({side.render()}, 'str') to join it as text"
            )
    return "string"


def check_aggregate(func: str, arg: Expr | None, columns: dict[str, Kind]) -> None:
    """Raise TypeProblem for an aggregate that cannot apply to its argument's kind."""
    if arg is not None:
        AGGREGATES[func].check(arg, infer(arg, columns))
