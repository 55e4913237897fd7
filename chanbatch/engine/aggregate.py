"""Grouped aggregates as per-slice partials, an associative combine, and a finish.

A partial holds, for each group, the state each aggregate needs to be merged exactly:

=================  ===========================  =============================================
aggregate          state columns                combine
=================  ===========================  =============================================
count(), count(x)  n                            sum
sum(x)             n, sum                       sum (null when n == 0, as in SQL)
mean(x)            n, sum                       sum; finish sum / n
min(x), max(x)     n, min / max                 min / max
var(x), std(x)     n, mean, m2                  Chan et al.: m2 = Σ m2ᵢ + Σ nᵢ (meanᵢ − mean)²
=================  ===========================  =============================================

``count_distinct`` has no such state; a stage using it runs on its whole input instead.

Null group keys form one group, as SQL's GROUP BY does. Groups come out sorted by their keys
(nulls last), so a result never depends on how its input was cut into slices or on the order the
partials were computed in; partials are always combined in slice-key order, so floating-point
sums are added in the same order on every run and every cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chanbatch.blueprint.model import Aggregate
from chanbatch.blueprint.nodes import Column
from chanbatch.engine.pandas_eval import evaluate
from chanbatch.snapshot.read import nullable_dtype

if TYPE_CHECKING:
    import pandas as pd

SEP = "\x1f"  # cannot appear in a column name a blueprint can spell


def _state(name: str, part: str) -> str:
    return f"{name}{SEP}{part}"


def _states(func: str) -> tuple[str, ...]:
    if func == "count":
        return ("n",)
    if func in ("sum", "mean"):
        return ("n", "sum")
    if func in ("min", "max"):
        return ("n", func)
    if func in ("var", "std"):
        return ("n", "mean", "m2")
    raise ValueError(f"aggregate {func!r} does not decompose into partials")


def _argument(frame: pd.DataFrame, arg: Any) -> pd.Series:
    if isinstance(arg, Column):
        return frame[arg.name]
    return evaluate(arg, frame)


def partial(spec: Aggregate, frame: pd.DataFrame) -> pd.DataFrame:
    """The partial state of ``spec`` over ``frame`` (one slice), one row per group."""
    import pandas as pd

    keys = list(spec.group_by)
    work = pd.DataFrame({k: frame[k] for k in keys}, index=frame.index)
    plans: list[tuple[str, str, str, str]] = []  # (state column, source column, how, func)
    sources: dict[tuple[str, Any], str] = {}  # (argument, how) -> its column in ``work``
    src: str | None
    for name, agg in spec.aggregates.items():
        if agg.arg is None:
            src = sources.setdefault(("", False), f"{SEP}rows")
            work[src] = 1
            plans.append((_state(name, "n"), src, "size", agg.func))
            continue
        as_float = agg.func in ("var", "std", "mean")
        # mean gets its own source: over a decimal it keeps the exact values, var does not
        ident = (agg.arg.render(), "mean" if agg.func == "mean" else as_float)
        src = sources.get(ident)
        if src is None:
            src = sources[ident] = f"{SEP}arg{len(sources)}"
            values = _argument(frame, agg.arg)
            # a decimal's mean divides its exact sum at the end (finish), as SQL's avg does
            exact = agg.func == "mean" and _is_decimal(values)
            work[src] = values.astype("float64") if as_float and not exact else values
        plans.append((_state(name, "n"), src, "count", agg.func))
        if agg.func in ("sum", "mean"):
            plans.append((_state(name, "sum"), src, "sum", agg.func))
        elif agg.func in ("min", "max"):
            plans.append((_state(name, agg.func), src, agg.func, agg.func))
        elif agg.func in ("var", "std"):
            plans.append((_state(name, "mean"), src, "mean", agg.func))
            plans.append((_state(name, "m2"), src, "var", agg.func))
    if not keys:
        return _global_partial(work, plans)
    fast = _numpy_partial(work, keys, plans)
    if fast is not None:
        return fast
    grouped = work.groupby(keys, dropna=False, sort=True, observed=True)
    # one pass over the groups for every state column at once
    result = grouped.agg(
        **{state: pd.NamedAgg(column=src, aggfunc=how) for state, src, how, _ in plans}
    )
    for state, _src, how, _func in plans:
        if how == "var":  # m2 = sample variance * (n - 1); zero for a group of one value
            n = result[state.rsplit(SEP, 1)[0] + SEP + "n"]
            result[state] = (result[state] * (n - 1)).where(n > 1, 0.0)
    return _sorted(result.reset_index(), keys)


def _numpy_partial(
    work: pd.DataFrame, keys: list[str], plans: list[tuple[str, str, str, str]]
) -> pd.DataFrame | None:
    """The grouped partial with one factorisation and numpy reductions, for float64 arguments
    (the common case); None when an argument needs pandas' general path.

    pandas' ``agg`` machinery costs more than the arithmetic on slices of this size. Sums are
    taken row by row in input order (``bincount``), so they are the same on every run.
    """
    import numpy as np
    import pandas as pd

    if not len(work):
        return None
    for _state_name, src, how, _func in plans:
        if how != "size" and work[src].dtype != np.float64:
            return None
    combined = np.zeros(len(work), dtype=np.int64)
    uniques = []
    for key in keys:
        codes, values = pd.factorize(work[key], sort=True, use_na_sentinel=False)
        combined = combined * len(values) + codes
        uniques.append(values)
    sizes = [len(u) for u in uniques]
    space = int(np.prod(sizes)) if sizes else 1
    if space > 4 * len(work) + 1024:  # too sparse for a dense table: let pandas do it
        return None
    present = np.flatnonzero(np.bincount(combined, minlength=space))
    remap = np.empty(space, dtype=np.int64)
    remap[present] = np.arange(len(present))
    group = remap[combined]
    n_groups = len(present)
    out: dict[str, Any] = {}
    stride = space
    for key, values, size in zip(keys, uniques, sizes, strict=True):
        stride //= size
        out[key] = values.take((present // stride) % size)
    counts: dict[str, Any] = {}
    for state, src, how, _func in plans:
        if how == "size":
            out[state] = np.bincount(group, minlength=n_groups).astype(np.int64)
            continue
        values = work[src].to_numpy()
        valid = ~np.isnan(values)
        if src not in counts:
            counts[src] = np.bincount(group[valid], minlength=n_groups).astype(np.int64)
        n = counts[src]
        if how == "count":
            out[state] = n
        elif how == "sum":
            total = np.bincount(group[valid], weights=values[valid], minlength=n_groups)
            out[state] = np.where(n > 0, total, np.nan)
        elif how == "mean":
            total = np.bincount(group[valid], weights=values[valid], minlength=n_groups)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[state] = np.where(n > 0, total / n, np.nan)
        elif how == "var":  # m2: the sum of squared distances from the group's mean
            total = np.bincount(group[valid], weights=values[valid], minlength=n_groups)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(n > 0, total / n, 0.0)
            dev = values[valid] - mean[group[valid]]
            out[state] = np.bincount(group[valid], weights=dev * dev, minlength=n_groups)
        elif how in ("min", "max"):
            reduced = getattr(pd.Series(values[valid]).groupby(group[valid]), how)()
            column = np.full(n_groups, np.nan)
            column[reduced.index.to_numpy()] = reduced.to_numpy()
            out[state] = column
        else:
            return None
    return pd.DataFrame(out)


def _global_partial(work: pd.DataFrame, plans: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    import pandas as pd

    row: dict[str, pd.Series] = {}
    for state, src, how, _func in plans:
        col = work[src]
        if how == "size":
            row[state] = pd.Series([len(col)], dtype="int64")
        elif how == "count":
            row[state] = pd.Series([int(col.count())], dtype="int64")
        elif how == "var":
            m2 = float(col.var(ddof=0) * col.count()) if col.count() else 0.0
            row[state] = pd.Series([m2], dtype="float64")
        elif how == "mean":
            row[state] = pd.Series([float(col.mean()) if col.count() else 0.0], dtype="float64")
        else:
            dtype = _sum_type(col.dtype) if how == "sum" else col.dtype
            row[state] = _scalar_column(getattr(col, how)(), dtype)
    return pd.DataFrame(row)


def _sum_type(dtype: Any) -> Any:
    """The type of a sum of ``dtype`` values: a decimal(p, s) sums to decimal(38, s), as in
    SQL and in pandas' grouped sum, whatever the rows (none, all null)."""
    import pandas as pd
    import pyarrow as pa

    if isinstance(dtype, pd.ArrowDtype) and pa.types.is_decimal(dtype.pyarrow_dtype):
        return pd.ArrowDtype(pa.decimal128(38, dtype.pyarrow_dtype.scale))
    return dtype


