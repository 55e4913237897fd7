"""Issue 7, item 12: bad input files to ``chanbatch snapshot freeze`` leave the store unchanged.

Truncated, mislabelled (CSV named .parquet, Parquet named .csv), zero-row (a Parquet file with
a schema and no rows, an empty CSV, a header-only CSV), binary garbage, a directory, a file among
good ones that is missing or bad, and slices whose schema conflicts with the dataset's (a column
missing or added, a type changed, invalid UTF-8 refused with --encoding as the hint, a comma file named .tsv). Each
ends in exit 2 and one ``Error:`` line that names the file; every file of the store, and of
the sources beside it, is byte for byte what it was; ``snapshot verify`` passes.

``tests/cli/test_cli_errors.py`` already covers a lone missing file, a CSV that does not parse,
an unknown extension, and one type conflict (int64 to string) in its three forms; these cases are
the others.
"""

from __future__ import annotations

import gzip
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from clikit import tree
from hostilekit import assert_clean_error, case, diff_trees, record_counts, run_many

#: name -> (source files, extra freeze options, texts the error line must hold besides the file)
CASES: dict[str, tuple[list[str], list[str], list[str]]] = {
    "truncated-half": (["trunc-half.parquet"], [], []),
    "truncated-last-byte": (["trunc-tail.parquet"], [], []),
    "truncated-to-8-bytes": (["trunc-8.parquet"], [], []),
    "empty-parquet": (["empty.parquet"], [], []),
    "truncated-gzip-csv": (["trunc.csv.gz"], [], []),
    "csv-named-parquet": (["csv-inside.parquet"], [], []),
    "parquet-named-csv": (["parquet-inside.csv"], [], []),
    "parquet-named-csv-gz": (["parquet-inside.csv.gz"], [], []),
    "zero-row-parquet": (["zero.parquet"], [], ["no rows"]),
    "zero-row-parquet-slice": (["zero.parquet"], ["--slice", "2024-09"], ["no rows"]),
    "empty-csv": (["empty.csv"], [], []),
    "header-only-csv": (["header.csv"], [], ["no rows"]),
    "header-only-csv-slice-by": (["header.csv"], ["--slice-by", "period"], ["no rows"]),
    "garbage-parquet": (["garbage.parquet"], [], []),
    "garbage-csv": (["garbage.csv"], [], []),
    "directory": (["folder.parquet"], [], ["is a directory"]),
    "good-then-missing": (["good.parquet", "missing.parquet"], [], ["not found"]),
    "good-then-truncated": (["good.parquet", "trunc-half.parquet"], [], []),
    "good-then-header-only": (["good.csv", "header.csv"], ["--slice", "2024-09"], ["no rows"]),
    "conflict-missing-column": (["no-x.parquet"], [], ["'x'", "lacks"]),
    "conflict-extra-column": (["extra.parquet"], [], ["'extra'", "adds"]),
    "conflict-double-to-string": (["x-string.parquet"], [], ["'x'", "double", "string"]),
    "conflict-int-to-double": (["k-double.parquet"], [], ["'k'", "int64", "double"]),
    "conflict-timestamp-to-string": (["t-string.parquet"], [], ["'t'", "timestamp", "string"]),
    "conflict-invalid-utf8": (["bad-utf8.csv"], [], ["'s'", "not valid utf-8", "--encoding"]),
    "conflict-comma-tsv": (["comma.tsv"], [], ["lacks"]),
    "conflict-slice-by": (["x-string.parquet"], ["--slice-by", "period"], ["'x'", "2024-03"]),
    "conflict-replacing-a-slice": (["no-x.parquet"], ["--slice", "2024-01"], ["'x'"]),
    "duplicate-columns": (["dup.parquet"], [], []),
}


def base_frame(periods: list[str], rows: int = 6, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "period": pd.Series([periods[i % len(periods)] for i in range(rows)], dtype="str"),
            "k": np.arange(rows, dtype="int64"),
            "x": rng.normal(size=rows).round(3),
            "s": pd.Series([f"s{i}" for i in range(rows)], dtype="str"),
            "t": pd.to_datetime(["2024-01-01 10:00"] * rows).as_unit("us").tz_localize("UTC"),
        }
    )


