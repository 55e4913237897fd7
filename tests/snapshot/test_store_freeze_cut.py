"""Cutting by a column gives each slice exactly the rows a filter per key gives, in input order.

Freeze groups each input batch's rows by key in one ``take`` and puts a slice together from its
rows in every batch (chanbatch/snapshot/freeze/cut.py, write.py). The reference here cuts
without chanbatch's cutting: one pyarrow ``filter`` per key (or a pandas boolean mask), each
slice handed over whole, which takes another path through freeze (no cut, no grouping). Both
must name the same slices and objects.
"""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import chanbatch
from chanbatch.snapshot.freeze import cut as cut_module
from chanbatch.snapshot.freeze.load import _Input
from chanbatch.snapshot.normalize import normalize_schema
from chanbatch.snapshot.store import SnapshotStore


def typed_table(rows: int, keys: int, seed: int) -> pa.Table:
    """Rows scattered over ``keys`` day keys, with dictionary, decimal, zoned timestamp and
    nullable string columns."""
    rng = np.random.default_rng(seed)
    words = np.array(["ship", "rail", "a longer string than a view inlines", "", "ümlaut"])
    text = words[rng.integers(0, len(words), rows)].tolist()
    day = (dt.date(1992, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, keys, rows))
    return pa.table(
        {
            "day": pa.array(list(day), pa.date32()),
            "mode": pa.array(text).dictionary_encode(),
            "price": pa.array(
                [Decimal(int(c)).scaleb(-2) for c in rng.integers(0, 10**9, rows)],
                pa.decimal128(15, 2),
            ),
            "at": pa.array(
                1_600_000_000_000_000 + rng.integers(0, 10**12, rows), pa.timestamp("us", "UTC")
            ),
            "note": pa.array(text[::-1], mask=rng.random(rows) < 0.2),
            "n": pa.array(rng.integers(-(10**6), 10**6, rows)),
        }
    )


def by_filter(table: pa.Table, column: str) -> dict[Any, pa.Table]:
    """Each key's rows, by one pyarrow filter per key."""
    return {
        key: table.filter(pc.equal(table[column], pa.scalar(key, table[column].type)))
        for key in pc.unique(table[column]).to_pylist()
    }


def ids(info: Any) -> dict[Any, str]:
    return {s.key: s.id for s in info.slices}


@pytest.mark.parametrize("batch_rows", [None, 700])
def test_a_file_of_many_row_groups_and_many_keys_is_cut_as_filters_cut_it(
    tmp_path: Path, local_store: chanbatch.Store, batch_rows: int | None, monkeypatch: Any
) -> None:
    """600 day keys, every slice's rows spread over many row groups and batches."""
    if batch_rows is not None:
        monkeypatch.setattr(cut_module, "_BATCH_ROWS", batch_rows)
    table = typed_table(12_000, 600, seed=3)
    path = tmp_path / "lineitem.parquet"
    pq.write_table(table, path, row_group_size=1_000)
    read = pq.read_table(path)  # the table as freeze reads it (the dictionary decoded)
    assert read.num_rows == table.num_rows

    cut = local_store.freeze("cut", str(path), slice_by="day")
    given = local_store.freeze("given", by_filter(read, "day"))

    assert len(cut.slices) == len(pc.unique(table["day"]))
    assert ids(cut) == ids(given)
    assert [s.key for s in cut.slices] == sorted(ids(given))
    assert sum(s.rows for s in cut.slices) == table.num_rows


def test_a_table_with_dictionary_columns_is_cut_as_filters_cut_it(
    store: chanbatch.Store, monkeypatch: Any
) -> None:
    monkeypatch.setattr(cut_module, "_BATCH_ROWS", 500)
    table = typed_table(3_000, 40, seed=5)
    decoded = table.set_column(1, "mode", table["mode"].cast(pa.string()))

    cut = store.freeze("cut", table, slice_by="day")
    given = store.freeze("given", by_filter(decoded, "day"))

    assert ids(cut) == ids(given)


def test_rows_keep_input_order_as_a_pandas_mask_keeps_it(local_store: chanbatch.Store) -> None:
    """The rows read back are, slice by slice, the rows a pandas mask selects, in input order."""
    table = typed_table(5_000, 30, seed=7).drop_columns(["mode"])
    frame = table.to_pandas()

    local_store.freeze("cut", table, slice_by="day")
    got = local_store.read_pandas("cut")

    want = [frame[frame["day"] == day] for day in sorted(frame["day"].unique())]
    assert got["n"].tolist() == [n for part in want for n in part["n"].tolist()]
    assert got["price"].tolist() == [p for part in want for p in part["price"].tolist()]


class TensKey:
    """A computed slice key: ``n // 100_000`` (what ``--slice-by EXPR`` hands the snapshot
    layer)."""

    text = "n // 100000"
    columns = ("n",)

    def __call__(self, batch: pa.RecordBatch) -> pa.Array:
        values = batch.column("n").to_numpy()
        return pa.array(values // 100_000)


def test_a_computed_key_cuts_as_filters_on_that_key_cut(
    local_store: chanbatch.Store, monkeypatch: Any
) -> None:
    monkeypatch.setattr(cut_module, "_BATCH_ROWS", 800)
    table = typed_table(4_000, 20, seed=9)
    keys = pa.array(table["n"].to_numpy() // 100_000)
    decoded = table.set_column(1, "mode", table["mode"].cast(pa.string()))
    expected = {key: decoded.filter(pc.equal(keys, key)) for key in pc.unique(keys).to_pylist()}

    # the snapshot layer's freeze, given the key function (the API builds one from the text)
    cut = SnapshotStore.freeze(local_store, "cut", table, slice_by=TensKey.text, key_of=TensKey())
    given = local_store.freeze("given", expected)

    assert ids(cut) == ids(given)


def test_cutting_lets_go_of_the_input_table(monkeypatch: Any) -> None:
    """Each batch's grouped copy takes its place: the input keeps its schema, not its rows."""
    monkeypatch.setattr(cut_module, "_BATCH_ROWS", 1_000)
    table = typed_table(6_000, 50, seed=11)
    item = _Input(label="input", table=table, lazy=True)
    schema = normalize_schema(table.schema)

    cuts = cut_module._split([item], "day", schema)

    assert item.table.num_rows == 0 and item.table.schema == table.schema
    assert [c.seq for c in cuts] == list(range(6))
    assert sum(c.batch.num_rows for c in cuts) == table.num_rows
    for c in cuts:  # each key's rows together: spans that tile the batch
        days = c.batch.column("day").to_pylist()
        tiles = sorted(c.spans.values())
        assert tiles[0][0] == 0 and tiles[-1][1] == c.batch.num_rows
        assert all(a[1] == b[0] for a, b in itertools.pairwise(tiles))
        for key, (start, end) in c.spans.items():
            assert set(days[start:end]) == {key}
