"""Requests a ``chanbatch`` process makes on S3 (issue 20, item 6): the O(1) claims, held cheaply.

A no-op ``plan`` and ``run`` over a store of 200 slices must make no more LIST requests and no
more reads (GET + HEAD) than over 20 slices, and the run after one new slice stays under a
bound. Each store is frozen and run once locally (fast), uploaded to a moto S3 server on
127.0.0.1 that counts every request it serves, by type (LIST, GET, HEAD, PUT, DELETE:
tests/benchmark/s3count.py), and then measured with real ``chanbatch`` processes that reach
it through ``AWS_ENDPOINT_URL``. The
run's answers are checked against pandas over the raw rows. tests/benchmark/bench_s3.py
measures the same at 84 and 2,526 slices of TPC-H lineitem.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("s3fs")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmark"))

from s3count import UNSET, CountingS3, Counts, Match, classify
from s3kit import clear_s3fs_cache

import chanbatch as cb
from chanbatch.cache.index import memo_path
from chanbatch.snapshot.layout import manifest_path, object_path
from chanbatch.snapshot.objects import get_slice, get_snapshot
from chanbatch.snapshot.refs import resolve
from chanbatch.snapshot.storage import Storage

CHANBATCH = Path(sys.executable).with_name("chanbatch")
SMALL, LARGE = 20, 200
ROWS = 8  # per slice
#: "one new slice makes at most a few dozen requests" (issue 20)
NEW_SLICE_BOUND = 48
#: LIST + GET + HEAD the run after one new slice may add from SMALL to LARGE slices: about 4
#: more combine-tree levels, each a key looked up (2 requests on a miss) and its result read
PATH_GROWTH = 16

BLUEPRINT = """\
name: per_kind
inputs:
  events: events
stages:
  kept:
    from: events
    filter: "v > 100"
  per_kind:
    from: kept
    group_by: [kind]
    aggregate: {n: count(), total: sum(v)}
outputs:
  per_kind: per_kind
"""


def events(n: int, first: int = 0) -> pa.Table:
    """``n`` slices (``day`` = first .. first + n - 1) of ``ROWS`` rows each."""
    rng = np.random.default_rng(first + 7)
    rows = n * ROWS
    return pa.table(
        {
            "day": np.repeat(np.arange(first, first + n, dtype="int64"), ROWS),
            "kind": rng.integers(0, 4, rows, dtype="int64"),
            "v": rng.integers(0, 1000, rows, dtype="int64"),
        }
    )


def expected(table: pa.Table) -> list[tuple[int, int, int]]:
    """The blueprint's answer, by pandas over the raw rows."""
    df = table.to_pandas()
    kept = df[df.v > 100]
    out = kept.groupby("kind").agg(n=("v", "size"), total=("v", "sum")).reset_index()
    return [tuple(int(x) for x in r) for r in out[["kind", "n", "total"]].itertuples(index=False)]


def answer(url: str, snapshot: str) -> list[tuple[int, int, int]]:
    got = cb.Store(url).read_pandas(f"per_kind@{snapshot}").sort_values("kind")
    return [tuple(int(x) for x in r) for r in got[["kind", "n", "total"]].itertuples(index=False)]


def warm_store(root: Path, blueprint: Path, n: int) -> Path:
    """A local store of ``n`` slices, frozen and run once."""
    local = root / f"local-{n}"
    cb.Store(str(local)).freeze("events", events(n), slice_by="day")
    cb.Blueprint.from_yaml(blueprint).run(str(local))
    return local


