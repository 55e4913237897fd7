"""Incremental reuse (issue 4), end to end through the ``chanbatch`` command.

One blueprint (a per-slice filter, a filter, a derive, a left join against a small broadcast
input, and a group_by with count, sum, mean and max) runs on synthetic orders sliced by month.
Each test starts from a copy of one store on which the blueprint has run once over months 1 to
11, changes one thing (nothing, a new slice, a changed slice, a stage's filter, the broadcast
input, the cache), and checks three things:

- ``plan --json``: exactly which (stage, slice, kind) tasks compute, and why;
- ``run --json``: how many tasks computed, and the output snapshot;
- the output snapshot's rows, read back through ``chanbatch.Store``, against plain pandas on
  the same data (never against numbers taken from chanbatch).

With early cutoff, a task above a stored result that is recomputed is *provisional*: its key
hashes that result's content, so the plan gives it a placeholder key and a run reuses it if the
result comes out unchanged. The data here always changes the results it touches, so no cutoff
applies and a run computes exactly what its plan marks ``compute``. Keys are compared only for
tasks whose key the plan knows (reused ones).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

import chanbatch as cb
from chanbatch.hashing import seal


def _load_clikit() -> ModuleType:
    """tests/cli/clikit.py, which runs the installed ``chanbatch`` script in a subprocess."""
    if "clikit" in sys.modules:
        return sys.modules["clikit"]
    path = Path(__file__).resolve().parents[1] / "cli" / "clikit.py"
    spec = importlib.util.spec_from_file_location("clikit", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["clikit"] = module
    spec.loader.exec_module(module)
    return module


clikit = _load_clikit()

BLUEPRINT = """\
name: incr
inputs:
  orders: orders
  regions: regions
stages:
  valid:
    from: orders
    per_slice: true
    filter: "status != 'void'"
  big:
    from: valid
    filter: "amount > 60"
  priced:
    from: big
    derive: {total: "amount * qty"}
  named:
    from: priced
    join: {right: regions, on: store, how: left}
  by_region:
    from: named
    group_by: [region]
    aggregate:
      orders: count()
      revenue: sum(total)
      mean_amount: mean(amount)
      biggest: max(total)
outputs:
  by_region: incr_by_region
"""
OUTPUT = "incr_by_region"
THRESHOLD = 60
ROW_STAGES = ("valid", "big", "priced", "named")  # one apply task per slice each
BASE_MONTHS = range(1, 12)  # the shared store holds months 1..11; month 12 arrives later


# -- the combine tree, as docs/concepts.md and compile/plan.py state its rule -------------------
#
# Written again here from the documented rule, so that the counts below do not come from the
# planner under test: on pass p a group closes after a child whose last slice key k has
# blake3(canonical JSON [p, 0, k]) % 8 == 0 (and after the last child); a group of one is passed
# up unchanged. (No run here is long enough for the 32-children cap.)

Node = tuple[Any, ...]  # a combine: the nodes or slice keys under it, in order


def combine_tree(slice_keys: list[int]) -> list[Node]:
    """Every combine node of the tree over ``slice_keys``."""
    from chanbatch.hashing import canonical_json, digest
    from chanbatch.snapshot.names import encode_key

    def last(child: Any) -> int:
        return last(child[-1]) if isinstance(child, tuple) else child

    children: list[Any] = sorted(slice_keys)
    nodes: list[Node] = []
    salt = 1
    while len(children) > 1:
        groups: list[list[Any]] = [[]]
        for i, child in enumerate(children):
            groups[-1].append(child)
            key = canonical_json([salt, 0, encode_key(last(child))])
            if int(digest(key)[:16], 16) % 8 == 0 and i < len(children) - 1:
                groups.append([])
        up = []
        for group in groups:
            if len(group) == 1:
                up.append(group[0])
            else:
                nodes.append(tuple(group))
                up.append(nodes[-1])
        children = up
        salt += 1
    return nodes


def covers(node: Node) -> set[int]:
    return set().union(*(covers(c) if isinstance(c, tuple) else {c} for c in node))


#: the combines of the shared store's tree
BASE_COMBINES = len(combine_tree(list(BASE_MONTHS)))
NULL = "<null>"

Task = tuple[str, Any, str]  # (stage, slice, kind)


# -- data and the pandas oracle -------------------------------------------------------------------


def orders_frame(rows: int = 3000, seed: int = 4) -> pd.DataFrame:
    """Orders of 12 months; store 7 has no region, so the left join leaves some regions null."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "month": rng.integers(1, 13, rows).astype("int64"),
            "order_id": np.arange(rows, dtype="int64"),
            "store": rng.integers(1, 8, rows).astype("int64"),
            "amount": rng.uniform(0, 100, rows).round(2),
            "qty": rng.integers(1, 6, rows).astype("int64"),
            "status": pd.Series(rng.choice(["ok", "void"], rows, p=[0.9, 0.1]), dtype="str"),
        }
    )


