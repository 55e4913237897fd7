"""Reading a slice's Parquet bytes (``snapshot.read.parse_parquet``): the table pyarrow's own
``ParquetFile.read`` gives for the same columns, whichever way the columns are named."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chanbatch.snapshot.freeze import encode_parquet
from chanbatch.snapshot.read import parse_parquet

TABLE = pa.table(
    {
        "a": pa.array([1, None, 3], pa.int64()),
        "s": pa.array([{"x": 1, "y": "p"}, None, {"x": 3, "y": None}]),
        "l": pa.array([[1.5], [], None], pa.list_(pa.float64())),
        "a.b": pa.array(["u", "v", None], pa.string()),
        "d": pa.array([0, 1, 2], pa.int32()).cast(pa.date32()),
        "t": pa.array(["q", "r", "q"], pa.string()),
    }
)


def _bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _reference(data: bytes, columns: list[str] | None) -> pa.Table:
    return pq.ParquetFile(pa.BufferReader(data)).read(columns=columns, use_threads=False)


@pytest.mark.parametrize(
    "columns",
    [
        None,
        ["a"],
        ["t", "a", "d"],  # another order than the file's
        ["a", "a"],
        ["s"],  # a struct: its leaves
        ["s.x"],  # a nested path
        ["l", "t"],  # a list
        ["a.b"],  # a flat column whose name has a dot
        ["missing", "a"],  # a name no column has: left out, as ParquetFile leaves it
        [],
    ],
)
def test_columns_as_parquet_file_reads_them(columns: list[str] | None) -> None:
    data = _bytes(TABLE)
    got = parse_parquet(data, columns)
    want = _reference(data, columns)
    assert got.schema == want.schema
    assert got.equals(want)
    assert got.schema.metadata == want.schema.metadata


def test_a_frozen_slice_reads_back() -> None:
    """A slice as the store writes it, its columns projected as a plan loads them."""
    table = pa.table({"k": ["x", "y"] * 50, "v": [float(i) for i in range(100)], "n": range(100)})
    data = bytes(encode_parquet(table))
    got = parse_parquet(data, ("v", "k"))
    assert got.column_names == ["v", "k"]
    assert got.column("v").to_pylist() == table.column("v").to_pylist()
    assert got.column("k").to_pylist() == table.column("k").to_pylist()
    assert parse_parquet(data).equals(pq.read_table(io.BytesIO(data)))
