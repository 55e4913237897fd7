"""Slice keys computed from each row: ``--slice-by "date(time_hour)"`` or
``slice_by="year_month(l_shipdate)"``, an expression of the blueprint language.

The snapshot layer cuts rows by a :class:`~chanbatch.snapshot.freeze.KeyFunction`; this is the
one that evaluates an expression, with the pandas evaluator (the same values a ``derive`` of it
would give), over only the columns it reads, one input batch at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from chanbatch.blueprint.expr import ExprError, parse_expr
from chanbatch.blueprint.nodes import Column, Expr
from chanbatch.engine.pandas_eval import evaluate
from chanbatch.errors import UsageError
from chanbatch.snapshot.read import to_pandas


@dataclass(frozen=True, slots=True)
class ExpressionKey:
    """The slice key of each row: the value of ``expr`` (written ``text``)."""

    text: str
    expr: Expr
    columns: tuple[str, ...]

    def __call__(self, batch: pa.RecordBatch) -> pa.Array:
        import pandas as pd

        frame = to_pandas(pa.Table.from_batches([batch]))
        values = evaluate(self.expr, frame)
        if not isinstance(values, pd.Series):  # a constant: every row in one slice
            values = pd.Series([values] * batch.num_rows)
        return pa.array(values, from_pandas=True)


def slice_key(text: str) -> ExpressionKey | None:
    """The key function of ``slice_by`` when it is an expression; None when it names a column
    (a bare name, or text that is no expression, such as a column name with a space).

    Raises UsageError for an expression the language refuses, such as ``date(x`` ."""
    try:
        expr = parse_expr(text, strict=True)
    except ExprError as exc:
        if not any(c in text for c in "()+-*/%"):
            return None  # a column name the language cannot spell, as before expressions
        raise UsageError(f"cannot slice by {text!r}: {exc.message}", hint=exc.hint) from None
    if isinstance(expr, Column):
        return None
    return ExpressionKey(text=text, expr=expr, columns=tuple(sorted(expr.columns())))