def regions_frame(**renamed: str) -> pd.DataFrame:
    names = {1: "north", 2: "north", 3: "south", 4: "south", 5: "east", 6: "east"}
    names.update({int(k.removeprefix("s")): v for k, v in renamed.items()})
    return pd.DataFrame(
        {
            "store": np.array(list(names), dtype="int64"),
            "region": pd.Series(list(names.values()), dtype="str"),
        }
    )


ORDERS = orders_frame()
REGIONS = regions_frame()


def named_rows(orders: pd.DataFrame, regions: pd.DataFrame, threshold: float) -> pd.DataFrame:
    valid = orders[orders.status != "void"]
    big = valid[valid.amount > threshold]
    priced = big.assign(total=big.amount * big.qty)
    return priced.merge(regions, on="store", how="left")


def expected(
    orders: pd.DataFrame, regions: pd.DataFrame = REGIONS, threshold: float = THRESHOLD
) -> pd.DataFrame:
    named = named_rows(orders, regions, threshold)
    out = (
        named.groupby("region", dropna=False)
        .agg(
            orders=("order_id", "size"),
            revenue=("total", "sum"),
            mean_amount=("amount", "mean"),
            biggest=("total", "max"),
        )
        .reset_index()
    )
    return tidy(out)


def tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """Null region as a sentinel, rows sorted by region, plain dtypes."""
    frame = frame.copy()
    region = frame["region"].astype(object)
    frame["region"] = region.where(region.notna(), NULL).astype(str)
    columns = ["region", "orders", "revenue", "mean_amount", "biggest"]
    return frame[columns].sort_values("region").reset_index(drop=True)


def output_frame(store: Path, snapshot: str) -> pd.DataFrame:
    """The rows of one output snapshot, read back through the store (objects re-hashed)."""
    return tidy(cb.Store(str(store)).read(f"{OUTPUT}@{snapshot}").compute())


def assert_output_equals(store: Path, run_doc: dict, want: pd.DataFrame) -> None:
    out = run_doc["outputs"]["by_region"]
    assert out["dataset"] == OUTPUT
    assert out["rows"] == len(want)
    got = output_frame(store, out["snapshot"])
    pd.testing.assert_frame_equal(got, want, check_dtype=False, rtol=1e-9)


def months(frame: pd.DataFrame, keys: range | list[int]) -> pd.DataFrame:
    return frame[frame.month.isin(list(keys))]


# -- the CLI ------------------------------------------------------------------------------------


def cli_json(*args: str | Path, store: Path, quiet: bool = True) -> dict:
    """``chanbatch ARGS --json --store STORE``: exit 0 and one JSON document on stdout."""
    result = clikit.run(*args, "--json", store=store)
    assert result.code == 0, str(result)
    if quiet:
        assert result.stderr == "", str(result)
    return json.loads(result.stdout)


