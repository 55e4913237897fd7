"""Many slices of a window run by halo, computed at once (``execute.window_slices``), against
each slice computed alone (``execute.window_slice``, the path a slice takes by itself): the
same frame and the same stored bytes, slice for slice. The values themselves are DuckDB's (see
tests/run/test_windows.py); here the question is only whether batching changes a bit."""

from __future__ import annotations

import decimal

import numpy as np
import pandas as pd
import pyarrow as pa
from hypokit import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chanbatch.blueprint import parse_blueprint
from chanbatch.blueprint.model import Stage, Window
from chanbatch.compile.windows import window_halos
from chanbatch.engine import execute
from chanbatch.snapshot.freeze import encode_parquet
from chanbatch.snapshot.normalize import normalize_table
from chanbatch.snapshot.read import canonical

FUNCS = [
    "count()",
    "count(x)",
    "sum(x)",
    "sum(y)",
    "mean(y)",
    "sum(big)",
    "mean(x)",
    "min(x)",
    "max(s)",
    "min(y)",
    "max(y)",
    "sum(price)",
]

_floats = st.one_of(
    st.none(),
    st.sampled_from([0.1, 1.0, -1.0, 1e16, -1e16, 3e-17, 2.5, -0.0, 0.0]),
    st.floats(-1e6, 1e6, allow_nan=False),
)


@st.composite
def slices(draw: st.DrawFn) -> list[pd.DataFrame]:
    """Day slices in key order (days with gaps between them), each of a few rows, some of
    many (so that a frame sum takes the prefix way), some of none."""
    days = sorted(draw(st.sets(st.integers(0, 40), min_size=2, max_size=14)))
    parts = []
    next_id = 0
    for day in days:
        n = draw(st.sampled_from([0, 1, 2, 3, 5, 8, 40]))
        rows = {
            "day": [day] * n,
            "g": [draw(st.sampled_from(["a", "b", None])) for _ in range(n)],
            "x": [draw(st.one_of(st.none(), st.integers(-5, 5))) for _ in range(n)],
            "big": [draw(st.sampled_from([2**62, -(2**62), 2**63 - 1, 1])) for _ in range(n)],
            "y": [draw(_floats) for _ in range(n)],
            "s": [draw(st.sampled_from(["p", "q", "é", None])) for _ in range(n)],
            "price": [
                draw(st.one_of(st.none(), st.sampled_from(["0.10", "2.25", "-1.05"])))
                for _ in range(n)
            ],
        }
        frame = pd.DataFrame(rows).astype(
            {"day": "int64", "g": "string", "x": "Int64", "big": "int64", "y": "float64"}
        )
        frame["s"] = frame["s"].astype("string")
        prices = [None if p is None else decimal.Decimal(p) for p in rows["price"]]
        frame["price"] = pd.Series(
            pd.array(prices, dtype=pd.ArrowDtype(pa.decimal128(12, 2))), index=frame.index
        )
        frame["id"] = np.arange(next_id, next_id + n, dtype="int64")
        next_id += n
        parts.append(frame)
    return parts


def _stage(before: int, after: int, funcs: list[str], partition: bool) -> Stage:
    columns = ", ".join(f"c{i}: '{f}'" for i, f in enumerate(funcs))
    text = f"""
name: w
inputs: {{t: t}}
stages:
  w:
    from: t
    window:
      {"partition_by: g" if partition else ""}
      order_by: day
      range: {{preceding: {before}, following: {after}}}
      columns: {{{columns}}}
outputs: {{w: o}}
"""
    return parse_blueprint(text).stages["w"]


def _stored(frame: pd.DataFrame) -> bytes:
    """What the cache writes for a task's frame (``run_task`` makes it canonical first)."""
    table = pa.Table.from_pandas(canonical(frame), preserve_index=False)
    return bytes(encode_parquet(normalize_table(table)))


@settings(max_examples=examples(60), deadline=None, suppress_health_check=list(HealthCheck))
@given(
    slices(),
    st.integers(0, 3),
    st.integers(0, 3),
    st.lists(st.sampled_from(FUNCS), min_size=1, max_size=5, unique=True),
    st.booleans(),
)
def test_slices_computed_at_once_are_each_slice_alone_to_the_bit(
    parts: list[pd.DataFrame], before: int, after: int, funcs: list[str], partition: bool
) -> None:
    stage = _stage(before, after, funcs, partition)
    assert isinstance(stage.operation, Window)
    days = [int(p["day"].iloc[0]) if len(p) else -1 for p in parts]
    # an empty slice still has its key: its position in the list
    keys = [d if d >= 0 else (days[i - 1] + 1 if i else 0) for i, d in enumerate(days)]
    if len(set(keys)) != len(keys) or keys != sorted(keys):
        return  # an empty slice's stand-in key collides with a neighbour's
    halos = window_halos(stage.operation, keys, "day")
    assert not isinstance(halos, str)
    spans = [(first, end, index - first) for index, (first, end) in enumerate(halos)]
    together = execute.window_slices(stage, parts, spans)
    assert len(together) == len(parts)
    for index, got in enumerate(together):
        first, end, own = spans[index]
        if got is None:
            assert not len(parts[index]) or _declined(stage, parts)
            continue
        want = execute.window_slice(stage, parts[first:end], own)
        pd.testing.assert_frame_equal(canonical(got), canonical(want), check_exact=True)
        assert _stored(got) == _stored(want)


