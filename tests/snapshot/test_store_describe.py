"""store.snapshot(REF) and the notebook display of snapshots, inspections and freezes.

Every value the HTML shows is checked against the frozen Parquet objects (pyarrow) or the pandas
frame that was frozen, never against chanbatch's own manifests.
"""

from __future__ import annotations

import re
import shutil
import time

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from storekit import files, flights, python

import chanbatch
from tests.htmlkit import facts, parse, start_tags, table, text, title

HOSTILE = '<b>&"x'


def object_schemas(url: str) -> list[pa.Schema]:
    return [
        pq.read_schema(pa.BufferReader(data))
        for rel, data in files(url).items()
        if rel.startswith("objects/")
    ]


def repr_numbers(line: str) -> dict[str, int]:
    """``12 slices, 336,776 rows`` -> {"slices": 12, "rows": 336776}."""
    return {
        word.rstrip("s") + "s": int(n.replace(",", ""))
        for n, word in re.findall(r"(\d[\d,]*) (slices?|rows?|columns?|new|unchanged)\b", line)
    }


def test_snapshot_holds_what_was_frozen(store: chanbatch.Store) -> None:
    df = flights(90, months=4)
    store.freeze("flights", df, slice_by="month")
    snap = store.snapshot("flights")
    assert isinstance(snap, chanbatch.Snapshot)
    assert snap.id == store.resolve("flights").snapshot and snap.version == 1
    (schema,) = {s for s in object_schemas(store.url)}
    assert list(snap.schema) == [(f.name, str(f.type)) for f in schema]
    counts = df.groupby("month").size()
    assert [(s.key, s.rows) for s in snap.slices] == list(counts.items())
    assert snap.rows == len(df)
    assert snap.ref == f"flights@{snap.id}"
    assert len({snap, store.snapshot("flights")}) == 1  # a value: equal and hashable
    assert store.read_pandas(snap.ref).shape == df.shape


def test_snapshot_html_shows_schema_and_slices(store: chanbatch.Store) -> None:
    df = flights(90, months=4)
    store.freeze("flights", df, slice_by="month")
    store.freeze(
        "flights", flights(20, months=5, seed=3).query("month == '2013-05'"), slice_by="month"
    )
    snap = store.snapshot("flights")
    markup = snap._repr_html_()
    (arrow,) = {s for s in object_schemas(store.url)}
    schema = table(markup, "Schema")
    assert schema.column("column") == arrow.names
    assert schema.column("type") == [str(t) for t in arrow.types]

    whole = pd.concat([df, flights(20, months=5, seed=3).query("month == '2013-05'")])
    counts = whole.groupby("month").size()
    slices = table(markup, "Slices")
    assert slices.column("key") == list(counts.index)
    assert slices.column("rows") == [f"{n:,}" for n in counts]
    head = store.resolve("flights")
    ids = [t[1] for t in slices.titles]  # full ids in the tooltips
    assert ids == [s.id for s in head.manifest.slices]
    shown = facts(markup)
    assert shown["version"] == "2" and shown["rows"] == f"{len(whole):,}"
    assert shown["slices"] == "5" and shown["sliced by"] == "month"
    assert title(markup) == f"Snapshot flights@{head.snapshot[:12]}\u2026"
    assert parse(markup).find(".//div[@class='cb-title']/code").get("title") == head.snapshot

    line = repr(snap)
    assert line.startswith(f"Snapshot(flights@{head.snapshot[:12]}, version 2, ")
    assert repr_numbers(line) == {"slices": 5, "rows": len(whole)}


def test_a_slice_ref_describes_that_slice(store: chanbatch.Store) -> None:
    df = flights(60, months=3)
    store.freeze("flights", df, slice_by="month")
    snap = store.snapshot("flights[2013-02]")
    assert [s.key for s in snap.slices] == ["2013-02"]
    assert snap.rows == int((df.month == "2013-02").sum())
    assert "[2013-02]" in repr(snap) and snap.ref.endswith("[2013-02]")
    assert store.read_pandas(snap.ref).shape[0] == snap.rows


def test_snapshot_display_reads_nothing(local_store: chanbatch.Store, tmp_path) -> None:
    local_store.freeze("flights", flights(30), slice_by="month")
    snap = local_store.snapshot("flights")
    moved = tmp_path / "gone"
    shutil.move(local_store.url, moved)  # the store is gone: a display that read it would fail
    assert "flights" in repr(snap) and "<table>" in snap._repr_html_()


