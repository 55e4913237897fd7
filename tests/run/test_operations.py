"""Every operation of DESIGN.md section 5, end to end: small frames frozen into a store, a
blueprint run with ``Blueprint.from_yaml(text).run(store)``, the output compared with pandas,
plain Python or DuckDB on the original frames."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from opskit import assert_same, base_frame, blueprint, in_slice_order, run, sql

import chanbatch as cb
from chanbatch.errors import ChanbatchError, UsageError

HERE = Path(__file__).resolve().parent

RIGHT = pd.DataFrame(
    {
        "k1": pd.Series(["p", "q", "z", None, "p"], dtype=object),
        "v": [10, 20, 30, 40, 50],
        "y": [100, 200, 300, 400, 500],
    }
)
RIGHT2 = pd.DataFrame(
    {
        "k1": pd.Series(["p", "p", "q", None, "r", "q"], dtype=object),
        "k2": [1.0, 2.0, np.nan, 1.0, 2.0, 1.0],
        "w": [1, 2, 3, 4, 5, 6],
    }
)


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    t = base_frame()
    u = base_frame(rows=12, seed=11)
    u["id"] += 1000
    return {"t": t, "u": u, "r": RIGHT, "r2": RIGHT2}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, frames: dict[str, pd.DataFrame]) -> cb.Store:
    store = cb.Store(tmp_path_factory.mktemp("ops") / "store")
    store.freeze("t", frames["t"], slice_by="s")
    store.freeze("t1", frames["t"], slice="all")  # the same rows as one slice
    store.freeze("u", frames["u"], slice_by="s")
    store.freeze("r", frames["r"], slice="all")
    store.freeze("r2", frames["r2"], slice="all")
    assert [s["key"] for s in store.inspect("t").document()["slices"]] == [1, 2, 3]
    return store


# -- filter -----------------------------------------------------------------------------------

FILTERS = [
    ("x > 2", "x > 2"),
    ("not (x > 2)", "NOT (x > 2)"),
    ("g != 'a'", "g <> 'a'"),
    ("g == 'a' or g == 'b'", "g = 'a' OR g = 'b'"),
    ("g in ['a', 'b']", "g IN ('a', 'b')"),
    ("g not in ['a', 'b']", "g NOT IN ('a', 'b')"),
    ("g in ['a', null]", "g IN ('a', NULL)"),
    ("g not in ['a', null]", "g NOT IN ('a', NULL)"),
    ("is_null(g) or x > 2", "g IS NULL OR x > 2"),
    ("not_null(g) and not_null(x)", "g IS NOT NULL AND x IS NOT NULL"),
    ("not (x > 2 and y > 1)", "NOT (x > 2 AND y > 1)"),
    ("x > 2 or y > 3", "x > 2 OR y > 3"),
    ("not (x > 2 or y > 3)", "NOT (x > 2 OR y > 3)"),
    ("0 <= x < 3", "0 <= x AND x < 3"),
    ("between(x, 1, 4)", "x BETWEEN 1 AND 4"),
    ("x == x", "x = x"),
    ("x + y > 4", "x + y > 4"),
    ("x * 2 - y / 2 >= 1", "x * 2 - y / 2 >= 1"),
    ("coalesce(x, 0) > 2", "coalesce(x, 0) > 2"),
    ("upper(g) == 'A' and not_null(k1)", "upper(g) = 'A' AND k1 IS NOT NULL"),
    ("abs(x) >= 3", "abs(x) >= 3"),
    ("x > 100", "x > 100"),
]


@pytest.mark.parametrize(("expr", "where"), FILTERS, ids=[f[0] for f in FILTERS])
def test_filter_follows_sql_null_semantics(
    store: cb.Store, frames: dict[str, pd.DataFrame], expr: str, where: str
) -> None:
    got = run(store, f'f:\n  from: t\n  filter: "{expr}"', "f")
    want = sql(f"SELECT * FROM t WHERE {where}", t=frames["t"])
    assert_same(got, want, by=["id"])


def test_filter_keeps_slice_order_and_row_order(
    store: cb.Store, frames: dict[str, pd.DataFrame]
) -> None:
    got = run(store, "f:\n  from: t\n  filter: 'y >= 1'", "f")
    t = in_slice_order(frames["t"])
    assert_same(got, t[t.y >= 1], ordered=True)


# -- derive, select, rename -------------------------------------------------------------------


def test_derive_chained_within_and_across_stages(
    store: cb.Store, frames: dict[str, pd.DataFrame]
) -> None:
    stages = """
