"""Hypothesis strategies for expression trees, shared by the blueprint tests."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from chanbatch.blueprint.functions import CAST_TYPES, FUNCTIONS
from chanbatch.blueprint.nodes import (
    ARITH_OPS,
    COMPARE_OPS,
    BinOp,
    BoolOp,
    Call,
    Column,
    Compare,
    Expr,
    InList,
    Literal,
    Negate,
    Not,
)

_names = st.sampled_from(["a", "b", "dep_delay", "x1", "_y", "Carrier"])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
)
_leaves = st.one_of(
    _names.map(lambda name: Column(name=name)), scalars.map(lambda v: Literal(value=v))
)


def _call(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    @st.composite
    def build(draw: st.DrawFn) -> Expr:
        signature = draw(st.sampled_from(sorted(FUNCTIONS.values(), key=lambda s: s.name)))
        count = draw(st.integers(signature.min_args, signature.max_args or signature.min_args + 2))
        literal_kinds = dict(signature.literals)
        args: list[Expr] = []
        for index in range(count):
            kind = literal_kinds.get(index)
            if kind == "int":
                args.append(Literal(value=draw(st.integers(-3, 6))))
            elif kind == "str":
                args.append(Literal(value=draw(st.text(max_size=4))))
            elif kind == "cast_type":
                args.append(Literal(value=draw(st.sampled_from(CAST_TYPES))))
            else:
                args.append(draw(children))
        return Call(name=signature.name, args=tuple(args))

    return build()


def _extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    operand_lists = st.lists(children, min_size=2, max_size=3)
    return st.one_of(
        st.builds(
            lambda op, left, right: BinOp(op=op, left=left, right=right),
            st.sampled_from(ARITH_OPS),
            children,
            children,
        ),
        children.map(lambda operand: Negate(operand=operand)),
        children.map(lambda operand: Not(operand=operand)),
        operand_lists.flatmap(
            lambda operands: st.lists(
                st.sampled_from(COMPARE_OPS),
                min_size=len(operands) - 1,
                max_size=len(operands) - 1,
            ).map(lambda ops: Compare(operands=tuple(operands), ops=tuple(ops)))
        ),
        st.builds(
            lambda operand, values, negated: InList(
                operand=operand, values=tuple(values), negated=negated
            ),
            children,
            st.lists(scalars, max_size=3),
            st.booleans(),
        ),
        st.builds(
            lambda op, operands: BoolOp(op=op, operands=tuple(operands)),
            st.sampled_from(["and", "or"]),
            operand_lists,
        ),
        _call(children),
    )


#: Any expression tree over a handful of column names.
expressions = st.recursive(_leaves, _extend, max_leaves=12)


def expressions_over(columns: Sequence[str], max_leaves: int = 8) -> st.SearchStrategy[Expr]:
    """Expression trees that read only ``columns``."""
    leaves = st.one_of(
        st.sampled_from(list(columns)).map(lambda name: Column(name=name)),
        scalars.map(lambda value: Literal(value=value)),
    )
    return st.recursive(leaves, _extend, max_leaves=max_leaves)