def plan(blueprint: Path, store: Path, *, quiet: bool = True) -> dict:
    doc = cli_json("plan", blueprint, store=store, quiet=quiet)
    tasks = doc["tasks"]
    assert doc["summary"]["compute"] == sum(t["action"] == "compute" for t in tasks)
    assert doc["summary"]["reuse"] == sum(t["action"] == "reuse" for t in tasks)
    assert len(tasks) == doc["summary"]["compute"] + doc["summary"]["reuse"]
    return doc


def run(blueprint: Path, store: Path, *, quiet: bool = True) -> dict:
    return cli_json("run", blueprint, store=store, quiet=quiet)


def computing(doc: dict) -> Counter[Task]:
    """The (stage, slice, kind) of every task the plan computes, with multiplicity (the
    combines of one aggregate all have slice None)."""
    return Counter(
        (t["stage"], t["slice"], t["kind"]) for t in doc["tasks"] if t["action"] == "compute"
    )


def why(task: dict) -> str:
    """A computed task's reason, without the note that a provisional task adds ("; reused if
    its inputs come out unchanged")."""
    return task["reason"].split(";")[0]


def reasons(doc: dict, stage: str | None = None) -> set[str]:
    """The reasons of the tasks the plan computes (of one stage)."""
    return {
        why(t)
        for t in doc["tasks"]
        if t["action"] == "compute" and (stage is None or t["stage"] == stage)
    }


def key_of(doc: dict, stage: str, slice_key: Any, kind: str = "apply") -> str:
    (key,) = [
        t["key"]
        for t in doc["tasks"]
        if (t["stage"], t["slice"], t["kind"]) == (stage, slice_key, kind)
    ]
    return key


def whole_chain(slices: range | list[int], *, combines: int) -> Counter[Task]:
    """Every task below ``valid``: big, priced, named and the partial on each slice, the
    combines and the finish."""
    tasks: Counter[Task] = Counter()
    for k in slices:
        tasks.update([(s, k, "apply") for s in ROW_STAGES[1:]])
        tasks[("by_region", k, "partial")] += 1
    tasks[("by_region", None, "combine")] += combines
    tasks[("by_region", None, "finish")] += 1
    return tasks


def cache_entries(store: Path) -> dict[str, dict]:
    """``cache ls --json`` by key."""
    return {e["key"]: e for e in cli_json("cache", "ls", store=store)["entries"]}


def cached_object_file(store: Path, key: str) -> Path:
    """The object a cache entry names, found from ``cache/<key>.json`` (DESIGN.md section 2)."""
    entry = json.loads((store / "cache" / f"{key}.json").read_text())
    (oid,) = entry["objects"]
    return clikit.object_file(store, oid)


# -- the shared starting point ------------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    """A store where ``incr`` has run once over months 1..11 (tests copy it, never change it)."""

    store: Path
    blueprint: Path
    plan: dict  # the cold plan, before the first run
    run: dict  # the first run
    warm: dict  # the plan after the first run: every key known

    @property
    def snapshot(self) -> str:
        return self.run["outputs"]["by_region"]["snapshot"]

    def copy(self, tmp_path: Path) -> Path:
        store = tmp_path / "store"
        shutil.copytree(self.store, store)
        return store


def freeze_inputs(store: Path, orders: pd.DataFrame, regions: pd.DataFrame = REGIONS) -> None:
    api = cb.Store(str(store))
    api.freeze("orders", orders, slice_by="month")
    api.freeze("regions", regions, slice="all")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    root = tmp_path_factory.mktemp("incremental")
    store = root / "store"
    freeze_inputs(store, months(ORDERS, BASE_MONTHS))
    blueprint = root / "incr.yaml"
    blueprint.write_text(BLUEPRINT)
    cold = plan(blueprint, store)
    first = run(blueprint, store)
    warm = plan(blueprint, store)
    return Base(store=store, blueprint=blueprint, plan=cold, run=first, warm=warm)


def edited(tmp_path: Path, old: str, new: str) -> Path:
    assert old in BLUEPRINT
    path = tmp_path / "incr.yaml"
    path.write_text(BLUEPRINT.replace(old, new))
    return path


