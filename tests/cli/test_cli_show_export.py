"""``chanbatch show`` and ``chanbatch export``, run as a user runs them.

Every expected value is computed independently from the raw frame that was frozen: pandas for
filters, sorts and slices (a null condition selects nothing, nulls sort last), DuckDB for one
query written in SQL, pyarrow and pandas for reading the exported files back.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from clikit import (
    CHANBATCH,
    PERIODS,
    assert_one_error_line,
    base_env,
    csv_frame,
    in_pty,
    object_file,
    ok,
    ok_json,
    run,
    sample_frame,
)

import chanbatch as cb

ROWS = 60


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A store with ``orders`` (:func:`sample_frame`, sliced by period) and ``monthly`` (three
    CSV files frozen by stem, one slice each), and the raw rows of both in stored order."""
    root = tmp_path_factory.mktemp("show")
    store = root / "snapshots"
    df = sample_frame(ROWS, seed=3)
    cb.Store(store).freeze("orders", df, slice_by="period")
    csvs, monthly = [], []
    for i, period in enumerate(PERIODS):
        path = root / f"{period}.csv"
        frame = csv_frame(seed=i + 1)
        frame.to_csv(path, index=False)
        csvs.append(path)
        monthly.append(frame.assign(period=period))
    ok("snapshot", "freeze", "monthly", *csvs, "--json", store=store)
    # the stored order: slices in key order, the rows of a slice in input order
    stored = df.sort_values("period", kind="stable").reset_index(drop=True)
    return {
        "root": root,
        "store": store,
        "orders": stored,
        "monthly": pd.concat(monthly, ignore_index=True),
    }


def show_json(data: dict, *args: str) -> dict:
    """``show ARGS --json``, of ``orders`` unless the first argument names a REF."""
    ref = [] if args and not args[0].startswith("-") else ["orders"]
    return ok_json("show", *ref, *args, store=data["store"])


def as_records(frame: pd.DataFrame) -> list[dict]:
    """The rows as ``show --json`` gives them: null for a missing value, ISO timestamps."""
    out = []
    for row in frame.to_dict("records"):
        out.append(
            {
                k: None
                if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA
                else v.isoformat()
                if isinstance(v, pd.Timestamp)
                else v
                for k, v in row.items()
            }
        )
    return out