def _declined(stage: Stage, parts: list[pd.DataFrame]) -> bool:
    """Whether the whole batch was left to the slices alone, for a reason window_slices
    gives: a min or max over floats holding a zero, or fewer than two slices with rows."""
    assert isinstance(stage.operation, Window)
    with_rows = [p for p in parts if len(p)]
    if len(with_rows) < 2:
        return True
    rows = pd.concat(with_rows, ignore_index=True)
    extremes = [c for c in stage.operation.columns.values() if c.func in ("min", "max") and c.arg]
    return any(c.arg.render() == "y" and bool((rows["y"] == 0).any()) for c in extremes)


def test_long_frames_sum_by_prefix_within_each_slice_as_alone() -> None:
    """Slices of many rows, whose frames are long: each slice alone sums its frames from
    prefix sums over its own halo, and so does each here, though its neighbours' frames are
    short. Magnitudes far apart, so that where a prefix starts shows in the last bits."""
    rng = np.random.default_rng(5)
    parts = []
    for day in range(12):
        n = 300 if day % 3 == 0 else 2
        y = rng.choice([1e16, -1e16, 0.1, 3.0, 2.5e-3], n)
        parts.append(
            pd.DataFrame(
                {"day": np.full(n, day, dtype="int64"), "g": rng.choice(["a", "b"], n), "y": y}
            ).astype({"g": "string"})
        )
    stage = _stage(2, 1, ["sum(y)", "mean(y)", "count(y)"], True)
    assert isinstance(stage.operation, Window)
    halos = window_halos(stage.operation, list(range(12)), "day")
    assert not isinstance(halos, str)
    spans = [(first, end, index - first) for index, (first, end) in enumerate(halos)]
    together = execute.window_slices(stage, parts, spans)
    assert all(got is not None for got in together)
    for index, got in enumerate(together):
        first, end, own = spans[index]
        want = execute.window_slice(stage, parts[first:end], own)
        assert got is not None
        assert _stored(got) == _stored(want)
    # the long slices' sums came from prefix sums: in their last bits, not every one is the
    # frame's own sum added up row by row, which the short slices' are
    assert any(_differs_from_row_by_row(got, spans[i], parts) for i, got in enumerate(together))


def _differs_from_row_by_row(
    got: pd.DataFrame | None, span: tuple[int, int, int], parts: list[pd.DataFrame]
) -> bool:
    assert got is not None
    first, end, own = span
    halo = pd.concat(parts[first:end], ignore_index=True)
    mine = parts[first + own]
    for row, value in enumerate(got["c0"]):
        day, group = int(mine["day"].iloc[row]), mine["g"].iloc[row]
        near = (halo["day"] >= day - 2) & (halo["day"] <= day + 1) & (halo["g"] == group)
        inside = halo[near]["y"].tolist()
        total = 0.0
        for v in inside:
            total += v
        if total != value:
            return True
    return False


def test_a_min_of_signed_zeros_is_left_to_each_slice() -> None:
    """A ``min`` picks, among equal values, a row by rank over every row of its task: -0.0 in
    one slice and 0.0 in another, far away, would come out as the other slice's zero. Such a
    batch is left to the slices alone, which give each its own zero's sign."""
    parts = [
        pd.DataFrame({"day": [0, 0], "y": [-0.0, 1.0]}).astype({"day": "int64"}),
        pd.DataFrame({"day": [9, 9], "y": [0.0, 2.0]}).astype({"day": "int64"}),
    ]
    stage = _stage(1, 0, ["min(y)"], False)
    spans = [(0, 1, 0), (1, 2, 0)]  # the days are far apart: each its own halo
    together = execute.window_slices(stage, parts, spans)
    alone = [execute.window_slice(stage, parts[i : i + 1], 0) for i in range(2)]
    run = [got if got is not None else own for got, own in zip(together, alone, strict=True)]
    assert [np.signbit(f["c0"].iloc[0]) for f in run] == [True, False]
    assert together == [None, None]
    # without zeros the same slices are computed together, each as alone
    parts[0]["y"] = [-3.0, 1.0]
    parts[1]["y"] = [5.0, 2.0]
    together = execute.window_slices(stage, parts, spans)
    wants = [execute.window_slice(stage, [p], 0) for p in parts]
    for got, want in zip(together, wants, strict=True):
        assert got is not None
        assert _stored(got) == _stored(want)