def write_sources(src: Path) -> None:
    good = base_frame(["2024-03"], seed=1)
    good.to_parquet(src / "good.parquet", index=False)
    good.drop(columns="t").to_csv(src / "good.csv", index=False)
    data = (src / "good.parquet").read_bytes()
    (src / "trunc-half.parquet").write_bytes(data[: len(data) // 2])
    (src / "trunc-tail.parquet").write_bytes(data[:-1])
    (src / "trunc-8.parquet").write_bytes(data[:8])
    (src / "empty.parquet").write_bytes(b"")
    csv_bytes = good.to_csv(index=False).encode()
    (src / "trunc.csv.gz").write_bytes(gzip.compress(csv_bytes)[:40])
    (src / "csv-inside.parquet").write_bytes(csv_bytes)
    (src / "parquet-inside.csv").write_bytes(data)
    (src / "parquet-inside.csv.gz").write_bytes(data)
    good.head(0).to_parquet(src / "zero.parquet", index=False)
    (src / "empty.csv").write_bytes(b"")
    (src / "header.csv").write_text("period,k,x,s,t\n")
    rng = np.random.default_rng(7)
    (src / "garbage.parquet").write_bytes(rng.bytes(4096))
    (src / "garbage.csv").write_bytes(rng.bytes(4096))
    (src / "folder.parquet").mkdir()
    good.drop(columns="x").to_parquet(src / "no-x.parquet", index=False)
    good.assign(extra=1).to_parquet(src / "extra.parquet", index=False)
    good.assign(x=good["x"].astype(str)).to_parquet(src / "x-string.parquet", index=False)
    good.assign(k=good["k"].astype(float)).to_parquet(src / "k-double.parquet", index=False)
    good.assign(t="noon").to_parquet(src / "t-string.parquet", index=False)
    (src / "bad-utf8.csv").write_bytes(
        b"period,k,x,s,t\n2024-03,1,1.5,\xff\xfe,2024-01-01T10:00:00Z\n"
    )
    (src / "comma.tsv").write_text("period,k,x,s,t\n2024-03,1,1.5,a,2024-01-01T10:00:00Z\n")
    duplicated = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["k", "k"])
    pq.write_table(duplicated, src / "dup.parquet")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``src/`` with the bad files, and ``store/`` with dataset ``ds`` sliced by period."""
    root = tmp_path_factory.mktemp("bad-files")
    src = root / "src"
    src.mkdir()
    write_sources(src)
    base_frame(["2024-01", "2024-02"]).to_parquet(root / "base.parquet", index=False)
    seed = run_many(
        [case("snapshot", "freeze", "ds", root / "base.parquet", "--slice-by", "period",
              "--store", root / "store")]
    )[0]  # fmt: skip
    assert seed.code == 0, str(seed)
    return root


def test_bad_files_leave_the_store_unchanged(
    base: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    works = {}
    cases = []
    for name, (files, extra, _needles) in CASES.items():
        work = tmp_path / name
        shutil.copytree(base, work, symlinks=True)
        works[name] = work
        paths = [work / "src" / f for f in files]
        cases.append(
            case("snapshot", "freeze", "ds", *paths, *extra, "--store", work / "store", cwd=work)
        )
    before = {name: tree(work) for name, work in works.items()}
    results = run_many(cases)
    verifies = run_many(
        [case("snapshot", "verify", "--store", work / "store") for work in works.values()]
    )
    counts: Counter[str] = Counter()
    for (name, (files, _extra, needles)), result, verify in zip(
        CASES.items(), results, verifies, strict=True
    ):
        bad = files[-1]
        if name == "directory":  # refused by Click, which prints its usage first
            assert result.code == 2 and "Traceback" not in result.stderr, str(result)
            errors = [line for line in result.err_lines if line.startswith("Error:")]
            assert len(errors) == 1 and bad in errors[0], str(result)
            line = errors[0]
        else:
            line = assert_clean_error(result, 2, bad)
            assert len(result.err_lines) == 1, str(result)
        for needle in needles:
            assert needle in line, f"{name}: {needle!r} not in {line!r}"
        changed = diff_trees(before[name], tree(works[name]))
        assert not changed, f"{name}: {changed}"
        assert verify.code == 0, f"{name}: {verify}"
        counts["kind_" + name.split("-")[0]] += 1
    record_counts(request, {"cases": len(results), **counts})


def test_the_good_files_do_freeze(base: Path, tmp_path: Path) -> None:
    """The control: the good files beside the bad ones freeze into the same dataset."""
    work = tmp_path / "w"
    shutil.copytree(base, work, symlinks=True)
    results = run_many(
        [
            case("snapshot", "freeze", "ds", work / "src" / "good.parquet", "--store",
                 work / "store", "--json"),
        ]
    )  # fmt: skip
    assert results[0].code == 0, str(results[0])
    assert results[0].json()["slices"][0]["rows"] == 6