def counted(s3: CountingS3, url: str, *args: str) -> tuple[Counts, str]:
    """Run ``chanbatch ARGS --store URL``: the requests it made, and its stdout."""
    s3.reset()
    done = subprocess.run(
        [str(CHANBATCH), *args, "--store", url], env=s3.env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return s3.counts(), done.stdout


def listing_and_reads(c: Counts) -> tuple[int, int]:
    return c.by_kind["LIST"], c.by_kind["GET"] + c.by_kind["HEAD"]


@pytest.fixture(scope="module")
def s3() -> Iterator[CountingS3]:
    """A moto S3 server on 127.0.0.1 that counts the requests it serves; this process's
    environment points s3fs at it (and s3fs's cached clients are dropped) while it runs."""
    with CountingS3() as server, pytest.MonkeyPatch.context() as patch:
        for name in (*UNSET, "AWS_ENDPOINT_URL_S3"):
            patch.delenv(name, raising=False)
        for name, value in server.env({}).items():
            patch.setenv(name, value)
        clear_s3fs_cache()
        try:
            yield server
        finally:
            clear_s3fs_cache()


@pytest.fixture(scope="module")
def blueprint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("blueprint") / "per_kind.yaml"
    path.write_text(BLUEPRINT)
    return path


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory, blueprint: Path) -> dict[int, Path]:
    """Local stores of SMALL and LARGE slices, each frozen and run once."""
    root = tmp_path_factory.mktemp("warm")
    return {n: warm_store(root, blueprint, n) for n in (SMALL, LARGE)}


