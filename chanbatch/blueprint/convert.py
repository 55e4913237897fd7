"""Walk Python's syntax tree of an expression with an allowlist, building our own tree.

Only :mod:`chanbatch.blueprint.expr` calls this; it parses the text with ``ast`` first. Every
construct outside the language is refused here with an :class:`ExprError` that names the
offending token and its position, and says what to write instead where there is an answer.
"""

from __future__ import annotations

import ast
import math

from chanbatch.blueprint.functions import AGGREGATES, CAST_TYPES, FUNCTIONS
from chanbatch.blueprint.nodes import (
    MAX_INT_BITS,
    ArithOp,
    BinOp,
    BoolOp,
    Call,
    Column,
    Compare,
    CompareOp,
    Expr,
    InList,
    Literal,
    LogicOp,
    Negate,
    Not,
    Scalar,
    constant,
)
from chanbatch.blueprint.problems import ExprError
from chanbatch.errors import did_you_mean

_ARITH: dict[type, ArithOp] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
}
_REFUSED_OPERATORS = {
    ast.BitAnd: ("&", "use 'and'"),
    ast.BitOr: ("|", "use 'or'"),
    ast.BitXor: ("^", "use '**' for powers"),
    ast.LShift: ("<<", None),
    ast.RShift: (">>", None),
    ast.MatMult: ("@", None),
}
_COMPARE: dict[type, CompareOp] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
}
_NAMED_LITERALS: dict[str, Scalar] = {
    "null": None,
    "None": None,
    "true": True,
    "True": True,
    "false": False,
    "False": False,
}
# Constructs that parse as Python but are not part of the language, with how to say them.
_REFUSED_NODES: dict[type, tuple[str, str | None]] = {
    ast.ListComp: ("comprehension", None),
    ast.SetComp: ("comprehension", None),
    ast.DictComp: ("comprehension", None),
    ast.GeneratorExp: ("generator expression", None),
    ast.JoinedStr: ("f-string", None),
    ast.FormattedValue: ("f-string", None),
    ast.NamedExpr: ("assignment expression", None),
    ast.IfExp: ("conditional expression", "use if_else(condition, then, otherwise)"),
    ast.Dict: ("dict literal", None),
    ast.Set: ("set literal", None),
    ast.List: ("list literal", "a list may only follow 'in' or 'not in'"),
    ast.Tuple: ("tuple", "a list may only follow 'in' or 'not in'"),
    ast.Starred: ("starred expression", None),
    ast.Slice: ("slice", None),
}
#: How deeply an expression may nest: calls in calls, operands in parentheses, ``not not x``.
#: A chain of arithmetic that Python nests on the left (``a + b - c + ...``, which is
#: ``((a + b) - c) + ...``) is one level however long, so a flat sum of thousands of terms
#: passes while hostile nesting is refused long before any recursion limit.
MAX_NESTING = 100

# Refused keywords are named by the keyword alone: "'lambda' is not allowed".
_REFUSED_KEYWORDS: dict[type, str] = {
    ast.Lambda: "lambda",
    ast.Yield: "yield",
    ast.YieldFrom: "yield from",
    ast.Await: "await",
}


