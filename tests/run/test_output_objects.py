"""A run's output slice that is a result the cache stores as an object of its own names that
object instead of encoding the same rows again: the output is what DuckDB computes, its
snapshot id is the one freezing those rows afresh gives, and the objects it names are the
cache's, made young for gc. Rows that the output's type rules change are written anew."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import blake3
import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypokit import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chanbatch as cb
from chanbatch.snapshot.freeze import encode_parquet
from chanbatch.snapshot.freeze import write as write_module
from chanbatch.snapshot.read import parse_parquet

DAILY = """
name: daily
inputs: {t: sales}
stages:
  per_day:
    from: t
    per_slice: true
    group_by: [day, shop]
    aggregate: {n: count(), total: sum(amount), low: min(amount), tag: max(note)}
  marked:
    from: per_day
    derive: {big: "total > 100", half: "total / 2"}
outputs: {marked: OUTPUT}
"""


def sales(days: int, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = 12 * days
    amount = rng.normal(40, 60, rows).round(2)
    amount[::17] = -0.0
    frame = pd.DataFrame(
        {
            "day": np.repeat([dt.date(2024, 1, 1) + dt.timedelta(d) for d in range(days)], 12),
            "shop": rng.choice(["north", "south", "é-east"], rows),
            "amount": amount,
            "note": pd.array(rng.choice(["a", "b", None], rows), dtype="string"),
        }
    )
    return frame


def run(store: cb.Store, tmp_path: Path, output: str) -> cb.run.results.RunResult:
    path = tmp_path / f"{output}.yaml"
    path.write_text(DAILY.replace("OUTPUT", output))
    return cb.Blueprint.from_yaml(path).run(store, scheduler="sync")


def slice_objects(root: Path, snapshot: str) -> dict[str, list[str]]:
    """Slice key -> object ids of a snapshot, read from its manifests on disk."""

    def manifest(mid: str) -> dict:
        data = (root / "manifests" / mid[:2] / f"{mid[2:]}.json").read_bytes()
        assert blake3.blake3(data).hexdigest() == mid
        return json.loads(data)

    return {
        s["key"]: [p["object"] for p in manifest(s["id"])["parts"]]
        for s in manifest(snapshot)["slices"]
    }


def cache_objects(root: Path, stage: str) -> set[str]:
    """Object ids the cache's own entry files name for ``stage``'s results."""
    found = set()
    for path in (root / "cache").glob("*.json"):
        doc = json.loads(path.read_bytes())
        if doc.get("stage") == stage and "range" not in doc:
            found.update(doc["objects"])
    return found


def object_path(root: Path, oid: str) -> Path:
    return root / "objects" / oid[:2] / oid[2:]


def duckdb_answer(frame: pd.DataFrame) -> pd.DataFrame:
    got = duckdb.sql(
        """
        SELECT day, shop, count(*) AS n, sum(amount) AS total, min(amount) AS low,
               max(note) AS tag, sum(amount) > 100 AS big, sum(amount) / 2 AS half
        FROM frame GROUP BY day, shop ORDER BY day, shop
        """
    ).df()
    got["day"] = got["day"].dt.date
    return got.reset_index(drop=True)


def read_output(store: cb.Store, dataset: str, snapshot: str, by: list[str]) -> pd.DataFrame:
    got = store.read(f"{dataset}@{snapshot}").compute()
    return got.sort_values(by).reset_index(drop=True)


def test_a_sliced_output_names_the_cache_objects_of_its_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = sales(30)
    store = cb.Store(tmp_path / "store")
    store.freeze("sales", frame, slice_by="day")
    encoded = []
    write_object = write_module._write_object
    monkeypatch.setattr(
        write_module, "_write_object", lambda *a: encoded.append(1) or write_object(*a)
    )
    result = run(store, tmp_path, "daily_out")
    assert encoded == []  # no output slice was encoded again
    snapshot = result.snapshots["marked"]["snapshot"]
    root = tmp_path / "store"

    got = read_output(store, "daily_out", snapshot, ["day", "shop"])
    want = duckdb_answer(frame)
    assert list(got["day"]) == list(want["day"]) and list(got["shop"]) == list(want["shop"])
    assert got["n"].tolist() == want["n"].tolist()
    np.testing.assert_allclose(got["total"], want["total"], rtol=1e-12)
    np.testing.assert_allclose(got["half"], want["half"], rtol=1e-12)
    assert got["low"].tolist() == want["low"].tolist()
    assert got["big"].tolist() == want["big"].tolist()
    assert got["tag"].fillna("-").tolist() == want["tag"].fillna("-").tolist()

    # every output slice is one object, and it is the object the cache stored the result in
    objects = slice_objects(root, snapshot)
    assert len(objects) == 30 and all(len(ids) == 1 for ids in objects.values())
    stored = cache_objects(root, "marked")
    assert {ids[0] for ids in objects.values()} <= stored

    # and it holds the bytes a freeze of the same rows from scratch writes: same snapshot id
    fresh = cb.Store(tmp_path / "fresh")
    rows = {
        key: parse_parquet(object_path(root, ids[0]).read_bytes()) for key, ids in objects.items()
    }
    again = fresh.freeze("daily_out", {dt.date.fromisoformat(k): t for k, t in rows.items()})
    assert again.snapshot == snapshot


def test_an_output_of_cached_results_names_them_and_makes_them_young(tmp_path: Path) -> None:
    frame = sales(20)
    root = tmp_path / "store"
    store = cb.Store(root)
    store.freeze("sales", frame, slice_by="day")
    first = run(store, tmp_path, "first_out")
    stored = cache_objects(root, "marked")
    old = time.time() - 3 * 86400
    for oid in stored:
        os.utime(object_path(root, oid), (old, old))

    # another output of the same stages: every result is cached, read, and named again
    second = run(store, tmp_path, "second_out")
    assert second.stats["computed"] == 0
    snapshot = second.snapshots["marked"]["snapshot"]
    assert snapshot == first.snapshots["marked"]["snapshot"]
    named = {ids[0] for ids in slice_objects(root, snapshot).values()}
    assert named == stored
    assert all(object_path(root, oid).stat().st_mtime > time.time() - 600 for oid in named)

    # gc with a grace shorter than the objects' old age keeps every one of them
    chanbatch = Path(sys.executable).with_name("chanbatch")
    gc = subprocess.run(
        [str(chanbatch), "gc", "--grace", "1h", "--store", str(root)], capture_output=True
    )
    assert gc.returncode == 0, gc.stderr
    assert all(object_path(root, oid).exists() for oid in named)
    got = read_output(store, "second_out", snapshot, ["day", "shop"])
    assert got["n"].sum() == len(frame)
    assert got["total"].sum() == pytest.approx(frame["amount"].sum(), rel=1e-12)


WIDENED = """
name: mixed
inputs: {t: sales}
stages:
  picked:
    from: t
    map: {function: 'udfs:whole_or_fractions', version: '1'}
    per_slice: true
