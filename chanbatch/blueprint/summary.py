"""One line of text per stage saying what its operation does, in the blueprint's own terms,
for every picture of a blueprint (graph labels, the plan's and report's tables)."""

from __future__ import annotations

from typing import assert_never

from chanbatch.blueprint.model import (
    Aggregate,
    Derive,
    Filter,
    Join,
    Limit,
    Map,
    Rename,
    Select,
    Sort,
    Stage,
    Union,
    Window,
)


def operation_text(stage: Stage) -> str:
    """What ``stage``'s operation does, in the blueprint's own terms: the filter's expression,
    the derived columns, join keys and how, group keys and aggregates, sort keys, and so on."""
    op = stage.operation
    match op:
        case Filter():
            return op.expr.render()
        case Derive():
            return ", ".join(f"{name} = {expr.render()}" for name, expr in op.columns.items())
        case Select():
            return ", ".join(op.columns)
        case Rename():
            return ", ".join(f"{old} → {new}" for old, new in op.mapping.items())
        case Join():
            return f"{op.how} join {op.right} on {', '.join(op.on)}"
        case Aggregate():
            aggs = ", ".join(f"{name} = {agg.render()}" for name, agg in op.aggregates.items())
            return f"by {', '.join(op.group_by)}: {aggs}" if op.group_by else aggs
        case Sort():
            return ", ".join(f"{'' if k.ascending else '-'}{k.column}" for k in op.by)
        case Limit():
            return f"first {op.n:,}"
        case Union():
            return " + ".join((stage.from_, *op.others))
        case Map():
            return f"{op.function}@{op.version}"
        case Window():
            frame = op.frame
            parts = [f"by {', '.join(op.partition_by)}"] if op.partition_by else []
            parts.append(f"order {', '.join(op.order_by)}")
            parts.append(
                f"{frame.unit} {frame.preceding.render()} preceding "
                f"to {frame.following.render()} following"
            )
            calls = ", ".join(f"{name} = {call.render()}" for name, call in op.columns.items())
            return f"{' '.join(parts)}: {calls}"
    assert_never(op)