d1:
  from: t
  derive:
    a: "x * 2"
    b: "a + y"
    y: "y * 10"
    label: "upper(g)"
    band: "if_else(x > 2, 'high', 'low')"
d2:
  from: d1
  derive: {c: "b / 2 - y", x: "coalesce(x, -1)", n: "length(label)"}
"""
    got = run(store, stages, "d2")
    t = in_slice_order(frames["t"])
    want = t.copy()
    want["a"] = t.x * 2
    want["b"] = want.a + t.y
    want["y"] = t.y * 10
    want["label"] = [None if pd.isna(v) else v.upper() for v in t.g]
    # SQL's CASE WHEN: a null condition takes the ELSE branch
    want["band"] = np.where(t.x.notna() & (t.x > 2), "high", "low")
    want["c"] = want.b / 2 - want.y
    want["x"] = t.x.fillna(-1)
    want["n"] = [None if pd.isna(v) else len(v) for v in want.label]
    assert_same(got, want, ordered=True)


def test_select_keeps_the_columns_in_the_order_given(
    store: cb.Store, frames: dict[str, pd.DataFrame]
) -> None:
    got = run(store, "sel:\n  from: t\n  select: [x, g, id]", "sel")
    assert_same(got, in_slice_order(frames["t"])[["x", "g", "id"]], ordered=True)


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_a_selected_column_no_later_stage_reads(
    store: cb.Store, frames: dict[str, pd.DataFrame], scheduler: str
) -> None:
    """A select naming a column that nothing after it reads: the load skips that column (the
    plan projects loads), and the select must not ask for it (it raised KeyError)."""
    stages = (
        "slim:\n  from: t\n  select: [g, x, id]\n"
        "per_g:\n  from: slim\n  group_by: [g]\n  aggregate: {n: count(), s: sum(x)}"
    )
    got = run(store, stages, "per_g", scheduler=scheduler)
    want = sql("SELECT g, count(*) AS n, sum(x) AS s FROM t GROUP BY g", t=frames["t"])
    assert_same(got, want, by=["g"])


def test_rename_keeps_other_columns_in_place(
    store: cb.Store, frames: dict[str, pd.DataFrame]
) -> None:
    got = run(store, "ren:\n  from: t\n  rename: {x: value, g: group}", "ren")
    want = in_slice_order(frames["t"]).rename(columns={"x": "value", "g": "group"})
    assert_same(got, want, ordered=True)


# -- join -------------------------------------------------------------------------------------

HOWS = {"inner": "INNER", "left": "LEFT", "right": "RIGHT", "outer": "FULL OUTER"}
ONE_KEY = (
    "SELECT t.s, t.id, t.g, t.x, t.y, COALESCE(t.k1, r.k1) AS k1, t.k2, r.v, r.y AS y_right "
    "FROM t {how} JOIN r ON t.k1 = r.k1"
)
TWO_KEYS = (
    "SELECT t.s, t.id, t.g, t.x, t.y, COALESCE(t.k1, r2.k1) AS k1, COALESCE(t.k2, r2.k2) AS k2, "
    "r2.w FROM t {how} JOIN r2 ON t.k1 = r2.k1 AND t.k2 = r2.k2"
)


def _join(store: cb.Store, frames: dict[str, pd.DataFrame], left: str, how: str, keys: int) -> None:
    right, on, query = ("r", "k1", ONE_KEY) if keys == 1 else ("r2", "[k1, k2]", TWO_KEYS)
    stages = f"j:\n  from: {left}\n  join: {{right: {right}, on: {on}, how: {how}}}"
    got = run(store, stages, "j", inputs=f"{left}: {left}, {right}: {right}")
    want = sql(query.format(how=HOWS[how]), t=frames["t"], r=frames["r"], r2=frames["r2"])
    assert len(want) > 0
    assert_same(got, want)


@pytest.mark.parametrize("keys", [1, 2])
@pytest.mark.parametrize("how", ["inner", "left", "right", "outer"])
def test_join_one_slice_null_keys_never_match(
    store: cb.Store, frames: dict[str, pd.DataFrame], how: str, keys: int
) -> None:
    _join(store, frames, "t1", how, keys)


@pytest.mark.parametrize("keys", [1, 2])
@pytest.mark.parametrize("how", ["inner", "left"])
def test_join_sliced_left_side(
    store: cb.Store, frames: dict[str, pd.DataFrame], how: str, keys: int
) -> None:
    _join(store, frames, "t", how, keys)


@pytest.mark.parametrize("how", ["right", "outer"])
def test_join_right_and_outer_with_a_sliced_left_side(
    store: cb.Store, frames: dict[str, pd.DataFrame], how: str
) -> None:
    _join(store, frames, "t", how, 1)


def test_join_null_keys_are_kept_unmatched_by_a_left_join(
    store: cb.Store, frames: dict[str, pd.DataFrame]
) -> None:
    got = run(
        store, "j:\n  from: t\n  join: {right: r, on: k1, how: left}", "j", inputs="t: t, r: r"
    )
    nulls = got[got.k1.isna()]
    assert len(nulls) == frames["t"].k1.isna().sum() > 0
    assert nulls.v.isna().all()  # pandas alone would have matched them to r's null key (v=40)


def test_join_with_a_stage_as_the_right_side(
    store: cb.Store, frames: dict[str, pd.DataFrame]
) -> None:
    stages = """
