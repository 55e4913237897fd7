"""Plan-time type checks: catch what would only fail on a worker, with the stage named.

Types are coarse on purpose (number, string, bool, date, timestamp): enough to refuse comparing a
string column with a number or summing a string, without guessing what pandas would do in the
corners. Anything unknown (a ``map``'s output, a null literal) is accepted.
"""

from __future__ import annotations

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

Kind = str | None  # "number" | "string" | "bool" | "date" | "timestamp" | "other" | None

_NUMERIC_FUNCS = {"abs", "round", "length", "year", "month", "day", "hour"}
_BOOL_FUNCS = {"is_null", "not_null", "starts_with", "contains", "between"}
# function -> (kinds its first argument may have, how to say so)
_FIRST_ARGUMENT: dict[str, tuple[tuple[str, ...], str]] = {
    **{
        f: (("string", "other"), "a string")
        for f in ("lower", "upper", "starts_with", "contains", "length")
    },
    **{
        f: (("date", "timestamp", "string", "other"), "a date or timestamp")
        for f in ("year", "month", "day", "date")
    },
    "hour": (("timestamp", "string", "other"), "a timestamp (a date has no hour)"),
    **{f: (("number", "other"), "a number") for f in ("abs", "round")},
}
# cast target -> the kinds it converts from (docs/blueprints.md, "What cast does")
_CAST_SOURCES: dict[str, tuple[str, ...]] = {
    "int": ("number", "string", "bool"),
    "float": ("number", "string", "bool"),
    "str": ("number", "string", "bool", "date", "timestamp"),
    "bool": ("number", "string", "bool"),
    "date": ("string", "date", "timestamp"),
    "timestamp": ("string", "date", "timestamp"),
}
_CASTS = {
    "int": "number",
    "float": "number",
    "str": "string",
    "bool": "bool",
    "date": "date",
    "timestamp": "timestamp",
}


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


class TypeProblem(Exception):
    """A type mismatch in an expression; the message says which operands."""


def infer(expr: Expr, columns: dict[str, Kind]) -> Kind:
    """The kind of ``expr`` over ``columns``; raises TypeProblem on a certain mismatch."""
    if isinstance(expr, Column):
        return columns.get(expr.name)
    if isinstance(expr, Literal):
        value = expr.value
        if value is None:
            return None
        if isinstance(value, bool):
            return "bool"
        return "number" if isinstance(value, int | float) else "string"
    if isinstance(expr, Negate):
        inner = infer(expr.operand, columns)
        if inner in ("string", "bool", "date", "timestamp"):
            raise TypeProblem(f"cannot negate {_what(expr.operand, inner)}")
        return "number"
    if isinstance(expr, BinOp):
        # ``a + b + c`` is ((a + b) + c): a long sum is a deep chain, followed in a loop
        first, links = expr.chain()
        kind = infer(first, columns)
        for link in links:
            kind = _arithmetic(link, kind, infer(link.right, columns))
        return kind
    if isinstance(expr, Compare):
        kinds = [infer(o, columns) for o in expr.operands]
        for (a, ka), (b, kb) in zip(
            zip(expr.operands, kinds, strict=True),
            zip(expr.operands[1:], kinds[1:], strict=True),
            strict=False,
        ):
            _comparable(a, ka, b, kb)
        return "bool"
    if isinstance(expr, InList):
        kind = infer(expr.operand, columns)
        for value in expr.values:
            _comparable(
                expr.operand, kind, Literal(value=value), infer(Literal(value=value), columns)
            )
        return "bool"
    if isinstance(expr, BoolOp | Not):
        word = expr.op if isinstance(expr, BoolOp) else "not"
        for child in expr.children():
            kind = infer(child, columns)
            if kind not in ("bool", "other", None):
                raise TypeProblem(
                    f"{word!r} needs conditions, not {_what(child, kind)} "
                    f"(compare it: {child.render()} > 0, or is_null({child.render()}))"
                )
        return "bool"
    if isinstance(expr, Call):
        kinds = [infer(a, columns) for a in expr.args]
        needs = _FIRST_ARGUMENT.get(expr.name)
        if needs is not None and kinds and kinds[0] is not None and kinds[0] not in needs[0]:
            raise TypeProblem(
                f"{expr.name}() needs {needs[1]}, not {_what(expr.args[0], kinds[0])}"
            )
        if expr.name == "between":
            for bound, kind in zip(expr.args[1:], kinds[1:], strict=True):
                _comparable(expr.args[0], kinds[0], bound, kind)
        if expr.name in _BOOL_FUNCS:
            return "bool"
        if expr.name in _NUMERIC_FUNCS:
            return "number"
        if expr.name in ("lower", "upper"):
            return "string"
        if expr.name == "date":
            return "date"
        if expr.name == "cast" and len(expr.args) > 1 and isinstance(expr.args[1], Literal):
            target = str(expr.args[1].value)
            sources = _CAST_SOURCES.get(target, ())
            if kinds[0] not in (*sources, "other", None):
                raise TypeProblem(f"cannot cast {_what(expr.args[0], kinds[0])} to {target!r}")
            return _CASTS.get(target)
        if expr.name == "if_else":
            condition = kinds[0]
            if condition not in ("bool", "other", None):
                raise TypeProblem(
                    f"if_else() needs a condition first, not {_what(expr.args[0], condition)}"
                )
            return _same_kind(expr, list(expr.args[1:]), kinds[1:])
        if expr.name == "coalesce":
            return _same_kind(expr, list(expr.args), kinds)
    return None