# -- 1. nothing changed -------------------------------------------------------------------------


def test_first_run_computes_every_task_and_matches_pandas(base: Base) -> None:
    tasks = base.plan["tasks"]
    assert {t["action"] for t in tasks} == {"compute"}
    assert reasons(base.plan) == {"not cached: no earlier run of this blueprint"}
    # 11 slices: four row-wise stages and a partial per slice, the combines of the tree over
    # them, and the finish
    want = Counter({(s, k, "apply"): 1 for s in ROW_STAGES for k in BASE_MONTHS})
    want.update({("by_region", k, "partial"): 1 for k in BASE_MONTHS})
    want.update({("by_region", None, "combine"): BASE_COMBINES, ("by_region", None, "finish"): 1})
    assert computing(base.plan) == want
    assert base.run["stats"]["computed"] == len(tasks) == 11 * 5 + BASE_COMBINES + 1
    assert_output_equals(base.store, base.run, expected(months(ORDERS, BASE_MONTHS)))


def test_noop_rerun_computes_nothing_and_keeps_the_output_snapshot(
    base: Base, tmp_path: Path
) -> None:
    store = base.copy(tmp_path)
    again = plan(base.blueprint, store)
    assert again["summary"]["compute"] == 0
    assert again["summary"]["reuse"] == len(base.plan["tasks"])
    assert {t["action"] for t in again["tasks"]} == {"reuse"}
    assert [(t["stage"], t["slice"], t["kind"]) for t in again["tasks"]] == [
        (t["stage"], t["slice"], t["kind"]) for t in base.plan["tasks"]
    ]
    # the same keys as in the plan made right after the first run, in another process
    assert [t["key"] for t in again["tasks"]] == [t["key"] for t in base.warm["tasks"]]

    redo = run(base.blueprint, store)
    assert redo["stats"]["computed"] == 0
    assert redo["stats"]["reused"] == len(base.plan["tasks"])
    assert redo["outputs"] == base.run["outputs"]
    assert [v.snapshot for v in cb.Store(str(store)).history(OUTPUT)] == [base.snapshot]
    assert_output_equals(store, redo, expected(months(ORDERS, BASE_MONTHS)))


# -- 2. one new slice ---------------------------------------------------------------------------


def test_a_new_slice_computes_its_tasks_and_the_combines_on_its_path(
    base: Base, tmp_path: Path
) -> None:
    store = base.copy(tmp_path)
    cb.Store(str(store)).freeze("orders", months(ORDERS, [12]), slice_by="month")

    doc = plan(base.blueprint, store)
    want = Counter({(s, 12, "apply"): 1 for s in ROW_STAGES})
    # slice 12 changes only the combines on its path: a combine whose children are all as
    # before keeps its key
    before, after = combine_tree(list(BASE_MONTHS)), combine_tree([*BASE_MONTHS, 12])
    new_combines = [node for node in after if node not in before]
    assert all(12 in covers(node) for node in new_combines)
    want.update(
        {("by_region", 12, "partial"): 1, ("by_region", None, "combine"): len(new_combines)}
    )
    want[("by_region", None, "finish")] += 1
    assert computing(doc) == want
    assert reasons(doc) == {"new slice 12"}
    old_keys = {t["key"] for t in base.warm["tasks"]}
    reused = [t for t in doc["tasks"] if t["action"] == "reuse"]
    assert {t["key"] for t in reused} <= old_keys
    kept = len(after) - len(new_combines)
    assert [t["kind"] for t in reused if t["slice"] is None] == ["combine"] * kept

    warm = run(base.blueprint, store)
    assert warm["stats"]["computed"] == sum(want.values()) == 5 + len(new_combines) + 1
    assert warm["outputs"]["by_region"]["snapshot"] != base.snapshot
    assert_output_equals(store, warm, expected(ORDERS))

    # the same 12 months frozen at once into an empty store, and run cold, give the very same
    # output snapshot: the combine tree adds in the same order either way
    cold_store = tmp_path / "cold"
    freeze_inputs(cold_store, ORDERS)
    cold = run(base.blueprint, cold_store)
    assert cold["stats"]["computed"] == 12 * 5 + len(after) + 1
    assert cold["outputs"] == warm["outputs"]


