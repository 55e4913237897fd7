"""The result types of decimal arithmetic, as DuckDB types them, in one place for both paths.

Arrow refuses a ``+ - *`` whose exact result type would need more than 38 digits; SQL engines
narrow the operands instead and type the result decimal(38, s). The pandas path
(:func:`chanbatch.engine.pandas_values.decimal_arith`) and the Arrow path
(:mod:`chanbatch.engine.arrow_eval`) both cast by this rule, so their results agree to the bit.
Only pyarrow types here: the Arrow path imports no pandas module.
"""

from __future__ import annotations

import pyarrow as pa

MAX_DIGITS = 38  # a decimal128's


def decimal_narrowing(
    op: str, left: pa.Decimal128Type, right: pa.Decimal128Type
) -> tuple[pa.Decimal128Type, pa.Decimal128Type, pa.Decimal128Type] | None:
    """For ``left op right`` (``+ - *``) on decimals of these types: the types both operands
    are cast to first and the type of the result, when the exact result would need more than
    38 digits; None when it fits as it is. An int counts as decimal(19, 0).

    Raises ValueError where no decimal type holds a narrowed operand.
    """
    (p1, s1), (p2, s2) = (left.precision, left.scale), (right.precision, right.scale)
    if op == "*":
        scale = s1 + s2
        if p1 + p2 + 1 <= MAX_DIGITS:
            return None
        # p1' + p2' + 1 <= 38: the wider operand gives up digits first
        q2 = min(p2, max(s2 + 1, 37 - p1)) if p2 <= p1 else p2
        q1 = min(p1, 37 - q2)
        q2 = min(q2, 37 - q1)
        shapes = [(max(q1, s1), s1), (max(q2, s2), s2)]
    else:
        scale = max(s1, s2)
        if max(p1 - s1, p2 - s2) + scale + 1 <= MAX_DIGITS:
            return None
        whole = 37 - scale  # integer digits each operand may keep
        shapes = [(min(p1, whole + s1), s1), (min(p2, whole + s2), s2)]
    first, second = (pa.decimal128(p, s) for p, s in shapes)
    return first, second, pa.decimal128(MAX_DIGITS, scale)