small:
  from: r
  filter: "v < 40"
j:
  from: t
  join: {right: small, on: k1, how: inner}
"""
    got = run(store, stages, "j", inputs="t: t, r: r")
    want = sql(
        ONE_KEY.format(how="INNER").replace(
            "JOIN r ON", "JOIN (SELECT * FROM r WHERE v < 40) r ON"
        ),
        t=frames["t"],
        r=frames["r"],
    )
    assert_same(got, want)


# -- group_by + aggregate ------------------------------------------------------------------------

AGG_YAML = """
    rows: count()
    n_x: count(x)
    sum_y: sum(y)
    sum_x: sum(x)
    mean_x: mean(x)
    min_x: min(x)
    max_x: max(x)
    var_x: var(x)
    std_x: std(x)
    sum_xy: sum(x * y)"""
AGG_SQL = (
    "count(*) AS rows, count(x) AS n_x, sum(y) AS sum_y, sum(x) AS sum_x, avg(x) AS mean_x, "
    "min(x) AS min_x, max(x) AS max_x, var_samp(x) AS var_x, stddev_samp(x) AS std_x, "
    "sum(x * y) AS sum_xy"
)


@pytest.mark.parametrize("whole", [False, True], ids=["partials", "whole"])
@pytest.mark.parametrize("group_by", [["g"], ["g", "k1"], []], ids=["g", "g-k1", "global"])
def test_group_by_aggregate_matches_sql(
    store: cb.Store, frames: dict[str, pd.DataFrame], group_by: list[str], whole: bool
) -> None:
    """With a median the stage runs on its whole input, else as per-slice partials (with
    distinct counts among them)."""
    keys = f"  group_by: [{', '.join(group_by)}]\n" if group_by else ""
    extra = "\n    md: median(x)" if whole else "\n    nd: count_distinct(k1)"
    stages = f"a:\n  from: t\n{keys}  aggregate:{AGG_YAML}{extra}"
    got = run(store, stages, "a")
    last = "median(x) AS md" if whole else "count(DISTINCT k1) AS nd"
    select = ", ".join([*group_by, AGG_SQL, last])
    group = f" GROUP BY {', '.join(group_by)}" if group_by else ""
    want = sql(f"SELECT {select} FROM t{group}", t=frames["t"])
    assert_same(got, want, by=group_by or None)


def test_count_distinct_is_incremental_and_median_is_not(
    store: cb.Store, frames: dict[str, pd.DataFrame]
) -> None:
    stages = "a:\n  from: t\n  group_by: [g]\n  aggregate: {rows: count(), keys: count_distinct(k1), xs: count_distinct(x)}"
    plan = cb.Blueprint.from_yaml(blueprint(stages, "a")).plan(store).document()
    assert not plan["notes"]  # per-slice partials: nothing runs on the whole input
    got = run(store, stages, "a")
    want = sql(
        "SELECT g, count(*) AS rows, count(DISTINCT k1) AS keys, count(DISTINCT x) AS xs FROM t GROUP BY g",
        t=frames["t"],
    )
    assert_same(got, want, by=["g"])
    whole = stages.replace("xs: count_distinct(x)", "xs: median(x)")
    plan = cb.Blueprint.from_yaml(blueprint(whole, "a")).plan(store).document()
    (note,) = plan["notes"]  # names the aggregate that does not decompose, and only it
    assert "median does not decompose" in note and "whole input" in note, note


def test_aggregate_over_nothing(store: cb.Store) -> None:
    stages = "f:\n  from: t\n  filter: 'x > 100'\na:\n  from: f\n  aggregate: {rows: count(), s: sum(y), m: mean(x)}"
    got = run(store, stages, "a")
    assert len(got) == 1 and got.rows.tolist() == [0]
    assert got.s.isna().all() and got.m.isna().all()  # SQL: SUM over no rows is NULL
    grouped = stages.replace("  aggregate:", "  group_by: [g]\n  aggregate:")
    assert len(run(store, grouped, "a")) == 0


def test_aggregate_groups_come_out_sorted_nulls_last(store: cb.Store) -> None:
    got = run(store, "a:\n  from: t\n  group_by: [g]\n  aggregate: {rows: count()}", "a")
    assert got.g.tolist()[:-1] == ["a", "b", "c"] and pd.isna(got.g.tolist()[-1])


def test_stages_after_an_aggregate_filter_derive_and_join_its_result(
    store: cb.Store, frames: dict[str, pd.DataFrame]
) -> None:
    stages = """
