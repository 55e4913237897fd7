"""Freezing by a column writes, for each slice, exactly the bytes of one ``pq.write_table``.

Freeze cuts its input in batches and copies slices out in waves (chanbatch/snapshot/freeze/,
cut.py and write.py); none of that may show in an object's bytes, or the same data would get
new ids. The expected bytes here are computed without chanbatch: the input cast to the
documented normal types by hand, one ``filter`` per key, ``pq.write_table`` with the store's
writer options, blake3.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from storekit import b3, files, manifest_rel

import chanbatch
from chanbatch.snapshot.freeze import cut as cut_module
from chanbatch.snapshot.freeze import write as write_module
from chanbatch.snapshot.normalize import WRITE_OPTIONS

ROWS = 6_000

# (batch rows, wave bytes): the defaults; many batches and waves; every slice its own wave.
SPLITS = [None, (500, 300_000), (700, 1)]


def mixed_table(rows: int = ROWS, seed: int = 11) -> tuple[pa.Table, dict[str, pa.DataType]]:
    """A table with every type freeze normalises, keys scattered; and each column's normal type."""
    rng = np.random.default_rng(seed)
    words = np.array(["a", "bb", "a string longer than twelve bytes", "", "zz-top", "ümlaut"])
    text = words[rng.integers(0, len(words), rows)].tolist()
    nulls = rng.random(rows) < 0.1
    base_ns = 1_600_000_000_000_000_000 + rng.integers(0, 10**15, rows)
    columns: dict[str, tuple[pa.Array, pa.DataType]] = {
        "k": (pa.array(rng.integers(0, 9, rows)), pa.int64()),
        "month": (
            pa.array([f"2013-{m:02d}" for m in rng.integers(1, 13, rows)], pa.string_view()),
            pa.string(),
        ),
        "sv": (pa.array(text, pa.string_view(), mask=nulls), pa.string()),
        "ls": (pa.array(text[::-1], pa.large_string(), mask=nulls[::-1]), pa.string()),
        "dc": (pa.array(text).dictionary_encode(), pa.string()),
        "bv": (pa.array([t.encode() for t in text], pa.binary_view()), pa.binary()),
        "ts_ns": (pa.array(base_ns, pa.timestamp("ns")), pa.timestamp("ns", tz="UTC")),
        "ts_us": (
            pa.array(base_ns // 1000 * 1000, pa.timestamp("ns")),
            pa.timestamp("us", tz="UTC"),
        ),
        "day": (pa.array(rng.integers(0, 20_000, rows).astype("int32"), pa.date32()), pa.date32()),
        "price": (
            pa.array(
                [Decimal(int(c)).scaleb(-2) for c in rng.integers(0, 10**8, rows)],
                pa.decimal128(12, 2),
            ),
            pa.decimal128(12, 2),
        ),
        "f": (pa.array(rng.normal(size=rows), mask=rng.random(rows) < 0.05), pa.float64()),
        "b": (pa.array(rng.random(rows) < 0.5), pa.bool_()),
        "lst": (
            pa.array(
                [[t, t] if i % 3 else [] for i, t in enumerate(text)], pa.list_(pa.string_view())
            ),
            pa.list_(pa.string()),
        ),
    }
    # several chunks, as a table read from files or built in pieces has
    table = pa.table({name: array for name, (array, _) in columns.items()})
    table = pa.concat_tables([table.slice(0, rows // 3), table.slice(rows // 3)])
    return table, {name: normal for name, (_, normal) in columns.items()}


def expected_objects(
    tables: list[pa.Table], normal: dict[str, pa.DataType], column: str
) -> dict[Any, bytes]:
    """Slice key -> the Parquet bytes of that slice, computed with pyarrow alone."""
    whole = pa.concat_tables(
        pa.table({name: t[name].cast(normal[name]) for name in t.column_names}) for t in tables
    )
    out = {}
    for key in pc.unique(whole[column]).to_pylist():
        rows = whole.filter(pc.equal(whole[column], key)).combine_chunks()
        sink = pa.BufferOutputStream()
        pq.write_table(rows, sink, **WRITE_OPTIONS)
        out[key] = sink.getvalue().to_pybytes()
    return out


def stored_objects(url: str, info: Any) -> dict[Any, list[bytes]]:
    """Slice key -> the bytes of its objects, read from the store's files by their manifests."""
    stored = files(url)
    out = {}
    for s in info.slices:
        manifest = json.loads(stored[manifest_rel(s.id)])
        oids = [part["object"] for part in manifest["parts"]]
        out[s.key] = [stored[f"objects/{oid[:2]}/{oid[2:]}"] for oid in oids]
        assert [b3(data) for data in out[s.key]] == oids
    return out


@pytest.fixture(params=SPLITS, ids=["defaults", "many-waves", "wave-per-slice"])
def split_sizes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    if request.param is not None:
        batch, wave = request.param
        monkeypatch.setattr(cut_module, "_BATCH_ROWS", batch)
        monkeypatch.setattr(cut_module, "_WAVE_BYTES", wave)
    return request.param


@pytest.mark.parametrize("column", ["k", "month"])
def test_each_object_is_write_table_of_its_slice(
    store: chanbatch.Store, store_url: str, split_sizes: Any, column: str
) -> None:
    table, normal = mixed_table()
    expected = expected_objects([table], normal, column)

    info = store.freeze("mixed", table, slice_by=column)
    got = stored_objects(store_url, info)

    assert sorted(got) == sorted(expected)
    for key, blobs in got.items():
        assert blobs == [expected[key]], f"slice {key}: bytes differ from write_table's"
    for s in info.slices:
        assert s.rows == pq.read_table(pa.BufferReader(expected[s.key])).num_rows
        assert s.bytes == len(expected[s.key])


def test_split_and_given_slices_get_the_same_ids(store: chanbatch.Store, split_sizes: Any) -> None:
    """Cut by a column, or handed over one table per key: the same slice ids and objects."""
    table, normal = mixed_table(seed=5)
    whole = pa.table({name: table[name].cast(normal[name]) for name in table.column_names})
    by_key = {
        key: whole.filter(pc.equal(whole["k"], key)) for key in pc.unique(whole["k"]).to_pylist()
    }

    split = store.freeze("split", table, slice_by="k")
    given = store.freeze("given", by_key)

    assert {s.key: s.id for s in split.slices} == {s.key: s.id for s in given.slices}
    assert [s.key for s in split.slices] == sorted(by_key)


def test_several_files_keep_their_order_inside_each_slice(
    tmp_path: Path, store: chanbatch.Store, store_url: str, split_sizes: Any
) -> None:
    """Rows of a slice come from the files in the order given, and in file order inside each."""
    first, normal = mixed_table(2_500, seed=1)
    second, _ = mixed_table(3_500, seed=2)
    paths = []
    for i, t in enumerate((first, second)):
        paths.append(tmp_path / f"part{i}.parquet")
        pq.write_table(t, paths[-1])
    # as read back from Parquet (strings may come back as another string type)
    read = [pq.read_table(p) for p in paths]
    expected = expected_objects(read, normal, "k")

    info = store.freeze("files", [str(p) for p in paths], slice_by="k")
    got = stored_objects(store_url, info)

    assert got == {key: [data] for key, data in expected.items()}


def test_batches_of_one_key_are_written_as_they_are(
    store: chanbatch.Store, store_url: str, split_sizes: Any
) -> None:
    """Input already grouped by key (one key per chunk, as files of one month each are): the
    same bytes as from scattered rows."""
    tables = []
    for key in (3, 1, 2, 3):
        part, normal = mixed_table(1_200, seed=key)
        tables.append(part.set_column(0, "k", pa.array([key] * part.num_rows)))
    table = pa.concat_tables(tables)
    expected = expected_objects([table], normal, "k")

    info = store.freeze("grouped", table, slice_by="k")

    assert stored_objects(store_url, info) == {key: [data] for key, data in expected.items()}
    assert [s.rows for s in info.slices] == [1_200, 1_200, 2_400]


def test_progress_counts_every_slice_in_order_across_waves(
    store: chanbatch.Store, split_sizes: Any
) -> None:
    table, _ = mixed_table()
    calls: list[tuple[int, int]] = []

    info = store.freeze(
        "mixed", table, slice_by="month", progress=lambda d, t: calls.append((d, t))
    )

    assert calls == [(i, len(info.slices)) for i in range(1, len(info.slices) + 1)]


def test_a_failing_write_stops_the_freeze_and_commits_nothing(
    store: chanbatch.Store, split_sizes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    table, _ = mixed_table()
    written = []

    def fail_on_third(storage: Any, chunk: pa.Table) -> Any:
        if len(written) == 2:
            raise OSError("disk full")
        written.append(chunk.num_rows)
        return original(storage, chunk)

    original = write_module._write_object
    monkeypatch.setattr(write_module, "_write_object", fail_on_third)

    with pytest.raises(OSError, match="disk full"):
        store.freeze("mixed", table, slice_by="month")
    assert store.datasets() == []


def test_decimals_of_up_to_18_digits_are_stored_as_integers(
    store: chanbatch.Store, store_url: str
) -> None:
    """A decimal of up to 18 digits is written as Parquet INT32 or INT64 (read back with no byte
    swap per value); a wider one stays fixed-size bytes. DuckDB, reading the stored objects on
    its own, gives back every value exactly, and so does the store."""
    import duckdb

    rng = np.random.default_rng(3)
    rows = 2_000
    values = {
        "d9": [Decimal(int(c)).scaleb(-2) for c in rng.integers(-(10**8), 10**8, rows)],
        "d18": [Decimal(int(c)).scaleb(-4) for c in rng.integers(-(10**17), 10**17, rows)],
        "d38": [Decimal(int(c) * 10**12).scaleb(-6) for c in rng.integers(-(10**17), 10**17, rows)],
    }
    types = {"d9": pa.decimal128(9, 2), "d18": pa.decimal128(18, 4), "d38": pa.decimal128(38, 6)}
    keys = rng.integers(0, 3, rows)
    table = pa.table(
        {"k": pa.array(keys)}
        | {
            name: pa.array(v, types[name], mask=rng.random(rows) < 0.1)
            for name, v in values.items()
        }
    )

    info = store.freeze("money", table, slice_by="k")

    stored = stored_objects(store_url, info)
    for s in info.slices:
        (blob,) = stored[s.key]
        schema = pq.ParquetFile(pa.BufferReader(blob)).schema
        physical = {schema.column(i).name: schema.column(i).physical_type for i in range(4)}
        assert physical == {
            "k": "INT64",
            "d9": "INT32",
            "d18": "INT64",
            "d38": "FIXED_LEN_BYTE_ARRAY",
        }
        expected = table.filter(pc.equal(table["k"], s.key))
        # DuckDB reads the object's bytes itself: its decimals are Python Decimals, exact
        arrow = pq.read_table(pa.BufferReader(blob))
        got = duckdb.sql("SELECT d9, d18, d38 FROM arrow").fetchall()
        assert got == list(zip(*(expected[name].to_pylist() for name in values), strict=True))
        assert arrow.schema.field("d18").type == pa.decimal128(18, 4)
    back = store.read("money").compute()
    in_key_order = pa.concat_tables(
        table.filter(pc.equal(table["k"], k)) for k in sorted(set(keys.tolist()))
    )
    assert str(back["d18"].dtype) == "decimal128(18, 4)[pyarrow]"
    assert pa.array(back["d18"]).to_pylist() == in_key_order["d18"].to_pylist()
