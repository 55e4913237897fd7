"""Execute a plan on a Dask scheduler, freeze the outputs, and record the run.

The names below load their modules on first use: a run answered as a repeat of the last one
(:mod:`chanbatch.run.repeat`) never loads the planner.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["RunResult", "plan_blueprint", "run_blueprint"]

_LAZY = {
    "RunResult": "chanbatch.run.results",
    "plan_blueprint": "chanbatch.run.planned",
    "run_blueprint": "chanbatch.run.runner",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'chanbatch.run' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