# -- 3. a changed slice -------------------------------------------------------------------------


def test_a_changed_slice_recomputes_only_that_slice_and_the_combines_above_it(
    base: Base, tmp_path: Path
) -> None:
    store = base.copy(tmp_path)
    # late orders for month 5, big enough to pass the filters, in two regions and none
    late = pd.DataFrame(
        {
            "month": np.int64(5),
            "order_id": np.arange(9000, 9004, dtype="int64"),
            "store": np.array([1, 3, 7, 2], dtype="int64"),
            "amount": [99.0, 98.5, 97.25, 61.0],
            "qty": np.array([5, 4, 3, 1], dtype="int64"),
            "status": pd.Series(["ok"] * 4, dtype="str"),
        }
    )
    may = pd.concat([months(ORDERS, [5]), late], ignore_index=True)
    path = tmp_path / "may.parquet"
    may.to_parquet(path, index=False)
    frozen = cli_json("snapshot", "freeze", "orders", path, "--slice", "5", store=store)
    assert [(s["key"], s["rows"], s["new"], s["replaced"]) for s in frozen["slices"]] == [
        (5, len(may), False, True)
    ]

    doc = plan(base.blueprint, store)
    want = Counter({(s, 5, "apply"): 1 for s in ROW_STAGES})
    # the combines above slice 5 are recomputed; the others keep their keys
    path = [node for node in combine_tree(list(BASE_MONTHS)) if 5 in covers(node)]
    want.update({("by_region", 5, "partial"): 1, ("by_region", None, "combine"): len(path)})
    want[("by_region", None, "finish")] += 1
    assert computing(doc) == want
    assert reasons(doc) == {"changed slice 5"}
    for k in set(BASE_MONTHS) - {5}:
        assert key_of(doc, "by_region", k, "partial") == key_of(
            base.warm, "by_region", k, "partial"
        )

    warm = run(base.blueprint, store)
    assert warm["stats"]["computed"] == sum(want.values()) == 8
    now = pd.concat([months(ORDERS, set(BASE_MONTHS) - {5}), may], ignore_index=True)
    assert_output_equals(store, warm, expected(now))
    assert not expected(now).equals(expected(months(ORDERS, BASE_MONTHS)))


# -- 4. a changed stage -------------------------------------------------------------------------


def test_a_changed_filter_recomputes_its_stage_and_everything_below_it(
    base: Base, tmp_path: Path
) -> None:
    store = base.copy(tmp_path)
    blueprint = edited(tmp_path, '"amount > 60"', '"amount > 70"')
    # every month has orders between the two thresholds, so every result below the edit changes
    source = months(ORDERS, BASE_MONTHS)
    dropped = source[(source.status != "void") & source.amount.between(60, 70, inclusive="right")]
    assert set(dropped.month) == set(BASE_MONTHS)

    doc = plan(blueprint, store)
    assert computing(doc) == whole_chain(BASE_MONTHS, combines=BASE_COMBINES)
    # the per-slice stage above the edit keeps every cached result
    valid = [t for t in doc["tasks"] if t["stage"] == "valid"]
    assert [(t["slice"], t["action"], t["reason"]) for t in valid] == [
        (k, "reuse", "cached") for k in BASE_MONTHS
    ]
    assert [t["key"] for t in valid] == [key_of(base.warm, "valid", k) for k in BASE_MONTHS]
    assert reasons(doc, "big") == {"stage spec changed: big.filter"}
    for stage in ("priced", "named", "by_region"):
        assert reasons(doc, stage) == {"upstream stage changed: big.filter"}, stage

    warm = run(blueprint, store)
    assert warm["stats"]["computed"] == doc["summary"]["compute"] == 11 * 4 + BASE_COMBINES + 1
    assert_output_equals(store, warm, expected(months(ORDERS, BASE_MONTHS), threshold=70))

    # editing it back finds the first run's results still cached: nothing computes, and the
    # output is the first run's snapshot again
    back = run(base.blueprint, store)
    assert back["stats"]["computed"] == 0
    assert back["outputs"] == base.run["outputs"]


