"""Task keys are deterministic content hashes (DESIGN.md sections 1 and 6, STYLE.md item 4).

The same blueprint on the same snapshots gives the same keys twice, after a pickle round trip
and in a fresh interpreter with another PYTHONHASHSEED. A spec change moves the keys of its
stage and everything downstream, and nothing else; names, whitespace and execution settings
never move a key; a new snapshot of a broadcast input moves the join and what follows it.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chanbatch as cb
from chanbatch.compile.keys import engine_salt, task_key
from chanbatch.engine import graph as graph_module

BLUEPRINT = """
name: keys
inputs:
  flights: flights
  airlines: airlines
stages:
  late:
    from: flights
    filter: "dep_delay > 0 and origin in ['JFK', 'LGA']"
  fast:
    from: late
    derive: {speed: "distance / air_time * 60"}
  named:
    from: fast
    join: {right: airlines, on: carrier, how: left}
  by_carrier:
    from: named
    group_by: [carrier, name]
    aggregate:
      flights: count()
      mean_delay: mean(dep_delay)
  ranked:
    from: by_carrier
    sort: [-flights, carrier]
  origins:
    from: flights
    group_by: [origin]
    aggregate: {n: count()}
outputs:
  ranked: ranked_carriers
  origins: origin_counts
"""
STAGES = ("late", "fast", "named", "by_carrier", "ranked", "origins")
DOWNSTREAM = {
    "late": {"late", "fast", "named", "by_carrier", "ranked"},
    "fast": {"fast", "named", "by_carrier", "ranked"},
    "by_carrier": {"by_carrier", "ranked"},
    "ranked": {"ranked"},
    "origins": {"origins"},
}
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def flights_frame(months: int = 4, rows: int = 80, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    delay = rng.normal(5, 20, rows).round(0)
    delay[rng.random(rows) < 0.1] = np.nan
    return pd.DataFrame(
        {
            "month": rng.integers(1, months + 1, rows).astype("int64"),
            "carrier": rng.choice(["AA", "B6", "DL", "ZZ"], rows),
            "origin": rng.choice(["JFK", "LGA", "EWR"], rows),
            "dep_delay": delay,
            "distance": rng.integers(100, 2500, rows).astype("int64"),
            "air_time": rng.integers(30, 300, rows).astype("float64"),
        }
    )


AIRLINES = pd.DataFrame({"carrier": ["AA", "B6", "DL"], "name": ["American", "JetBlue", "Delta"]})


def make_store(path: Path) -> cb.Store:
    store = cb.Store(path)
    store.freeze("flights", flights_frame(), slice_by="month")
    store.freeze("airlines", AIRLINES, slice="all")
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> cb.Store:
    return make_store(tmp_path_factory.mktemp("keys") / "store")


def task_list(text: str, store: cb.Store, **kwargs: object) -> list[tuple[str, object, str, str]]:
    """(stage, slice, kind, key) of every task of the plan, in plan order."""
    plan = cb.Blueprint.from_yaml(text).plan(store, **kwargs).plan
    return [(t.stage, t.slice, t.kind, t.key) for t in plan.tasks.values()]


def stage_keys(text: str, store: cb.Store, **kwargs: object) -> dict[str, frozenset[str]]:
    """Every stage's task keys (input loads and broadcast gathers left out)."""
    out: dict[str, set[str]] = defaultdict(set)
    for stage, _slice, kind, key in task_list(text, store, **kwargs):
        if kind not in ("load", "gather"):
            out[stage].add(key)
    return {stage: frozenset(keys) for stage, keys in out.items()}


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def assert_moved(
    before: dict[str, frozenset[str]], after: dict[str, frozenset[str]], moved: set[str]
) -> None:
    """Stages in ``moved`` have no key in common with before; all others kept every key."""
    assert set(before) == set(after)
    for stage in before:
        if stage in moved:
            assert not before[stage] & after[stage], f"{stage} kept a key"
        else:
            assert before[stage] == after[stage], f"{stage} changed"


# -- determinism ----------------------------------------------------------------------------


