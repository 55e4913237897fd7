"""Helpers for the end-to-end run tests: small frames with nulls, a blueprint runner, and frame
comparison that ignores dtypes and (optionally) row order.

Expected results come from plain pandas, plain Python or DuckDB on the original frames, never
from chanbatch: DuckDB is a SQL engine, so it is the oracle for SQL's null semantics (filters,
join keys, GROUP BY).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.api import types as ptypes

import chanbatch as cb

_names = itertools.count()


def base_frame(rows: int = 30, seed: int = 7) -> pd.DataFrame:
    """Rows in three slices (column ``s``), with nulls in strings, floats and join keys.

    ``id`` is unique and follows input order; ``y`` is an int without nulls; ``k1``/``k2``
    are join keys with nulls (``k2`` is an int with nulls, so a float in pandas).
    """
    rng = np.random.default_rng(seed)
    g = rng.choice(np.array(["a", "b", "c", None], dtype=object), rows)
    x = rng.integers(-5, 10, rows).astype("float64") + rng.choice([0.0, 0.5], rows)
    x[rng.random(rows) < 0.2] = np.nan
    k1 = rng.choice(np.array(["p", "q", "r", None], dtype=object), rows)
    k2 = rng.integers(1, 3, rows).astype("float64")
    k2[rng.random(rows) < 0.2] = np.nan
    frame = pd.DataFrame(
        {
            "s": rng.integers(1, 4, rows).astype("int64"),
            "id": np.arange(rows, dtype="int64"),
            "g": pd.Series(g, dtype=object),
            "x": x,
            "y": rng.integers(0, 5, rows).astype("int64"),
            "k1": pd.Series(k1, dtype=object),
            "k2": k2,
        }
    )
    # every slice must be non-empty and hold several values of each join key
    frame.loc[:2, "s"] = [1, 2, 3]
    return frame


def in_slice_order(frame: pd.DataFrame, by: str = "s") -> pd.DataFrame:
    """Rows as a run reads them: slice by slice in key order, input order within a slice."""
    return frame.sort_values(by, kind="stable").reset_index(drop=True)


def run(
    store: cb.Store,
    stages: str,
    output: str,
    *,
    inputs: str = "t: t",
    scheduler: str = "sync",
    **kwargs: Any,
) -> pd.DataFrame:
    """Run a blueprint made of ``stages`` (YAML, indented by 2) and return ``output`` as pandas."""
    text = blueprint(stages, output, inputs=inputs)
    result = cb.Blueprint.from_yaml(text).run(store, scheduler=scheduler, **kwargs)
    return result.outputs[output].compute().reset_index(drop=True)


def blueprint(stages: str, output: str, *, inputs: str = "t: t") -> str:
    """Blueprint YAML text with a fresh output dataset name."""
    dataset = f"out{next(_names)}"
    body = "\n".join(
        "  " + line if line.strip() else line for line in stages.strip("\n").splitlines()
    )
    ins = "\n".join(f"  {line.strip()}" for line in inputs.split(",") if line.strip())
    return f"name: test\ninputs:\n{ins}\nstages:\n{body}\noutputs:\n  {output}: {dataset}\n"


def sql(query: str, **tables: pd.DataFrame) -> pd.DataFrame:
    """``query`` run by DuckDB over ``tables``; NaN in a pandas float column is SQL NULL."""
    con = duckdb.connect()
    try:
        for name, frame in tables.items():
            con.register(name, pa.Table.from_pandas(frame, preserve_index=False))
        return con.execute(query).df()
    finally:
        con.close()


def _normal(column: pd.Series) -> pd.Series:
    if ptypes.is_bool_dtype(column.dtype) or ptypes.is_numeric_dtype(column.dtype):
        return pd.to_numeric(column.astype(object).where(column.notna(), np.nan)).astype("float64")
    values = column.astype(object)
    return values.where(column.notna(), None)


def normalize(frame: pd.DataFrame) -> pd.DataFrame:
    """Every numeric column as float64 (NaN for null), everything else object (None for null)."""
    return pd.DataFrame({name: _normal(frame[name]) for name in frame.columns}).reset_index(
        drop=True
    )


def _sorted(frame: pd.DataFrame, by: Sequence[str] | None) -> pd.DataFrame:
    keys = list(by) if by is not None else list(frame.columns)
    if not len(frame) or not keys:
        return frame
    return frame.sort_values(keys, na_position="last", kind="stable").reset_index(drop=True)


def assert_same(
    got: pd.DataFrame,
    want: pd.DataFrame,
    *,
    ordered: bool = False,
    by: Sequence[str] | None = None,
    rtol: float = 1e-9,
    atol: float = 1e-9,
) -> None:
    """Equal columns (in order) and rows; ``ordered=False`` ignores row order by sorting both
    by ``by`` (default: every column). Nulls equal nulls; floats compare with a tolerance."""
    assert list(got.columns) == list(want.columns), (list(got.columns), list(want.columns))
    g, w = normalize(got), normalize(want)
    if not ordered:
        g, w = _sorted(g, by), _sorted(w, by)
    assert len(g) == len(w), f"{len(g)} rows, want {len(w)}\n--- got\n{g}\n--- want\n{w}"
    for name in g.columns:
        a, b = g[name], w[name]
        context = f"column {name!r}\n--- got\n{g}\n--- want\n{w}"
        if a.dtype == "float64" and b.dtype == "float64":
            assert np.allclose(a.to_numpy(), b.to_numpy(), rtol=rtol, atol=atol, equal_nan=True), (
                context
            )
        else:
            assert [_cell(v) for v in a] == [_cell(v) for v in b], context


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


# -- the command line ---------------------------------------------------------------------------

CHANBATCH = Path(sys.executable).with_name("chanbatch")


@dataclass(frozen=True)
class Cli:
    """One finished ``chanbatch`` invocation."""

    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """stdout as exactly one JSON document."""
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return f"chanbatch {' '.join(self.args)} -> {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def cli(*args: str | os.PathLike[str], pythonpath: str | None = None, timeout: float = 120) -> Cli:
    """Run the installed ``chanbatch`` script (never raises on a non-zero exit)."""
    argv = [os.fspath(a) for a in args]
    env = {k: v for k, v in os.environ.items() if k != "CHANBATCH_STORE"}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.run(
        [str(CHANBATCH), *argv], capture_output=True, text=True, env=env, timeout=timeout
    )
    return Cli(tuple(argv), proc.returncode, proc.stdout, proc.stderr)


def assert_error_line(result: Cli, code: int, *needles: str) -> str:
    """Exit ``code``, exactly one ``Error: ...`` line on stderr, no traceback, nothing on stdout."""
    assert result.code == code, str(result)
    assert "Traceback" not in result.stderr, str(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), str(result)
    assert "internal error" not in lines[0], str(result)
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]
