"""What each task does, on pandas frames. Pure functions: no dask, no store, no cache.

Null semantics follow SQL where SQL and pandas disagree: a filter keeps a row only where its
condition is true (null is not true), null group keys form one group, and null join keys never
match anything (pandas would match NaN to NaN).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, assert_never

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
from chanbatch.compile.allow import check_allowed
from chanbatch.engine import aggregate
from chanbatch.engine.failures import StageFailed, describe_failure
from chanbatch.engine.pandas_eval import evaluate, evaluate_mask
from chanbatch.engine.window import window
from chanbatch.snapshot.read import nullable_dtype

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["StageFailed", "describe_failure"]  # raised here; defined apart, free of pandas


def concat(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Frames one after another, with a fresh index."""
    import pandas as pd

    frames = list(frames)
    if len(frames) == 1:
        return frames[0].reset_index(drop=True)
    return pd.concat(frames, ignore_index=True)


def apply_rowwise(
    stage: Stage, frame: pd.DataFrame, broadcast: Sequence[pd.DataFrame], allow: frozenset[str]
) -> pd.DataFrame:
    """A per-slice stage on one slice's frame (``per_slice`` aggregates, sorts and limits too)."""
    op = stage.operation
    match op:
        case Filter():
            return frame.loc[evaluate_mask(op.expr, frame).to_numpy()].reset_index(drop=True)
        case Derive():
            out = frame.copy(deep=False)
            for name, expr in op.columns.items():
                out[name] = evaluate(expr, out)
            return out
        case Select():
            # a column no later stage reads is not loaded (the plan projects loads): skip it
            return frame[[c for c in op.columns if c in frame.columns]]
        case Rename():
            return frame.rename(columns=op.mapping)
        case Join():
            return join(op, frame, broadcast[0])
        case Map():
            return run_map(op, frame, allow)
        case Aggregate() | Sort() | Limit() | Union() | Window():  # this slice as a whole input
            return apply_whole(stage, [frame], broadcast, allow)
        case _:
            assert_never(op)


def apply_whole(
    stage: Stage,
    parts: Sequence[pd.DataFrame],
    broadcast: Sequence[pd.DataFrame],
    allow: frozenset[str],
) -> pd.DataFrame:
    """A stage on its whole input, given as its slices' frames in key order."""
    op = stage.operation
    match op:
        case Aggregate():
            frame = concat(parts)
            if op.decomposable:
                return aggregate.finish(op, aggregate.partial(op, frame))
            return aggregate.whole(op, frame)
        case Sort():
            frame = concat(parts)
            if not len(frame):
                return frame
            return frame.sort_values(
                [k.column for k in op.by],
                ascending=[k.ascending for k in op.by],
                na_position="last",
                kind="stable",
            ).reset_index(drop=True)
        case Limit():
            return concat(parts).head(op.n).reset_index(drop=True)
        case Union():
            frames = list(parts)
            first = frames[0].columns if frames else []
            return concat([f[list(first)] for f in frames])
        case Window():
            return window(op, concat(parts))
        case Filter() | Derive() | Select() | Rename() | Join() | Map():  # row by row
            return apply_rowwise(stage, concat(parts), broadcast, allow)
        case _:
            assert_never(op)


def window_slice(stage: Stage, parts: Sequence[pd.DataFrame], own: int) -> pd.DataFrame:
    """One slice of a window run slice by slice: ``parts`` are the slices of its halo in key
    order, ``parts[own]`` its own; the frames read them all, only its own rows are kept."""
    assert isinstance(stage.operation, Window)
    start = sum(len(p) for p in parts[:own])
    return window(stage.operation, concat(parts), slice(start, start + len(parts[own])))


#: the column that tells the slices of :func:`window_slices` apart: not a name a stage can give
_SEGMENT = "\x00slice"


def window_slices(
    stage: Stage, parts: Sequence[pd.DataFrame], halos: Sequence[tuple[int, int, int]]
) -> list[pd.DataFrame | None]:
    """:func:`window_slice` for many slices at once: slice ``i``'s halo is ``parts[a:b]`` and
    its own part ``parts[a + own]``, for ``(a, b, own) = halos[i]``. Each slice's halo rows
    are stacked, marked as its segment, and the window computed once with that mark as the
    first partition column: a frame reads its own slice's halo only, in the same order, and
    its sum is taken as that slice alone takes it, so each result is the slice's own to the
    bit. None for a slice left to :func:`window_slice`: one with no rows; and all of them
    where the frames' ``min`` or ``max`` of floats would pick one of two equal values
    (-0.0 and 0.0) from another slice's rows, or the parts' columns differ."""
    op = stage.operation
    assert isinstance(op, Window)
    out: list[pd.DataFrame | None] = [None] * len(halos)
    first = parts[0] if parts else None
    if first is None or _SEGMENT in first.columns:
        return out
    kinds = list(first.dtypes.items())
    if any(list(p.dtypes.items()) != kinds for p in parts):
        return out
    todo = [i for i, (a, _, own) in enumerate(halos) if len(parts[a + own])]
    if len(todo) < 2:
        return out
    import numpy as np
    import pandas as pd

    pieces: list[pd.DataFrame] = []
    tags, keep = [], []
    offset = 0
    for index in todo:
        a, b, own = halos[index]
        halo = parts[a:b]
        rows = [len(p) for p in halo]
        before = sum(rows[:own])
        keep.append((offset + before, offset + before + rows[own]))
        pieces.extend(halo)
        tags.append(np.full(sum(rows), index, dtype=np.int64))
        offset += sum(rows)
    stacked = pd.concat(pieces, ignore_index=True)
    stacked[_SEGMENT] = np.concatenate(tags)
    if _extremes_of_zeros(op, stacked):
        return out
    segmented = replace(op, partition_by=(_SEGMENT, *op.partition_by))
    result = window(segmented, stacked, segment=_SEGMENT).drop(columns=[_SEGMENT])
    for index, (start, end) in zip(todo, keep, strict=True):
        out[index] = result.iloc[start:end].reset_index(drop=True)
    return out


