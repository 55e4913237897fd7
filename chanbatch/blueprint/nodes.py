"""The expression tree: small, immutable, picklable, and rendered in one canonical spelling.

Trees come from :func:`chanbatch.blueprint.expr.parse_expr`; the evaluator walks them on
pandas. :meth:`Expr.render` is the canonical text that stage specs, and so cache keys, are built
from: one space around every operator, only the parentheses the grammar needs, literals spelled
one way (``null``, ``true``, ``'text'``). Parsing a rendering gives back a tree that renders the
same, so two spellings of one expression share a key.
"""

from __future__ import annotations

import keyword
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal as TypingLiteral

Scalar = int | float | str | bool | None
ArithOp = TypingLiteral["+", "-", "*", "/", "//", "%", "**"]
CompareOp = TypingLiteral["==", "!=", "<", "<=", ">", ">="]
LogicOp = TypingLiteral["and", "or"]

#: Names that spell literals, so they cannot name a column.
RESERVED_NAMES = frozenset({"null", "None", "true", "True", "false", "False"})

ARITH_OPS: tuple[str, ...] = ("+", "-", "*", "/", "//", "%", "**")
COMPARE_OPS: tuple[str, ...] = ("==", "!=", "<", "<=", ">", ">=")

# Binding strength as in Python's grammar, so render() adds exactly the parentheses that keep
# the tree's meaning when the text is parsed again.
_OR, _AND, _NOT, _CMP, _ADD, _MUL, _NEG, _POW, _ATOM = 1, 2, 3, 4, 6, 7, 8, 9, 10
_ARITH_PRECEDENCE = {"+": _ADD, "-": _ADD, "*": _MUL, "/": _MUL, "//": _MUL, "%": _MUL, "**": _POW}


class Expr:
    """Base of every expression node."""

    __slots__ = ()

    def children(self) -> tuple[Expr, ...]:
        """The direct sub-expressions, left to right."""
        return ()

    def walk(self) -> Iterator[Expr]:
        """This node and every node below it, depth first."""
        stack: list[Expr] = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children()))

    def columns(self) -> frozenset[str]:
        """The names of every column the expression reads."""
        return frozenset(node.name for node in self.walk() if isinstance(node, Column))

    def render(self) -> str:
        """The canonical text of the expression; parsing it gives an equal rendering."""
        return _render(self)

    def __str__(self) -> str:
        return self.render()


@dataclass(frozen=True, slots=True, kw_only=True)
class Column(Expr):
    """A reference to a column of the input frame, by a plain identifier."""

    name: str

    def __post_init__(self) -> None:
        if not is_column_name(self.name):
            raise ValueError(f"not a column name an expression can spell: {self.name!r}")


