"""Every function and aggregate of the registry has every rule and every kernel, and nothing
has a kernel without an entry: adding one is one registry entry plus its kernels, and a test
fails until all are there."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chanbatch.blueprint.functions import AGGREGATES, CAST_TYPES, CASTS, FUNCTIONS
from chanbatch.blueprint.kinds import TypeProblem
from chanbatch.blueprint.nodes import Call, Column, Literal
from chanbatch.engine.arrow_eval import ARROW_FUNCTIONS
from chanbatch.engine.pandas_functions import CAST_KERNELS, FUNCTION_IMPLEMENTATIONS


def test_every_function_has_a_pandas_kernel_and_no_kernel_lacks_an_entry() -> None:
    assert set(FUNCTION_IMPLEMENTATIONS) == set(FUNCTIONS)


def test_the_arrow_kernels_are_exactly_the_functions_the_registry_says_have_one() -> None:
    assert set(ARROW_FUNCTIONS) == {n for n, spec in FUNCTIONS.items() if spec.arrow}
    assert set(ARROW_FUNCTIONS) == {"is_null", "not_null"}  # today's Arrow coverage


def test_every_cast_target_has_a_kernel_and_a_kind() -> None:
    assert set(CAST_KERNELS) == set(CAST_TYPES) == set(CASTS)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_function_states_its_usage_arity_and_result_rule(name: str) -> None:
    spec = FUNCTIONS[name]
    assert spec.usage.startswith(f"{name}(")
    assert spec.accepts(spec.min_args)
    assert not spec.accepts(spec.min_args - 1)
    # the rule answers for arguments of unknown kind without refusing them
    args = tuple(
        Literal(value="int") if (i, "cast_type") in spec.literals else Column(name=f"c{i}")
        for i in range(spec.min_args)
    )
    kind = spec.result_kind(Call(name=name, args=args), [None] * len(args))
    assert kind in (None, "number", "string", "bool", "date", "timestamp")


def test_result_rules_refuse_what_the_docs_refuse() -> None:
    text = Column(name="t")
    with pytest.raises(TypeProblem, match=r"abs\(\) needs a number, not string column 't'"):
        FUNCTIONS["abs"].result_kind(Call(name="abs", args=(text,)), ["string"])
    with pytest.raises(TypeProblem, match="cannot cast date column 't' to 'int'"):
        FUNCTIONS["cast"].result_kind(
            Call(name="cast", args=(text, Literal(value="int"))), ["date", "string"]
        )
    assert FUNCTIONS["year"].result_kind(Call(name="year", args=(text,)), ["date"]) == "number"


@pytest.mark.parametrize("name", sorted(AGGREGATES))
def test_every_aggregate_states_its_rules_and_has_its_kernels(name: str) -> None:
    from chanbatch.engine.aggregate_kernels import KERNELS

    spec = AGGREGATES[name]
    assert spec.usage.startswith(f"{name}(")
    kernel = KERNELS[name]
    # a decomposable aggregate has partial states; one that is not has none, and whole-input
    # computing is its only form
    assert bool(kernel.states) == spec.decomposes
    assert kernel.whole is not None
    assert set(KERNELS) == set(AGGREGATES)


def test_importing_the_registry_imports_no_dataframe_library() -> None:
    code = (
        "import sys, chanbatch.blueprint.functions, chanbatch.compile.types\n"
        "print(sorted(m for m in ('pandas', 'pyarrow', 'numpy', 'dask') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
