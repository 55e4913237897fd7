"""The ``--json`` documents of DESIGN.md section 3, checked against the files on disk.

Every value is computed independently: row counts with pandas on the source files, ids as
blake3 of the bytes in ``objects/`` and ``manifests/``, sizes with ``stat``, column statistics
with pandas.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from clikit import (
    HEX64,
    PERIODS,
    b3,
    object_file,
    ok,
    ok_json,
    read_manifest,
    stored_ids,
)

# "healed": slices whose damaged objects a freeze rewrote (a count, and a flag per slice)
FREEZE_KEYS = {"dataset", "snapshot", "slices", "healed"}
FREEZE_SLICE_KEYS = {"key", "id", "rows", "bytes", "new", "replaced", "healed"}
INSPECT_KEYS = {"dataset", "snapshot", "rows", "bytes", "schema", "slices"}
INSPECT_SLICE_KEYS = {"key", "id", "rows", "bytes"}


def slice_objects(store: Path, slice_id: str) -> list[str]:
    """The object ids of a slice, after checking the manifest and each object's hash."""
    doc = read_manifest(store, slice_id)
    assert doc["kind"] == "slice"
    oids = [part["object"] for part in doc["parts"]]
    for oid in oids:
        assert b3(object_file(store, oid).read_bytes()) == oid
    return oids


def test_freeze_json_slice_by_parquet(store: Path, orders: tuple[pd.DataFrame, Path]) -> None:
    df, path = orders
    result = ok("snapshot", "freeze", "orders", path, "--slice-by", "period", "--json", store=store)
    assert result.stderr == ""
    doc = result.json()

    assert set(doc) == FREEZE_KEYS
    assert doc["dataset"] == "orders"
    assert re.match(HEX64, doc["snapshot"])
    assert all(set(s) == FREEZE_SLICE_KEYS for s in doc["slices"])
    assert [s["key"] for s in doc["slices"]] == sorted(df["period"].unique())
    expected_rows = df.groupby("period").size()
    for s in doc["slices"]:
        assert s["new"] is True
        assert re.match(HEX64, s["id"])
        assert s["rows"] == expected_rows[s["key"]]
        oids = slice_objects(store, s["id"])
        assert s["bytes"] == sum(object_file(store, o).stat().st_size for o in oids)
        # the slice holds exactly that period's rows, in input order
        got = pd.concat([pq.read_table(object_file(store, o)).to_pandas() for o in oids])
        want = df[df["period"] == s["key"]]
        pd.testing.assert_frame_equal(
            got.reset_index(drop=True), want.reset_index(drop=True), check_dtype=False
        )

    snapshot = read_manifest(store, doc["snapshot"])
    assert snapshot["kind"] == "snapshot"
    assert snapshot["slices"] == [
        {k: s[k] for k in ("key", "id", "rows", "bytes")} for s in doc["slices"]
    ]
    assert snapshot["rows"] == len(df)
    ref = (store / "refs" / "orders" / "000000000001.json").read_text()
    assert doc["snapshot"] in ref


def test_inspect_json_values(store: Path, orders: tuple[pd.DataFrame, Path]) -> None:
    df, path = orders
    frozen = ok_json("snapshot", "freeze", "orders", path, "--slice-by", "period", store=store)
    doc = ok_json("snapshot", "inspect", "orders", store=store)

    assert set(doc) >= INSPECT_KEYS
    assert doc["dataset"] == "orders"
    assert doc["snapshot"] == frozen["snapshot"]
    assert doc["rows"] == len(df)
    assert doc["bytes"] == sum(p.stat().st_size for p in (store / "objects").glob("*/*"))
    assert doc["slices"] == [
        {k: s[k] for k in ("key", "id", "rows", "bytes")} for s in frozen["slices"]
    ]
    assert all(set(s) == INSPECT_SLICE_KEYS for s in doc["slices"])

    # the schema: columns in source order, types normalised at freeze (Arrow strings, UTC)
    assert all(set(c) == {"name", "type"} for c in doc["schema"])
    assert doc["schema"] == [
        {"name": "period", "type": "string"},
        {"name": "day", "type": "int64"},
        {"name": "carrier", "type": "string"},
        {"name": "delay", "type": "double"},
        {"name": "when", "type": "timestamp[us, tz=UTC]"},
        {"name": "n", "type": "int64"},
    ]
    oid = slice_objects(store, doc["slices"][0]["id"])[0]
    on_disk = pq.read_schema(object_file(store, oid))
    assert [(f.name, str(f.type)) for f in on_disk] == [
        (c["name"], c["type"]) for c in doc["schema"]
    ]

    stats = {c["name"]: c for c in doc["columns"]}
    assert list(stats) == list(df.columns)
    for name in df.columns:
        col = df[name]
        assert stats[name]["nulls"] == int(col.isna().sum()), name
        lo, hi = stats[name]["min"], stats[name]["max"]
        if name == "when":
            lo, hi = pd.Timestamp(lo), pd.Timestamp(hi)
        assert lo == col.min(), name
        assert hi == col.max(), name

    human = ok("snapshot", "inspect", "orders", store=store).stdout
    for needle in ("schema", "slices", "history", "timestamp[us, tz=UTC]", *PERIODS):
        assert needle in human
    assert f"{len(df):,} rows" in human


