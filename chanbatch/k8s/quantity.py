"""Kubernetes resource quantities (``"1"``, ``"1500m"``, ``"4Gi"``), parsed and formatted.

The grammar is apimachinery's ``resource.Quantity``: a signed decimal number, then a binary
suffix (Ki ... Ei), a decimal suffix (n, u, m, k, M, G, T, P, E) or an exponent (``1e3``). It is
parsed here rather than with the Kubernetes client's ``parse_quantity``, whose import pulls in
the whole client (half a second for ``chanbatch k8s render``); the tests check the two agree.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))"
    r"(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)|[eE](?P<exponent>[+-]?\d+))?$"
)
_SUFFIXES = {
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": Decimal("1e3"),
    "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"), "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}


def _parse(value: object) -> Decimal:
    match = _QUANTITY.match(str(value).strip()) if isinstance(value, str | int | float) else None
    if match is None:
        raise ValueError(value)
    number = Decimal(match["number"])
    if match["suffix"]:
        return number * _SUFFIXES[match["suffix"]]
    if match["exponent"]:
        return number.scaleb(int(match["exponent"]))
    return number

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
