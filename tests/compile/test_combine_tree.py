"""The combine tree has content-defined boundaries (issue 17): a slice inserted anywhere moves
only the nodes on its own path to the root.

Plans are laid out by the real planner over synthetic snapshots (a one-slice store gives the
schema; its slice list is replaced by N made-up slices), without running anything. What
changed is counted independently of the tree's rule: the combine keys of the plan after an
insertion that the plan before it does not have, against the combines above the new slice's
partial, found by walking the tasks' dependencies.

The one exception the rule cannot avoid: a new slice whose key is itself a boundary closes a
group in the middle, so the rest of that group becomes a new node too (one per level at most,
with probability 1/FANOUT at level 1, 1/FANOUT**2 at level 2, ...). The tests check that every
changed node that is not on the path is such a remainder: its slices are a proper part of a
node of the tree before.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pytest

import chanbatch as cb
from chanbatch.compile.plan import FANOUT, MAX_GROUP, Plan, build_plan
from chanbatch.hashing import canonical_json, digest
from chanbatch.snapshot.manifest import SliceEntry
from chanbatch.snapshot.refs import Resolved

BLUEPRINT = """
name: tree
inputs:
  x: x
stages:
  total:
    from: x
    group_by: [g]
    aggregate: {n: count(), s: sum(v)}
outputs:
  total: total_out
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[cb.Blueprint, Resolved]:
    path = str(tmp_path_factory.mktemp("tree") / "store")
    cb.Store(path).freeze("x", pd.DataFrame({"g": [1], "v": [1.0], "k": [1]}), slice_by="k")
    blueprint = cb.Blueprint.from_yaml(BLUEPRINT)
    return blueprint, blueprint.plan(path).plan.inputs["x"]


def _closes(salt: int, depth: int, key: int) -> bool:
    """The documented rule, written out here: does a group close after slice ``key``?"""
    return int(digest(canonical_json([salt, depth, key]))[:16], 16) % FANOUT == 0


def lay_out(base: tuple[cb.Blueprint, Resolved], keys: Iterable[int], version: int = 0) -> Plan:
    """The plan over slices ``keys``; ``version`` changes the id (the content) of every slice."""
    blueprint, resolved = base
    entries = tuple(
        SliceEntry(key=k, id=digest(f"{k}/{version}".encode()), rows=1, bytes=1)  # type: ignore[arg-type]
        for k in sorted(keys)
    )
    manifest = dataclasses.replace(resolved.manifest, slices=entries)
    return build_plan(blueprint.model, {"x": resolved.with_manifest(manifest)})


def combines(plan: Plan) -> set[str]:
    return {t.key for t in plan.tasks.values() if t.kind == "combine"}


def leaves(plan: Plan, key: str) -> list[int]:
    """The slice keys under a combine node, in the order it combines them."""
    task = plan.tasks[key]
    if task.kind == "partial":
        return [plan.tasks[task.deps[0]].slice]  # type: ignore[list-item]
    return [k for dep in task.deps for k in leaves(plan, dep)]


def depth(plan: Plan) -> int:
    def height(key: str) -> int:
        task = plan.tasks[key]
        return 0 if task.kind != "combine" else 1 + max(height(d) for d in task.deps)

    (finish,) = (t for t in plan.tasks.values() if t.kind == "finish")
    return height(finish.deps[0])


def path(plan: Plan, slice_key: int) -> set[str]:
    """The combines above the partial of ``slice_key``."""
    return {k for k in combines(plan) if slice_key in leaves(plan, k)}


def check_insertion(base: tuple[cb.Blueprint, Resolved], keys: list[int], new: int) -> int:
    """Insert ``new`` into ``keys``; checks what changed and returns how many combines did."""
    before = lay_out(base, keys)
    after = lay_out(base, [*keys, new])
    changed = combines(after) - combines(before)
    on_path = path(after, new)
    assert on_path <= changed  # every node above a new slice is new
    old_groups = [set(leaves(before, k)) for k in combines(before)]
    off_path = changed - on_path
    for key in off_path:  # the rest of a group that the new slice closed
        part = set(leaves(after, key))
        assert any(part < group for group in old_groups), sorted(part)
    levels = {after.tasks[k].level for k in off_path}
    assert len(levels) == len(off_path)  # at most one remainder per level
    if not _closes(1, 0, new):
        assert not off_path
    assert len(on_path) <= depth(after)
    return len(changed)


N_SLICES = (84, 2526)


