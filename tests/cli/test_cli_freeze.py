"""Freeze through the CLI: slicing modes, dedupe, new versions, history, diff, REFs and pins."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from clikit import (
    PERIODS,
    assert_one_error_line,
    csv_frame,
    object_file,
    ok,
    ok_json,
    read_manifest,
    run,
    tree,
)


def test_one_slice_per_file_keys_are_stems_in_natural_order(store: Path, src: Path) -> None:
    frames = {}
    for stem in ("10", "2", "1"):  # ints sort numerically, not as text
        frames[int(stem)] = csv_frame(rows=3 + int(stem), seed=int(stem))
        if stem == "2":  # CSV and Parquet files mix: the types come out the same
            frames[2].to_parquet(src / "2.parquet", index=False)
        else:
            frames[int(stem)].to_csv(src / f"{stem}.csv", index=False)
    doc = ok_json(
        "snapshot", "freeze", "n", src / "10.csv", src / "2.parquet", src / "1.csv", store=store
    )
    assert [s["key"] for s in doc["slices"]] == [1, 2, 10]
    assert [s["rows"] for s in doc["slices"]] == [len(frames[k]) for k in (1, 2, 10)]
    inspected = ok_json("snapshot", "inspect", "n", store=store)
    assert [s["key"] for s in inspected["slices"]] == [1, 2, 10]


def test_slice_by_a_date_column_orders_slices_by_time(store: Path, src: Path) -> None:
    days = ["2024-02-01", "2023-12-31", "2024-01-15", "2024-02-01", "2023-12-31"]
    pd.DataFrame({"day": days, "x": range(5)}).to_csv(src / "days.csv", index=False)
    doc = ok_json("snapshot", "freeze", "days", src / "days.csv", "--slice-by", "day", store=store)
    assert [(s["key"], s["rows"]) for s in doc["slices"]] == [
        ("2023-12-31", 2),
        ("2024-01-15", 1),
        ("2024-02-01", 2),
    ]
    assert ok_json("snapshot", "inspect", "days[2024-01-15]", store=store)["rows"] == 1


def test_slice_key_freezes_all_files_as_one_slice(store: Path, monthly_csv: dict) -> None:
    (a, pa_), (b, pb) = monthly_csv["2024-01"], monthly_csv["2024-02"]
    doc = ok_json("snapshot", "freeze", "q", pa_, pb, "--slice", "2024-Q1", store=store)
    assert len(doc["slices"]) == 1
    (entry,) = doc["slices"]
    assert (entry["key"], entry["rows"], entry["new"]) == ("2024-Q1", len(a) + len(b), True)
    parts = read_manifest(store, entry["id"])["parts"]
    got = pd.concat([pq.read_table(object_file(store, p["object"])).to_pandas() for p in parts])
    want = pd.concat([a, b])  # the files' rows, in the order given
    pd.testing.assert_frame_equal(
        got.reset_index(drop=True), want.reset_index(drop=True), check_dtype=False
    )


def test_same_rows_from_csv_and_parquet_give_the_same_ids(store: Path, src: Path) -> None:
    df = csv_frame(rows=20, seed=7)
    df.to_csv(src / "x.csv", index=False)
    df.to_parquet(src / "x.parquet", index=False)
    a = ok_json("snapshot", "freeze", "from_csv", src / "x.csv", "--slice", "1", store=store)
    b = ok_json(
        "snapshot", "freeze", "from_parquet", src / "x.parquet", "--slice", "1", store=store
    )
    assert a["slices"][0]["id"] == b["slices"][0]["id"]
    assert a["snapshot"] == b["snapshot"]
    assert b["slices"][0]["new"] is True  # new to that dataset, though its object is shared
    assert len(list((store / "objects").glob("*/*"))) == 1


def test_refreeze_unchanged_creates_nothing(store: Path, orders: tuple) -> None:
    _, path = orders
    first = ok("snapshot", "freeze", "orders", path, "--slice-by", "period", store=store)
    assert first.stderr == ""
    assert "created snapshot" in first.stdout and "3 new" in first.stdout
    ref = json.loads((store / "refs" / "orders" / "000000000001.json").read_text())
    before = tree(store)
    again = ok_json("snapshot", "freeze", "orders", path, "--slice-by", "period", store=store)
    assert again["snapshot"] == ref["snapshot"]
    assert [s["new"] for s in again["slices"]] == [False] * len(PERIODS)
    assert tree(store) == before  # not one file written, renamed or touched in content
    human = ok("snapshot", "freeze", "orders", path, "--slice-by", "period", store=store)
    assert "unchanged at snapshot" in human.stdout and "0 new" in human.stdout


def test_changed_slice_history_diff_and_refs(store: Path, monthly_csv: dict) -> None:
    paths = [p for _, p in monthly_csv.values()]
    v1 = ok_json("snapshot", "freeze", "m", *paths, store=store)

    # the February file changes; January and March are frozen again unchanged
    feb = csv_frame(rows=5, seed=99)
    feb.to_csv(monthly_csv["2024-02"][1], index=False)
    v2 = ok_json("snapshot", "freeze", "m", *paths, store=store)
    assert v2["snapshot"] != v1["snapshot"]
    assert [(s["key"], s["new"], s["replaced"]) for s in v2["slices"]] == [
        ("2024-01", False, False),
        ("2024-02", False, True),
        ("2024-03", False, False),
    ]
    assert v2["slices"][0]["id"] == v1["slices"][0]["id"]
    assert v2["slices"][1]["rows"] == 5

    history = ok_json("snapshot", "list", "m", store=store)
    assert history["dataset"] == "m"
    versions = history["versions"]
    assert [(v["version"], v["snapshot"]) for v in versions] == [
        (1, v1["snapshot"]),
        (2, v2["snapshot"]),
    ]
    assert versions[0]["parent"] is None and versions[0]["added"] == list(PERIODS)
    assert versions[1]["parent"] == v1["snapshot"]
    assert (versions[1]["added"], versions[1]["replaced"]) == ([], ["2024-02"])

    diff = ok_json("snapshot", "diff", f"m@{v1['snapshot'][:8]}", "m", store=store)
    assert diff["identical"] is False
    assert (diff["added"], diff["removed"], diff["unchanged"]) == ([], [], 2)
    assert diff["changed"] == [
        {
            "key": "2024-02",
            "before": v1["slices"][1]["id"],
            "after": v2["slices"][1]["id"],
            "rows_before": len(monthly_csv["2024-02"][0]),
            "rows_after": 5,
        }
    ]
    human = ok("snapshot", "diff", f"m@{v1['snapshot'][:8]}", "m", store=store)
    assert "2024-02" in human.stdout and "1 changed" in human.stdout

    # the old snapshot stays readable by id prefix, whole or one slice
    old = ok_json("snapshot", "inspect", f"m@{v1['snapshot'][:10]}", store=store)
    assert old["snapshot"] == v1["snapshot"]
    assert old["slices"] == [
        {k: s[k] for k in ("key", "id", "rows", "bytes")} for s in v1["slices"]
    ]
    old_feb = ok_json("snapshot", "inspect", f"m@{v1['snapshot'][:8]}[2024-02]", store=store)
    assert [s["id"] for s in old_feb["slices"]] == [v1["slices"][1]["id"]]
    new_feb = ok_json("snapshot", "inspect", "m[2024-02]", store=store)
    assert (new_feb["snapshot"], new_feb["rows"]) == (v2["snapshot"], 5)
    full_id = ok_json("snapshot", "inspect", f"m@{v1['snapshot']}", store=store)
    assert full_id["snapshot"] == v1["snapshot"]


def test_new_slice_is_added(store: Path, monthly_csv: dict, src: Path) -> None:
    first = ok_json("snapshot", "freeze", "m", monthly_csv["2024-01"][1], store=store)
    doc = ok_json("snapshot", "freeze", "m", monthly_csv["2024-03"][1], store=store)
    assert [(s["key"], s["new"]) for s in doc["slices"]] == [("2024-03", True)]
    head = ok_json("snapshot", "inspect", "m", store=store)
    assert [s["key"] for s in head["slices"]] == ["2024-01", "2024-03"]
    diff = ok_json("snapshot", "diff", f"m@{first['snapshot'][:8]}", "m", store=store)
    assert [c["key"] for c in diff["added"]] == ["2024-03"]
    assert diff["added"][0]["before"] is None
    assert (diff["changed"], diff["removed"], diff["unchanged"]) == ([], [], 1)


def test_list_of_an_empty_store(store: Path) -> None:
    missing = run("snapshot", "list", store=store)  # no store there: a typo, not an empty store
    assert missing.code == 1 and missing.stderr.startswith(f"Error: no store at {store};")
    assert not store.exists()  # reading never creates the store
    store.mkdir()  # what chanbatch init makes
    assert ok_json("snapshot", "list", store=store)["datasets"] == []
    assert "No datasets" in ok("snapshot", "list", store=store).stdout


def test_inspect_all_lists_every_slice(store: Path, src: Path) -> None:
    pd.DataFrame({"k": range(50), "x": range(50)}).to_parquet(src / "k.parquet", index=False)
    ok("snapshot", "freeze", "many", src / "k.parquet", "--slice-by", "k", store=store)
    short = ok("snapshot", "inspect", "many", store=store).stdout
    assert "26 more (--all)" in short  # the first 24 of 50 slices, then a count
    full = ok("snapshot", "inspect", "many", "--all", store=store).stdout
    assert "more (--all)" not in full
    rows = [line.split() for line in full.splitlines()]
    assert [int(r[0]) for r in rows if len(r) == 5 and r[0].isdigit()] == list(range(50))


def test_pin_and_unpin(store: Path, monthly_csv: dict) -> None:
    doc = ok_json("snapshot", "freeze", "m", *(p for _, p in monthly_csv.values()), store=store)
    sid = doc["snapshot"]

    pinned = ok_json("snapshot", "pin", f"m@{sid[:8]}", store=store)
    assert (pinned["dataset"], pinned["snapshot"]) == ("m", sid)
    assert (pinned["pinned"], pinned["changed"]) == (True, True)
    pin_file = store / "pins" / f"{sid}.json"
    assert json.loads(pin_file.read_text())["snapshot"] == sid
    assert ok_json("snapshot", "inspect", "m", store=store)["pinned"] is True
    assert ok_json("snapshot", "pin", "m", store=store)["changed"] is False

    unpinned = ok_json("snapshot", "unpin", "m", store=store)
    assert (unpinned["snapshot"], unpinned["pinned"], unpinned["changed"]) == (sid, False, True)
    assert not pin_file.exists()
    assert "was not pinned" in ok("snapshot", "unpin", f"m@{sid[:8]}", store=store).stdout


def test_all_null_first_slice_does_not_fix_the_schema_to_null(store: Path, src: Path) -> None:
    """An all-empty column is typed ``null``; it must not lock the dataset out of real values.

    Either the first freeze is refused (a clear error that names the untyped columns), or the
    second one succeeds and gives the dataset the real types, as a later all-null slice already
    takes the types of the slices before it.
    """
    (src / "1.csv").write_text("a,b\n,\n")
    (src / "2.csv").write_text("a,b\n7,x\n")
    first = run("snapshot", "freeze", "g", src / "1.csv", store=store)
    if first.code != 0:
        assert_one_error_line(first, 2, "'a'", "'b'")
        return
    second = run("snapshot", "freeze", "g", src / "2.csv", "--json", store=store)
    assert second.code == 0, str(second)
    doc = ok_json("snapshot", "inspect", "g", store=store)
    assert doc["schema"] == [{"name": "a", "type": "int64"}, {"name": "b", "type": "string"}]
    assert doc["rows"] == 2