def _extremes_of_zeros(op: Window, frame: pd.DataFrame) -> bool:
    """Whether a ``min`` or ``max`` of ``op`` reads floats holding a zero: which of two equal
    values (-0.0, 0.0) it gives depends on every row of the task, not only the frame's."""
    import pandas as pd

    for call in op.columns.values():
        if call.func not in ("min", "max") or call.arg is None:
            continue
        values = evaluate(call.arg, frame)
        if not isinstance(values, pd.Series):
            continue
        if pd.api.types.is_float_dtype(values.dtype) and bool((values == 0).any()):
            return True
    return False


def join(op: Join, left: pd.DataFrame, right: pd.DataFrame) -> pd.DataFrame:
    """``left`` joined to ``right``; rows whose key has a null match nothing, as in SQL."""
    import pandas as pd

    on = list(op.on)
    # A side whose rows may go unmatched gets nulls: its int and bool columns become nullable
    # first, or pandas would make them float64 and objects, but only when some row is unmatched.
    if op.how in ("left", "outer"):
        right = _nullable(right, on)
    if op.how in ("right", "outer"):
        left = _nullable(left, on)
    left_null = left[on].isna().any(axis=1)
    right_null = right[on].isna().any(axis=1)
    merged = left.loc[~left_null].merge(
        right.loc[~right_null], on=on, how=op.how, suffixes=op.suffixes, sort=False
    )
    # rows with a null key, which merge dropped, named as merge names the matched ones
    left_names, right_names = op.output_names(left.columns, right.columns)
    extra = []
    if op.how in ("left", "outer"):
        extra.append(left.loc[left_null].rename(columns=left_names))
    if op.how in ("right", "outer"):
        extra.append(right.loc[right_null].rename(columns=right_names))
    extra = [frame for frame in extra if len(frame)]
    if not extra:
        return merged.reset_index(drop=True)
    return pd.concat([merged, *extra], ignore_index=True)[list(merged.columns)]


def _nullable(frame: pd.DataFrame, keep: list[str]) -> pd.DataFrame:
    """``frame`` with its numpy int and bool columns (but ``keep``) in pandas' nullable types."""
    casts = {
        name: nullable_dtype(dtype) for name, dtype in frame.dtypes.items() if name not in keep
    }
    casts = {name: t for name, t in casts.items() if t is not frame.dtypes[name]}
    return frame.astype(casts) if casts else frame


def run_map(op: Map, frame: pd.DataFrame, allow: frozenset[str]) -> pd.DataFrame:
    """Call a ``module:function`` map, if its module is on the allowlist."""
    import pandas as pd

    check_allowed(op, allow)
    module_name, _, func_name = op.function.partition(":")
    try:
        module = importlib.import_module(module_name)
        func = getattr(module, func_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise _not_on_path(op.function, module_name) from exc
        raise ImportError(f"cannot load map function {op.function!r}: {exc}") from exc
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"cannot load map function {op.function!r}: {exc}") from exc
    result = func(frame)
    if not isinstance(result, pd.DataFrame):
        raise TypeError(
            f"map function {op.function!r} returned {type(result).__name__}, not a DataFrame"
        )
    return result.reset_index(drop=True)


def _not_on_path(function: str, module: str) -> ImportError:
    """The error for a map module that is not on the worker's Python path. The ``chanbatch``
    script's path holds its own directory, not the current one, so a ``myudfs.py`` beside the
    blueprint is not found: say so, and what makes it importable."""
    cwd = os.getcwd()
    searched = any(os.path.abspath(entry or os.curdir) == cwd for entry in sys.path)
    where = "" if searched else f" (the current directory {cwd} is not on it)"
    return ImportError(
        f"cannot import module {module!r} of map function {function!r} from the worker's "
        f"Python path{where}; install the package that has it into this Python environment, "
        f"or set PYTHONPATH to the directory that holds it (PYTHONPATH=. chanbatch run ...)"
    )


def partial(stage: Stage, frame: pd.DataFrame) -> pd.DataFrame:
    assert isinstance(stage.operation, Aggregate)
    return aggregate.partial(stage.operation, frame)


def combine(stage: Stage, parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    assert isinstance(stage.operation, Aggregate)
    return aggregate.combine(stage.operation, list(parts))


def finish(stage: Stage, parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    assert isinstance(stage.operation, Aggregate)
    import pandas as pd

    op = stage.operation
    if not parts:  # an input with no slices
        return pd.DataFrame(columns=[*op.group_by, *op.aggregates])
    return aggregate.finish(op, parts[0])
