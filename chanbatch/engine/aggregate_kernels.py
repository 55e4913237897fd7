"""Each aggregate's kernels: one :class:`AggregateKernel` per entry of
:data:`chanbatch.blueprint.functions.AGGREGATES`, under the same name in :data:`KERNELS`.

:mod:`chanbatch.engine.aggregate` drives them (partial, combine, finish, whole) for a stage's
aggregates at once. Adding an aggregate is a registry entry plus one kernel here; the check at
the end of this module and tests/engine/test_registry.py fail until both are there.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from chanbatch.blueprint.functions import AGGREGATES
from chanbatch.snapshot.read import nullable_dtype

if TYPE_CHECKING:
    import pandas as pd

SEP = "\x1f"  # cannot appear in a column name a blueprint can spell

#: How a partial state column is made from a slice (``size`` counts rows, the others reduce the
#: argument's values) and how partials of it merge: ``total`` and ``sum`` add (``sum`` is null
#: when every partial is), ``min``/``max`` keep the extreme, ``moments`` merges a (mean, m2)
#: pair by Chan et al.'s formula, ``union`` merges sets of distinct values
#: (:func:`distinct_state`), and ``hll`` and ``tdigest`` merge sketches
#: (:mod:`chanbatch.engine.sketches`).
Reduce = Literal["size", "count", "sum", "min", "max", "mean", "var", "distinct", "hll", "tdigest"]
Merge = Literal["total", "sum", "min", "max", "moments", "union", "hll", "tdigest"]

#: The states made by a Python function per group (a set, a sketch): see reduce_group.
PER_GROUP_REDUCES = ("distinct", "hll", "tdigest")


@dataclass(frozen=True, slots=True)
class State:
    """One column of an aggregate's partial state."""

    part: str
    reduce: Reduce
    merge: Merge


@dataclass(frozen=True, slots=True, kw_only=True)
class AggregateKernel:
    """The engine's side of one :class:`~chanbatch.blueprint.functions.AggregateSpec` (same
    name in :data:`KERNELS`): its partial state, how that is computed, merged and finished, and
    the whole-input form. ``states`` is empty for an aggregate that does not decompose."""

    states: tuple[State, ...] = ()
    #: the argument becomes float64 before its partial...
    float_input: bool = False
    #: ...except a decimal's, whose mean divides the exact sum at the end, as SQL's avg does
    exact_decimal: bool = False
    #: (count state, combined partial, aggregate name[, a quantile's fraction]) -> the values
    finish: Callable[..., pd.Series] | None = None
    #: a column, or a grouped column[, a quantile's fraction] -> its value (per group)
    whole: Callable[..., Any]
    #: (value, argument dtype) -> the one-row column of a global whole-input aggregate
    whole_global: Callable[[Any, Any], pd.Series]


def state_column(name: str, part: str) -> str:
    return f"{name}{SEP}{part}"


def sum_type(dtype: Any) -> Any:
    """The type of a sum of ``dtype`` values: a decimal(p, s) sums to decimal(38, s), as in
    SQL and in pandas' grouped sum, whatever the rows (none, all null)."""
    import pandas as pd
    import pyarrow as pa

    if isinstance(dtype, pd.ArrowDtype) and pa.types.is_decimal(dtype.pyarrow_dtype):
        return pd.ArrowDtype(pa.decimal128(38, dtype.pyarrow_dtype.scale))
    return dtype


def is_decimal(values: pd.Series) -> bool:
    import pandas as pd

    dtype = values.dtype
    return isinstance(dtype, pd.ArrowDtype) and str(dtype.pyarrow_dtype).startswith("decimal")


def _nullable(column: pd.Series) -> pd.Series:
    """A group with no values masks its result to null: the column keeps its type (see
    :func:`~chanbatch.snapshot.read.nullable_dtype`)."""
    return column.astype(nullable_dtype(column.dtype))


def scalar_column(value: Any, dtype: Any) -> pd.Series:
    """One value as a one-row column of ``dtype`` (made nullable where it must hold a null), so
    that a global aggregate's type follows its argument's, also when the value is null."""
    import pandas as pd

    if pd.isna(value):
        return pd.Series([None], dtype=nullable_dtype(dtype))
    return pd.Series([value], dtype=dtype)


def decomposing(func: str) -> AggregateKernel:
    kernel = KERNELS[func]
    if not kernel.states:
        raise ValueError(f"aggregate {func!r} does not decompose into partials")
    return kernel


# -- sets of distinct values ------------------------------------------------------------------


def distinct_state(values: Iterable[Any]) -> str:
    """The distinct non-null ``values`` of one group as a ``count_distinct`` state stores them:
    a JSON list of each value's exact text (a float as the shortest text that reads back the
    same, -0.0 as 0.0; a decimal, date or timestamp as its text), sorted by that text. Equal
    sets give equal text however the values were cut into slices, so the stored partials, and
    every key above them, do not depend on the slicing."""
    return _as_state({text for value in values if (text := _value_text(value)) is not None})