# -- 5. a changed broadcast input ---------------------------------------------------------------


def test_a_new_snapshot_of_the_broadcast_input_recomputes_every_join(
    base: Base, tmp_path: Path
) -> None:
    store = base.copy(tmp_path)
    regions = regions_frame(s2="west")  # store 2 moves from north to a new region
    cb.Store(str(store)).freeze("regions", regions, slice="all")
    # every month has joined orders of store 2, so every join result changes
    named = named_rows(months(ORDERS, BASE_MONTHS), REGIONS, THRESHOLD)
    assert set(named[named.store == 2].month) == set(BASE_MONTHS)

    doc = plan(base.blueprint, store)
    # big and priced are not kept (not selective enough to checkpoint), so they are recomputed
    # to feed the joins; valid above them is reused from the cache
    assert computing(doc) == whole_chain(BASE_MONTHS, combines=BASE_COMBINES)
    assert {(t["action"], t["reason"]) for t in doc["tasks"] if t["stage"] == "valid"} == {
        ("reuse", "cached")
    }
    for stage in ("named", "by_region"):
        assert reasons(doc, stage) == {"broadcast input regions changed"}, stage
    assert reasons(doc, "priced") == {
        f"input to named@{k} apply, which is recomputed" for k in BASE_MONTHS
    }

    explained = cli_json("explain", "named@3", base.blueprint, store=store)
    (task,) = explained["tasks"]
    assert task["changed"] == ["broadcast"]
    assert [b["what"] for b in task["components"]["broadcast"]] == ["all slices of regions"]
    assert task["key"] == key_of(doc, "named", 3)

    warm = run(base.blueprint, store)
    assert warm["stats"]["computed"] == doc["summary"]["compute"] == 11 * 4 + BASE_COMBINES + 1
    want = expected(months(ORDERS, BASE_MONTHS), regions)
    assert "west" in set(want.region)
    assert_output_equals(store, warm, want)


# -- 8. explain ---------------------------------------------------------------------------------


def test_explain_names_the_component_that_changed(base: Base, tmp_path: Path) -> None:
    store = base.copy(tmp_path)
    blueprint = edited(tmp_path, '"amount > 60"', '"amount > 70"')
    previous = base.run["run"]

    big = cli_json("explain", "big", blueprint, store=store)["tasks"]
    assert [(t["slice"], t["kind"]) for t in big] == [(k, "apply") for k in BASE_MONTHS]
    for t in big:
        assert t["changed"] == ["spec"], t
        assert t["previous_run"] == previous
        parts = t["components"]
        assert parts["spec"] == {"op": "filter", "expr": "amount > 70", "per_slice": False}
        assert parts["kind"] == "apply"
        assert parts["upstream"] == [
            {"key": key_of(base.warm, "valid", t["slice"]), "what": f"valid@{t['slice']} apply"}
        ]
        assert parts["broadcast"] == []
        assert t["key"] != key_of(base.warm, "big", t["slice"])

    (priced,) = cli_json("explain", "priced@3", blueprint, store=store)["tasks"]
    assert priced["changed"] == ["upstream: big@3 apply"]
    assert priced["components"]["upstream"][0]["key"] == big[2]["key"]

    (valid,) = cli_json("explain", "valid@3", blueprint, store=store)["tasks"]
    assert valid["changed"] == []
    assert valid["key"] == key_of(base.warm, "valid", 3)

    text = clikit.run("explain", "big@3", blueprint, store=store)
    assert text.code == 0, str(text)
    assert text.stdout.startswith("big@3 apply")
    assert big[2]["key"] in text.stdout.replace("\n", "")
    assert "amount > 70" in text.stdout
    assert f"differs from run {previous}: spec" in text.stdout


