"""Bad input through the CLI: one ``Error: `` line, the right exit code, and a store untouched.

Each case runs against its own copy of the same small store (dataset ``ds``, sliced by
``period``), and checks that every file and directory of the store and beside it is
byte-for-byte what it was afterwards, and that ``snapshot verify`` still passes. The cases run
a few at a time in one module fixture, so the subprocesses overlap.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from clikit import Result, assert_one_error_line, ok, ok_json, run, sample_frame, tree

Case = tuple[list[str], int, list[str]]

CASES: dict[str, Case] = {
    # dataset names: never a path, never empty
    "name-with-slash": (["snapshot", "freeze", "a/b", "{csv}"], 2, ["'a/b'"]),
    "name-dotdot": (["snapshot", "freeze", "..", "{csv}"], 2, ["'..'"]),
    "name-traversal": (["snapshot", "freeze", "../escape", "{csv}"], 2, ["'../escape'"]),
    "name-with-space": (["snapshot", "freeze", "a b", "{csv}"], 2, ["'a b'"]),
    "name-empty": (["snapshot", "freeze", "", "{csv}"], 2, ["invalid dataset name ''"]),
    "list-bad-name": (["snapshot", "list", "a b"], 2, ["'a b'"]),
    "inspect-bad-name": (["snapshot", "inspect", "../ds"], 2, ["'../ds'"]),
    # files
    "missing-file": (["snapshot", "freeze", "ds", "{src}/missing.csv"], 2, ["missing.csv"]),
    "csv-does-not-parse": (["snapshot", "freeze", "ds", "{src}/broken.csv"], 2, ["broken.csv"]),
    "unknown-file-type": (["snapshot", "freeze", "ds", "{src}/notes.txt"], 2, ["notes.txt"]),
    # columns
    "slice-by-missing-column": (
        ["snapshot", "freeze", "ds", "{parquet}", "--slice-by", "peroid"],
        2,
        ["'peroid'", "orders.parquet", "did you mean 'period'?"],
    ),
    "slice-by-float-column": (
        ["snapshot", "freeze", "ds", "{parquet}", "--slice-by", "delay"],
        2,
        ["'delay'"],
    ),
    "slice-and-slice-by": (
        ["snapshot", "freeze", "ds", "{parquet}", "--slice", "x", "--slice-by", "period"],
        2,
        ["--slice", "--slice-by"],
    ),
    # REFs that resolve to nothing, or are malformed
    "unknown-dataset": (["snapshot", "inspect", "nope"], 2, ["'nope'", "known datasets: ds"]),
    "unknown-dataset-close": (["snapshot", "inspect", "dss"], 2, ["'dss'", "did you mean 'ds'?"]),
    "unknown-prefix": (["snapshot", "inspect", "ds@{nomatch}"], 2, ["'{nomatch}'"]),
    "unknown-slice": (["snapshot", "inspect", "ds[2099-01]"], 2, ["'2099-01'"]),
    "prefix-too-short": (["snapshot", "inspect", "ds@{short7}"], 2, ["'{short7}'", "8 hex"]),
    "prefix-not-hex": (["snapshot", "inspect", "ds@zzzzzzzz"], 2, ["'zzzzzzzz'"]),
    "malformed-ref": (["snapshot", "inspect", "ds["], 2, ["'ds['"]),
    "verify-unknown": (["snapshot", "verify", "nope"], 2, ["'nope'"]),
    "diff-unknown": (["snapshot", "diff", "ds", "nope"], 2, ["'nope'"]),
    "pin-unknown": (["snapshot", "pin", "ds@{nomatch}"], 2, ["'{nomatch}'"]),
    "unpin-unknown": (["snapshot", "unpin", "nope"], 2, ["'nope'"]),
    "list-unknown": (["snapshot", "list", "nope"], 2, ["'nope'"]),
    # options
    "bad-grace": (["gc", "--grace", "5x"], 2, ["'5x'"]),
    # a slice whose schema conflicts with the dataset's: column n was int64, is now string
    "schema-conflict-stem": (
        ["snapshot", "freeze", "ds", "{src}/2024-04.parquet"],
        2,
        ["'n'", "int64", "string", "2024-04"],
    ),
    "schema-conflict-slice": (
        ["snapshot", "freeze", "ds", "{src}/conflict.parquet", "--slice", "2024-05"],
        2,
        ["'n'", "int64", "string", "2024-05"],
    ),
    "schema-conflict-slice-by": (
        ["snapshot", "freeze", "ds", "{src}/later.parquet", "--slice-by", "period"],
        2,
        ["'n'", "int64", "string", "2024-06", "2024-07"],
    ),
}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A store with dataset ``ds``, the bad input files, and the values the cases refer to."""
    root = tmp_path_factory.mktemp("errors")
    src = root / "src"
    src.mkdir()
    df = sample_frame()
    df.to_parquet(src / "orders.parquet", index=False)
    df.head(5).to_csv(src / "small.csv", index=False)
    (src / "broken.csv").write_text('a,b\n1,2\n3,4,5,6\n"never closed\n')
    (src / "notes.txt").write_text("not a table\n")
    conflict = sample_frame(rows=6, seed=3).assign(n=lambda d: "n" + d["n"].astype(str))
    conflict.to_parquet(src / "2024-04.parquet", index=False)
    conflict.to_parquet(src / "conflict.parquet", index=False)
    later = conflict.assign(period=["2024-06", "2024-07"] * 3)
    later.to_parquet(src / "later.parquet", index=False)

    store = root / "store"
    doc = ok_json(
        "snapshot", "freeze", "ds", src / "orders.parquet", "--slice-by", "period", store=store
    )
    assert ok_json("snapshot", "verify", store=store)["ok"] is True
    sid = doc["snapshot"]
    nomatch = ("0" if sid[0] != "0" else "1") + sid[1:8]
    return {
        "root": str(root),
        "src": str(src),
        "csv": str(src / "small.csv"),
        "parquet": str(src / "orders.parquet"),
        "nomatch": nomatch,
        "short7": sid[:7],
    }