def _is_decimal(values: pd.Series) -> bool:
    import pandas as pd

    dtype = values.dtype
    return isinstance(dtype, pd.ArrowDtype) and str(dtype.pyarrow_dtype).startswith("decimal")


def _nullable(column: pd.Series) -> pd.Series:
    """A group with no values masks its result to null: the column keeps its type (see
    :func:`~chanbatch.snapshot.read.nullable_dtype`)."""
    return column.astype(nullable_dtype(column.dtype))


def _scalar_column(value: Any, dtype: Any) -> pd.Series:
    """One value as a one-row column of ``dtype`` (made nullable where it must hold a null), so
    that a global aggregate's type follows its argument's, also when the value is null."""
    import pandas as pd

    if pd.isna(value):
        return pd.Series([None], dtype=nullable_dtype(dtype))
    return pd.Series([value], dtype=dtype)


def combine(spec: Aggregate, partials: list[pd.DataFrame]) -> pd.DataFrame:
    """Merge partials (given in slice-key order) into one partial of the same shape."""
    import pandas as pd

    keys = list(spec.group_by)
    frames = [p for p in partials if len(p)]
    if not frames:
        return partials[0] if partials else pd.DataFrame()
    if len(frames) == 1:
        return frames[0]
    stacked = pd.concat(frames, ignore_index=True)
    if keys:
        grouped = stacked.groupby(keys, dropna=False, sort=True, observed=True)
    else:
        stacked["\x1fall"] = 0
        grouped = stacked.groupby("\x1fall", sort=False)
    # Counts and sums in one grouped reduction each: pandas sums every column on its own (with
    # the same compensated summation), so this is what one call per column gives, in less time.
    aggregates = spec.aggregates.items()
    counts = grouped[[_state(name, "n") for name in spec.aggregates]].sum()
    summed = [_state(name, "sum") for name, agg in aggregates if agg.func in ("sum", "mean")]
    sums = grouped[summed].sum(min_count=1) if summed else None
    out: dict[str, Any] = {}
    for name, agg in aggregates:
        n = _state(name, "n")
        out[n] = counts[n]
        if agg.func in ("sum", "mean"):
            s = _state(name, "sum")
            assert sums is not None  # this aggregate's state is in ``summed``
            out[s] = sums[s]
        elif agg.func in ("min", "max"):
            s = _state(name, agg.func)
            out[s] = getattr(grouped[s], agg.func)()
        elif agg.func in ("var", "std"):
            mean_col, m2_col = _state(name, "mean"), _state(name, "m2")
            count = stacked[n].astype("float64")
            ids = _group_ids(stacked, keys)
            weighted = (stacked[mean_col].fillna(0.0) * count).groupby(ids).sum()
            total = out[n].astype("float64").to_numpy()
            grand = weighted.to_numpy() / _nonzero(total)
            spread = (
                stacked[m2_col].fillna(0.0)
                + count * (stacked[mean_col].fillna(0.0) - grand[ids]) ** 2
            )
            out[mean_col] = pd.Series(grand, index=out[n].index)
            out[m2_col] = pd.Series(spread.groupby(ids).sum().to_numpy(), index=out[n].index)
    # every column is indexed by the same groups, in the same order: no need to align them
    result = pd.DataFrame(
        {state: column.array for state, column in out.items()}, index=counts.index
    )
    if keys:
        return _sorted(result.reset_index(), keys)
    return result.reset_index(drop=True)