def union_states(states: Iterable[str]) -> str:
    """The state of the union of the sets ``states`` hold (see :func:`distinct_state`)."""
    texts: set[str] = set()
    for state in states:
        if isinstance(state, str):  # a group absent from a partial has no state there
            texts.update(state_texts(state))
    return _as_state(texts)


def distinct_count(state: Any) -> int:
    """The size of the set a ``count_distinct`` state holds; 0 for none."""
    if not isinstance(state, str) or state == "[]":
        return 0
    if '"' not in state:  # numbers (or booleans): a comma only separates two of them
        return state.count(",") + 1
    return len(state_texts(state))


def state_texts(state: str) -> list[str]:
    """The values' texts a ``count_distinct`` state lists, each as :func:`distinct_state`
    wrote it.

    A state is canonical JSON, so its texts are cut out of it rather than parsed and written
    again, where that is certain: with no ``"`` in it, every comma separates two numbers (or
    booleans); if it begins with ``["``, ends with ``"]`` and has no backslash, it holds texts
    only (a text sorts before any number) and none holds a quote, so ``","`` only separates
    two of them, read from the left (a text ``","`` is ``,`` between quotes). Anything else
    (an escape, texts beside numbers) is parsed and written again as before.
    """
    if state == "[]":
        return []
    if '"' not in state:
        return state[1:-1].split(",")
    if state.startswith('["') and state.endswith('"]') and "\\" not in state:
        return [f'"{text}"' for text in state[2:-2].split('","')]
    return [json.dumps(value) for value in json.loads(state)]


def _as_state(texts: set[str]) -> str:
    return "[" + ",".join(sorted(texts)) + "]"


def _value_text(value: Any) -> str | None:
    if value is None or type(value).__name__ in ("NAType", "NaTType"):  # pandas' nulls
        return None
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # a numpy scalar
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return json.dumps(value + 0.0)  # -0.0 + 0.0 is 0.0: one zero, as pandas counts it
    if isinstance(value, bool | int | str):
        return json.dumps(value)
    if isinstance(value, decimal.Decimal | dt.timedelta):
        return json.dumps(str(value))
    if hasattr(value, "isoformat"):  # dates, times, timestamps (pandas' too)
        return json.dumps(value.isoformat())
    raise TypeError(f"count_distinct cannot count values of type {type(value).__name__}")


def reduce_group(how: str) -> Callable[[list[Any]], Any]:
    """The function making one group's state of kind ``how`` from its non-null values."""
    from chanbatch.engine import sketches

    return {
        "distinct": distinct_state,
        "hll": sketches.hll_state,
        "tdigest": sketches.tdigest_state,
    }[how]


def merge_group(how: str) -> Callable[[list[Any]], Any]:
    """The function merging one group's states of kind ``how``, in slice-key order."""
    from chanbatch.engine import sketches

    return {
        "union": union_states,
        "hll": sketches.hll_union,
        "tdigest": sketches.tdigest_merge,
    }[how]


def _finish_each(part: str, read: Callable[..., Any], dtype: str) -> Callable[..., pd.Series]:
    """A finish reading each group's ``part`` state (a set, a sketch) with ``read`` (given a
    quantile's fraction too, for a quantile)."""

    def finish_one(n: pd.Series, combined: pd.DataFrame, name: str, *q: float) -> pd.Series:
        import pandas as pd

        states = combined[state_column(name, part)]
        return pd.Series([read(s, *q) for s in states], index=states.index, dtype=dtype)

    return finish_one


def _hll_estimate(state: Any) -> int:
    from chanbatch.engine.sketches import hll_estimate

    return hll_estimate(state)


def _tdigest_median(state: Any) -> float | None:
    return _tdigest_quantile(state, 0.5)


def _tdigest_quantile(state: Any, q: float) -> float | None:
    from chanbatch.engine.sketches import tdigest_quantile

    return tdigest_quantile(state, q)


def _whole_by(reduce: str, finish: Callable[..., Any]) -> Callable[..., Any]:
    """The whole-input form of a per-group state: made from all values, then finished."""

    def whole(col: Any, *q: float) -> Any:
        def one(values: Any) -> Any:
            return finish(reduce_group(reduce)(values.dropna().tolist()), *q)

        return col.agg(one) if hasattr(col, "ngroups") else one(col)

    return whole


# -- the kernels, one entry per aggregate of chanbatch.blueprint.functions.AGGREGATES ----------


def _finish_sum(n: pd.Series, combined: pd.DataFrame, name: str) -> pd.Series:
    total = combined[state_column(name, "sum")]
    return _nullable(total.astype(sum_type(total.dtype))).where(n > 0)


def _finish_mean(n: pd.Series, combined: pd.DataFrame, name: str) -> pd.Series:
    return combined[state_column(name, "sum")].astype("float64") / n.where(n > 0)


