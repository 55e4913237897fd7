"""Parse the blueprint expression language into our own tree, never into anything runnable.

Python's ``ast`` does the tokenising and precedence; :mod:`chanbatch.blueprint.convert` then
walks the syntax tree with an allowlist and builds :mod:`chanbatch.blueprint.nodes`. Nothing is
ever passed to ``eval``, ``compile`` or ``pandas.eval``: a string that the walk does not
understand is rejected, and the error names the offending token and where it starts::

    >>> parse_expr("x.__class__")
    Traceback (most recent call last):
    ...
    chanbatch.blueprint.problems.ExprError: attribute access '.__class__' is not allowed at position 2

The language: column names (identifiers), int/float/str/bool literals and ``null``;
``+ - * / // % **`` and unary minus; comparisons, chained too (``0 < x <= 5``); ``and``,
``or``, ``not``; ``x in [...]`` and ``x not in [...]`` over literals; and calls to the functions
in :data:`chanbatch.blueprint.functions.FUNCTIONS`.
"""

from __future__ import annotations

import ast
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any, NoReturn, Protocol

from chanbatch.blueprint.convert import Converter
from chanbatch.blueprint.functions import (
    AGGREGATES,
    FUNCTIONS,
    WINDOW_FUNCTIONS,
    AggregateSpec,
    WindowSpec,
)
from chanbatch.blueprint.nodes import AggCall, Expr, WindowCall, constant
from chanbatch.blueprint.problems import ExprError, ExprEvalError
from chanbatch.errors import did_you_mean

__all__ = [
    "MAX_LENGTH",
    "ExprError",
    "ExprEvalError",
    "parse_aggregate",
    "parse_expr",
    "parse_window_call",
]

# Long enough for any hand-written expression, short enough that a pathological one cannot
# exhaust the parser's recursion or memory.
MAX_LENGTH = 10_000

# Python builds ``a + b + c`` as ((a + b) + c): a flat sum of thousands of terms is a tree
# thousands of levels deep, and ``ast`` refuses to build one deeper than the recursion limit.
# Parsing raises the limit by one level per arithmetic operator in the text (at most
# MAX_LENGTH), under a lock, since the limit is the whole interpreter's. Such chains are then
# walked without recursion, and only other nesting counts towards
# :data:`~chanbatch.blueprint.convert.MAX_NESTING`.
_ARITHMETIC = re.compile(r"[-+*/%]")
_LIMIT_LOCK = threading.Lock()


def parse_expr(text: str, *, strict: bool = False) -> Expr:
    """Parse one expression into a tree. With ``strict`` (as blueprint validation parses), also
    refuse operators other than ``+`` on values that are text whatever the columns hold, such as
    ``'%s' % x`` or ``lower(x) * 3``.

    Raises ExprError for text that does not parse or that uses anything outside the language.
    """
    return Converter(text, strict=strict).convert(_parse_python(text))


def parse_aggregate(text: str, *, strict: bool = False) -> AggCall:
    """Parse one aggregate such as ``count()``, ``mean(dep_delay)`` or ``sum(a * b)``; ``strict``
    as for :func:`parse_expr`.

    Raises ExprError for an unknown aggregate, a wrong number of arguments, or a bad argument.
    """
    name, args, converter = _parse_call(text, AGGREGATES, "aggregate", strict)
    arg = converter.convert(args[0]) if args else None
    if not AGGREGATES[name].fraction:
        return AggCall(func=name, arg=arg)
    given = constant(converter.convert(args[1]))
    value = given.value if given is not None else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise converter.error(
            args[1],
            f"the second argument of {name!r} must be a fraction between 0 and 1",
            hint=f"for example {AGGREGATES[name].usage}",
        )
    return AggCall(func=name, arg=arg, q=float(value))


def parse_window_call(text: str, *, strict: bool = False) -> WindowCall:
    """Parse one function of a ``window`` stage, such as ``sum(flights)``, ``lag(delay, 2)`` or
    ``row_number()``; ``strict`` as for :func:`parse_expr`.

    Raises ExprError for an unknown function, a wrong number of arguments, or a bad argument.
    """
    name, args, converter = _parse_call(text, WINDOW_FUNCTIONS, "window function", strict)
    arg = converter.convert(args[0]) if args else None
    if len(args) < 2:
        return WindowCall(func=name, arg=arg, offset=1 if name in ("lag", "lead") else None)
    given = constant(converter.convert(args[1]))
    value = given.value if given is not None else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise converter.error(
            args[1],
            f"the second argument of {name!r} must be a whole number of rows, 0 or more",
            hint=f"for example {WINDOW_FUNCTIONS[name].usage}",
        )
    return WindowCall(func=name, arg=arg, offset=value)


class _Registry(Protocol):
    def __contains__(self, name: object) -> bool: ...
    def __iter__(self) -> Iterator[str]: ...
    def __getitem__(self, name: str) -> AggregateSpec | WindowSpec: ...


