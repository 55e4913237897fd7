"""``arrow_numpy.arrow``: numpy arrays to Arrow as ``pa.array`` makes them, without importing
``numpy.ma``; and a whole run on the Arrow path, in a fresh process, imports neither it nor
pandas. Expected values come from ``pa.array`` itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chanbatch.engine.arrow_numpy import arrow

ROOT = Path(__file__).resolve().parents[2]

VALUES = [
    np.arange(5),
    np.arange(5, dtype=np.int32),
    np.arange(7, dtype=np.uint8),
    np.array([1.5, np.nan, -2.0, np.inf]),
    np.array([1.5, 2.5], dtype=np.float32),
    np.array([True, False, True, True, False, False, True, True, True, False]),
    np.array([], dtype=np.int64),
    np.array([], dtype=np.bool_),
    np.arange(20)[::3],  # not contiguous
]


def same(got: pa.Array, want: pa.Array) -> None:
    got.validate(full=True)
    assert got.type == want.type
    assert got.null_count == want.null_count
    assert repr(got.to_pylist()) == repr(want.to_pylist())  # NaN compares by its text


@pytest.mark.parametrize("values", VALUES, ids=lambda v: f"{v.dtype}[{len(v)}]")
def test_arrow_makes_what_pa_array_makes(values: np.ndarray) -> None:
    same(arrow(values), pa.array(values))
    mask = np.arange(len(values)) % 3 == 1
    same(arrow(values, mask=mask), pa.array(values, mask=mask))
    same(arrow(values, mask=np.zeros(len(values), bool)), pa.array(values))


def test_arrow_of_another_type_converts_as_pa_array_does() -> None:
    same(arrow(np.arange(4), pa.float64()), pa.array(np.arange(4), pa.float64()))
    same(arrow(np.array(["a", "b"])), pa.array(np.array(["a", "b"])))


BLUEPRINT = """\
name: sums
inputs:
  t: t
stages:
  kept:
    from: t
    filter: "v > 2"
  per_g:
    from: kept
    group_by: [g]
    aggregate: {n: count(), total: sum(v), average: mean(v)}
outputs:
  per_g: sums_per_g
"""

PROBE = """
import json, sys
from chanbatch.cli.main import main
sys.argv = ["chanbatch", "run", {blueprint!r}, "--store", {store!r}, "--json"]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
sys.stderr.write(json.dumps({{m: m in sys.modules for m in ("numpy.ma", "pandas")}}))
"""


def test_a_run_on_arrow_imports_neither_numpy_ma_nor_pandas(tmp_path: Path) -> None:
    import chanbatch as cb

    rng = np.random.default_rng(3)
    rows = 400
    table = pa.table(
        {
            "day": np.repeat(np.arange(8), rows // 8),
            "g": rng.integers(0, 5, rows),
            "v": rng.random(rows) * 10,
        }
    )
    source = tmp_path / "t.parquet"
    pq.write_table(table, source)
    store = tmp_path / "store"
    cb.Store(str(store)).freeze("t", pq.read_table(source), slice_by="day")
    blueprint = tmp_path / "sums.yaml"
    blueprint.write_text(BLUEPRINT)
    code = PROBE.format(blueprint=str(blueprint), store=str(store))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    import json

    assert json.loads(done.stderr.strip().splitlines()[-1]) == {"numpy.ma": False, "pandas": False}
    got = cb.Store(str(store)).read_pandas("sums_per_g").sort_values("g").reset_index(drop=True)
    df = table.to_pandas()
    kept = df[df.v > 2]
    want = kept.groupby("g").agg(n=("v", "size"), total=("v", "sum"), average=("v", "mean"))
    want = want.reset_index()
    assert got["g"].tolist() == want["g"].tolist()
    assert got["n"].tolist() == want["n"].tolist()
    np.testing.assert_allclose(got["total"], want["total"], rtol=1e-12)
    np.testing.assert_allclose(got["average"], want["average"], rtol=1e-12)