#: Largest integer a blueprint may hold, in bits (about 4,200 digits). Python refuses to print an
#: integer of more than 4,300 digits, and canonical JSON prints every number; ``0x`` and ``0o``
#: forms of any length are read without that check, so the parsers make it.
MAX_INT_BITS = 14_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Literal(Expr):
    """A constant: int, finite float, str, bool, or null (``None``)."""

    value: Scalar

    def __post_init__(self) -> None:
        if isinstance(self.value, float) and not math.isfinite(self.value):
            raise ValueError(f"a literal must be finite, got {self.value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Negate(Expr):
    """Unary minus. The parser keeps ``-3`` as Negate(Literal(3)), mirroring the text, so that
    every tree it builds renders back to text that parses to the same tree."""

    operand: Expr

    def children(self) -> tuple[Expr, ...]:
        return (self.operand,)


@dataclass(frozen=True, slots=True, kw_only=True)
class BinOp(Expr):
    """Arithmetic: ``left op right``.

    ``a + b + c`` is ((a + b) + c), so a long sum is a deep chain down ``left``. Equality,
    hashing, rendering and pickling walk that chain in a loop rather than by recursion, so a
    sum of thousands of terms works like a short one.
    """

    op: ArithOp
    left: Expr
    right: Expr

    def children(self) -> tuple[Expr, ...]:
        return (self.left, self.right)

    def chain(self) -> tuple[Expr, list[BinOp]]:
        """The first operand down the left, and the links from the bottom up to this one."""
        links: list[BinOp] = []
        node: Expr = self
        while isinstance(node, BinOp):
            links.append(node)
            node = node.left
        links.reverse()
        return node, links

    def __eq__(self, other: object) -> bool:
        if type(other) is not BinOp:
            return NotImplemented
        a: Expr = self
        b: Expr = other
        while isinstance(a, BinOp) and isinstance(b, BinOp):
            if a.op != b.op or a.right != b.right:
                return False
            a, b = a.left, b.left
        return type(a) is type(b) and a == b

    def __hash__(self) -> int:
        first, links = self.chain()
        value = hash(first)
        for link in links:
            value = hash((value, link.op, link.right))
        return value

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        # pickle (to process workers) and deepcopy recurse once per level; send the chain flat
        first, links = self.chain()
        return _build_chain, (first, tuple((link.op, link.right) for link in links))


def _build_chain(first: Expr, links: tuple[tuple[ArithOp, Expr], ...]) -> Expr:
    """The inverse of :meth:`BinOp.__reduce__`."""
    node = first
    for op, right in links:
        node = BinOp(op=op, left=node, right=right)
    return node


@dataclass(frozen=True, slots=True, kw_only=True)
class Compare(Expr):
    """A comparison, possibly chained: ``0 < x <= 5`` is operands (0, x, 5), ops (<, <=)."""

    operands: tuple[Expr, ...]
    ops: tuple[CompareOp, ...]

    def __post_init__(self) -> None:
        if not self.ops or len(self.operands) != len(self.ops) + 1:
            raise ValueError("a comparison needs one more operand than operators")

    def children(self) -> tuple[Expr, ...]:
        return self.operands


@dataclass(frozen=True, slots=True, kw_only=True)
class InList(Expr):
    """``operand in [v, ...]`` or, when ``negated``, ``operand not in [...]``."""

    operand: Expr
    values: tuple[Scalar, ...]
    negated: bool = False

    def children(self) -> tuple[Expr, ...]:
        return (self.operand,)


@dataclass(frozen=True, slots=True, kw_only=True)
class BoolOp(Expr):
    """``and`` / ``or`` over two or more operands; nested runs of the same operator flatten."""

    op: LogicOp
    operands: tuple[Expr, ...]

    def __post_init__(self) -> None:
        if len(self.operands) < 2:
            raise ValueError(f"'{self.op}' needs at least two operands")
        # `(a and b) and c` means `a and b and c`; flattening here gives both one rendering,
        # hence one cache key.
        flat: list[Expr] = []
        for operand in self.operands:
            if isinstance(operand, BoolOp) and operand.op == self.op:
                flat.extend(operand.operands)
            else:
                flat.append(operand)
        object.__setattr__(self, "operands", tuple(flat))

    def children(self) -> tuple[Expr, ...]:
        return self.operands


@dataclass(frozen=True, slots=True, kw_only=True)
class Not(Expr):
    """Logical negation."""

    operand: Expr

    def children(self) -> tuple[Expr, ...]:
        return (self.operand,)


@dataclass(frozen=True, slots=True, kw_only=True)
class Call(Expr):
    """A call to one of the allowlisted functions in :mod:`chanbatch.blueprint.functions`."""

    name: str
    args: tuple[Expr, ...]

    def children(self) -> tuple[Expr, ...]:
        return self.args


@dataclass(frozen=True, slots=True, kw_only=True)
class AggCall:
    """One aggregate of a stage: ``func`` over ``arg``, or over rows when ``arg`` is None, and
    for a quantile the fraction ``q``."""

    func: str
    arg: Expr | None = None
    q: float | None = None  # the fraction of a quantile, such as 0.9

    def columns(self) -> frozenset[str]:
        """The columns the aggregate reads (none for ``count()``)."""
        return self.arg.columns() if self.arg is not None else frozenset()

    def render(self) -> str:
        """The canonical text, such as ``mean(dep_delay)`` or ``quantile(x, 0.9)``."""
        args = self.arg.render() if self.arg is not None else ""
        return f"{self.func}({args}{'' if self.q is None else f', {self.q!r}'})"

    def __str__(self) -> str:
        return self.render()


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowCall:
    """One function of a ``window`` stage: ``func`` over ``arg`` (None for ``count()`` and
    ``row_number()``), and for ``lag``/``lead`` how many rows back or ahead (``offset``)."""

    func: str
    arg: Expr | None = None
    offset: int | None = None

    def columns(self) -> frozenset[str]:
        """The columns the function reads."""
        return self.arg.columns() if self.arg is not None else frozenset()

    def render(self) -> str:
        """The canonical text, such as ``sum(flights)`` or ``lag(delay, 2)``."""
        args = self.arg.render() if self.arg is not None else ""
        return f"{self.func}({args}{'' if self.offset is None else f', {self.offset}'})"

    def __str__(self) -> str:
        return self.render()


def constant(expr: Expr) -> Literal | None:
    """The literal that ``expr`` spells, if any; ``-3`` parses as Negate(3) and counts as one."""
    if isinstance(expr, Literal):
        return expr
    if isinstance(expr, Negate) and isinstance(expr.operand, Literal):
        value = expr.operand.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return Literal(value=-value)
    return None


def is_column_name(name: str) -> bool:
    """True if ``name`` can be written as a column in an expression."""
    return (
        isinstance(name, str)
        and name.isidentifier()
        and not keyword.iskeyword(name)
        and not name.startswith("__")
        and name not in RESERVED_NAMES
    )


def render_scalar(value: Scalar) -> str:
    """The canonical spelling of a literal value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return repr(value)
    raise TypeError(f"not a literal value: {value!r}")


def _precedence(node: Expr) -> int:
    if isinstance(node, BoolOp):
        return _OR if node.op == "or" else _AND
    if isinstance(node, Not):
        return _NOT
    if isinstance(node, Compare | InList):
        return _CMP
    if isinstance(node, BinOp):
        return _ARITH_PRECEDENCE[node.op]
    if isinstance(node, Negate):
        return _NEG
    if isinstance(node, Literal):
        # A negative number reads as a unary minus: `(-2) ** 2` differs from `-2 ** 2`.
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            return _ATOM
        negative = value < 0 or (isinstance(value, float) and math.copysign(1.0, value) < 0)
        return _NEG if negative else _ATOM
    return _ATOM


def _wrap(node: Expr, parenthesise: bool) -> str:
    text = _render(node)
    return f"({text})" if parenthesise else text


def _render_chain(node: BinOp) -> str:
    """A chain of operators down the left, rendered in a loop from its first operand up.

    Wrapping the text so far in parentheses adds one at the very start and one at the end, so
    the opening ones are counted and written once, in front.
    """
    first, links = node.chain()
    parts: list[str] = []
    opened = 0
    below: Expr = first
    for link in links:
        own = _ARITH_PRECEDENCE[link.op]
        right_assoc = link.op == "**"
        left_prec = _precedence(below)
        wrap = left_prec < own or (right_assoc and left_prec == own)
        if below is first:
            parts.append(_wrap(first, wrap))
        elif wrap:
            opened += 1
            parts.append(")")
        right_prec = _precedence(link.right)
        right = _wrap(link.right, right_prec < own or (not right_assoc and right_prec == own))
        parts.append(f" {link.op} {right}")
        below = link
    return "(" * opened + "".join(parts)


def _render(node: Expr) -> str:
    if isinstance(node, Column):
        return node.name
    if isinstance(node, Literal):
        return render_scalar(node.value)
    if isinstance(node, Negate):
        return "-" + _wrap(node.operand, _precedence(node.operand) < _NEG)
    if isinstance(node, BinOp):
        return _render_chain(node)
    if isinstance(node, Compare):
        # A comparison inside a comparison must keep its parentheses: `(a < b) == c` is not
        # the chain `a < b == c`.
        parts = [_wrap(node.operands[0], _precedence(node.operands[0]) <= _CMP)]
        for op, operand in zip(node.ops, node.operands[1:], strict=True):
            parts.append(f"{op} {_wrap(operand, _precedence(operand) <= _CMP)}")
        return " ".join(parts)
    if isinstance(node, InList):
        keyword = "not in" if node.negated else "in"
        values = ", ".join(render_scalar(value) for value in node.values)
        return f"{_wrap(node.operand, _precedence(node.operand) <= _CMP)} {keyword} [{values}]"
    if isinstance(node, BoolOp):
        own = _precedence(node)
        return f" {node.op} ".join(_wrap(o, _precedence(o) <= own) for o in node.operands)
    if isinstance(node, Not):
        return "not " + _wrap(node.operand, _precedence(node.operand) < _NOT)
    if isinstance(node, Call):
        return f"{node.name}({', '.join(_render(arg) for arg in node.args)})"
    raise TypeError(f"not an expression node: {node!r}")