def sorted_like_show(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """A stable sort, nulls last in either direction; ``-name`` is descending."""
    names = [k.lstrip("-") for k in keys]
    ascending = [not k.startswith("-") for k in keys]
    out = frame
    for name, asc in reversed(list(zip(names, ascending, strict=True))):
        out = out.sort_values(name, ascending=asc, kind="stable", na_position="last")
    return out


# -- show: where, sort, limit, columns ----------------------------------------------------------


CASES = {
    "all": ([], lambda df: df),
    "where-and": (
        ["--where", "delay > 10 and carrier != 'AA'"],
        # SQL: a null on either side makes the condition null, which selects nothing
        lambda df: df[(df.delay > 10) & df.carrier.notna() & (df.carrier != "AA")],
    ),
    "where-or-null": (
        ["--where", "delay < 0 or carrier == 'DL'"],
        lambda df: df[(df.delay < 0) | (df.carrier == "DL")],
    ),
    "where-is-null": (["--where", "is_null(carrier)"], lambda df: df[df.carrier.isna()]),
    "where-in": (
        ["--where", "carrier not in ['AA', 'B6'] and n >= 0"],
        lambda df: df[df.carrier.notna() & ~df.carrier.isin(["AA", "B6"]) & (df.n >= 0)],
    ),
    "where-timestamp": (
        ["--where", "when >= '2024-02-15'"],
        lambda df: df[df["when"] >= pd.Timestamp("2024-02-15", tz="UTC")],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_show_where_matches_pandas(data: dict, case: str) -> None:
    args, select = CASES[case]
    doc = show_json(data, *args)
    expected = select(data["orders"])
    assert doc["rows"] == as_records(expected)
    assert doc["shown"] == doc["matched"] == len(expected)
    assert doc["total"] == ROWS
    assert [c["name"] for c in doc["schema"]] == list(data["orders"].columns)


@pytest.mark.parametrize(
    "keys",
    [["-delay"], ["delay"], ["carrier", "-n"], ["-carrier,day", "-delay"], ["when", "-day"]],
)
@pytest.mark.parametrize("limit", [None, 7])
def test_show_sort_and_limit(data: dict, keys: list[str], limit: int | None) -> None:
    args = [a for k in keys for a in ("--sort", k)]
    if limit is not None:
        args += ["--limit", str(limit)]
    doc = show_json(data, *args, "--columns", "period,day,carrier,delay,n")
    flat = [k for group in keys for k in group.split(",")]
    expected = sorted_like_show(data["orders"], flat)[["period", "day", "carrier", "delay", "n"]]
    if limit is not None:
        expected = expected.head(limit)
    assert doc["rows"] == as_records(expected)
    assert doc["matched"] == ROWS and doc["shown"] == len(expected)


def test_show_where_sort_limit_as_sql(data: dict) -> None:
    """One query written in SQL, answered by DuckDB on the raw rows."""
    orders = data["orders"]  # noqa: F841  (DuckDB reads it by name)
    expected = duckdb.sql(
        "SELECT carrier, n, delay FROM orders WHERE delay > 0 AND carrier <> 'UA' "
        "ORDER BY n DESC NULLS LAST LIMIT 5"
    ).df()
    doc = show_json(
        data,
        "--where",
        "delay > 0 and carrier != 'UA'",
        "--sort=-n",
        "-n",
        "5",
        "-c",
        "carrier,n,delay",
    )
    assert doc["rows"] == as_records(expected)


def test_show_columns_in_the_order_given(data: dict) -> None:
    doc = show_json(data, "--columns", "n, carrier,n", "--limit", "3")
    assert [c["name"] for c in doc["schema"]] == ["n", "carrier"]
    assert doc["rows"] == as_records(data["orders"][["n", "carrier"]].head(3))
    assert doc["schema"] == [{"name": "n", "type": "int64"}, {"name": "carrier", "type": "string"}]


def test_show_a_slice_and_a_snapshot(data: dict) -> None:
    orders = data["orders"]
    doc = show_json(data, "orders[2024-02]")
    assert doc["slice"] == "2024-02"
    assert doc["rows"] == as_records(orders[orders.period == "2024-02"])
    assert doc["total"] == (orders.period == "2024-02").sum()
    by_id = show_json(data, f"orders@{doc['snapshot'][:10]}", "--limit", "4")
    assert by_id["rows"] == as_records(orders.head(4))
    assert by_id["snapshot"] == doc["snapshot"]


def test_show_csv(data: dict) -> None:
    out = ok("show", "orders", "--csv", "--where", "delay > 5", store=data["store"]).stdout
    back = pd.read_csv(io.StringIO(out))
    orders = data["orders"]
    expected = orders[orders.delay > 5]
    assert list(back.columns) == list(orders.columns)
    assert len(back) == len(expected)  # every selected row, not the table's 20
    assert back.n.tolist() == expected.n.tolist()
    assert back.delay.tolist() == expected.delay.tolist()
    assert back.carrier.fillna("").tolist() == expected.carrier.fillna("").tolist()
    limited = ok("show", "orders", "--csv", "--limit", "2", store=data["store"]).stdout
    assert len(limited.splitlines()) == 3  # the header and two rows


def test_limits_of_the_table_and_of_json(data: dict) -> None:
    store = data["store"]
    table = ok("show", "monthly", "-c", "id", store=store).stdout.splitlines()
    assert len(table) == 2 + 20 + 1  # header, rule, 20 rows, the footer
    assert table[-1].startswith("20 of 36 rows of monthly@")
    assert table[-1].endswith("(use --limit N for more)")
    everything = ok("show", "monthly", "-c", "id", "--limit", "0", store=store).stdout
    assert len(everything.splitlines()) == 2 + 36 + 1
    assert everything.splitlines()[-1].startswith("36 rows of monthly@")
    assert len(show_json(data, "monthly")["rows"]) == 36
    assert len(show_json(data, "monthly", "--limit", "5")["rows"]) == 5
    quiet = ok("show", "monthly", "-c", "id", "-n", "2", "-q", store=store).stdout
    assert len(quiet.splitlines()) == 4  # no footer with -q
    none = ok("show", "orders", "--where", "n > 5000", store=store).stdout
    assert none.strip().startswith("no rows match of 60 in orders@")


def test_show_values_in_the_table(data: dict) -> None:
    orders = data["orders"]
    out = ok("show", "orders", "-n", "10", store=data["store"]).stdout
    lines = out.splitlines()
    assert lines[0].split() == list(orders.columns)
    for line, row in zip(lines[2:12], orders.head(10).itertuples(index=False), strict=True):
        words = line.split()
        assert words[0] == row.period and words[1] == str(row.day)
        assert str(row.n) == words[-1]
        assert (repr(row.delay) if not np.isnan(row.delay) else "null") in words
        assert (row.carrier if isinstance(row.carrier, str) else "null") in words


def test_show_stops_reading_once_it_has_the_rows(data: dict, tmp_path: Path) -> None:
    """Without a sort, the first slices are enough for a small limit: damage in the last slice
    is not even read. A sort (or --where needing more rows) has to read it and says so."""
    store = tmp_path / "snapshots"
    df = sample_frame(ROWS, seed=4)
    cb.Store(store).freeze("orders", df, slice_by="period")
    last = ok_json("snapshot", "inspect", "orders", store=store)["slices"][-1]
    slice_manifest = json.loads(
        (store / "manifests" / last["id"][:2] / f"{last['id'][2:]}.json").read_text()
    )
    damaged = object_file(store, slice_manifest["parts"][0]["object"])
    damaged.chmod(0o644)
    damaged.write_bytes(b"not parquet")
    shown = ok_json("show", "orders", "--limit", "5", store=store)
    assert shown["rows"] == as_records(df.sort_values("period", kind="stable").head(5))
    ok("show", "orders", "--where", "n > -5000", "--limit", "3", store=store)
    assert (
        "first 3 matching rows"
        in ok("show", "orders", "-w", "n > -5000", "-n", "3", store=store).stdout
    )
    for args in (["--sort", "n"], ["--limit", "0"]):
        failed = run("show", "orders", *args, store=store)
        assert_one_error_line(failed, 1, "corrupt")


# -- the layout at 80 columns -------------------------------------------------------------------


def wide_frame() -> pd.DataFrame:
    """Long names, long numbers and long text: nothing of it fits 80 columns as it is."""
    return pd.DataFrame(
        {
            "order_identifier": np.arange(5, dtype="int64") * 1_234_567_890_123,
            "sum_quantity_shipped": [3773410.123456789, 1.0e-7, -2.5, 1e21, 0.30000000000000004],
            "average_discount_rate": [0.049985, 0.05, 0.1, np.nan, 1 / 3],
            "comment": [
                "carefully final deposits detect slyly agai",
                "x" * 150,
                "short",
                None,
                "the quick brown fox jumps over the lazy dog " * 3,
            ],
            "shipped": pd.to_datetime(["2024-01-01 12:34:56.123456"] * 5).tz_localize("UTC"),
        }
    )


def values_whole(out: str, frame: pd.DataFrame, numeric: list[str]) -> None:
    for name in numeric:
        for value in frame[name]:
            text = (
                "null"
                if pd.isna(value)
                else repr(value)
                if isinstance(value, float)
                else str(value)
            )
            assert text in out, f"{text} of {name} is not shown whole"


@pytest.mark.parametrize("columns", [None, "order_identifier,sum_quantity_shipped,comment"])
def test_80_columns(tmp_path: Path, columns: str | None) -> None:
    store = tmp_path / "snapshots"
    frame = wide_frame()
    cb.Store(store).freeze("wide", frame, slice="all")
    args = ["show", "wide"] + (["--columns", columns] if columns else [])
    out = ok(*args, store=store, env=base_env(COLUMNS="80")).stdout
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80, out
    picked = frame[columns.split(",")] if columns else frame
    values_whole(out, picked, [c for c in picked.columns if c != "comment"])
    for name in picked.columns:
        assert name in out  # names are never cut
    if columns:  # three columns fit once the comment wraps: a table
        assert lines[0].split() == columns.split(",")
        assert "x" * 40 in out and "x" * 150 not in out
    else:  # five do not: one block per row
        assert "── row 5 " in out and re.search(
            r"^sum_quantity_shipped: +3773410.123456789$", out, re.M
        )


def test_80_columns_in_a_real_terminal(tmp_path: Path) -> None:
    """In a pty of 80x24, without COLUMNS: the width comes from the terminal itself."""
    store = tmp_path / "snapshots"
    cb.Store(store).freeze("wide", wide_frame(), slice="all")
    out = in_pty("show", "wide", "--store", store)
    assert max(len(line) for line in out.splitlines()) <= 80, out
    values_whole(out, wide_frame(), ["order_identifier", "sum_quantity_shipped"])


# -- export ---------------------------------------------------------------------------------------


def test_parquet_export_freezes_to_the_same_snapshot(data: dict, tmp_path: Path) -> None:
    store = data["store"]
    source = ok_json("snapshot", "inspect", "orders", store=store)["snapshot"]
    path = tmp_path / "orders.parquet"
    doc = ok_json("export", "orders", path, store=store)
    assert doc["rows"] == ROWS and doc["format"] == "parquet"
    back = pq.read_table(path).to_pandas()
    pd.testing.assert_frame_equal(back, data["orders"], check_dtype=False)
    again = ok_json(
        "snapshot", "freeze", "copy", path, "--slice-by", "period", store=tmp_path / "s"
    )
    assert again["snapshot"] == source


def test_per_slice_export_freezes_to_the_same_snapshot(data: dict, tmp_path: Path) -> None:
    store = data["store"]
    source = ok_json("snapshot", "inspect", "monthly", store=store)["snapshot"]
    for fmt, suffix in (("parquet", ".parquet"), ("csv", ".csv")):
        out = tmp_path / f"by_{fmt}"
        doc = ok_json("export", "monthly", out, "--per-slice", "--format", fmt, store=store)
        names = sorted(p.name for p in out.iterdir())
        assert names == [f"{p}{suffix}" for p in PERIODS]
        assert [f["slice"] for f in doc["files"]] == list(PERIODS)
        for period in PERIODS:
            path = out / f"{period}{suffix}"
            back = pq.read_table(path).to_pandas() if fmt == "parquet" else pd.read_csv(path)
            monthly = data["monthly"]
            expected = monthly[monthly.period == period].drop(columns="period")
            pd.testing.assert_frame_equal(
                back.reset_index(drop=True), expected.reset_index(drop=True), check_dtype=False
            )
        files = sorted(out.iterdir())
        again = ok_json("snapshot", "freeze", "copy", *files, store=tmp_path / f"s_{fmt}")
        assert again["snapshot"] == source, fmt


def test_export_where_and_columns(data: dict, tmp_path: Path) -> None:
    store = data["store"]
    orders = data["orders"]
    expected = orders[(orders.delay > 0) & (orders.carrier == "DL")][["carrier", "delay", "when"]]
    path = tmp_path / "late.jsonl"
    doc = ok_json(
        "export",
        "orders",
        path,
        "-w",
        "delay > 0 and carrier == 'DL'",
        "-c",
        "carrier,delay,when",
        store=store,
    )
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == as_records(expected) and doc["rows"] == len(expected)
    csv_path = tmp_path / "late.csv"
    ok(
        "export",
        "orders",
        csv_path,
        "-w",
        "delay > 0 and carrier == 'DL'",
        "-c",
        "carrier,delay",
        store=store,
    )
    back = pd.read_csv(csv_path)
    assert back.to_dict("records") == expected[["carrier", "delay"]].to_dict("records")
    per = tmp_path / "per"
    files = ok_json("export", "orders", per, "--per-slice", "-w", "n > 900", store=store)["files"]
    assert [Path(f["path"]).name for f in files] == [f"{p}.parquet" for p in PERIODS]
    for f, period in zip(files, PERIODS, strict=True):
        rows = orders[(orders.period == period) & (orders.n > 900)]
        assert f["rows"] == len(rows) == pq.read_table(f["path"]).num_rows  # empty ones too


def test_export_of_one_slice_and_human_output(data: dict, tmp_path: Path) -> None:
    path = tmp_path / "feb.parquet"
    out = ok("export", "orders[2024-02]", path, store=data["store"]).stdout
    orders = data["orders"]
    n = int((orders.period == "2024-02").sum())
    assert out.startswith(f"wrote {n} rows of orders@") and str(path) in out
    assert pq.read_table(path).num_rows == n


def test_slice_file_names_are_safe(tmp_path: Path) -> None:
    store = tmp_path / "snapshots"
    frame = pd.DataFrame({"k": ["a/b", ".hidden", "plain", "sp ace"], "v": [1, 2, 3, 4]})
    cb.Store(store).freeze("odd", frame, slice_by="k")
    out = tmp_path / "out"
    ok("export", "odd", out, "--per-slice", "--format", "csv", store=store)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["%2Ehidden.csv", "a%2Fb.csv", "plain.csv", "sp%20ace.csv"]
    )


# -- errors ---------------------------------------------------------------------------------------


ERRORS = {
    "unknown dataset": (["show", "ordrs"], 2, ["'ordrs'", "did you mean 'orders'?"]),
    "unknown slice": (["show", "orders[2024-13]"], 2, ["no slice '2024-13'", "did you mean"]),
    "unknown snapshot": (["show", "orders@abcdef12"], 2, ["no snapshot", "abcdef12"]),
    "bad where": (["show", "orders", "--where", "delay >"], 2, ["cannot read condition"]),
    "where column": (["show", "orders", "-w", "dlay > 1"], 2, ["'dlay'", "did you mean 'delay'?"]),
    "where type": (["show", "orders", "-w", "carrier > 1"], 2, ["cannot compare"]),
    "not a condition": (["show", "orders", "-w", "delay + 1"], 2, ["not a condition"]),
    "unknown column": (["show", "orders", "-c", "carier"], 2, ["'carier'", "'carrier'"]),
    "unknown sort": (["show", "orders", "--sort", "-dely"], 2, ["sort by", "'delay'"]),
    "no columns": (["show", "orders", "-c", ","], 2, ["--columns names no column"]),
    "json and csv": (["show", "orders", "--json", "--csv"], 2, ["not both"]),
    "export unknown": (["export", "nosuch", "{tmp}/x.parquet"], 2, ["'nosuch'", "not found"]),
    "export suffix": (["export", "orders", "{tmp}/x.txt"], 2, ["'.txt'", "--format"]),
    "export folder": (["export", "orders", "{tmp}/no/x.csv"], 2, ["does not exist"]),
    "export exists": (["export", "orders", "{tmp}/exists.csv"], 2, ["already exists", "--force"]),
    "export into dir": (["export", "orders", "{tmp}"], 2, ["is a directory", "--per-slice"]),
    "per-slice full": (["export", "orders", "{tmp}", "--per-slice"], 2, ["not empty", "--force"]),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors(data: dict, tmp_path: Path, case: str) -> None:
    args, code, needles = ERRORS[case]
    (tmp_path / "exists.csv").write_text("keep me")
    result = run(*(a.format(tmp=tmp_path) for a in args), store=data["store"])
    assert_one_error_line(result, code, *needles)
    assert (tmp_path / "exists.csv").read_text() == "keep me"


def test_force_replaces(data: dict, tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    path.write_text("old")
    ok("export", "orders", path, "--force", store=data["store"])
    assert len(pd.read_csv(path)) == ROWS
    out = tmp_path / "dir"
    out.mkdir()
    (out / "other.txt").write_text("left alone")
    ok("export", "orders", out, "--per-slice", "--force", store=data["store"])
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{p}.parquet" for p in PERIODS] + ["other.txt"]
    )
    assert not [p for p in tmp_path.rglob(".*partial*")]


# -- shell completion -----------------------------------------------------------------------------


def complete(line: str) -> list[str]:
    """Click's bash protocol: the values offered for the last word of ``line``."""
    env = base_env(
        _CHANBATCH_COMPLETE="bash_complete",
        COMP_WORDS=line,
        COMP_CWORD=str(len(line.split(" ")) - 1),
    )
    proc = subprocess.run([str(CHANBATCH)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return [x.split(",", 1)[1] for x in proc.stdout.splitlines() if x]


def test_completion(data: dict) -> None:
    store = data["store"]
    assert complete("chanbatch sho") == ["show"]
    assert complete("chanbatch expo") == ["export"]
    assert complete(f"chanbatch show --store {store} ord") == ["orders"]
    assert complete(f"chanbatch show --store {store} orders --columns ca") == ["carrier"]
    assert complete(f"chanbatch show --store {store} orders -c day,d") == ["day,day", "day,delay"]
    assert complete(f"chanbatch show --store {store} orders --sort day,-w") == ["day,-when"]
    assert complete(f"chanbatch export --store {store} orders x --format p") == ["parquet"]
    assert complete(f"chanbatch show --store {store} nosuch --columns ca") == []