def test_every_stage_has_keys_of_64_hex(store: cb.Store) -> None:
    keys = stage_keys(BLUEPRINT, store)
    assert set(keys) == set(STAGES)
    for stage_set in keys.values():
        assert stage_set and all(HEX64.match(k) for k in stage_set)
    tasks = task_list(BLUEPRINT, store)
    assert len({key for *_, key in tasks}) == len(tasks)
    # a per-slice stage has one task per slice of its input
    assert sorted(s for st, s, kind, _ in tasks if st == "late") == [1, 2, 3, 4]


def test_same_keys_twice(store: cb.Store) -> None:
    assert task_list(BLUEPRINT, store) == task_list(BLUEPRINT, store)


@pytest.mark.parametrize("backend", ["local", "memory"])
def test_same_keys_from_a_second_store_with_the_same_data(
    tmp_path: Path, store: cb.Store, backend: str
) -> None:
    if backend == "local":
        other = make_store(tmp_path / "other")
        assert task_list(BLUEPRINT, other) == task_list(BLUEPRINT, store)
        return
    import fsspec

    url = f"memory://chanbatch-keys-{uuid.uuid4().hex}"
    try:
        assert task_list(BLUEPRINT, make_store(url)) == task_list(BLUEPRINT, store)
    finally:
        fsspec.filesystem("memory").rm(url, recursive=True)


def test_same_keys_after_a_pickle_round_trip(store: cb.Store) -> None:
    report = cb.Blueprint.from_yaml(BLUEPRINT).plan(store)
    tasks = pickle.loads(pickle.dumps(report.plan.tasks))
    assert tasks == report.plan.tasks
    assert list(tasks) == list(report.plan.tasks)
    assert all(key == task.key for key, task in tasks.items())
    # the blueprint model itself survives pickling and plans to the same keys
    model = pickle.loads(pickle.dumps(cb.Blueprint.from_yaml(BLUEPRINT).model))
    again = cb.Blueprint(model).plan(store).plan.tasks
    assert list(again) == list(report.plan.tasks)


SUBPROCESS = textwrap.dedent(
    """
    import json, sys
    import chanbatch as cb
    text = open(sys.argv[2]).read()
    plan = cb.Blueprint.from_yaml(text).plan(cb.Store(sys.argv[1])).plan
    json.dump([[t.stage, t.slice, t.kind, t.key] for t in plan.tasks.values()], sys.stdout)
    """
)