@dataclass(frozen=True)
class Outcome:
    values: dict[str, str]
    result: Result
    unchanged: bool
    verify: Result


@pytest.fixture(scope="module")
def outcomes(base: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every case run once, each on its own copy of the base store, several at a time."""
    works = {case: tmp_path_factory.mktemp(case) for case in CASES}

    def attempt(case: str) -> Outcome:
        args, _code, _needles = CASES[case]
        work = works[case] / "w"
        shutil.copytree(base["root"], work)
        values = {
            **base,
            "src": str(work / "src"),
            "csv": str(work / "src" / "small.csv"),
            "parquet": str(work / "src" / "orders.parquet"),
        }
        store = work / "store"
        before = tree(works[case])
        result = run(*(a.format(**values) for a in args), store=store, cwd=work / "src")
        unchanged = tree(works[case]) == before
        return Outcome(values, result, unchanged, run("snapshot", "verify", store=store))

    with ThreadPoolExecutor(4) as pool:
        return dict(zip(CASES, pool.map(attempt, CASES), strict=True))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case: str, outcomes: dict[str, Outcome]) -> None:
    _args, code, needles = CASES[case]
    outcome = outcomes[case]
    assert_one_error_line(outcome.result, code, *(n.format(**outcome.values) for n in needles))
    # every file and directory of the store and beside it, byte for byte, as it was
    assert outcome.unchanged, "the store or its surroundings changed"
    assert outcome.verify.code == 0, str(outcome.verify)


def test_verbose_shows_the_traceback(base: dict[str, str], tmp_path: Path) -> None:
    store = Path(base["root"]) / "store"
    for flag in ("--verbose", "-v"):
        result = run(flag, "snapshot", "inspect", "nope", store=store)
        assert result.code == 2
        assert "Traceback (most recent call last)" in result.stderr
        assert "RefNotFoundError" in result.stderr
        assert result.err_lines[-1].startswith("Error: dataset 'nope' not found")
    quiet = run("snapshot", "inspect", "nope", store=store)
    assert "Traceback" not in quiet.stderr


def test_click_usage_errors_exit_2_without_traceback(base: dict[str, str]) -> None:
    store = Path(base["root"]) / "store"
    for args in (("snapshot", "freeze", "ds"), ("snapshot", "inspect"), ("snapshot", "nosuch")):
        result = run(*args, store=store)
        assert result.code == 2, str(result)
        assert "Traceback" not in result.stderr
        assert any(line.startswith("Error: ") for line in result.err_lines), str(result)
    assert run("--version").stdout.startswith("chanbatch, version ")


def test_ambiguous_prefix(store: Path, src: Path) -> None:
    """Two snapshots of one dataset whose ids share 8 hex characters: the prefix is ambiguous.

    Finding such a pair takes about 2**16 tries (a birthday search), so the snapshots are
    subsets of the slices of a real 20-slice snapshot, written as canonical manifests and
    committed to the ref log; the store stays valid, as verify shows.
    """
    pd.DataFrame({"k": range(20), "x": range(20)}).to_parquet(src / "k.parquet", index=False)
    doc = ok_json("snapshot", "freeze", "amb", src / "k.parquet", "--slice-by", "k", store=store)
    a, b = _colliding_snapshots(store, doc["snapshot"])
    assert a[:8] == b[:8] and a != b

    before = tree(store)
    result = run("snapshot", "inspect", f"amb@{a[:8]}", store=store)
    line = assert_one_error_line(result, 2, "ambiguous", a[:12], b[:12])
    assert "amb" in line
    assert tree(store) == before
    ok("snapshot", "verify", store=store)
    # one more character is enough to tell them apart, unless they share it too
    n = next(i for i in range(8, 64) if a[i] != b[i]) + 1
    assert ok_json("snapshot", "inspect", f"amb@{a[:n]}", store=store)["snapshot"] == a


def _colliding_snapshots(store: Path, head: str) -> tuple[str, str]:
    import json

    from clikit import b3, manifest_file

    from chanbatch.snapshot import refs
    from chanbatch.snapshot.storage import Storage

    doc = json.loads(manifest_file(store, head).read_bytes())
    entries = doc["slices"]
    frags = [json.dumps(e, sort_keys=True, separators=(",", ":")).encode() for e in entries]
    marker = dict(doc, rows=-111111, bytes=-222222, slices=["@@"])
    template = json.dumps(marker, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    template = template.replace("-111111", "%d").replace("-222222", "%d")
    # the %d order follows sorted keys: "bytes" comes before "rows"
    assert template.index('"bytes"') < template.index('"rows"')
    template_b = template.replace('"@@"', "%s").encode()

    def body(mask: int) -> bytes:
        chosen = [i for i in range(len(entries)) if mask >> i & 1]
        return template_b % (
            sum(entries[i]["bytes"] for i in chosen),
            sum(entries[i]["rows"] for i in chosen),
            b",".join(frags[i] for i in chosen),
        )

    seen: dict[str, int] = {}
    for mask in range(1, 1 << len(entries)):
        data = body(mask)
        prefix = b3(data)[:8]
        if prefix in seen:
            pair = (seen[prefix], mask)
            break
        seen[prefix] = mask
    else:  # pragma: no cover - 2**20 subsets make a miss vanishingly unlikely
        pytest.skip("no 8-character collision among the subsets")

    storage = Storage(str(store))
    ids = []
    for mask in pair:
        data = body(mask)
        sid = b3(data)
        path = manifest_file(store, sid)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        refs.commit(storage, "amb", lambda _head, sid=sid: refs.Change(snapshot=sid))
        ids.append(sid)
    return ids[0], ids[1]