def finish(spec: Aggregate, combined: pd.DataFrame) -> pd.DataFrame:
    """The aggregate's output columns from a combined partial: group keys, then aggregates."""
    import numpy as np
    import pandas as pd

    keys = list(spec.group_by)
    out = {k: combined[k] for k in keys}
    for name, agg in spec.aggregates.items():
        n = combined[_state(name, "n")]
        if agg.func == "count":
            out[name] = n.astype("int64")
        elif agg.func == "sum":
            total = combined[_state(name, "sum")]
            out[name] = _nullable(total.astype(_sum_type(total.dtype))).where(n > 0)
        elif agg.func == "mean":
            out[name] = combined[_state(name, "sum")].astype("float64") / n.where(n > 0)
        elif agg.func in ("min", "max"):
            out[name] = _nullable(combined[_state(name, agg.func)]).where(n > 0)
        elif agg.func in ("var", "std"):
            var = combined[_state(name, "m2")] / (n - 1).where(n > 1)
            out[name] = np.sqrt(var) if agg.func == "std" else var
    result = pd.DataFrame(out)
    if not keys and len(result) == 0:
        result = pd.DataFrame(
            [{name: (0 if a.func == "count" else None) for name, a in spec.aggregates.items()}]
        )
    return result.reset_index(drop=True)