@pytest.mark.parametrize("seed", ["0", "4242"])
def test_same_keys_in_a_fresh_interpreter_with_another_hash_seed(
    store: cb.Store, tmp_path: Path, seed: str
) -> None:
    text_file = tmp_path / "bp.yaml"
    text_file.write_text(BLUEPRINT)
    env = {**os.environ, "PYTHONHASHSEED": seed}
    proc = subprocess.run(
        [sys.executable, "-c", SUBPROCESS, store.url, str(text_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    theirs = [tuple(row) for row in json.loads(proc.stdout)]
    assert theirs == task_list(BLUEPRINT, store)


# -- what moves a key and what does not ------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "old", "new"),
    [
        ("late", "dep_delay > 0 and", "dep_delay > 5 and"),
        ("fast", "distance / air_time * 60", "distance / air_time * 61"),
        ("by_carrier", "mean_delay: mean(dep_delay)", "mean_delay: max(dep_delay)"),
        ("ranked", "sort: [-flights, carrier]", "sort: [flights, carrier]"),
        ("origins", "aggregate: {n: count()}", "aggregate: {n: count(dep_delay)}"),
    ],
)
def test_a_spec_change_moves_its_stage_and_downstream_only(
    store: cb.Store, stage: str, old: str, new: str
) -> None:
    before = stage_keys(BLUEPRINT, store)
    after = stage_keys(edit(BLUEPRINT, old, new), store)
    assert_moved(before, after, DOWNSTREAM[stage])


def test_per_slice_moves_its_stage_and_downstream(store: cb.Store) -> None:
    before = stage_keys(BLUEPRINT, store)
    text = edit(BLUEPRINT, "    from: late\n", "    from: late\n    per_slice: true\n")
    assert_moved(before, stage_keys(text, store), DOWNSTREAM["fast"])


def test_join_settings_move_the_join_and_downstream(store: cb.Store) -> None:
    before = stage_keys(BLUEPRINT, store)
    after = stage_keys(edit(BLUEPRINT, "how: left", "how: inner"), store)
    assert_moved(before, after, {"named", "by_carrier", "ranked"})


def test_a_map_version_bump_moves_the_map_and_downstream(store: cb.Store) -> None:
    text = edit(
        BLUEPRINT,
        '    derive: {speed: "distance / air_time * 60"}',
        "    map: {function: 'somewhere.udfs:speed', version: '1'}",
    )
    before = stage_keys(text, store)
    assert before == stage_keys(text, store)
    after = stage_keys(edit(text, "version: '1'", "version: '2'"), store)
    assert_moved(before, after, DOWNSTREAM["fast"])
    renamed = stage_keys(edit(text, "somewhere.udfs:speed", "somewhere.udfs:speed2"), store)
    assert_moved(before, renamed, DOWNSTREAM["fast"])


def test_renaming_stages_inputs_outputs_and_the_blueprint_keeps_keys(store: cb.Store) -> None:
    renames = {"late": "delayed", "fast": "quick", "by_carrier": "per_airline", "ranked": "top"}
    text = BLUEPRINT
    for old, new in renames.items():
        text = re.sub(rf"\b{old}\b", new, text)
    text = re.sub(r"\bflights: flights\b", "f: flights", text)
    text = text.replace("from: flights", "from: f")
    text = text.replace("name: keys", "name: renamed_keys")
    text = text.replace("ranked_carriers", "another_dataset")
    assert "late" not in text and "from: flights" not in text
    before = stage_keys(BLUEPRINT, store)
    after = stage_keys(text, store)
    assert {renames.get(s, s): keys for s, keys in before.items()} == after


def test_declaration_order_of_stages_keeps_keys(store: cb.Store) -> None:
    head, _, rest = BLUEPRINT.partition("stages:\n")
    body, _, tail = rest.partition("outputs:\n")
    blocks = re.split(r"(?m)^(?=  \w)", body)
    blocks = [b for b in blocks if b.strip()]
    text = head + "stages:\n" + "".join(reversed(blocks)) + "outputs:\n" + tail
    assert text != BLUEPRINT
    assert stage_keys(text, store) == stage_keys(BLUEPRINT, store)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("dep_delay > 0 and origin in ['JFK', 'LGA']", "dep_delay>0 and origin in['JFK','LGA']"),
        (
            "dep_delay > 0 and origin in ['JFK', 'LGA']",
            "  dep_delay  >  0   and  origin in [ 'JFK' , 'LGA' ] ",
        ),
        (
            "dep_delay > 0 and origin in ['JFK', 'LGA']",
            "(dep_delay > 0) and (origin in ['JFK', 'LGA'])",
        ),
        (
            "\"dep_delay > 0 and origin in ['JFK', 'LGA']\"",
            '|\n      dep_delay > 0\n      and origin in ["JFK", "LGA"]',
        ),
        ("distance / air_time * 60", "distance/air_time*60"),
        ("distance / air_time * 60", "(distance / air_time) * 60"),
        ("mean_delay: mean(dep_delay)", "mean_delay: mean( dep_delay )"),
    ],
)
def test_whitespace_and_redundant_parentheses_keep_keys(
    store: cb.Store, old: str, new: str
) -> None:
    assert stage_keys(edit(BLUEPRINT, old, new), store) == stage_keys(BLUEPRINT, store)


def test_yaml_layout_keeps_keys(store: cb.Store) -> None:
    text = edit(
        BLUEPRINT,
        '    derive: {speed: "distance / air_time * 60"}',
        "    derive:\n      speed: 'distance / air_time * 60'",
    )
    text = edit(text, "    group_by: [origin]", "    group_by:\n      - origin")
    assert stage_keys(text, store) == stage_keys(BLUEPRINT, store)


