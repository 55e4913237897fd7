"""Kubernetes resource quantities (``"1"``, ``"1500m"``, ``"4Gi"``), parsed and formatted.

Parsing is the Kubernetes client's own ``parse_quantity``; this module adds the checks and the
canonical forms chanbatch renders (cpu as a whole number in a string, memory in binary units).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from kubernetes.utils.quantity import parse_quantity as _parse

BINARY_UNITS = (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))


def parse_quantity(value: object) -> Decimal:
    """A quantity as a Decimal (``"1500m"`` -> 1.5). Raises ValueError when it does not parse."""
    try:
        return _parse(value)
    except (ValueError, InvalidOperation, TypeError) as exc:
        raise ValueError(f"{value!r} is not a Kubernetes quantity") from exc


def format_memory(size: Decimal | int) -> str:
    """Bytes in the largest binary unit that divides them exactly: 4294967296 -> ``"4Gi"``."""
    size = int(size)
    for suffix, factor in BINARY_UNITS:
        if size and size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)


def format_cpu(cores: Decimal) -> str:
    """Cores as Kubernetes writes them: ``"2"`` for whole cores, ``"500m"`` otherwise."""
    if cores == cores.to_integral_value():
        return str(int(cores))
    return f"{int(cores * 1000)}m"