def whole(spec: Aggregate, frame: pd.DataFrame) -> pd.DataFrame:
    """``spec`` over a whole input at once, for aggregates with no partial form."""
    import pandas as pd

    keys = list(spec.group_by)
    columns: dict[str, pd.Series] = {k: frame[k] for k in keys}
    for name, agg in spec.aggregates.items():
        values = pd.Series(1, index=frame.index) if agg.arg is None else _argument(frame, agg.arg)
        if agg.func in ("var", "std") and _is_decimal(values):
            values = values.astype("float64")  # as the partials compute them
        columns[name] = values
    work = pd.DataFrame(columns, index=frame.index)
    out: dict[str, Any] = {}
    if keys:
        grouped = work.groupby(keys, dropna=False, sort=True, observed=True)
    for name, agg in spec.aggregates.items():
        col = grouped[name] if keys else work[name]
        out[name] = _whole_one(agg.func, col)
    if keys:
        result = pd.DataFrame(out).reset_index()
        return _sorted(result, keys)[keys + list(spec.aggregates)]
    typed = {}
    for name, agg in spec.aggregates.items():
        value = out[name]
        if agg.func == "sum":
            typed[name] = _scalar_column(value, _sum_type(work[name].dtype))
        elif agg.func in ("min", "max"):
            typed[name] = _scalar_column(value, work[name].dtype)
        elif agg.func in ("count", "count_distinct"):
            typed[name] = pd.Series([int(value)], dtype="int64")
        else:  # mean, var, std: a float, null (NaN) for no values
            typed[name] = pd.Series([None if pd.isna(value) else float(value)], dtype="float64")
    return pd.DataFrame(typed)


def _whole_one(func: str, col: Any) -> Any:
    if func == "count":  # count() reads a column of ones, so it counts rows
        return col.count()
    if func == "count_distinct":
        return col.nunique(dropna=True)
    if func == "sum":
        return col.sum(min_count=1)
    if func == "mean":
        # the exact sum divided once, as the partials' finish does (a decimal's own mean would
        # be rounded to its scale)
        total, count = col.sum(min_count=1), col.count()
        if hasattr(col, "ngroups"):  # grouped: a column per group
            return total.astype("float64") / count.where(count > 0)
        return float(total) / count if count else None
    if func in ("min", "max"):
        return getattr(col, func)()
    if func in ("var", "std"):
        return getattr(col, func)(ddof=1)
    raise ValueError(f"unknown aggregate {func!r}")


def _group_ids(frame: pd.DataFrame, keys: list[str]) -> Any:
    if not keys:
        import numpy as np

        return np.zeros(len(frame), dtype="int64")
    return frame.groupby(keys, dropna=False, sort=True, observed=True).ngroup().to_numpy()


def _nonzero(values: Any) -> Any:
    import numpy as np

    return np.where(values == 0, np.nan, values)


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    if not keys or len(frame) <= 1:
        return frame.reset_index(drop=True)
    return frame.sort_values(keys, na_position="last", kind="stable").reset_index(drop=True)