class Converter:
    """Builds our tree from Python's, refusing everything outside the language."""

    def __init__(self, text: str, *, inside_aggregate: bool = False, strict: bool = False) -> None:
        self.text = text
        self.inside_aggregate = inside_aggregate
        self.strict = strict
        self.source = text.replace("\r", " ").replace("\n", " ")
        self.encoded = self.source.encode("utf-8")
        self.depth = 0

    def convert(self, node: ast.expr) -> Expr:
        try:
            return self._convert(node)
        except RecursionError:
            raise self._too_deep(node) from None

    def _too_deep(self, node: ast.AST) -> ExprError:
        return ExprError(
            f"expression is nested too deeply (more than {MAX_NESTING} levels)",
            token="",
            position=self.position(getattr(node, "col_offset", 0)),
            text=self.text,
            hint="split it over several derive columns",
        )

    # -- locating tokens ------------------------------------------------------------------

    def position(self, offset: int) -> int:
        """1-based character position of a UTF-8 byte offset, as ``ast`` reports them."""
        return len(self.encoded[:offset].decode("utf-8", errors="ignore")) + 1

    def segment(self, node: ast.AST, limit: int = 40) -> str:
        text = ast.get_source_segment(self.source, node) or type(node).__name__
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def error(
        self, node: ast.AST, reason: str, *, token: str | None = None, hint: str | None = None
    ) -> ExprError:
        offset = getattr(node, "col_offset", 0)
        return ExprError(
            reason,
            token=token if token is not None else self.segment(node),
            position=self.position(offset),
            text=self.text,
            hint=hint,
        )

    def refuse(self, node: ast.AST, what: str, hint: str | None = None) -> ExprError:
        token = self.segment(node)
        return self.error(node, f"{what} {token!r} is not allowed", token=token, hint=hint)

    def keyword_error(self, keyword: ast.keyword) -> ExprError:
        token = f"**{self.segment(keyword.value)}" if keyword.arg is None else f"{keyword.arg}="
        if keyword.arg is None:
            return self.error(keyword, f"argument {token!r} is not allowed", token=token)
        return self.error(
            keyword,
            f"keyword argument {token!r} is not allowed",
            token=token,
            hint="pass arguments by position",
        )

    # -- the walk -------------------------------------------------------------------------

    def _convert(self, node: ast.expr) -> Expr:
        self.depth += 1
        try:
            if self.depth > MAX_NESTING:
                raise self._too_deep(node)
            return self._convert_node(node)
        finally:
            self.depth -= 1

    def _convert_node(self, node: ast.expr) -> Expr:
        if isinstance(node, ast.Constant):
            return Literal(value=self._constant(node))
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.UnaryOp):
            return self._unary(node)
        if isinstance(node, ast.BinOp):
            return self._binop(node)
        if isinstance(node, ast.BoolOp):
            op: LogicOp = "and" if isinstance(node.op, ast.And) else "or"
            return BoolOp(op=op, operands=tuple(self._convert(v) for v in node.values))
        if isinstance(node, ast.Compare):
            return self._compare(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.Attribute):
            token = f".{node.attr}"
            # Point at the dot, not at the start of whatever the attribute hangs off.
            dot = (node.end_col_offset or 0) - len(node.attr.encode("utf-8")) - 1
            raise ExprError(
                f"attribute access {token!r} is not allowed",
                token=token,
                position=self.position(max(dot, node.col_offset)),
                text=self.text,
            )
        if isinstance(node, ast.Subscript):
            raise self.refuse(node, "subscript")
        if type(node) in _REFUSED_KEYWORDS:
            word = _REFUSED_KEYWORDS[type(node)]
            raise self.error(node, f"{word!r} is not allowed", token=word)
        what, hint = _REFUSED_NODES.get(type(node), (type(node).__name__, None))
        raise self.refuse(node, what, hint)

    def _constant(self, node: ast.Constant) -> Scalar:
        value = node.value
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            # `0xfff...` of any length parses; it could never be printed into a cache key.
            raise self.error(node, f"number {self.segment(node)!r} is too large")
        if value is None or isinstance(value, bool | int | str):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise self.error(node, f"number {self.segment(node)!r} is too large")
            return value
        what = {bytes: "bytes literal", complex: "complex number"}.get(type(value), "literal")
        if value is Ellipsis:
            what = "ellipsis"
        raise self.refuse(node, what)

    def _name(self, node: ast.Name) -> Expr:
        if node.id in _NAMED_LITERALS:
            return Literal(value=_NAMED_LITERALS[node.id])
        if node.id.startswith("__"):
            raise self.error(
                node,
                f"name {node.id!r} is not allowed",
                token=node.id,
                hint="names starting with '__' are reserved",
            )
        return Column(name=node.id)

    def _unary(self, node: ast.UnaryOp) -> Expr:
        if isinstance(node.op, ast.Not):
            return Not(operand=self._convert(node.operand))
        if isinstance(node.op, ast.Invert):
            raise self.error(node, "operator '~' is not allowed", token="~", hint="use 'not'")
        operand = self._convert(node.operand)
        if isinstance(node.op, ast.UAdd):
            return operand
        return Negate(operand=operand)

    def _binop(self, node: ast.BinOp) -> Expr:
        # The chain of operators down the left (``a + b + c`` is ((a + b) + c)), walked in a
        # loop: it is as long as the expression. Operators are checked top down and operands
        # converted left to right, so the error reported is the one a recursive walk would find.
        chain = [node]
        while isinstance(chain[-1].left, ast.BinOp):
            chain.append(chain[-1].left)
        for link in chain:
            op_type = type(link.op)
            if op_type in _REFUSED_OPERATORS:
                symbol, hint = _REFUSED_OPERATORS[op_type]
                raise self._operator_error(
                    link, symbol, f"operator {symbol!r} is not allowed", hint
                )
        left = self._convert(chain[-1].left)
        for link in reversed(chain):
            op = _ARITH[type(link.op)]
            right = self._convert(link.right)
            if self.strict and op != "+" and any(_is_text(side) for side in (left, right)):
                # `'%s' % x` would be Python's string formatting and `'a' * 10**9` a gigabyte
                # string: neither is part of the language, and both would run on every row.
                # Validation refuses them (strict); the untyped language leaves other type
                # errors to plan time.
                raise self._operator_error(
                    link,
                    op,
                    f"operator {op!r} on text is not allowed",
                    "'+' joins text; there is no text formatting or repetition",
                )
            left = BinOp(op=op, left=left, right=right)
        return left

    def _operator_error(
        self, node: ast.BinOp, symbol: str, reason: str, hint: str | None
    ) -> ExprError:
        between = self.encoded[node.left.end_col_offset : node.right.col_offset]
        offset = (node.left.end_col_offset or 0) + max(between.find(symbol.encode()), 0)
        return ExprError(
            reason, token=symbol, position=self.position(offset), text=self.text, hint=hint
        )

    def _compare(self, node: ast.Compare) -> Expr:
        for op in node.ops:
            if isinstance(op, ast.Is | ast.IsNot):
                word = "is not" if isinstance(op, ast.IsNot) else "is"
                raise self.error(
                    node,
                    f"{word!r} is not allowed",
                    token=word,
                    hint="use is_null(x) or not_null(x)",
                )
        if any(isinstance(op, ast.In | ast.NotIn) for op in node.ops):
            if len(node.ops) > 1:
                raise self.error(
                    node,
                    "'in' cannot be chained with other comparisons",
                    token="in",
                    hint="use 'and' between them",
                )
            return InList(
                operand=self._convert(node.left),
                values=self._in_values(node.comparators[0]),
                negated=isinstance(node.ops[0], ast.NotIn),
            )
        operands = (node.left, *node.comparators)
        return Compare(
            operands=tuple(self._convert(o) for o in operands),
            ops=tuple(_COMPARE[type(op)] for op in node.ops),
        )

    def _in_values(self, node: ast.expr) -> tuple[Scalar, ...]:
        if not isinstance(node, ast.List | ast.Tuple):
            raise self.error(
                node,
                f"'in' needs a list of literals such as ['a', 'b'], got {self.segment(node)!r}",
                hint="compare columns with '==' and 'or'",
            )
        values = []
        for element in node.elts:
            literal = constant(self._convert(element))
            if literal is None:
                raise self.error(
                    element,
                    f"an 'in' list may hold only literals, got {self.segment(element)!r}",
                )
            values.append(literal.value)
        return tuple(values)

    def _call(self, node: ast.Call) -> Expr:
        if not isinstance(node.func, ast.Name):
            # Reject what is being called (an attribute, a call result, ...) by its own rule.
            self._convert(node.func)
            raise self.refuse(node.func, "calling")
        name = node.func.id
        if name.startswith("__"):
            self._name(node.func)
        if name not in FUNCTIONS:
            allowed = ", ".join(sorted(FUNCTIONS))
            if name in AGGREGATES and self.inside_aggregate:
                raise self.error(node.func, f"aggregate {name!r} cannot be nested", token=name)
            if name in AGGREGATES:
                raise self.error(
                    node.func,
                    f"aggregate {name!r} is not allowed here",
                    token=name,
                    hint="aggregates belong under 'aggregate'",
                )
            close = did_you_mean(name, FUNCTIONS)
            if close:
                raise self.error(node.func, f"unknown function {name!r}", token=name, hint=close)
            raise self.error(
                node.func,
                f"function {name!r} is not allowed",
                token=name,
                hint=f"allowed: {allowed}",
            )
        if node.keywords:
            raise self.keyword_error(node.keywords[0])
        signature = FUNCTIONS[name]
        if not signature.accepts(len(node.args)):
            raise self.error(
                node,
                f"function {name!r} takes {signature.arity()}, got {len(node.args)}",
                token=name,
                hint=f"usage: {signature.usage}",
            )
        args = tuple(self._convert(arg) for arg in node.args)
        for index, kind in signature.literals:
            if index < len(args):
                self._check_literal(node.args[index], args[index], kind, name)
        return Call(name=name, args=args)

    def _check_literal(self, node: ast.expr, arg: Expr, kind: str, function: str) -> None:
        literal = constant(arg)
        value = literal.value if literal is not None else None
        if kind == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
            raise self.error(
                node, f"{function}() needs a whole number here, got {self.segment(node)!r}"
            )
        if kind in ("str", "cast_type") and not isinstance(value, str):
            raise self.error(
                node, f"{function}() needs a quoted string here, got {self.segment(node)!r}"
            )
        if kind == "cast_type" and value not in CAST_TYPES:
            raise self.error(
                node,
                f"cannot cast to {value!r}",
                token=str(value),
                hint=did_you_mean(str(value), CAST_TYPES) or f"types: {', '.join(CAST_TYPES)}",
            )


def _is_text(expr: Expr) -> bool:
    """True if ``expr`` is text whatever the columns hold: a text literal, or a call that returns
    one (column types are known only at plan time, where the rest is checked)."""
    literal = constant(expr)
    if literal is not None:
        return isinstance(literal.value, str)
    if not isinstance(expr, Call):
        return False
    if expr.name in ("lower", "upper"):
        return True
    if expr.name == "cast":
        return constant(expr.args[1]) == Literal(value="str")
    if expr.name == "if_else":
        return any(_is_text(arg) for arg in expr.args[1:])
    if expr.name == "coalesce":
        return any(_is_text(arg) for arg in expr.args)
    return False