outputs: {picked: mixed_out}
"""


def test_rows_whose_type_the_output_widens_are_written_anew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A day whose result is int64 where the other days' are double: the output holds doubles
    on every day, so that day's cached object (int64) is not its output object."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    frame = pd.DataFrame(
        {
            "day": [dt.date(2024, 1, 1)] * 3 + [dt.date(2024, 1, 2)] * 3,
            "part": [1.0, 2.0, 3.0, 1.5, 2.5, 3.5],
        }
    )
    root = tmp_path / "store"
    store = cb.Store(root)
    store.freeze("sales", frame, slice_by="day")
    result = cb.Blueprint.from_yaml(WIDENED).run(store, scheduler="sync", allow_modules=("udfs",))
    snapshot = result.snapshots["picked"]["snapshot"]
    objects = slice_objects(root, snapshot)
    stored = {
        str(pq.read_schema(object_path(root, oid)).field("v").type): oid
        for oid in cache_objects(root, "picked")
    }
    assert sorted(stored) == ["double", "int64"]  # the days' results disagree, as meant
    types = {
        key: str(pq.read_schema(object_path(root, ids[0])).field("v").type)
        for key, ids in objects.items()
    }
    assert types == {"2024-01-01": "double", "2024-01-02": "double"}
    assert objects["2024-01-01"] != [stored["int64"]]
    assert objects["2024-01-02"] == [stored["double"]]  # named: the same rows as stored
    got = read_output(store, "mixed_out", snapshot, ["day", "v"])
    assert got["v"].tolist() == [1.0, 2.0, 3.0, 1.5, 2.5, 3.5]
    assert str(got["v"].dtype) in ("float64", "double[pyarrow]")


cells = {
    "int64": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
    "double": st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.just(-0.0)),
    "string": st.one_of(st.none(), st.text(max_size=6)),
    "bool": st.one_of(st.none(), st.booleans()),
    "date32[day]": st.one_of(st.none(), st.dates()),
    "timestamp[us, tz=UTC]": st.one_of(
        st.none(),
        st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1)).map(
            lambda d: d.replace(tzinfo=dt.UTC)
        ),
    ),
    "decimal128(15, 2)": st.one_of(
        st.none(), st.decimals(min_value=-(10**12), max_value=10**12, places=2)
    ),
}
TYPES = {
    "int64": pa.int64(),
    "double": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "date32[day]": pa.date32(),
    "timestamp[us, tz=UTC]": pa.timestamp("us", tz="UTC"),
    "decimal128(15, 2)": pa.decimal128(15, 2),
}


@st.composite
def tables(draw: st.DrawFn) -> pa.Table:
    names = draw(st.lists(st.sampled_from(sorted(cells)), min_size=1, max_size=5, unique=True))
    rows = draw(st.integers(0, 40))
    columns = {n: draw(st.lists(cells[n], min_size=rows, max_size=rows)) for n in names}
    return pa.table({n: pa.array(v, type=TYPES[n]) for n, v in columns.items()})


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_an_object_read_back_encodes_to_its_own_bytes(table: pa.Table) -> None:
    """What naming a cached object as an output slice relies on: the rows read from an object
    (in one chunk) encode to that object's bytes, for every column type a store holds."""
    data = bytes(encode_parquet(table))
    back = parse_parquet(data)
    assert all(c.num_chunks <= 1 for c in back.columns)
    assert back.schema.equals(table.schema, check_metadata=True)
    assert back.num_rows == table.num_rows
    assert bytes(encode_parquet(back)) == data
