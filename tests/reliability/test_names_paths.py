"""Issue 7, item 10: names, slice keys and REFs never touch a path outside the store.

Every hostile string below goes through the CLI (and some through the API) with the store inside a
sandbox directory, next to a canary directory. Afterwards every file and directory under the
sandbox's parent, except the store, is byte for byte what it was; the store holds only the paths
of its layout (DESIGN.md section 2: objects, manifests, refs/<valid name>, pins, cache, runs,
memo; nothing left in tmp); absolute paths and ``../`` targets the strings name do not exist.
Each command either succeeds (exit 0) or prints one ``Error:`` line (exit 2): a dataset name
that breaks the name rule, checked here by an independent copy of the rule, always exits 2 and
the message quotes it. Slice keys are data, never paths: hostile keys freeze, are stored in the
manifests exactly as given, and resolve as REFs.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hostilekit import (
    Sandbox,
    assert_clean_error,
    case,
    diff_trees,
    record_counts,
    run_many,
)

import chanbatch as cb
from chanbatch.errors import InvalidNameError, RefError

TOKEN = f"cb{uuid.uuid4().hex[:10]}"  # in every path-like string, to look for it afterwards

#: DESIGN.md section 2, written out again on purpose: not chanbatch's own check.
NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def valid_name(name: str) -> bool:
    return NAME_RULE.fullmatch(name) is not None and ".." not in name


HOSTILE = [
    "..",
    ".",
    f"../{TOKEN}",
    f"../../{TOKEN}",
    f"../../../../../../../../tmp/{TOKEN}",
    f"a/../../{TOKEN}",
    f"/tmp/{TOKEN}",
    "/",
    "//",
    f"a/{TOKEN}",
    f"a\\..\\{TOKEN}",
    f"..\\{TOKEN}",
    "~",
    f"~/{TOKEN}",
    "$HOME",
    "",
    " ",
    "a b",
    "a\tb",
    "a\nb",
    f"{TOKEN}\n",
    "x" * 10_000,
    "x" * 129,
    "а",  # Cyrillic a
    "аbc",
    "ｆｌｉｇｈｔｓ",  # fullwidth
    f"a／{TOKEN}",  # fullwidth solidus
    f"a∕{TOKEN}",  # U+2215 division slash
    f"a⁄{TOKEN}",  # U+2044 fraction slash
    "a\u202eb",
    f"%2e%2e%2f{TOKEN}",
    f"file:///tmp/{TOKEN}",
    f"memory://{TOKEN}",
    f"s3://bucket/{TOKEN}",
    ".hidden",
    "-rf",
    "a..b",
    "a\x1b]0;x\x07",
    "a:b",
    "a*b",
    "a?b",
    # valid by the rule: must work, and stay one directory under refs/
    "a.",
    "A-b_c.d",
    "x" * 128,
    "CON",
    "nul",
]
assert len(HOSTILE) == len(set(HOSTILE))


def absolute_targets(box: Sandbox) -> list[Path]:
    """Where the path-like strings would land if they became paths, from the store or cwd."""
    out = [Path(f"/tmp/{TOKEN}"), Path.home() / TOKEN]
    for start in (box.store, box.cwd, box.store / "refs", box.store / "objects" / "ab"):
        for up in range(1, 10):
            out.append(Path(start, *[".."] * up, TOKEN).resolve())
    return out


def check_filesystem(box: Sandbox, before: dict) -> None:
    assert not diff_trees(before, box.outside()), diff_trees(before, box.outside())
    assert not box.strays(), box.strays()
    found = [str(p) for p in absolute_targets(box) if p.exists()]
    assert not found, found
    for path in box.store.rglob("*"):
        assert TOKEN not in str(path), path


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    box = Sandbox.create(tmp_path)
    frame = pd.DataFrame({"k": ["a", "b", "c"], "x": [1, 2, 3]})
    frame.to_csv(box.cwd / "src.csv", index=False)
    return box


def test_dataset_names_through_freeze(box: Sandbox, request: pytest.FixtureRequest) -> None:
    cases = [
        case("snapshot", "freeze", "--store", box.store, "--", name, "src.csv", cwd=box.cwd)
        for name in HOSTILE
    ]
    before = box.outside()
    results = run_many(cases)
    counts: Counter[str] = Counter()
    for name, result in zip(HOSTILE, results, strict=True):
        if valid_name(name):
            assert result.code == 0, str(result)
            assert (box.store / "refs" / name).is_dir()
            counts["valid"] += 1
        else:
            line = assert_clean_error(result, 2)
            if "\n" not in name and name.isprintable():
                assert repr(name)[:60].rstrip("'") in line, line
            counts["refused"] += 1
    check_filesystem(box, before)
    assert sorted(p.name for p in (box.store / "refs").iterdir()) == sorted(
        n for n in HOSTILE if valid_name(n)
    )
    record_counts(request, counts)


def test_dataset_names_through_the_api(box: Sandbox) -> None:
    store = cb.Store(str(box.store))
    frame = pd.DataFrame({"x": [1]})
    before = box.outside()
    for name in [*HOSTILE, "a\x00b", f"..\x00/{TOKEN}", "\x00"]:
        if valid_name(name):
            store.freeze(name, frame, slice="k")
            continue
        with pytest.raises(InvalidNameError):
            store.freeze(name, frame, slice="k")
        with pytest.raises((InvalidNameError, RefError)):
            store.inspect(name)
    check_filesystem(box, before)


def hostile_refs() -> list[str]:
    refs = [*HOSTILE, f"ds@../../{TOKEN}", "ds@" + "a" * 10_000, "ds@" + "0" * 64 + "/.."]
    refs += [f"ds[../../{TOKEN}]", "ds[" + "x" * 10_000 + "]", f"../ds[{TOKEN}]", "ds[a/b]"]
    refs += ["ds[../../etc]", "ds[]", "ds[\x1b]", "ds@", "ds[", "[ds]", "@ds"]
    return refs


def test_refs_through_read_and_pin_commands(box: Sandbox, request: pytest.FixtureRequest) -> None:
    """inspect, verify, pin, unpin, list and diff on hostile REFs: they read, or pin a snapshot
    of ``ds`` (a file under pins/), and touch nothing else."""
    seed = run_many(
        [case("snapshot", "freeze", "ds", "src.csv", "--slice", "../../etc", "--store", box.store,
              cwd=box.cwd)]
    )[0]  # fmt: skip
    assert seed.code == 0, str(seed)
    store_before = {p: d for p, d in box.outside().items()}
    before_store_files = {
        p.relative_to(box.store).as_posix(): p.read_bytes()
        for p in box.store.rglob("*")
        if p.is_file()
    }
    commands = [["snapshot", "inspect"], ["snapshot", "verify"], ["snapshot", "pin"]]
    commands += [["snapshot", "unpin"], ["snapshot", "list"], ["snapshot", "diff", "ds"]]
    cases, labels = [], []
    for index, ref in enumerate(hostile_refs()):
        # Every REF through inspect and pin (which writes), and one of the others in turn.
        for command in (commands[0], commands[2], commands[[1, 3, 4, 5][index % 4]]):
            cases.append(case(*command, "--store", box.store, "--", ref, cwd=box.cwd))
            labels.append((command[-1], ref))
    results = run_many(cases)
    counts: Counter[str] = Counter()
    for (command, ref), result in zip(labels, results, strict=True):
        dataset = re.split(r"[@\[]", ref, maxsplit=1)[0]
        whole_store = ref == "" and command in ("verify", "list")
        if result.code == 0:
            counts["ok"] += 1
            # An empty REF is no REF: verify and list then cover the whole store.
            assert dataset == "ds" or whole_store, f"{command} {ref!r}: {result}"
        else:
            assert_clean_error(result, 2)
            counts["refused"] += 1
        if not valid_name(dataset) and not whole_store:
            assert result.code == 2, f"{command} {ref!r}: {result}"
    check_filesystem(box, store_before)
    after = {
        p.relative_to(box.store).as_posix(): p.read_bytes()
        for p in box.store.rglob("*")
        if p.is_file()
    }
    changed = diff_trees(before_store_files, after)
    assert all(line.split(" ", 1)[1].startswith("pins/") for line in changed), changed
    record_counts(request, {"commands": len(results), **counts})


SLICE_KEYS = [
    "../../etc",
    f"../../{TOKEN}",
    f"/tmp/{TOKEN}",
    "a/b",
    "..",
    ".",
    "",
    " ",
    "x" * 10_000,
    "а",
    "ｆｌｉｇｈｔｓ",
    f"a∕{TOKEN}",
    f"a／{TOKEN}",
    "a\\b",
    "%2e%2e%2f",
    "~",
    "a\nb",
    "a\x1b]0;x\x07",
    "\u202e",
    "-1",
    "007",  # digits: an int key
]


def test_slice_keys_are_data_not_paths(box: Sandbox, request: pytest.FixtureRequest) -> None:
    """``--slice KEY`` with hostile keys (one dataset per key, as "007" is an int key), and
    ``--slice-by`` a column of hostile values, NUL included: each key is stored as given."""
    keys = {f"k{i}": key for i, key in enumerate(SLICE_KEYS)}
    column_values = [k for k in SLICE_KEYS if not k.lstrip("-").isdigit()] + ["a\x00b"]
    table = pa.table({"key": column_values, "x": list(range(len(column_values)))})
    pq.write_table(table, box.cwd / "hostile.parquet")
    cases = [
        case("snapshot", "freeze", name, "src.csv", "--slice", key, "--store", box.store,
             "--json", cwd=box.cwd)
        for name, key in keys.items()
    ]  # fmt: skip
    cases.append(
        case("snapshot", "freeze", "by", "hostile.parquet", "--slice-by", "key", "--store",
             box.store, "--json", cwd=box.cwd)
    )  # fmt: skip
    before = box.outside()
    results = run_many(cases)
    for key, result in zip(keys.values(), results[:-1], strict=True):
        assert result.code == 0, str(result)
        (entry,) = result.json()["slices"]
        assert entry["key"] == key  # --slice takes the key as text, exactly as given
    by = results[-1]
    assert by.code == 0, str(by)
    assert sorted(s["key"] for s in by.json()["slices"]) == sorted(column_values)
    # The keys live in the manifests: the snapshot manifest lists exactly these.
    manifest = json.loads(
        (
            box.store
            / "manifests"
            / by.json()["snapshot"][:2]
            / f"{by.json()['snapshot'][2:]}.json"
        ).read_bytes()
    )
    assert sorted(s["key"] for s in manifest["slices"]) == sorted(column_values)
    # ... and resolve as REFs, to the very slice
    lookups = [
        case("snapshot", "inspect", "--store", box.store, "--json", "--", f"by[{key}]",
             cwd=box.cwd)
        for key in column_values
        if "]" not in key and "\x00" not in key
    ]  # fmt: skip
    for result in run_many(lookups):
        assert result.code == 0, str(result)
        assert len(result.json()["slices"]) == 1
    check_filesystem(box, before)
    verify = run_many([case("snapshot", "verify", "--store", box.store)])[0]
    assert verify.code == 0, str(verify)
    # The API takes a NUL in a key too.
    info = cb.Store(str(box.store)).freeze("api", pd.DataFrame({"x": [1]}), slice="a\x00/..")
    assert [s.key for s in info.slices] == ["a\x00/.."]
    check_filesystem(box, before)
    record_counts(
        request,
        {"slice_keys": len(keys), "slice_by_values": len(column_values), "lookups": len(lookups)},
    )


def test_blueprint_names_and_run_paths(box: Sandbox, request: pytest.FixtureRequest) -> None:
    """Blueprints with hostile names, inputs and outputs are refused by validate and run; a
    valid one runs with its memo under a hash and its record under a generated run id; --set,
    explain and cache commands with hostile values read or refuse, and write nothing else."""
    seed = run_many(
        [case("snapshot", "freeze", "ds", "src.csv", "--slice", "1", "--store", box.store,
              cwd=box.cwd)]
    )[0]  # fmt: skip
    assert seed.code == 0, str(seed)

    def bp(name: str, source: str = "ds", output: str = "out") -> str:
        doc = {
            "name": name,
            "inputs": {"a": source},
            "stages": {"s": {"from": "a", "filter": "x > 1"}},
            "outputs": {"s": output},
        }
        return json.dumps(doc)  # JSON is YAML, and escapes everything

    documents = {}
    for i, value in enumerate(HOSTILE):
        # every value as an output dataset; as the blueprint's name or an input, in turn
        if not valid_name(value):
            documents[f"output{i}"] = bp("ok", output=value)
        if i % 2 and not NAME_RULE.fullmatch(value):  # a blueprint name is no path: '..' is fine
            documents[f"name{i}"] = bp(value)
        if not i % 2 and not valid_name(value):
            documents[f"input{i}"] = bp("ok", source=value)
    cases, kinds = [], []
    for label, text in documents.items():
        path = box.cwd / f"{label}.yaml"
        path.write_text(text, encoding="utf-8")
        # validate all; run those whose output would become a dataset (run validates the same)
        for command in ("validate", "run") if label.startswith("output") else ("validate",):
            extra = ["--store", str(box.store)] if command == "run" else []
            cases.append(case(command, path, *extra, cwd=box.cwd))
            kinds.append("refused")
    good = box.cwd / "good.yaml"
    good.write_text(bp("x..y" + "z" * 100, output="result"), encoding="utf-8")
    for extra in [[], ["--set", f"a=../../{TOKEN}"], ["--set", f"../{TOKEN}=ds"]]:
        cases.append(case("plan", good, "--store", box.store, *extra, cwd=box.cwd))
        kinds.append("plan" if not extra else "refused")
    for target in [f"s@../../{TOKEN}", f"../{TOKEN}@1", "s@1"]:
        cases.append(case("explain", target, good, "--store", box.store, cwd=box.cwd))
        kinds.append("either")
    for args in [["cache", "evict", f"../../../../{TOKEN}"], ["cache", "evict", "--stage",
                 f"../{TOKEN}"], ["cache", "ls", "--stage", f"../../{TOKEN}"]]:  # fmt: skip
        cases.append(case(*args, "--store", box.store, cwd=box.cwd))
        kinds.append("ok")
    cases.append(case("run", good, "--store", box.store, "--json", cwd=box.cwd))
    kinds.append("run")
    before = box.outside()
    results = run_many(cases)
    counts: Counter[str] = Counter()
    for kind, result in zip(kinds, results, strict=True):
        counts[kind] += 1
        if kind == "refused":
            assert_clean_error(result, 2)
        elif kind in ("ok", "plan", "run"):
            assert result.code == 0, str(result)
        else:
            assert result.code in (0, 2), str(result)
            if result.code:
                assert_clean_error(result, 2)
    assert results[-1].json()["outputs"]["s"]["dataset"] == "result"
    check_filesystem(box, before)
    memo = sorted(p.name for p in (box.store / "memo").iterdir())
    runs = sorted(p.name for p in (box.store / "runs").iterdir())
    # the memo and the last run's outcome, both under the hash of the blueprint's name
    assert len(memo) == 2 and re.fullmatch(r"[0-9a-f]{32}\.json", memo[0]), memo
    assert memo[1] == memo[0].replace(".json", ".last.json"), memo
    assert len(runs) == 1 and re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{8}\.json", runs[0]), runs
    record_counts(request, {"commands": len(results), **counts})