def _parse_call(
    text: str, registry: _Registry, word: str, strict: bool
) -> tuple[str, list[ast.expr], Converter]:
    """The name and arguments of a call to one of ``registry``'s functions (a ``word`` such as
    "aggregate"), checked for shape and number of arguments."""
    if re.fullmatch(r"\s*count\s*\(\s*\*\s*\)\s*", text):
        # SQL habit; Python cannot even parse it, so say what to write instead.
        raise ExprError(
            "'count(*)' is not allowed",
            token="*",
            position=text.index("*") + 1,
            text=text,
            hint="count rows with count()",
        )
    body = _parse_python(text)
    converter = Converter(text, inside_aggregate=True, strict=strict)
    allowed = ", ".join(registry)
    if not isinstance(body, ast.Call) or not isinstance(body.func, ast.Name):
        raise converter.error(
            body,
            f"expected {_a(word)} such as mean(column), got {converter.segment(body)!r}",
            hint=f"{word}s: {allowed}",
        )
    name = body.func.id
    if name in FUNCTIONS:
        raise converter.error(
            body.func,
            f"{name!r} is a function, not {_a(word)}",
            token=name,
            hint=(
                "aggregate first, then apply functions in a later 'derive' stage"
                if word == "aggregate"
                else "compute the expression in a 'derive' stage before this one"
            ),
        )
    if name not in registry:
        close = did_you_mean(name, list(registry))
        raise converter.error(
            body.func, f"unknown {word} {name!r}", hint=close or f"{word}s: {allowed}"
        )
    if body.keywords:
        raise converter.keyword_error(body.keywords[0])
    if any(isinstance(arg, ast.Starred) for arg in body.args):
        hint = "count rows with count()" if name == "count" else None
        raise converter.error(body.args[0], "starred argument is not allowed", hint=hint)
    low, high = registry[name].min_args, registry[name].max_args
    if not low <= len(body.args) <= high:
        expected = (
            f"{low} or {high} arguments" if low != high else f"{low} argument{'s' * (low != 1)}"
        )
        raise converter.error(body, f"{word} {name!r} takes {expected}, got {len(body.args)}")
    return name, list(body.args), converter


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _parse_python(text: str) -> ast.expr:
    if not isinstance(text, str):
        raise TypeError(f"an expression is a string, got {type(text).__name__}")
    if not text.strip():
        raise ExprError("empty expression", token="", position=1, text=text)
    if len(text) > MAX_LENGTH:
        raise ExprError(
            f"expression is longer than {MAX_LENGTH} characters",
            token=text[:20],
            position=1,
            text=text,
        )
    if "\x00" in text:
        # Python's own message ("source code string cannot contain null bytes") points at the
        # end of the text; point at the character instead.
        return _refuse_at(text, text.index("\x00"), "NUL character is not allowed", "\x00")
    # YAML block scalars may spread an expression over lines; the language has no statements,
    # so a newline is just whitespace. Each is replaced one for one to keep positions right.
    source = text.replace("\r", " ").replace("\n", " ")
    indent = len(source) - len(source.lstrip())
    try:
        with warnings.catch_warnings():
            # Python warns about its own style (`1and x`, `'\d'`); none of it is the user's
            # concern here, and a warning filter set to "error" must not turn it into a crash.
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            tree = _parse_deep(source.lstrip())
    except SyntaxError as exc:
        long_number = re.search(r"\d[\d_]{4299,}", text)
        if long_number and "limit" in exc.msg:
            # Python refuses to read more than 4300 digits (and says to raise a limit of its own).
            _refuse_at(text, long_number.start(), "number {token!r} is too large")
        # Python reports offset 0 when the text ends too early.
        offset = exc.offset if exc.offset and exc.offset >= 1 else len(source) - indent + 1
        position = indent + min(offset, len(source) - indent + 1)
        token = _token_at(text, position - 1)
        near = f" near {token!r}" if token else " at the end"
        raise ExprError(
            f"cannot parse: {_python_message(exc.msg)}{near}",
            token=token,
            position=position,
            text=text,
        ) from None
    except ValueError as exc:
        raise ExprError(f"cannot parse: {exc}", token="", position=1, text=text) from None
    except (RecursionError, MemoryError):
        raise ExprError(
            "cannot parse: expression is nested too deeply", token="", position=1, text=text
        ) from None
    if indent:
        _shift(tree, indent)
    return tree.body


def _parse_deep(source: str) -> ast.Expression:
    """``ast.parse`` with room for a chain of one level per arithmetic operator."""
    extra = len(_ARITHMETIC.findall(source))
    if extra < 200:
        return ast.parse(source, mode="eval")
    with _LIMIT_LOCK:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(limit + extra + 100)
        try:
            return ast.parse(source, mode="eval")
        finally:
            sys.setrecursionlimit(limit)


def _refuse_at(text: str, index: int, reason: str, token: str | None = None) -> NoReturn:
    if token is None:
        token = text[index : index + 40] + ("..." if len(text) > index + 40 else "")
    raise ExprError(reason.format(token=token), token=token, position=index + 1, text=text)


def _python_message(message: str) -> str:
    # Python's hints ("Perhaps you forgot a comma?", "(detected at line 1)") talk about Python
    # code; keep only the first clause, which is about the text itself.
    message = re.sub(r"\s*\(detected at line \d+\)", "", message)
    return message.split(". ")[0].rstrip(".")


def _token_at(text: str, index: int) -> str:
    if index >= len(text):
        return ""
    match = re.compile(r"\w+|\S").match(text, index)
    return match.group(0) if match else text[index]


def _shift(tree: ast.AST, shift: int) -> None:
    """Move column offsets past the leading whitespace that was stripped before parsing
    (without recursion: the tree of a long sum is as deep as the sum is long)."""
    for node in ast.walk(tree):
        if hasattr(node, "col_offset"):
            node.col_offset += shift
            end = getattr(node, "end_col_offset", None)
            if end is not None:
                located: Any = node  # ast.AST declares no end_col_offset; this node has one
                located.end_col_offset = end + shift
