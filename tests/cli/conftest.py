"""Fixtures for the CLI tests: source files written with pandas, and fresh store paths.

The helpers live in ``clikit``; test modules import them from there, never from this file,
because several ``conftest`` modules share that name.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from clikit import PERIODS, csv_frame, sample_frame


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store path that does not exist yet."""
    return tmp_path / "snapshots"


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """A directory for the source files a test freezes."""
    path = tmp_path / "src"
    path.mkdir()
    return path


@pytest.fixture
def orders(src: Path) -> tuple[pd.DataFrame, Path]:
    """:func:`sample_frame` written as one Parquet file."""
    df = sample_frame()
    path = src / "orders.parquet"
    df.to_parquet(path, index=False)
    return df, path


@pytest.fixture
def monthly_csv(src: Path) -> dict[str, tuple[pd.DataFrame, Path]]:
    """One CSV file per period, named by it: the files a stem-keyed freeze takes."""
    out = {}
    for i, period in enumerate(PERIODS):
        df = csv_frame(seed=i + 1)
        path = src / f"{period}.csv"
        df.to_csv(path, index=False)
        out[period] = (df, path)
    return out
