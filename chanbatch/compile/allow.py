"""The ``map`` allowlist: a blueprint from elsewhere cannot run code just by naming it."""

from __future__ import annotations

from chanbatch.blueprint.model import Map
from chanbatch.errors import UsageError


def check_allowed(op: Map, allow: frozenset[str]) -> None:
    """Raise UsageError unless ``op``'s module is on the allowlist (before anything runs)."""
    module_name = op.function.partition(":")[0]
    if not _allowed(module_name, allow):
        raise UsageError(
            f"map function {op.function!r} is not allowed: module {module_name!r} is not on "
            "the allowlist",
            hint=f"run with --allow-module {module_name} if you trust it",
        )


def _allowed(module: str, allow: frozenset[str]) -> bool:
    parts = module.split(".")
    return any(".".join(parts[:i]) in allow for i in range(1, len(parts) + 1))
