"""chanbatch's quantity parser against the Kubernetes client's, on generated quantities."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

kubernetes_quantity = pytest.importorskip("kubernetes.utils.quantity")

from chanbatch.k8s.quantity import format_cpu, format_memory, parse_quantity  # noqa: E402

SUFFIXES = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E"]
numbers = st.one_of(
    st.integers(min_value=0, max_value=10**6).map(str),
    st.decimals(min_value=0, max_value=10**4, places=3, allow_nan=False).map(str),
)


@given(numbers, st.sampled_from(SUFFIXES))
def test_parse_agrees_with_the_kubernetes_client(number: str, suffix: str) -> None:
    text = number + suffix
    assert parse_quantity(text) == kubernetes_quantity.parse_quantity(text)


@given(st.integers(min_value=0, max_value=999), st.integers(min_value=-3, max_value=6))
def test_exponents_agree_with_the_kubernetes_client(mantissa: int, exponent: int) -> None:
    text = f"{mantissa}e{exponent}"
    assert parse_quantity(text) == kubernetes_quantity.parse_quantity(text)


@pytest.mark.parametrize("text", ["", "abc", "1.5.5", "4GiB", "Gi", "1 Gi", "--1"])
def test_malformed_quantities_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(text)


@given(st.integers(min_value=1, max_value=2**40))
def test_format_memory_round_trips(size: int) -> None:
    assert kubernetes_quantity.parse_quantity(format_memory(size)) == size


@given(st.integers(min_value=1, max_value=64_000))
def test_format_cpu_round_trips_millicores(millicores: int) -> None:
    cores = parse_quantity(f"{millicores}m")
    assert kubernetes_quantity.parse_quantity(format_cpu(cores)) == cores