per_key:
  from: t
  group_by: [k1]
  aggregate: {rows: count(), top: max(x)}
busy:
  from: per_key
  filter: "rows > 3 or is_null(k1)"
scaled:
  from: busy
  derive: {share: "rows / 100"}
named:
  from: scaled
  join: {right: r, on: k1, how: left}
"""
    got = run(store, stages, "named", inputs="t: t, r: r")
    want = sql(
        "WITH per_key AS (SELECT k1, count(*) AS rows, max(x) AS top FROM t GROUP BY k1), "
        "busy AS (SELECT *, rows / 100 AS share FROM per_key WHERE rows > 3 OR k1 IS NULL) "
        "SELECT busy.*, r.v, r.y FROM busy LEFT JOIN r ON busy.k1 = r.k1",
        t=frames["t"],
        r=frames["r"],
    )
    assert want.k1.isna().any()  # the null group is kept, and matches nothing in r
    assert_same(got, want)


# -- sort and limit --------------------------------------------------------------------------


def python_sort(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Stable multi-key sort in plain Python: one stable pass per key, last key first;
    nulls last in either direction."""
    rows = frame.to_dict("records")
    for key in reversed(keys):
        column, descending = (key[1:], True) if key.startswith("-") else (key, False)
        present = [r for r in rows if not pd.isna(r[column])]
        missing = [r for r in rows if pd.isna(r[column])]
        present.sort(key=lambda r, c=column: r[c], reverse=descending)
        rows = present + missing
    return pd.DataFrame(rows, columns=frame.columns)


