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
count_distinct(x)  n, values                    union of the sets; finish: their size
approx_count_d...  n, hll (HyperLogLog sketch)  union of the sketches; finish: the estimate
approx_median(x)   n, digest (t-digest)         merge of the digests; finish: its median
=================  ===========================  =============================================

A ``count_distinct`` state is the group's set of distinct non-null values, as the text of a
JSON list (:func:`~chanbatch.engine.aggregate_kernels.distinct_state`): exact, and the same
text for the same set however the rows were sliced. ``median`` has no such state; a stage using
it runs on its whole input instead.

Null group keys form one group, as SQL's GROUP BY does. Groups come out sorted by their keys
(nulls last), so a result never depends on how its input was cut into slices or on the order the
partials were computed in; partials are always combined in slice-key order, so floating-point
sums are added in the same order on every run and every cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, assert_never

from chanbatch.blueprint.model import Aggregate
from chanbatch.blueprint.nodes import Column
from chanbatch.engine.aggregate_kernels import (
    KERNELS,
    PER_GROUP_REDUCES,
    SEP,
    decomposing,
    is_decimal,
    merge_group,
    reduce_group,
    scalar_column,
    state_column,
    sum_type,
)
from chanbatch.engine.pandas_eval import evaluate

if TYPE_CHECKING:
    import pandas as pd


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
    sources: dict[tuple[str, bool, bool], str] = {}  # (argument, how) -> its column in ``work``
    src: str | None
    for name, agg in spec.aggregates.items():
        kernel = decomposing(agg.func)
        if agg.arg is None:  # count(): the number of rows
            src = sources.setdefault(("", False, False), f"{SEP}rows")
            work[src] = 1
            plans.append((state_column(name, "n"), src, "size", agg.func))
            continue
        # arguments computed once per way of holding them (mean keeps a decimal, var does not)
        ident = (agg.arg.render(), kernel.float_input, kernel.exact_decimal)
        src = sources.get(ident)
        if src is None:
            src = sources[ident] = f"{SEP}arg{len(sources)}"
            values = _argument(frame, agg.arg)
            exact = kernel.exact_decimal and is_decimal(values)
            work[src] = values.astype("float64") if kernel.float_input and not exact else values
        for st in kernel.states:
            plans.append((state_column(name, st.part), src, st.reduce, agg.func))
    if not keys:
        return _global_partial(work, plans)
    fast = _numpy_partial(work, keys, plans)
    if fast is not None:
        return fast
    grouped = work.groupby(keys, dropna=False, sort=True, observed=True)
    # one pass over the groups for every state column at once (sets of values: one more)
    result = grouped.agg(
        **{
            state: pd.NamedAgg(column=src, aggfunc=how)
            for state, src, how, _ in plans
            if how not in PER_GROUP_REDUCES
        }
    )
    for state, src, how, _func in plans:
        if how == "var":  # m2 = sample variance * (n - 1); zero for a group of one value
            n = result[state.rsplit(SEP, 1)[0] + SEP + "n"]
            result[state] = (result[state] * (n - 1)).where(n > 1, 0.0)
        elif how in PER_GROUP_REDUCES:  # a set or a sketch, made per group in row order
            make = reduce_group(how)
            states = grouped[src].agg(lambda values, make=make: make(values.dropna().tolist()))
            result[state] = states.astype(_state_dtype(how))
    result = result[[state for state, *_ in plans]]
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
        elif how in PER_GROUP_REDUCES:
            made = reduce_group(how)(col.dropna().tolist())
            row[state] = pd.Series([made], dtype=_state_dtype(how))
        else:
            dtype = sum_type(col.dtype) if how == "sum" else col.dtype
            row[state] = scalar_column(getattr(col, how)(), dtype)
    return pd.DataFrame(row)


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
    states = [
        (name, state)
        for name, agg in spec.aggregates.items()
        for state in decomposing(agg.func).states
    ]
    totals = grouped[
        [state_column(name, st.part) for name, st in states if st.merge == "total"]
    ].sum()
    summed = [state_column(name, st.part) for name, st in states if st.merge == "sum"]
    sums = grouped[summed].sum(min_count=1) if summed else None
    out: dict[str, Any] = {}
    for name, state in states:
        column = state_column(name, state.part)
        match state.merge:
            case "total":
                out[column] = totals[column]
            case "sum":
                assert sums is not None  # this state is in ``summed``
                out[column] = sums[column]
            case "min" | "max":
                out[column] = getattr(grouped[column], state.merge)()
            case "union" | "hll" | "tdigest":
                merge = merge_group(state.merge)
                out[column] = grouped[column].agg(lambda got, merge=merge: merge(got.tolist()))
            case "moments":
                if column not in out:  # one merge gives the pair
                    out.update(_merge_moments(stacked, keys, name, out[state_column(name, "n")]))
            case _:
                assert_never(state.merge)
    # every column is indexed by the same groups, in the same order: no need to align them
    result = pd.DataFrame(
        {state: column.array for state, column in out.items()}, index=totals.index
    )
    if keys:
        return _sorted(result.reset_index(), keys)
    return result.reset_index(drop=True)