def test_hostile_text_is_escaped(store: chanbatch.Store) -> None:
    df = pd.DataFrame({HOSTILE: [1, 2, 3], "k": [HOSTILE, "a&b", "c"]})
    store.freeze("weird", df, slice_by="k")
    store.freeze("weird", df.assign(k=HOSTILE + "2"), slice_by="k")
    for obj in (
        store.snapshot("weird"),
        store.inspect("weird"),
        store.freeze("weird", df, slice_by="k"),
    ):
        markup = obj._repr_html_()
        assert "b" not in start_tags(markup), type(obj)
        slices = table(markup, "Slices")
        assert HOSTILE in slices.column("key")
    schema = table(store.snapshot("weird")._repr_html_(), "Schema")
    assert schema.column("column") == [HOSTILE, "k"]


def test_thousands_of_slices_render_a_bounded_table_quickly(local_store: chanbatch.Store) -> None:
    store = local_store  # one backend: freezing 2,000 slices is what takes the time here
    n = 2000
    df = pd.DataFrame({"k": range(n), "v": range(n)})
    store.freeze("many", df, slice_by="k")
    snap = store.snapshot("many")
    started = time.perf_counter()
    markup = snap._repr_html_()
    seconds = time.perf_counter() - started
    assert seconds < 0.5, seconds
    assert len(markup) < 20_000, len(markup)
    slices = table(markup, "Slices")
    keys = slices.column("key")
    shown = len(keys)
    assert 4 <= shown <= 40
    # the first and the last slices, in key order, around one row counting the others
    assert keys == [str(k) for k in [*range(shown // 2), *range(n - shown // 2, n)]]
    (more,) = [r for r in slices.rows if len(r) == 1]
    assert more == [f"\u2026 {n - shown:,} more rows"]
    assert repr_numbers(repr(snap)) == {"slices": n, "rows": n}


def test_inspect_display_shows_column_stats(store: chanbatch.Store) -> None:
    df = flights(80, months=3)
    store.freeze("flights", df, slice_by="month")
    report = store.inspect("flights")
    markup = report._repr_html_()
    stats = table(markup, "Columns")
    assert stats.column("column") == list(df.columns)
    nulls = dict(zip(stats.column("column"), stats.column("nulls"), strict=True))
    assert nulls == {c: f"{int(df[c].isna().sum()):,}" for c in df.columns}
    mins = dict(zip(stats.column("column"), stats.column("min"), strict=True))
    maxs = dict(zip(stats.column("column"), stats.column("max"), strict=True))
    assert (mins["day"], maxs["day"]) == (str(df.day.min()), str(df.day.max()))
    assert (mins["carrier"], maxs["carrier"]) == (df.carrier.min(), df.carrier.max())
    assert table(markup, "Slices").column("key") == sorted(df.month.unique())
    history = table(markup, "History")
    assert history.column("version") == ["1"]
    line = repr(report)
    assert line.startswith("InspectReport(flights@")
    assert repr_numbers(line) == {"slices": 3, "rows": len(df), "columns": len(df.columns)}


def test_freeze_display_tells_new_from_unchanged(store: chanbatch.Store) -> None:
    df = flights(60, months=3)
    store.freeze("flights", df[df.month < "2013-03"], slice_by="month")
    result = store.freeze("flights", df, slice_by="month")
    markup = result._repr_html_()
    slices = table(markup, "Slices")
    status = dict(zip(slices.column("key"), slices.column("status"), strict=True))
    assert status == {"2013-01": "unchanged", "2013-02": "unchanged", "2013-03": "new"}
    assert facts(markup)["new version"] == "yes"
    line = repr(result)
    assert f"flights@{store.resolve('flights').snapshot[:12]}, version 2" in line
    assert repr_numbers(line) == {"slices": 3, "news": 1, "unchangeds": 2, "rows": len(df)}
    again = store.freeze("flights", df, slice_by="month")
    assert "no new version" in repr(again) and facts(again._repr_html_())["new version"].startswith(
        "no"
    )


def test_display_imports_neither_pandas_nor_dask(local_store: chanbatch.Store) -> None:
    local_store.freeze("flights", flights(30), slice_by="month")
    out = python(
        "import sys, chanbatch as cb\n"
        f"s = cb.Store({local_store.url!r}).snapshot('flights')\n"
        "assert '<table>' in s._repr_html_() and 'Snapshot(' in repr(s)\n"
        "print(sorted(m for m in ('pandas', 'dask', 'pyarrow') if m in sys.modules))\n"
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("obj", ["snapshot", "inspect"])
def test_displays_parse_as_xml(store: chanbatch.Store, obj: str) -> None:
    store.freeze("flights", flights(30), slice_by="month")
    markup = getattr(store, obj)("flights")._repr_html_()
    root = parse(markup)
    assert root.find("style") is not None and text(root.find("style")).startswith(".chanbatch")
