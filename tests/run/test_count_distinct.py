"""Exact distinct counts, incrementally: per-slice sets of distinct values merged up the combine
tree (issue 18, item 1). Checked against DuckDB's count(DISTINCT x) on the same rows, and a
grown store (slices arriving in any order, a slice replaced) must end with the snapshot id of a
cold run, having recomputed only the new slice's partial and the combines on its path."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from hypokit import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chanbatch as cb

BLUEPRINT = """
name: distinct
inputs: {t: t}
stages:
  per_g:
    from: t
    group_by: [g]
    aggregate: {rows: count(), ni: count_distinct(i), nf: count_distinct(f), ns: count_distinct(s), nd: count_distinct(d)}
  overall:
    from: t
    aggregate: {ni: count_distinct(i), ns: count_distinct(s)}
outputs: {per_g: distinct_per_g, overall: distinct_overall}
"""

SQL_PER_G = """
SELECT g, count(*) AS rows, count(DISTINCT i) AS ni, count(DISTINCT f) AS nf,
       count(DISTINCT s) AS ns, count(DISTINCT d) AS nd
FROM frame GROUP BY g ORDER BY g
"""
SQL_OVERALL = "SELECT count(DISTINCT i) AS ni, count(DISTINCT s) AS ns FROM frame"


def duck(sql: str, frame: pd.DataFrame) -> list[tuple]:
    """DuckDB's answer over ``frame``, computed independently of chanbatch."""
    return duckdb.connect().register("frame", frame).execute(sql).fetchall()


def ours(store: cb.Store) -> tuple[list[tuple], list[tuple]]:
    per_g = store.read_pandas("distinct_per_g").sort_values("g")
    overall = store.read_pandas("distinct_overall")
    cols = ["g", "rows", "ni", "nf", "ns", "nd"]
    return (
        [(r[0], *(int(v) for v in r[1:])) for r in per_g[cols].itertuples(index=False)],
        [tuple(int(v) for v in r) for r in overall[["ni", "ns"]].itertuples(index=False)],
    )


rows = st.fixed_dictionaries(
    {
        "day": st.integers(0, 7),
        "g": st.sampled_from(["a", "b", "c"]),
        "i": st.one_of(st.none(), st.integers(-3, 3), st.sampled_from([2**62, -(2**63)])),
        "f": st.one_of(st.none(), st.sampled_from([0.0, -0.0, 0.1, 1.5, -2.25, 1e300, 3.0])),
        "s": st.one_of(st.none(), st.sampled_from(["", "x", "y", "é", "x y"])),
        "d": st.one_of(st.none(), st.dates(dt.date(2013, 1, 1), dt.date(2013, 1, 4))),
    }
)


def frame_of(records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records, columns=["day", "g", "i", "f", "s", "d"])
    return frame.astype({"day": "int64", "i": "Int64", "f": "float64", "s": "string"}).assign(
        d=pd.array(frame["d"], dtype="date32[pyarrow]")
    )


def run(store: cb.Store, tmp_path: Path) -> cb.run.runner.RunResult:
    path = tmp_path / "distinct.yaml"
    path.write_text(BLUEPRINT)
    return cb.Blueprint.from_yaml(path).run(store, scheduler="sync")


@settings(max_examples=examples(25), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(rows, min_size=1, max_size=60), st.randoms(use_true_random=False))
def test_any_slicing_and_arrival_order_gives_duckdbs_counts_and_the_cold_id(
    tmp_path_factory: pytest.TempPathFactory, records: list[dict], rng: object
) -> None:
    tmp_path = tmp_path_factory.mktemp("distinct")
    frame = frame_of(records)
    want = (duck(SQL_PER_G, frame.drop(columns="day")), duck(SQL_OVERALL, frame))

    cold = cb.Store(tmp_path / "cold")
    cold.freeze("t", frame, slice_by="day")
    first = run(cold, tmp_path)
    assert ours(cold) == want

    days = sorted(frame["day"].unique())
    rng.shuffle(days)  # type: ignore[attr-defined]
    grown = cb.Store(tmp_path / "grown")
    for day in days:  # slices arrive in any order, each run on what has arrived
        grown.freeze("t", frame[frame["day"] == day], slice_by="day")
        last = run(grown, tmp_path)
    assert last.snapshots == first.snapshots
    assert ours(grown) == want


def counts(store: Path, result: cb.run.runner.RunResult) -> dict[str, int]:
    record = json.loads((store / "runs" / f"{result.run_id}.json").read_text())
    out: dict[str, int] = {}
    for task in record["tasks"]:
        if task["stage"] == "per_g" and task.get("outcome") == "computed":
            out[task["kind"]] = out.get(task["kind"], 0) + 1
    return out


@pytest.mark.parametrize(
    "slices", [84, pytest.param(2526, marks=pytest.mark.slow)]  # 2,526: about a minute
)
def test_a_new_or_replaced_slice_recomputes_its_partial_and_its_path(
    tmp_path: Path, slices: int
) -> None:
    frame = pd.DataFrame(
        {
            "day": range(slices),
            "g": ["a", "b"] * (slices // 2),
            "i": [d % 97 for d in range(slices)],
            "f": [float(d % 13) for d in range(slices)],
            "s": [f"s{d % 41}" for d in range(slices)],
            "d": pd.array([dt.date(2013, 1, 1 + d % 28) for d in range(slices)], "date32[pyarrow]"),
        }
    )
    store = cb.Store(tmp_path / "store")
    store.freeze("t", frame, slice_by="day")
    run(store, tmp_path)
    depth = len(f"{slices:b}")  # a bound on the combine tree's height at any fan-in >= 2
    extra = pd.DataFrame(
        {"day": [slices], "g": ["a"], "i": [1000], "f": [0.5], "s": ["new"]}
    ).assign(d=pd.array([dt.date(2014, 1, 1)], "date32[pyarrow]"))
    store.freeze("t", extra, slice_by="day")  # one new slice
    appended = run(store, tmp_path)
    done = counts(tmp_path / "store", appended)
    assert done["partial"] == 1 and done["combine"] <= depth and done["finish"] == 1
    everything = pd.concat([frame, extra], ignore_index=True)
    assert ours(store) == (
        duck(SQL_PER_G, everything.drop(columns="day")),
        duck(SQL_OVERALL, everything),
    )

    # a slice in the middle replaced: its partial and its path again, and a cold run's id
    middle = everything[everything["day"] == slices // 2].assign(i=[-5], s=["replaced"])
    store.freeze("t", middle, slice_by="day")
    replaced = run(store, tmp_path)
    done = counts(tmp_path / "store", replaced)
    assert done["partial"] == 1 and done["combine"] <= depth
    final = pd.concat([everything[everything["day"] != slices // 2], middle], ignore_index=True)
    cold = cb.Store(tmp_path / "cold")
    cold.freeze("t", final, slice_by="day")
    assert run(cold, tmp_path).snapshots == replaced.snapshots
    assert ours(store) == (
        duck(SQL_PER_G, final.drop(columns="day")),
        duck(SQL_OVERALL, final),
    )
