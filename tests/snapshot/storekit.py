"""Helpers for the store tests: sample data, independent checks, raw file access.

Everything here is written against the contracts in DESIGN.md (the store layout, blake3 of
canonical JSON, the normalisation rules), not against chanbatch's own helpers, so that a test
never checks the code under test with a copy of itself.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import blake3
import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa

HEX64 = r"^[0-9a-f]{64}$"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# -- sample data ------------------------------------------------------------------------------


def flights(rows: int = 60, *, seed: int = 0, months: int = 3) -> pd.DataFrame:
    """A small flights-like frame with every column type the store normalises."""
    rng = np.random.default_rng(seed)
    month = rng.integers(1, months + 1, rows)
    day = rng.integers(1, 29, rows)
    carriers = np.array(["AA", "B6", "DL", "UA", "WN"], dtype=object)
    carrier = carriers[rng.integers(0, len(carriers), rows)]
    carrier[rng.random(rows) < 0.1] = None
    delay = rng.normal(10, 30, rows).round(1)
    delay[rng.random(rows) < 0.1] = np.nan
    return pd.DataFrame(
        {
            "month": pd.Series([f"2013-{m:02d}" for m in month], dtype="str"),
            "day": day.astype("int64"),
            "date": [dt.date(2013, int(m), int(d)) for m, d in zip(month, day, strict=True)],
            "carrier": pd.Series(carrier, dtype="str"),
            "dep_delay": delay,
            "dep_time": pd.to_datetime(
                [
                    f"2013-{m:02d}-{d:02d} {h:02d}:15:00"
                    for m, d, h in zip(month, day, day % 24, strict=True)
                ]
            ).as_unit("us"),
            "flight": rng.integers(1, 5000, rows).astype("int64"),
        }
    )


def normalised(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` as the store documents it comes back: UTC timestamps, Arrow strings, Arrow dates,
    no index."""
    out = {}
    for name in df.columns:
        col = df[name]
        if isinstance(col.dtype, pd.CategoricalDtype):
            col = col.astype(col.cat.categories.dtype)
        if isinstance(col.dtype, pd.DatetimeTZDtype):
            col = col.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
        elif pd.api.types.is_datetime64_dtype(col.dtype):
            col = col.dt.tz_localize("UTC").astype("datetime64[us, UTC]")
        elif col.dtype == object and all(isinstance(v, str) or v is None for v in col):
            col = col.astype("str")
        elif col.dtype == object and all(
            (isinstance(v, dt.date) and not isinstance(v, dt.datetime)) or v is None for v in col
        ):
            col = col.astype(pd.ArrowDtype(pa.date32()))
        out[name] = col.reset_index(drop=True)
    return pd.DataFrame(out)


def in_slice_order(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """Rows grouped by ``column`` in natural key order, input order kept inside each group."""
    parts = [group for _key, group in df.groupby(column, sort=True, dropna=False)]
    return pd.concat(parts).reset_index(drop=True) if parts else df.iloc[0:0]


def assert_same_rows(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """``got`` holds exactly ``expected``'s rows after normalisation, dtypes included.

    Either pandas flavour of an Arrow-backed string column (``str`` with NaN, or dask's
    ``string[pyarrow]`` with NA) counts as an Arrow string.
    """
    got = got.reset_index(drop=True).copy()
    for name in got.columns:
        dtype = got[name].dtype
        if isinstance(dtype, pd.StringDtype):
            assert dtype.storage == "pyarrow", f"column {name!r} is not Arrow-backed: {dtype}"
            got[name] = got[name].astype("str")
    pd.testing.assert_frame_equal(got, normalised(expected), check_dtype=True)


# -- raw store access -------------------------------------------------------------------------


def fs_root(url: str) -> tuple[Any, str]:
    fs, root = fsspec.core.url_to_fs(url)
    return fs, root.rstrip("/")


def files(url: str, *, skip_tmp: bool = True) -> dict[str, bytes]:
    """Every file in the store at ``url``: path relative to the root -> contents."""
    fs, root = fs_root(url)
    if not fs.exists(root):
        return {}
    found = {}
    for path in fs.find(root):
        rel = path[len(root) :].lstrip("/")
        if skip_tmp and rel.startswith("tmp/"):
            continue
        found[rel] = fs.cat_file(path)
    return found


def object_rel(oid: str) -> str:
    return f"objects/{oid[:2]}/{oid[2:]}"


def manifest_rel(mid: str) -> str:
    return f"manifests/{mid[:2]}/{mid[2:]}.json"


def ref_rels(url: str, dataset: str) -> list[str]:
    return sorted(p for p in files(url) if p.startswith(f"refs/{dataset}/"))


def read_json(url: str, rel: str) -> Any:
    fs, root = fs_root(url)
    return json.loads(fs.cat_file(f"{root}/{rel}"))


def flip_byte(url: str, rel: str, position: int | None = None) -> None:
    """Flip the low bit of one byte of a stored file (the middle one by default)."""
    fs, root = fs_root(url)
    path = f"{root}/{rel}"
    data = bytearray(fs.cat_file(path))
    i = len(data) // 2 if position is None else position
    data[i] ^= 0x01
    fs.pipe_file(path, bytes(data))


def put(url: str, rel: str, data: bytes) -> None:
    """Write a file into the store at ``url`` behind chanbatch's back."""
    fs, root = fs_root(url)
    path = f"{root}/{rel}"
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, data)


def delete(url: str, rel: str) -> None:
    fs, root = fs_root(url)
    fs.rm_file(f"{root}/{rel}")


def slice_objects(url: str, slice_id: str) -> list[str]:
    """Object ids a slice manifest names, read straight from the manifest file."""
    return [p["object"] for p in read_json(url, manifest_rel(slice_id))["parts"]]


def b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def canonical(document: Any) -> bytes:
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


# -- subprocesses -----------------------------------------------------------------------------


def python(
    code: str,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter and return the finished process (checked)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def popen(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``code`` in a fresh interpreter, stdout piped."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