def finish(spec: Aggregate, combined: pd.DataFrame) -> pd.DataFrame:
    """The aggregate's output columns from a combined partial: group keys, then aggregates."""
    import pandas as pd

    keys = list(spec.group_by)
    out = {k: combined[k] for k in keys}
    for name, agg in spec.aggregates.items():
        finish_one = decomposing(agg.func).finish
        assert finish_one is not None  # every decomposing kernel has one (tests/engine)
        q = () if agg.q is None else (agg.q,)  # a quantile's fraction
        out[name] = finish_one(combined[state_column(name, "n")], combined, name, *q)
    result = pd.DataFrame(out)
    if not keys and len(result) == 0:
        result = pd.DataFrame(
            [
                {
                    name: (0 if a.func in ("count", "count_distinct") else None)
                    for name, a in spec.aggregates.items()
                }
            ]
        )
    return result.reset_index(drop=True)


def whole(spec: Aggregate, frame: pd.DataFrame) -> pd.DataFrame:
    """``spec`` over a whole input at once, for aggregates with no partial form."""
    import pandas as pd

    keys = list(spec.group_by)
    columns: dict[str, pd.Series] = {k: frame[k] for k in keys}
    for name, agg in spec.aggregates.items():
        values = pd.Series(1, index=frame.index) if agg.arg is None else _argument(frame, agg.arg)
        kernel = KERNELS[agg.func]
        if kernel.float_input and not kernel.exact_decimal and is_decimal(values):
            values = values.astype("float64")  # as the partials compute them
        columns[name] = values
    work = pd.DataFrame(columns, index=frame.index)
    out: dict[str, Any] = {}
    if keys:
        grouped = work.groupby(keys, dropna=False, sort=True, observed=True)
    for name, agg in spec.aggregates.items():
        col = grouped[name] if keys else work[name]
        out[name] = KERNELS[agg.func].whole(col, *(() if agg.q is None else (agg.q,)))
    if keys:
        result = pd.DataFrame(out).reset_index()
        return _sorted(result, keys)[keys + list(spec.aggregates)]
    typed = {
        name: KERNELS[agg.func].whole_global(out[name], work[name].dtype)
        for name, agg in spec.aggregates.items()
    }
    return pd.DataFrame(typed)


def _group_ids(frame: pd.DataFrame, keys: list[str]) -> Any:
    if not keys:
        import numpy as np

        return np.zeros(len(frame), dtype="int64")
    return frame.groupby(keys, dropna=False, sort=True, observed=True).ngroup().to_numpy()


def _nonzero(values: Any) -> Any:
    import numpy as np

    return np.where(values == 0, np.nan, values)


def _state_dtype(how: str) -> str:
    """The pandas type of a per-group state column: a set's JSON text is text (a string column
    also when a slice has no rows, as the Arrow path makes it), a sketch is bytes."""
    return "str" if how == "distinct" else "object"


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    if not keys or len(frame) <= 1:
        return frame.reset_index(drop=True)
    return frame.sort_values(keys, na_position="last", kind="stable").reset_index(drop=True)


def _merge_moments(
    stacked: pd.DataFrame, keys: list[str], name: str, merged_n: pd.Series
) -> dict[str, pd.Series]:
    """The (mean, m2) pair of aggregate ``name`` over stacked partials, per group."""
    import pandas as pd

    n_col, mean_col, m2_col = (state_column(name, part) for part in ("n", "mean", "m2"))
    count = stacked[n_col].astype("float64")
    ids = _group_ids(stacked, keys)
    weighted = (stacked[mean_col].fillna(0.0) * count).groupby(ids).sum()
    total = merged_n.astype("float64").to_numpy()
    grand = weighted.to_numpy() / _nonzero(total)
    spread = stacked[m2_col].fillna(0.0) + count * (stacked[mean_col].fillna(0.0) - grand[ids]) ** 2
    return {
        mean_col: pd.Series(grand, index=merged_n.index),
        m2_col: pd.Series(spread.groupby(ids).sum().to_numpy(), index=merged_n.index),
    }