def test_the_order_of_a_rename_mapping_keeps_keys_but_a_derive_order_does_not(
    store: cb.Store,
) -> None:
    base = BLUEPRINT.replace(
        '    derive: {speed: "distance / air_time * 60"}',
        '    derive: {speed: "distance / air_time * 60", hours: "air_time / 60"}\n'
        "  renamed:\n    from: fast\n    rename: {speed: mph, hours: h}",
    )
    base = base.replace("    from: fast\n    join:", "    from: renamed\n    join:")
    before = stage_keys(base, store)
    swapped = edit(base, "rename: {speed: mph, hours: h}", "rename: {hours: h, speed: mph}")
    assert stage_keys(swapped, store) == before
    reordered = edit(
        base,
        '{speed: "distance / air_time * 60", hours: "air_time / 60"}',
        '{hours: "air_time / 60", speed: "distance / air_time * 60"}',
    )
    assert_moved(before, stage_keys(reordered, store), {*DOWNSTREAM["fast"], "renamed"})


def test_a_changed_slice_moves_only_its_own_per_slice_keys(tmp_path: Path) -> None:
    frame = flights_frame()
    store = cb.Store(tmp_path / "store")
    store.freeze("flights", frame, slice_by="month")
    store.freeze("airlines", AIRLINES, slice="all")
    before = task_list(BLUEPRINT, store)
    changed = frame[frame.month == 2].assign(dep_delay=lambda d: d.dep_delay + 1)
    store.freeze("flights", changed, slice_by="month")
    after = task_list(BLUEPRINT, store)
    old = {(stage, s, kind): key for stage, s, kind, key in before if s is not None}
    new = {(stage, s, kind): key for stage, s, kind, key in after if s is not None}
    assert old.keys() == new.keys()
    moved = {where for where in old if old[where] != new[where]}
    assert moved and {s for _, s, _ in moved} == {2}
    assert {stage for stage, _, _ in moved} == {
        "flights",
        "late",
        "fast",
        "named",
        "by_carrier",
        "origins",
    }


# -- execution settings never enter a key -----------------------------------------------------


def test_keys_do_not_depend_on_the_scheduler_or_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    graphs: list[set[str]] = []
    real = graph_module.build_graph

    def spy(*args: object, **kwargs: object) -> dict:
        graph = real(*args, **kwargs)
        graphs.append(set(graph))
        return graph

    monkeypatch.setattr(graph_module, "build_graph", spy)
    settings = [
        {"scheduler": "sync"},
        {"scheduler": "threads", "workers": 1},
        {"scheduler": "threads", "workers": 3},
    ]
    records = []
    for i, setting in enumerate(settings):
        store = make_store(tmp_path / f"s{i}")
        planned = [t[3] for t in task_list(BLUEPRINT, store)]
        result = cb.Blueprint.from_yaml(BLUEPRINT).run(store, **setting)
        assert graphs[-1] <= set(planned), "a Dask key that is not a plan key"
        record = json.loads((Path(store.url) / "runs" / f"{result.run_id}.json").read_text())
        records.append(([t["key"] for t in record["tasks"]], result.snapshots))
    assert records[0] == records[1] == records[2]