def _finish_extreme(part: str) -> Callable[[pd.Series, pd.DataFrame, str], pd.Series]:
    def finish_one(n: pd.Series, combined: pd.DataFrame, name: str) -> pd.Series:
        return _nullable(combined[state_column(name, part)]).where(n > 0)

    return finish_one


def _finish_var(n: pd.Series, combined: pd.DataFrame, name: str) -> pd.Series:
    return combined[state_column(name, "m2")] / (n - 1).where(n > 1)


def _finish_std(n: pd.Series, combined: pd.DataFrame, name: str) -> pd.Series:
    import numpy as np

    return np.sqrt(_finish_var(n, combined, name))


def _whole_mean(col: Any) -> Any:
    # the exact sum divided once, as the partials' finish does (a decimal's own mean would be
    # rounded to its scale)
    total, count = col.sum(min_count=1), col.count()
    if hasattr(col, "ngroups"):  # grouped: a column per group
        return total.astype("float64") / count.where(count > 0)
    return float(total) / count if count else None


def _global_int(value: Any, dtype: Any) -> pd.Series:
    import pandas as pd

    return pd.Series([int(value)], dtype="int64")


def _global_float(value: Any, dtype: Any) -> pd.Series:
    """A float, null (NaN) for no values."""
    import pandas as pd

    return pd.Series([None if pd.isna(value) else float(value)], dtype="float64")


def _extreme(part: Literal["min", "max"]) -> AggregateKernel:
    return AggregateKernel(
        states=(_N, State(part, part, part)),
        finish=_finish_extreme(part),
        whole=lambda col: getattr(col, part)(),
        whole_global=scalar_column,
    )


def _moments(
    finish_one: Callable[[pd.Series, pd.DataFrame, str], pd.Series], ddof_func: str
) -> AggregateKernel:
    return AggregateKernel(
        states=(_N, State("mean", "mean", "moments"), State("m2", "var", "moments")),
        float_input=True,
        finish=finish_one,
        whole=lambda col: getattr(col, ddof_func)(ddof=1),
        whole_global=_global_float,
    )


def _digest(read: Callable[..., Any]) -> AggregateKernel:
    """A t-digest per group and slice, merged up the tree, read off by ``read``."""
    return AggregateKernel(
        states=(_N, State("digest", "tdigest", "tdigest")),
        float_input=True,
        finish=_finish_each("digest", read, "float64"),
        whole=_whole_by("tdigest", read),
        whole_global=_global_float,
    )


_N = State("n", "count", "total")
_SUM = State("sum", "sum", "sum")

KERNELS: dict[str, AggregateKernel] = {
    # count() reads a column of ones in ``whole``, so it counts rows
    "count": AggregateKernel(
        states=(_N,),
        finish=lambda n, combined, name: n.astype("int64"),
        whole=lambda col: col.count(),
        whole_global=_global_int,
    ),
    "sum": AggregateKernel(
        states=(_N, _SUM),
        finish=_finish_sum,
        whole=lambda col: col.sum(min_count=1),
        whole_global=lambda value, dtype: scalar_column(value, sum_type(dtype)),
    ),
    "mean": AggregateKernel(
        states=(_N, _SUM),
        float_input=True,
        exact_decimal=True,
        finish=_finish_mean,
        whole=_whole_mean,
        whole_global=_global_float,
    ),
    "min": _extreme("min"),
    "max": _extreme("max"),
    "var": _moments(_finish_var, "var"),
    "std": _moments(_finish_std, "std"),
    "count_distinct": AggregateKernel(
        states=(_N, State("values", "distinct", "union")),
        finish=_finish_each("values", distinct_count, "int64"),
        whole=lambda col: col.nunique(dropna=True),
        whole_global=_global_int,
    ),
    "approx_count_distinct": AggregateKernel(
        states=(_N, State("hll", "hll", "hll")),
        finish=_finish_each("hll", _hll_estimate, "int64"),
        whole=_whole_by("hll", _hll_estimate),
        whole_global=_global_int,
    ),
    "approx_median": _digest(_tdigest_median),
    "approx_quantile": _digest(_tdigest_quantile),
    # the exact quantile (linear between the two nearest values, as SQL's quantile_cont)
    "quantile": AggregateKernel(
        float_input=True,
        whole=lambda col, q: col.quantile(q),
        whole_global=_global_float,
    ),
    # the exact median needs every value at once: a stage with it runs on its whole input
    "median": AggregateKernel(
        float_input=True,
        whole=lambda col: col.median(),
        whole_global=_global_float,
    ),
}


if set(KERNELS) != set(AGGREGATES) or any(
    bool(KERNELS[name].states) != spec.decomposes for name, spec in AGGREGATES.items()
):
    raise RuntimeError("the aggregate kernels and the registry (blueprint.functions) differ")
