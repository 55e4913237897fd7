"""The engine: what runs on workers.

Every kernel (Arrow first, pandas where a stage needs it), the evaluators of the expression
language, and the task functions a Dask graph calls, with the per-process state they keep
(:mod:`chanbatch.engine.graph`). It sits between :mod:`chanbatch.run`, which drives a graph, and
:mod:`chanbatch.compile`, which plans it without touching data. See docs/concepts.md,
"Architecture".

- :func:`evaluate`: expression tree + pandas DataFrame -> Series, raising ExprEvalError.
- :func:`evaluate_mask`: the rows where a condition holds, null counting as false.

Importing this package imports neither pandas nor dask; the modules that need them do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from chanbatch.blueprint.nodes import Expr

__all__ = ["evaluate", "evaluate_mask"]


def evaluate(expr: Expr, frame: pd.DataFrame, *, strict: bool = False) -> Any:
    """The value of ``expr`` on every row of ``frame``.

    Raises ExprEvalError for a missing column, mismatched types, a failed cast, or (with
    ``strict``) a division by zero.
    """
    from chanbatch.engine.pandas_eval import evaluate as _evaluate

    return _evaluate(expr, frame, strict=strict)


def evaluate_mask(expr: Expr, frame: pd.DataFrame, *, strict: bool = False) -> Any:
    """A bool Series of the rows where ``expr`` is true, null counting as false.

    Raises ExprEvalError as :func:`evaluate` does, and when ``expr`` is not a condition.
    """
    from chanbatch.engine.pandas_eval import evaluate_mask as _evaluate_mask

    return _evaluate_mask(expr, frame, strict=strict)