@pytest.mark.parametrize("keys", [["g", "-x"], ["-y"], ["-g", "x", "-id"], ["k2", "-k1"]])
def test_sort_is_stable_multi_key_with_nulls_last(
    store: cb.Store, frames: dict[str, pd.DataFrame], keys: list[str]
) -> None:
    got = run(store, f"o:\n  from: t\n  sort: [{', '.join(keys)}]", "o")
    assert_same(got, python_sort(in_slice_order(frames["t"]), keys), ordered=True)


@pytest.mark.parametrize("n", [0, 1, 5, 1000])
def test_limit_after_sort(store: cb.Store, frames: dict[str, pd.DataFrame], n: int) -> None:
    stages = f"o:\n  from: t\n  sort: [-x, id]\ntop:\n  from: o\n  limit: {n}"
    got = run(store, stages, "top")
    want = python_sort(in_slice_order(frames["t"]), ["-x", "id"]).head(n)
    assert_same(got, want, ordered=True)


def test_limit_without_sort_takes_the_first_rows_in_slice_order(
    store: cb.Store, frames: dict[str, pd.DataFrame]
) -> None:
    got = run(store, "top:\n  from: t\n  limit: 7", "top")
    assert_same(got, in_slice_order(frames["t"]).head(7), ordered=True)


# -- union -----------------------------------------------------------------------------------


def test_union_of_inputs_sliced_alike_runs_slice_by_slice(
    store: cb.Store, frames: dict[str, pd.DataFrame]
) -> None:
    """t, u and a filter of t are all sliced by ``s``: the union is sliced by ``s`` too, and
    each slice holds that slice's rows of ``from``, then of each other input in order."""
    stages = "big:\n  from: t\n  filter: 'y > 2'\nall:\n  from: t\n  union: [u, big]"
    got = run(store, stages, "all", inputs="t: t, u: u")
    t, u = frames["t"], frames["u"]
    want = pd.concat(
        [
            part
            for key in sorted(set(t.s) | set(u.s))
            for part in (t[t.s == key], u[u.s == key], t[(t.s == key) & (t.y > 2)])
        ],
        ignore_index=True,
    )
    assert_same(got, want, ordered=True)


def test_union_of_inputs_sliced_apart_reads_them_whole(
    store: cb.Store, frames: dict[str, pd.DataFrame]
) -> None:
    """t is sliced by ``s``, t1 is one slice: all of ``from``'s rows, then the other's."""
    stages = "all:\n  from: t\n  union: [t1]"
    got = run(store, stages, "all", inputs="t: t, t1: t1")
    t = in_slice_order(frames["t"])
    assert_same(got, pd.concat([t, frames["t"]], ignore_index=True), ordered=True)


def test_union_aligns_columns_by_name(store: cb.Store, frames: dict[str, pd.DataFrame]) -> None:
    stages = (
        "a:\n  from: t\n  select: [id, g, x]\n"
        "b:\n  from: u\n  select: [x, id, g]\n"
        "ab:\n  from: a\n  union: b"
    )
    got = run(store, stages, "ab", inputs="t: t, u: u")
    t, u = frames["t"][["s", "id", "g", "x"]], frames["u"][["s", "id", "g", "x"]]
    keys = sorted(set(t.s) | set(u.s))
    want = pd.concat([p for k in keys for p in (t[t.s == k], u[u.s == k])], ignore_index=True)
    assert_same(got, want.drop(columns="s"), ordered=True)


# -- map -------------------------------------------------------------------------------------


@pytest.fixture
def udfs_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))


MAP = "m:\n  from: t\n  map: {{function: 'udfs:{name}', version: '1'}}"