def test_a_rerun_on_another_scheduler_reuses_everything(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store")
    bp = cb.Blueprint.from_yaml(BLUEPRINT)
    first = bp.run(store, scheduler="sync")
    again = bp.run(store, scheduler="threads", workers=2)
    assert first.stats["computed"] > 0
    assert again.stats["computed"] == 0
    assert again.snapshots == first.snapshots


# -- inputs ---------------------------------------------------------------------------------


def test_a_new_snapshot_of_the_broadcast_input_moves_the_join_and_downstream(
    tmp_path: Path,
) -> None:
    store = make_store(tmp_path / "store")
    before = stage_keys(BLUEPRINT, store)
    old = store.resolve("airlines").snapshot

    store.freeze("airlines", AIRLINES, slice="all")  # the same bytes: no new snapshot
    assert store.resolve("airlines").snapshot == old
    assert stage_keys(BLUEPRINT, store) == before

    changed = AIRLINES.assign(name=["American Airlines", "JetBlue", "Delta"])
    store.freeze("airlines", changed, slice="all")
    assert store.resolve("airlines").snapshot != old
    after = stage_keys(BLUEPRINT, store)
    assert_moved(before, after, {"named", "by_carrier", "ranked"})

    # pinning the input to its old snapshot gives the old keys back
    pinned = stage_keys(BLUEPRINT, store, sets={"airlines": f"airlines@{old[:12]}"})
    assert pinned == before


def test_a_new_slice_keeps_every_key_of_the_old_slices(tmp_path: Path) -> None:
    """Nine months, then a tenth: per-slice tasks and the first full combine node stay."""
    frame = flights_frame(months=10, rows=200, seed=3)
    store = cb.Store(tmp_path / "store")
    store.freeze("flights", frame[frame.month <= 9], slice_by="month")
    store.freeze("airlines", AIRLINES, slice="all")
    before = task_list(BLUEPRINT, store)
    store.freeze("flights", frame[frame.month == 10], slice_by="month")
    after = task_list(BLUEPRINT, store)
    after_keys = {t[3] for t in after}

    for stage, slice_key, kind, key in before:
        if kind in ("apply", "partial", "load"):
            assert key in after_keys, (stage, slice_key, kind)
    new = [t for t in after if t[3] not in {b[3] for b in before}]
    per_slice_new = {(stage, kind) for stage, s, kind, _ in new if s is not None}
    assert {s for _, s, _, _ in new if s is not None} == {10}
    assert ("late", "apply") in per_slice_new and ("by_carrier", "partial") in per_slice_new
    # the combine over months 1-8 is a full node of the fixed-boundary tree: it is kept
    combines = {
        stage: [t[3] for t in before if t[0] == stage and t[2] == "combine"]
        for stage in ("by_carrier", "origins")
    }
    for stage, keys in combines.items():
        assert any(k in after_keys for k in keys), stage


@pytest.mark.slow
def test_a_cluster_of_processes_computes_the_same_keys_and_outputs(tmp_path: Path) -> None:
    bp = cb.Blueprint.from_yaml(BLUEPRINT)
    local = make_store(tmp_path / "local")
    cluster = make_store(tmp_path / "cluster")
    want = bp.run(local, scheduler="sync")
    got = bp.run(cluster, scheduler="processes", workers=2)
    assert got.snapshots == want.snapshots
    assert task_list(BLUEPRINT, cluster) == task_list(BLUEPRINT, local)


# -- the key is the digest of one canonical JSON document ---------------------------------------

_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.text(max_size=8),
    st.floats(allow_nan=False, allow_infinity=False),
)
_specs = st.dictionaries(
    st.text(max_size=6),
    st.recursive(_json_leaf, lambda inner: st.lists(inner, max_size=3), max_leaves=6),
    max_size=4,
)
_ids = st.lists(
    st.builds(
        lambda raw, pending: ("pending:" if pending else "") + raw.hex(),
        st.binary(min_size=32, max_size=32),
        st.booleans(),
    ),
    max_size=3,
)


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(["apply", "partial", "combine"]), spec=_specs, up=_ids, bc=_ids)
def test_task_key_is_blake3_of_the_canonical_document(
    kind: str, spec: dict, up: list[str], bc: list[str]
) -> None:
    import blake3

    document = {"salt": engine_salt(), "kind": kind, "spec": spec, "upstream": up, "broadcast": bc}
    text = json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    assert task_key(kind, spec, up, bc) == blake3.blake3(text.encode()).hexdigest()


def test_the_salts_versions_are_the_installed_ones_read_without_importlib_metadata() -> None:
    """The salt names the major versions of pandas and pyarrow, as importlib.metadata gives
    them, but reads them from the dist-info directories: a no-op run must not pay for
    importing importlib.metadata (about 40 ms)."""
    from importlib import metadata

    from chanbatch.compile.keys import engine_salt

    salt = engine_salt()
    assert salt["pandas"] == metadata.version("pandas").split(".")[0]
    assert salt["pyarrow"] == metadata.version("pyarrow").split(".")[0]
    code = (
        "import sys; from chanbatch.compile.keys import engine_salt; engine_salt(); "
        "print('importlib.metadata' in sys.modules, 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