def test_inspect_json_of_one_slice(store: Path, orders: tuple[pd.DataFrame, Path]) -> None:
    df, path = orders
    frozen = ok_json("snapshot", "freeze", "orders", path, "--slice-by", "period", store=store)
    doc = ok_json("snapshot", "inspect", "orders[2024-02]", store=store)
    part = df[df["period"] == "2024-02"]
    entry = next(s for s in frozen["slices"] if s["key"] == "2024-02")
    assert doc["snapshot"] == frozen["snapshot"]
    assert doc["slices"] == [{k: entry[k] for k in ("key", "id", "rows", "bytes")}]
    assert doc["rows"] == len(part)
    assert doc["bytes"] == entry["bytes"]
    stats = {c["name"]: c for c in doc["columns"]}
    assert stats["n"]["min"] == part["n"].min()
    assert stats["n"]["max"] == part["n"].max()
    assert stats["delay"]["nulls"] == int(part["delay"].isna().sum())
    assert stats["period"]["min"] == stats["period"]["max"] == "2024-02"


def test_verify_and_list_json(
    store: Path, orders: tuple[pd.DataFrame, Path], monthly_csv: dict
) -> None:
    df, path = orders
    ok("snapshot", "freeze", "orders", path, "--slice-by", "period", store=store)
    ok("snapshot", "freeze", "monthly", *(p for _, p in monthly_csv.values()), store=store)

    doc = ok_json("snapshot", "verify", store=store)
    assert {"ok", "checked", "corrupt"} <= set(doc)
    assert doc["ok"] is True
    assert doc["corrupt"] == []
    # every object and every manifest in the store is re-hashed
    objects, manifests = stored_ids(store, "objects"), stored_ids(store, "manifests")
    assert doc["checked"] == len(objects) + len(manifests) == 3 + 3 + 3 + 3 + 2

    one = ok_json("snapshot", "verify", "monthly", store=store)
    assert one["ok"] is True and one["corrupt"] == []
    # one snapshot manifest, and the manifest and object of each of its three slices
    assert one["checked"] == 1 + 3 + 3

    listed = ok_json("snapshot", "list", store=store)
    rows = {d["dataset"]: d for d in listed["datasets"]}
    assert list(rows) == ["monthly", "orders"]
    assert (rows["orders"]["slices"], rows["orders"]["rows"]) == (3, len(df))
    assert rows["monthly"]["rows"] == sum(len(d) for d, _ in monthly_csv.values())
    assert rows["orders"]["version"] == rows["monthly"]["version"] == 1
    human = ok("snapshot", "list", store=store).stdout
    assert "orders" in human and "monthly" in human


def test_freeze_json_stem_keys_from_csv(store: Path, monthly_csv: dict) -> None:
    files = [p for _, p in monthly_csv.values()]
    doc = ok_json("snapshot", "freeze", "monthly", *files, store=store)
    assert set(doc) == FREEZE_KEYS
    assert [s["key"] for s in doc["slices"]] == list(PERIODS)
    for s in doc["slices"]:
        df, _ = monthly_csv[s["key"]]
        assert s["rows"] == len(df)
        (oid,) = slice_objects(store, s["id"])
        got = pq.read_table(object_file(store, oid)).to_pandas()
        pd.testing.assert_frame_equal(got, df, check_dtype=False)
