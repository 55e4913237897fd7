"""Mergeable sketches as partial states, from Apache DataSketches (``datasketches``).

An approximate aggregate keeps, per group and slice, a serialized sketch: the partial state,
stored in the cache like any other (a ``binary`` column). Combines merge sketches in slice-key
order and store the merged sketch; the finish reads the estimate off the root's sketch. Both
sketches used here are deterministic: the same values, merged in the same order, give the same
bytes, so a sketch's bytes, the keys above it and the output's snapshot id are the same on
every run, scheduler and order of arrival (the combine tree is the same for the same slices).

- ``approx_count_distinct(x)``: HyperLogLog (``hll_sketch``, lg_k = 12, 8-bit registers).
  Relative standard error 1.04 / sqrt(4096) = 1.6%; the estimate is within 3 standard errors
  (4.9%) of the true count with 99.7% confidence (DataSketches' HLL accuracy table).
- ``approx_median(x)``: t-digest (``tdigest_double``, k = 400; DuckDB's ``approx_quantile`` is
  a t-digest too). Its error is in rank: the estimate lies between the true quantiles at 0.49
  and 0.51 (rank error within 1%) on the distributions tested, normal and exponential, merged
  from 30 slices (largest error seen 0.8%; tests/run/test_sketches.py; TPC-H prices merged
  from 2,525 day slices: 0.98%); t-digest has no worst-case bound. A serialized digest is about 7 KB. KLL, which has a bound, is not used: its
  compactions flip a random coin that the Python binding cannot seed, so the same values give
  different bytes each run, and a content-keyed cache cannot keep them.

Values are hashed by their Python value: ints and floats as numbers (``-0.0`` as ``0.0``),
text as UTF-8 after a NUL (DataSketches skips an empty string, which is a value here), and
dates, decimals and timestamps by their text, likewise (:func:`_hashable`).

A sketch is fed one value at a time, in row order: a t-digest takes a numpy array in one call
(``tdigest_double.update(ndarray)``, which updates value by value in C++, so the bytes are
the same); the HLL binding has no such call, so its loop stays in Python, with the values
prepared beforehand (:func:`hll_keys` for an Arrow column) and nothing else per value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

HLL_LG_K = 12
TDIGEST_K = 400


def hll_state(values: Iterable[Any]) -> bytes:
    """An HLL sketch of the non-null ``values``, serialized."""
    return hll_of(key for value in values if (key := _hashable(value)) is not None)


def hll_of(keys: Iterable[int | float | str]) -> bytes:
    """An HLL sketch of ``keys``, values already as :func:`_hashable` makes them, serialized."""
    import datasketches as ds

    sketch = ds.hll_sketch(HLL_LG_K, ds.tgt_hll_type.HLL_8)
    update = sketch.update
    for key in keys:
        update(key)
    return bytes(sketch.serialize_compact())


def hll_keys(values: Any) -> list[int | float | str] | None:
    """The valid values of the Arrow array ``values`` as :func:`_hashable` makes their Python
    values, in order; None for a type whose values it does not make here (dates, decimals...)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = values.drop_null()
    t = values.type
    if pa.types.is_integer(t):
        return list(values.to_pylist())
    if pa.types.is_boolean(t):
        return list(values.cast(pa.int64()).to_pylist())
    if pa.types.is_floating(t):
        numbers = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
        return list((numbers[numbers == numbers] + 0.0).tolist())  # no NaN; -0.0 as 0.0
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return list(pc.binary_join_element_wise("\x00", values, "").to_pylist())
    return None


def hll_union(states: Iterable[Any]) -> bytes:
    """The union of serialized HLL sketches (a missing one counts as empty), serialized."""
    import datasketches as ds

    union = ds.hll_union(HLL_LG_K)
    for state in _present(states):
        union.update(ds.hll_sketch.deserialize(state))
    return bytes(union.get_result(ds.tgt_hll_type.HLL_8).serialize_compact())


def hll_estimate(state: Any) -> int:
    """The distinct count a serialized HLL sketch estimates, rounded; 0 for none."""
    import datasketches as ds

    if not isinstance(state, bytes | bytearray | memoryview):
        return 0
    return round(ds.hll_sketch.deserialize(bytes(state)).get_estimate())


def tdigest_state(values: Iterable[Any]) -> bytes:
    """A t-digest of the non-null numbers ``values``, serialized."""
    import numpy as np

    numbers = [number for value in values if (number := _number(value)) is not None]
    return tdigest_of(np.array(numbers, dtype=np.float64))


def tdigest_of(numbers: Any) -> bytes:
    """A t-digest of the float64 numpy array ``numbers`` (no NaN), in order, serialized."""
    import datasketches as ds
    import numpy as np

    digest = ds.tdigest_double(TDIGEST_K)
    if len(numbers):
        # one call, which updates value by value in C++ as the Python loop did; the binding
        # takes a writable array only (one read from Arrow is not)
        digest.update(np.require(numbers, np.float64, ["C", "W"]))
    return bytes(digest.serialize())


def tdigest_merge(states: Iterable[Any]) -> bytes:
    """Serialized t-digests merged in the order given, serialized."""
    import datasketches as ds

    digest = ds.tdigest_double(TDIGEST_K)
    for state in _present(states):
        digest.merge(ds.tdigest_double.deserialize(state))
    return bytes(digest.serialize())


def tdigest_quantile(state: Any, q: float) -> float | None:
    """The ``q`` quantile a serialized t-digest estimates; None when it saw no values."""
    import datasketches as ds

    if not isinstance(state, bytes | bytearray | memoryview):
        return None
    digest = ds.tdigest_double.deserialize(bytes(state))
    return None if digest.is_empty() else float(digest.get_quantile(q))


def _present(states: Iterable[Any]) -> Iterable[bytes]:
    """The serialized sketches among ``states`` (a group absent from a partial has none)."""
    for state in states:
        if isinstance(state, bytes | bytearray | memoryview):
            yield bytes(state)


def _hashable(value: Any) -> int | float | str | None:
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return None
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # a numpy scalar
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):  # DataSketches skips an empty string: every text gets a prefix
        return "\x00" + value
    if isinstance(value, float):
        return None if math.isnan(value) else value + 0.0  # one zero, as pandas counts it
    if hasattr(value, "isoformat"):  # dates and timestamps, pandas' too
        return "\x00" + str(value.isoformat())
    return "\x00" + str(value)  # decimals


def _number(value: Any) -> float | None:
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return None
    number = float(value)
    return None if math.isnan(number) else number