@pytest.fixture(scope="module")
def new_slice(
    s3: CountingS3, warm: dict[int, Path], blueprint: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[int, dict[str, Counts]]:
    """Per size: the requests of freezing one new slice into a copy of the warm store on S3,
    and of the run after it (whose answer is checked against pandas)."""
    new = tmp_path_factory.mktemp("new") / "new.parquet"
    got: dict[int, dict[str, Counts]] = {}
    for n, local in warm.items():
        pq.write_table(events(1, first=n), new)
        url = s3.url_of(f"new-{n}")
        s3.upload(local, f"new-{n}")
        freeze, out = counted(
            s3, url, "snapshot", "freeze", "events", str(new), "--slice-by", "day", "--json"
        )
        assert [s["new"] for s in json.loads(out)["slices"]] == [True]
        run, out = counted(s3, url, "run", str(blueprint), "--json")
        doc = json.loads(out)
        everything = pa.concat_tables([events(n), events(1, first=n)])
        assert answer(url, doc["outputs"]["per_kind"]["snapshot"]) == expected(everything)
        got[n] = {"freeze": freeze, "run": run}
    return got


def test_a_noop_plan_and_run_list_and_read_no_more_at_200_slices_than_at_20(
    warm: dict[int, Path], blueprint: Path, s3: CountingS3
) -> None:
    got: dict[int, dict[str, Counts]] = {}
    for n, local in warm.items():
        url = s3.url_of(f"noop-{n}")
        s3.upload(local, f"noop-{n}")
        plan, _ = counted(s3, url, "plan", str(blueprint), "--json")
        run, out = counted(s3, url, "run", str(blueprint), "--json")
        doc = json.loads(out)
        assert doc["stats"]["computed"] == 0
        assert answer(url, doc["outputs"]["per_kind"]["snapshot"]) == expected(events(n))
        got[n] = {"plan": plan, "run": run}
    for command in ("plan", "run"):
        small, large = got[SMALL][command], got[LARGE][command]
        assert small.writes <= 1 and large.writes <= 1  # the run record, at most
        assert listing_and_reads(large) <= listing_and_reads(small), (
            f"a no-op {command}: LIST, GET + HEAD at {SMALL} slices {listing_and_reads(small)}, "
            f"at {LARGE} {listing_and_reads(large)}: {small} / {large}"
        )


def test_one_new_slice_is_frozen_with_as_many_lists_and_reads_at_200_slices_as_at_20(
    new_slice: dict[int, dict[str, Counts]],
) -> None:
    small, large = new_slice[SMALL]["freeze"], new_slice[LARGE]["freeze"]
    assert listing_and_reads(large) <= listing_and_reads(small), f"{small} / {large}"


def test_the_run_after_one_new_slice_lists_and_reads_only_along_the_tree_path(
    new_slice: dict[int, dict[str, Counts]],
) -> None:
    """Ten times the slices adds a few levels to the combine tree, and the run looks up each
    new node's key on the new slice's path: LIST + GET + HEAD may grow by that, not with N."""
    small, large = new_slice[SMALL]["run"], new_slice[LARGE]["run"]
    assert large.reads - small.reads <= PATH_GROWTH, f"{small} / {large}"


def test_one_new_slice_is_frozen_in_a_bounded_number_of_requests(
    new_slice: dict[int, dict[str, Counts]],
) -> None:
    freeze = new_slice[LARGE]["freeze"]
    assert freeze.total <= NEW_SLICE_BOUND, f"freeze of one slice: {freeze}"


def test_one_new_slice_runs_in_a_bounded_number_of_requests(
    new_slice: dict[int, dict[str, Counts]],
) -> None:
    """38 at 200 slices: each input's ref and manifest, the last outcome, the memos and the
    cache listing; the packs the new slice's path reads; per result computed, a lookup of its
    key (an early cutoff); the path's results, stored as one pack, and the rest each as an
    object and an entry; the output's slice, manifests and ref; two records. Each
    content-addressed write is one conditional PUT, each small read one GET."""
    run = new_slice[LARGE]["run"]
    assert run.total <= NEW_SLICE_BOUND, f"run after one new slice: {run}"


def test_new_objects_and_manifests_are_written_with_one_request_each(
    new_slice: dict[int, dict[str, Counts]],
) -> None:
    """A content-addressed file is written with one conditional PUT, which also tells whether
    it was there: no HEAD (or the LIST s3fs sends after a HEAD's 404) looks for it first. (A
    run may HEAD an object its PUT found there already, to renew it for gc: its output's
    object is the cached result's.)"""
    for n, counts in new_slice.items():
        for command, c in counts.items():
            areas = c.area(f"new-{n}")
            for area in ("objects", "manifests"):
                found = areas.get(area, {})
                looks = found.get("LIST", 0) + (found.get("HEAD", 0) if command == "freeze" else 0)
                assert looks == 0, f"{command} at {n} slices, {area}: {dict(found)}"
            assert areas["objects"]["PUT"] >= 1


def test_the_run_after_one_new_slice_reads_each_object_once(
    new_slice: dict[int, dict[str, Counts]],
) -> None:
    """What planning read to verify a reused result is what the task that reads it gets (one
    GET, one hash): no object is fetched twice in one run."""
    for n, counts in new_slice.items():
        gets = collections.Counter(
            r.key for r in counts["run"].requests if r.kind == "GET" and "/objects/" in r.key
        )
        assert gets and max(gets.values()) == 1, f"at {n} slices: {gets}"


def test_the_combines_on_a_new_slice_path_are_stored_as_one_pack(
    new_slice: dict[int, dict[str, Counts]],
) -> None:
    """Each level's combine on the new slice's path is a small result of its own; the run
    stores them together (chanbatch.cache.behind): one object and one pack index, where each
    alone was an object and an entry file."""
    for n, counts in new_slice.items():
        cache = counts["run"].area(f"new-{n}").get("cache", {})
        packs = [r for r in counts["run"].requests if r.kind == "PUT" and "/cache/packs/" in r.key]
        assert len(packs) == 1, f"at {n} slices: {packs}"
        # besides the pack's index: the new slice's partial and the finished result
        assert cache.get("PUT", 0) - len(packs) <= 2, f"at {n} slices: {dict(cache)}"


def test_a_second_new_slice_finds_the_first_one_path_through_its_pack(
    s3: CountingS3, new_slice: dict[int, dict[str, Counts]], blueprint: Path, tmp_path: Path
) -> None:
    """The run after the next slice reads the first one's path from the pack it was stored in
    (the memo names it), within the same bound, and gives pandas' answer over every row."""
    url = s3.url_of(f"new-{LARGE}")
    new = tmp_path / "next.parquet"
    pq.write_table(events(1, first=LARGE + 1), new)
    counted(s3, url, "snapshot", "freeze", "events", str(new), "--slice-by", "day", "--json")
    run, out = counted(s3, url, "run", str(blueprint), "--json")
    doc = json.loads(out)
    everything = pa.concat_tables([events(LARGE), events(1, first=LARGE), events(1, LARGE + 1)])
    assert answer(url, doc["outputs"]["per_kind"]["snapshot"]) == expected(everything)
    assert run.total <= NEW_SLICE_BOUND, f"run after a second new slice: {run}"
    indexes = [r.key for r in run.requests if r.kind == "GET" and "/cache/packs/" in r.key]
    first_path = {r.key for r in new_slice[LARGE]["run"].requests if "/cache/packs/" in r.key}
    assert first_path & set(indexes), f"the first new slice's pack was not read: {indexes}"
    assert len(indexes) == len(set(indexes)), indexes


def test_a_cold_run_asks_for_its_slices_manifests_together_then_their_objects(
    s3: CountingS3, warm: dict[int, Path], blueprint: Path
) -> None:
    """A cold run reads its slices in batches: a batch asks for all its slices' manifests at
    once, then for all their objects, where it read them one after another (a round trip per
    file: 18 s against 6 s for 243 day slices with 20 ms per request). The server answers
    the first AT_ONCE slices' manifests, and then their objects, only once all of them are
    asked for (10 s at most): a run that asks one by one, or one per thread, waits that out,
    and the spans show it."""
    url = s3.url_of("cold")
    s3.upload(warm[SMALL], "cold", ["objects", "manifests", "refs"])
    local = Storage(str(warm[SMALL]))
    doc = run_together(s3, url, blueprint, first_slices(local))
    assert doc["stats"]["computed"] > SMALL  # nothing was cached: every slice was read
    assert answer(url, doc["outputs"]["per_kind"]["snapshot"]) == expected(events(SMALL))


TOP = """\
name: top
inputs:
  events: events
stages:
  ranked:
    from: events
    sort: [-v, day, kind]
  top:
    from: ranked
    limit: 5
outputs:
  top: top_events
"""


def test_slices_read_alone_are_asked_for_together_too(
    s3: CountingS3, warm: dict[int, Path], tmp_path: Path
) -> None:
    """A slice that no batch computes on (here each slice's top rows, a task of its own) is
    read with its neighbours all the same: the first AT_ONCE slices' manifests, and then their
    objects, are in flight at once, where each load task read its manifest and then its
    object alone, as many at once as there are threads. The answer is pandas' top rows."""
    blueprint = tmp_path / "top.yaml"
    blueprint.write_text(TOP)
    url = s3.url_of("cold-top")
    s3.upload(warm[SMALL], "cold-top", ["objects", "manifests", "refs"])
    local = Storage(str(warm[SMALL]))
    doc = run_together(s3, url, blueprint, first_slices(local))
    got = cb.Store(url).read_pandas(f"top_events@{doc['outputs']['top']['snapshot']}")
    want = (
        events(SMALL).to_pandas().sort_values(["v", "day", "kind"], ascending=[False, True, True])
    )
    columns = ["day", "kind", "v"]
    assert got[columns].values.tolist() == want[columns].head(5).values.tolist()


#: slices whose files a cold run must have in flight at once: more than the threads that run
#: tasks (one per core), so that tasks reading a slice each, side by side, cannot do it; and
#: fewer than the S3 client's connections (botocore's 10), which the requests held by the
#: server (:meth:`CountingS3.together`) keep busy while they wait
AT_ONCE = min(8, (os.cpu_count() or 1) + 2)


def first_slices(local: Storage) -> list[tuple[Match, ...]]:
    """The first AT_ONCE slices' manifests, as one group, and their objects, as another."""
    manifests = _slice_ids(local)[:AT_ONCE]
    objects = [get_slice(local, sid).parts[0].object for sid in manifests]
    return [
        tuple(("GET", manifest_path(sid)) for sid in manifests),
        tuple(("GET", object_path(oid)) for oid in objects),
    ]


def run_together(
    s3: CountingS3, url: str, blueprint: Path, groups: list[tuple[Match, ...]], delay: float = 0.0
) -> dict[str, Any]:
    """``chanbatch run --json`` with each request of ``groups`` answered only once its whole
    group is asked for (:meth:`CountingS3.together`) and ``delay`` added to every request;
    asserts that each group was in flight at once, and returns the run's document."""
    s3.reset()
    s3.delay = delay
    s3.together(*groups)
    try:
        done = subprocess.run(
            [str(CHANBATCH), "run", str(blueprint), "--json", "--store", url],
            env=s3.env(),
            capture_output=True,
            text=True,
        )
    finally:
        s3.together()
        s3.delay = 0.0
    assert done.returncode == 0, done.stderr
    spans = s3.spans()
    for group in groups:
        found = [
            next((a, b) for r, a, b in spans if r.kind == kind and key in r.key)
            for kind, key in group
        ]
        last_asked, first_answered = max(a for a, _ in found), min(b for _, b in found)
        assert last_asked < first_answered, f"{group} were not in flight at once"
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def _slice_ids(storage: Storage) -> list[str]:
    """The slice ids of the head of ``events``, in key order."""
    snapshot = get_snapshot(storage, resolve(storage, "events").snapshot)
    return [entry.id for entry in snapshot.slices]


def test_a_run_asks_at_once_for_what_it_needs_together(
    s3: CountingS3, warm: dict[int, Path], blueprint: Path, tmp_path: Path
) -> None:
    """The run after one new slice has its input's and its output's heads in flight at once
    (each a LIST, then a GET), lists the cache while it reads its memos, and asks for the new
    slice's manifest while it writes its intent record; the answer is still pandas'.

    The server answers each request of such a pair only once the other has arrived (or 10 s
    have passed), and adds 50 ms to every request: a run that sends the second only after the
    first is answered makes the first wait out those 10 s, and their spans then do not
    overlap, however loaded the machine."""
    new = tmp_path / "new.parquet"
    pq.write_table(events(1, first=SMALL), new)
    url = s3.url_of("at-once")
    s3.upload(warm[SMALL], "at-once")
    _, out = counted(
        s3, url, "snapshot", "freeze", "events", str(new), "--slice-by", "day", "--json"
    )
    (added,) = json.loads(out)["slices"]
    manifest = manifest_path(added["id"])
    pairs: list[tuple[Match, ...]] = [
        (("LIST", "refs/events/"), ("LIST", "refs/per_kind/")),
        (("GET", "refs/events/000000000002.json"), ("GET", "refs/per_kind/000000000001.json")),
        (("LIST", "/cache/"), ("GET", memo_path("per_kind"))),
        (("GET", manifest), ("PUT", "/runs/")),
    ]
    doc = run_together(s3, url, blueprint, pairs, delay=0.05)
    everything = pa.concat_tables([events(SMALL), events(1, first=SMALL)])
    snapshot = doc["outputs"]["per_kind"]["snapshot"]
    assert answer(url, snapshot) == expected(everything)

    # a no-op run reads its output's head once: to check it, and to find its run repeats
    again, out = counted(s3, url, "run", str(blueprint), "--json")
    doc = json.loads(out)
    assert doc["stats"]["computed"] == 0
    assert doc["outputs"]["per_kind"]["snapshot"] == snapshot
    lists = [r for r in again.requests if r.kind == "LIST" and r.key.endswith("refs/per_kind/")]
    assert len(lists) == 1


def test_request_types_are_sorted_as_s3_defines_them() -> None:
    """The sorting the counts rely on, on the paths s3fs sends (path-style addressing)."""
    assert classify("GET", "/b", "list-type=2&prefix=s%2Fcache%2F&delimiter=%2F").kind == "LIST"
    assert classify("GET", "/b/", "list-type=2&prefix=s%2F").key == "s/"
    assert classify("GET", "/b/s/refs/x/000000000001.json", "").kind == "GET"
    assert classify("HEAD", "/b/s/objects/ab/cd", "").kind == "HEAD"
    assert classify("PUT", "/b/s/cache/k.json", "").kind == "PUT"
    assert classify("DELETE", "/b/s/tmp/x", "").kind == "DELETE"
    assert classify("POST", "/b", "delete").kind == "DELETE"
    assert classify("POST", "/b/s/objects/ab/cd", "uploads").kind == "POST"
    c = Counts.of([classify("GET", "/b/s/refs/a", ""), classify("GET", "/b", "prefix=s%2F")])
    assert (c.total, c.reads, c.writes, c.by_kind["LIST"]) == (2, 2, 0, 1)
    assert c.area("s") == {"refs": {"GET": 1}, "(root)": {"LIST": 1}}