@pytest.mark.parametrize("n", N_SLICES)
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_an_insertion_changes_only_its_path(base, n: int, where: str) -> None:
    keys = [10 * i for i in range(1, n + 1)]
    at = {"first": 0, "middle": n // 2, "last": n - 1}[where]
    new = keys[at] - 5  # just before the slice at that position
    changed = check_insertion(base, keys, new)
    assert changed <= 2 * depth(lay_out(base, [*keys, new]))


@pytest.mark.parametrize("n", N_SLICES)
def test_an_append_changes_only_its_path(base, n: int) -> None:
    keys = [10 * i for i in range(1, n + 1)]
    changed = check_insertion(base, keys, keys[-1] + 10)
    after = lay_out(base, [*keys, keys[-1] + 10])
    assert changed == len(path(after, keys[-1] + 10)) <= depth(after)


def test_every_insertion_into_84_slices_stays_near_its_path(base) -> None:
    """All 85 places, months 1992-01 to 1998-12 as TPC-H's ``yyyymm`` keys."""
    keys = [100 * y + m for y in range(1992, 1999) for m in range(1, 13)]
    counts = []
    for missing in keys:
        counts.append(check_insertion(base, [k for k in keys if k != missing], missing))
    # a positional tree recomputed up to 8 of its 13 combines for a month in the middle
    assert max(counts) <= 2 * 3
    assert sorted(counts)[len(counts) // 2] <= 3


def test_a_replaced_slice_moves_no_boundary(base) -> None:
    keys = [10 * i for i in range(1, 301)]
    before = lay_out(base, keys)
    replaced = keys[150]
    blueprint, resolved = base
    after = lay_out(base, keys)
    entries = tuple(
        dataclasses.replace(e, id=digest(b"replaced")) if e.key == replaced else e
        for e in after.inputs["x"].manifest.slices
    )
    manifest = dataclasses.replace(resolved.manifest, slices=entries)
    after = build_plan(blueprint.model, {"x": resolved.with_manifest(manifest)})
    shape = sorted(tuple(leaves(before, k)) for k in combines(before))
    assert sorted(tuple(leaves(after, k)) for k in combines(after)) == shape
    assert combines(after) - combines(before) == path(after, replaced)


def test_groups_keep_slice_key_order_and_stay_within_the_cap(base) -> None:
    keys = [10 * i for i in range(1, 2527)]
    plan = lay_out(base, keys)
    sizes = []
    for key in combines(plan):
        task = plan.tasks[key]
        assert 2 <= len(task.deps) <= MAX_GROUP
        under = leaves(plan, key)
        assert under == sorted(under)
        if task.level == 1:
            sizes.append(len(task.deps))
    assert FANOUT / 2 <= sum(sizes) / len(sizes) <= FANOUT * 2
    (finish,) = (t for t in plan.tasks.values() if t.kind == "finish")
    assert leaves(plan, finish.deps[0]) == keys


def test_a_long_run_without_boundaries_is_cut_by_its_keys(base) -> None:
    """100 keys none of which closes a level-1 group: the cap cuts the run, by a second hash
    of the keys, not by position, so an insertion into the run still moves only its path."""
    keys = [k for k in range(10, 20000, 10) if not _closes(1, 0, k)][:100]
    plan = lay_out(base, keys)
    level1 = [plan.tasks[k] for k in combines(plan) if plan.tasks[k].level == 1]
    assert all(len(t.deps) <= MAX_GROUP for t in level1)
    assert sum(len(t.deps) for t in level1) <= len(keys)
    new = next(
        k
        for k in range(keys[40] + 1, keys[-1])
        if k % 10 and not _closes(1, 0, k) and not _closes(1, 1, k)
    )
    check_insertion(base, keys, new)


def test_one_slice_has_no_combine_and_two_have_one(base) -> None:
    one = lay_out(base, [7])
    assert not combines(one)
    (finish,) = (t for t in one.tasks.values() if t.kind == "finish")
    assert one.tasks[finish.deps[0]].kind == "partial"
    assert len(combines(lay_out(base, [7, 8]))) == 1


SHAPE = """
import dataclasses, sys
import pandas as pd
import chanbatch as cb
sys.path.insert(0, {here!r})
from test_combine_tree import BLUEPRINT, combines, lay_out
cb.Store({store!r}).freeze("x", pd.DataFrame({{"g": [1], "v": [1.0], "k": [1]}}), slice_by="k")
blueprint = cb.Blueprint.from_yaml(BLUEPRINT)
plan = lay_out((blueprint, blueprint.plan({store!r}).plan.inputs["x"]), range(1, 500))
print(sorted(combines(plan)))
"""


def test_the_tree_is_the_same_in_a_fresh_interpreter(base, tmp_path: Path) -> None:
    here = lay_out(base, range(1, 500))
    script = SHAPE.format(here=str(Path(__file__).parent), store=str(tmp_path / "store"))
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(sorted(combines(here)))


def test_the_boundaries_follow_the_documented_rule() -> None:
    """The planner's boundary test (on the first 8 bytes of the digest, without its hex text)
    is the documented rule, written out here with the hex digest, for ints and dates alike."""
    import datetime as dt

    from chanbatch.compile.plan import _closes as planner_closes
    from chanbatch.compile.plan import _closing, _label

    closing = 0
    keys = [
        *range(-50, 5000),
        *(dt.date(2020, 1, 1) + dt.timedelta(days=d) for d in range(400)),
    ]
    labels = [_label(key) for key in keys]
    for salt, depth in ((1, 0), (2, 0), (3, 1)):
        wanted = []
        for index, key in enumerate(keys):
            text = canonical_json(
                [salt, depth, key.isoformat() if isinstance(key, dt.date) else key]
            )
            want = int(digest(text)[:16], 16) % FANOUT == 0
            assert planner_closes(salt, depth, labels[index]) == want, (key, salt, depth)
            if want:
                wanted.append(index)
        # the whole pass at once, as the planner makes it, says the same
        assert _closing(labels, salt, depth) == wanted, (salt, depth)
        closing += len(wanted)
    assert 0.09 < closing / (3 * 5450) < 0.16  # about 1 in FANOUT