# -- 9. the cache: ls, du, evict, corruption, gc ------------------------------------------------


def test_cache_ls_and_du_list_what_the_run_kept(base: Base, tmp_path: Path) -> None:
    store = base.copy(tmp_path)
    entries = cache_entries(store)
    tasks = {t["key"]: t for t in base.warm["tasks"]}
    assert set(entries) <= set(tasks)
    kept = Counter((tasks[k]["stage"], tasks[k]["kind"]) for k in entries)
    # valid is per_slice and by_region's partials, combines and finish are always kept; named
    # is kept as a checkpoint where it has at most half the rows of its input slice
    source = months(ORDERS, BASE_MONTHS)
    named = named_rows(source, REGIONS, THRESHOLD)
    selective = [
        k for k in BASE_MONTHS if (named.month == k).sum() <= 0.5 * (source.month == k).sum()
    ]
    assert kept == Counter(
        {
            ("valid", "apply"): 11,
            ("named", "apply"): len(selective),
            ("by_region", "partial"): 11,
            ("by_region", "combine"): BASE_COMBINES,
            ("by_region", "finish"): 1,
        }
    )
    for key, entry in entries.items():
        task = tasks[key]
        assert entry["stage"] == task["stage"] and entry["kind"] == task["kind"]
        assert clikit.object_file(store, entry["objects"][0]).is_file()
        if task["stage"] == "valid":
            month = source[source.month == task["slice"]]
            assert entry["rows"] == (month.status != "void").sum()
        elif task["stage"] == "named":
            assert entry["rows"] == (named.month == task["slice"]).sum()
        elif task["kind"] == "finish":
            assert entry["rows"] == len(expected(source))

    du = cli_json("cache", "du", store=store)
    assert du["entries"] == len(entries)
    by_stage = Counter(e["stage"] for e in entries.values())
    assert {s: v["entries"] for s, v in du["stages"].items()} == dict(by_stage)
    unique = {e["objects"][0]: e["bytes"] for e in entries.values()}
    assert du["bytes"] == sum(unique.values())


def test_evicted_entries_are_recomputed(base: Base, tmp_path: Path) -> None:
    store = base.copy(tmp_path)
    before = cache_entries(store)
    aggregate = {k for k, e in before.items() if e["stage"] == "by_region"}
    evicted = cli_json("cache", "evict", "--stage", "by_region", store=store)
    assert set(evicted["evicted"]) == aggregate and len(aggregate) == 11 + BASE_COMBINES + 1
    assert set(cache_entries(store)) == set(before) - aggregate

    doc = plan(base.blueprint, store)
    want = Counter({("by_region", k, "partial"): 1 for k in BASE_MONTHS})
    want.update({("by_region", None, "combine"): BASE_COMBINES, ("by_region", None, "finish"): 1})
    assert computing(doc) == want
    # the partials read the checkpointed join results, which stay cached
    assert {t["action"] for t in doc["tasks"] if t["stage"] == "named"} == {"reuse"}

    warm = run(base.blueprint, store)
    assert warm["stats"]["computed"] == 11 + BASE_COMBINES + 1
    assert warm["outputs"] == base.run["outputs"]
    assert_output_equals(store, warm, expected(months(ORDERS, BASE_MONTHS)))


def test_recomputed_evicted_entries_are_cached_again(base: Base, tmp_path: Path) -> None:
    store = base.copy(tmp_path)
    before = cache_entries(store)
    partials = {k for k, e in before.items() if e["kind"] == "partial"}
    cli_json("cache", "evict", "--stage", "by_region", store=store)
    assert run(base.blueprint, store)["stats"]["computed"] == 11 + BASE_COMBINES + 1

    # the evicted results are cached again: the next run computes nothing (it recomputes the
    # 11 partials), its plan says so, and the partials are back under the keys plans give them
    assert run(base.blueprint, store)["stats"]["computed"] == 0
    assert plan(base.blueprint, store)["summary"]["compute"] == 0
    assert partials <= set(cache_entries(store))