def test_map_with_an_allowed_module(
    store: cb.Store, frames: dict[str, pd.DataFrame], udfs_on_path: None
) -> None:
    stages = MAP.format(name="add_ratio") + "\nd:\n  from: m\n  derive: {r2: 'ratio * 2'}"
    got = run(store, stages, "d", allow_modules=("udfs",), scheduler="threads")
    t = in_slice_order(frames["t"])
    want = t[t.id % 2 == 0].copy()
    want["ratio"] = want.x / (want.y + 1)
    want["r2"] = want.ratio * 2
    assert_same(got, want, ordered=True)


def test_allowing_a_package_allows_its_modules_but_not_lookalikes(
    store: cb.Store,
    frames: dict[str, pd.DataFrame],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    package = tmp_path / "cbt_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "sub.py").write_text("def keep_a(frame):\n    return frame[frame['g'] == 'a']\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    stages = "m:\n  from: t\n  map: {function: 'cbt_pkg.sub:keep_a', version: '1'}"
    got = run(store, stages, "m", allow_modules=("cbt_pkg",))
    t = in_slice_order(frames["t"])
    assert_same(got, t[t.g == "a"], ordered=True)
    lookalike = stages.replace("version: '1'", "version: '2'")
    with pytest.raises(ChanbatchError, match="not allowed"):
        run(store, lookalike, "m", allow_modules=("cbt_pk", "cbt_pkg.su", "cbt_pkg.sub.keep_a"))


def test_map_from_a_module_not_on_the_allowlist_is_a_usage_error(
    store: cb.Store, udfs_on_path: None
) -> None:
    stages = MAP.format(name="add_ratio").replace("version: '1'", "version: 'not-allowed'")
    with pytest.raises(UsageError, match="udfs") as info:
        run(store, stages, "m")
    assert info.value.exit_code == 2
    assert "--allow-module udfs" in (info.value.hint or "")


def test_a_module_not_on_the_allowlist_is_never_imported(
    store: cb.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "canary_udf.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n\ndef f(frame):\n    return frame\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    stages = "m:\n  from: t\n  map: {function: 'canary_udf:f', version: '1'}"
    with pytest.raises(ChanbatchError, match="canary_udf"):
        run(store, stages, "m", allow_modules=("udfs", "canary"))
    assert not marker.exists()
    assert "canary_udf" not in sys.modules


# -- per_slice --------------------------------------------------------------------------------


def slice_info(store: cb.Store, dataset: str) -> list[tuple[object, int]]:
    return [(s["key"], s["rows"]) for s in store.inspect(dataset).document()["slices"]]


def test_per_slice_aggregate_is_sliced_like_its_input(
    store: cb.Store, frames: dict[str, pd.DataFrame]
) -> None:
    stages = "a:\n  from: t\n  per_slice: true\n  group_by: [g]\n  aggregate: {rows: count(), mean_x: mean(x), top: max(y)}"
    text = blueprint(stages, "a")
    result = cb.Blueprint.from_yaml(text).run(store, scheduler="sync")
    dataset = result.snapshots["a"]["dataset"]
    got = result.outputs["a"].compute().reset_index(drop=True)
    t = frames["t"]
    parts = []
    for key in (1, 2, 3):
        part = t[t.s == key]
        parts.append(
            sql(
                "SELECT g, count(*) AS rows, avg(x) AS mean_x, max(y) AS top FROM t GROUP BY g ORDER BY g NULLS LAST",
                t=part,
            )
        )
    assert slice_info(store, dataset) == [
        (k, len(p)) for k, p in zip((1, 2, 3), parts, strict=True)
    ]
    assert_same(got, pd.concat(parts, ignore_index=True), ordered=True)
    assert result.snapshots["a"]["rows"] == sum(len(p) for p in parts)


def test_per_slice_sort_and_limit_keep_the_top_rows_of_each_slice(
    store: cb.Store, frames: dict[str, pd.DataFrame]
) -> None:
    stages = "o:\n  from: t\n  per_slice: true\n  sort: [-y, id]\ntop:\n  from: o\n  per_slice: true\n  limit: 2"
    text = blueprint(stages, "top")
    result = cb.Blueprint.from_yaml(text).run(store, scheduler="sync")
    got = result.outputs["top"].compute().reset_index(drop=True)
    t = frames["t"]
    want = pd.concat(
        [python_sort(t[t.s == k], ["-y", "id"]).head(2) for k in (1, 2, 3)], ignore_index=True
    )
    assert_same(got, want, ordered=True)
    assert slice_info(store, result.snapshots["top"]["dataset"]) == [(1, 2), (2, 2), (3, 2)]


def test_a_row_wise_output_is_sliced_like_its_input(
    store: cb.Store, frames: dict[str, pd.DataFrame]
) -> None:
    text = blueprint("f:\n  from: t\n  filter: 'x > 0'", "f")
    result = cb.Blueprint.from_yaml(text).run(store, scheduler="sync")
    t = frames["t"]
    want = [(k, int(((t.s == k) & (t.x > 0)).sum())) for k in (1, 2, 3)]
    assert slice_info(store, result.snapshots["f"]["dataset"]) == want


def test_per_slice_global_aggregate_with_an_emptied_slice(
    store: cb.Store, frames: dict[str, pd.DataFrame]
) -> None:
    t = frames["t"]
    threshold = t[t.s == 1].x.max()  # leaves slice 1 without rows
    stages = f"f:\n  from: t\n  filter: 'x > {threshold}'\na:\n  from: f\n  per_slice: true\n  aggregate: {{rows: count(), total: sum(y)}}"
    got = run(store, stages, "a")
    kept = t[t.x > threshold]
    want = pd.DataFrame(
        {
            "rows": [int((kept.s == k).sum()) for k in (1, 2, 3)],
            "total": [
                kept[kept.s == k].y.sum() if (kept.s == k).any() else None for k in (1, 2, 3)
            ],
        }
    )
    assert_same(got, want, ordered=True)


# -- outputs across runs ------------------------------------------------------------------------


def test_a_per_slice_output_holds_only_this_runs_slices(
    tmp_path: Path, frames: dict[str, pd.DataFrame]
) -> None:
    store = cb.Store(tmp_path / "store")
    t = frames["t"]
    store.freeze("t", t, slice_by="s")
    store.freeze("spring", t[t.s == 2], slice_by="s")
    text = blueprint(
        "a:\n  from: t\n  per_slice: true\n  group_by: [g]\n  aggregate: {rows: count()}", "a"
    )
    bp = cb.Blueprint.from_yaml(text)
    bp.run(store, scheduler="sync")
    result = bp.run(store, scheduler="sync", sets={"t": "spring"})
    got = result.outputs["a"].compute().reset_index(drop=True)
    want = sql("SELECT g, count(*) AS rows FROM t GROUP BY g", t=t[t.s == 2])
    assert_same(got, want)


def test_adding_a_column_to_an_output_and_running_again(
    tmp_path: Path, frames: dict[str, pd.DataFrame]
) -> None:
    store = cb.Store(tmp_path / "store")
    store.freeze("t", frames["t"], slice_by="s")
    first = "name: grow\ninputs: {t: t}\nstages:\n  a: {from: t, group_by: [g], aggregate: {rows: count()}}\noutputs: {a: grown}\n"
    cb.Blueprint.from_yaml(first).run(store, scheduler="sync")
    second = first.replace("{rows: count()}", "{rows: count(), top: max(y)}")
    result = cb.Blueprint.from_yaml(second).run(store, scheduler="sync")
    got = result.outputs["a"].compute().reset_index(drop=True)
    want = sql("SELECT g, count(*) AS rows, max(y) AS top FROM t GROUP BY g", t=frames["t"])
    assert_same(got, want)