def _same_kind(expr: Call, args: list[Expr], kinds: list[Kind]) -> Kind:
    """The one kind of values that ``expr`` mixes row by row; raises when they differ."""
    known = [(a, k) for a, k in zip(args, kinds, strict=True) if k not in (None, "other")]
    if not known:
        return None
    first, kind = known[0]
    for arg, other in known[1:]:
        if other != kind:
            raise TypeProblem(
                f"{expr.name}() mixes {_what(first, kind)} with {_what(arg, other)}: "
                f"give it values of one type (cast() converts)"
            )
    return kind


def _arithmetic(expr: BinOp, left: Kind, right: Kind) -> Kind:
    """The kind of ``left op right``, given the kinds of both sides."""
    if expr.op == "+" and "string" in (left, right):
        return _concatenation(expr, left, right)
    for side, kind in ((expr.left, left), (expr.right, right)):
        if kind in ("string", "bool"):
            raise TypeProblem(f"cannot apply {expr.op!r} to {_what(side, kind)}")
    for side, kind in ((expr.left, left), (expr.right, right)):
        if kind in ("date", "timestamp"):
            raise TypeProblem(
                f"cannot apply {expr.op!r} to {_what(side, kind)}: dates and timestamps take "
                "no arithmetic (compare them, or take parts with year(), month(), day())"
            )
    return "number"


def _concatenation(expr: BinOp, left: Kind, right: Kind) -> Kind:
    """``text + text`` joins the two; text and anything else is refused, with the cast."""
    for side, kind in ((expr.left, left), (expr.right, right)):
        if kind not in ("string", "other", None):
            raise TypeProblem(
                f"cannot add {_what(side, kind)} to text: "
                f"write cast({side.render()}, 'str') to join it as text"
            )
    return "string"


def check_aggregate(func: str, arg: Expr | None, columns: dict[str, Kind]) -> None:
    """Raise TypeProblem for an aggregate that cannot apply to its argument's kind."""
    if arg is None:
        return
    kind = infer(arg, columns)
    if func in ("sum", "mean", "var", "std") and kind in ("string", "bool", "date", "timestamp"):
        raise TypeProblem(f"{func}() needs numbers, not {_what(arg, kind)}")


def _comparable(a: Expr, ka: Kind, b: Expr, kb: Kind) -> None:
    if ka is None or kb is None or ka == kb or "other" in (ka, kb):
        return
    temporal = {"date", "timestamp"}
    if (ka in temporal and kb in temporal | {"string"}) or (kb in temporal and ka == "string"):
        return  # a string literal is read as a date or timestamp
    raise TypeProblem(f"cannot compare {_what(a, ka)} with {_what(b, kb)}")


def _what(expr: Expr, kind: Kind) -> str:
    if isinstance(expr, Column):
        return f"{kind} column {expr.name!r}"
    if isinstance(expr, Literal):
        return f"{kind} {expr.render()}"
    return f"a {kind} ({expr.render()})"