def test_a_corrupt_cached_object_is_a_miss_and_is_recomputed(base: Base, tmp_path: Path) -> None:
    store = base.copy(tmp_path)
    named5 = key_of(base.warm, "named", 5)
    clikit.flip_byte(cached_object_file(store, named5))
    # make the join result of slice 5 needed again: the aggregate has to be recomputed
    cli_json("cache", "evict", "--stage", "by_region", store=store)

    doc = plan(base.blueprint, store, quiet=False)  # a warning names the bad entry
    want = Counter({("by_region", k, "partial"): 1 for k in BASE_MONTHS})
    want.update({("by_region", None, "combine"): BASE_COMBINES, ("by_region", None, "finish"): 1})
    # the corrupt join result is a miss: it is recomputed from the cached valid@5 through the
    # stages that are not kept; every other slice's join result is reused
    want.update({("big", 5, "apply"): 1, ("priced", 5, "apply"): 1, ("named", 5, "apply"): 1})
    assert computing(doc) == want
    assert {t["action"] for t in doc["tasks"] if t["stage"] == "valid"} == {"reuse"}

    warm = run(base.blueprint, store, quiet=False)
    assert warm["stats"]["computed"] == 11 + BASE_COMBINES + 1 + 3
    assert warm["outputs"] == base.run["outputs"]
    assert_output_equals(store, warm, expected(months(ORDERS, BASE_MONTHS)))


def test_a_recomputed_corrupt_object_is_repaired(base: Base, tmp_path: Path) -> None:
    store = base.copy(tmp_path)
    finish = key_of(base.warm, "by_region", None, "finish")
    clikit.flip_byte(cached_object_file(store, finish))

    doc = plan(base.blueprint, store, quiet=False)
    assert computing(doc) == Counter({("by_region", None, "finish"): 1})
    warm = run(base.blueprint, store, quiet=False)
    assert warm["stats"]["computed"] == 1
    assert warm["outputs"] == base.run["outputs"]
    # what the run reports as its output must be readable and right ...
    assert_output_equals(store, warm, expected(months(ORDERS, BASE_MONTHS)))
    # ... and the recomputed result is cached again
    assert run(base.blueprint, store)["stats"]["computed"] == 0


def test_gc_keeps_the_cache_entries_of_the_last_run(base: Base, tmp_path: Path) -> None:
    store = base.copy(tmp_path)
    before = cache_entries(store)
    # a checkpoint evicted by key prefix (nothing else needs it while the aggregate is
    # cached), and a copy of its entry under a key that no run names: gc removes that entry,
    # and then the object, which no live entry names any more (the copy names its own key and
    # is sealed again, or readers would rightly take it for corruption)
    named3 = key_of(base.warm, "named", 3)
    orphan = "0" * 63 + "1"
    copied = json.loads((store / "cache" / f"{named3}.json").read_bytes())
    (store / "cache" / f"{orphan}.json").write_bytes(seal({**copied, "key": orphan}))
    gone = cli_json("cache", "evict", named3[:12], store=store)
    assert gone["evicted"] == [named3]

    swept = cli_json("gc", "--grace", "0s", store=store)
    assert swept["dry_run"] is False
    assert swept["removed"]["cache"] == 1
    assert swept["objects"] == before[named3]["objects"]
    assert not (store / "cache" / f"{orphan}.json").exists()

    after = cache_entries(store)
    assert set(after) == set(before) - {named3}
    for entry in after.values():
        assert clikit.object_file(store, entry["objects"][0]).is_file(), entry

    redo = run(base.blueprint, store)
    assert redo["stats"]["computed"] == 0
    assert redo["outputs"] == base.run["outputs"]
    assert_output_equals(store, redo, expected(months(ORDERS, BASE_MONTHS)))
