"""A stage that fails on a worker: the one error every engine path turns a failure into.

Apart from the kernels, so that the task functions can name it without importing pandas.
"""

from __future__ import annotations

from typing import Any

from chanbatch.blueprint.model import Stage
from chanbatch.errors import ChanbatchError


class StageFailed(ChanbatchError):
    """A stage raised while running on a slice. Exit code 1."""

    exit_code = 1


def describe_failure(stage: Stage, where: Any, exc: BaseException) -> StageFailed:
    """``exc``, raised by ``stage`` on slice ``where`` (None: its whole input), as the one line
    a user reads."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    at = f" on slice {where}" if where is not None else ""
    return StageFailed(f"stage {stage.name!r} failed{at}: {type(exc).__name__}: {detail}")
