"""pyarrow with pandas deferred (chanbatch.deferred): no pandas import for Arrow work, and once
anything imports pandas, pyarrow converts pandas objects exactly as it does in a process that
never deferred it. Each probe runs in a fresh interpreter: the state is per process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

ARROW_WORK = """
import numpy as np, pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
t = pa.table({"k": pa.array(np.array([2, 1, 2, 1])), "v": pa.array(np.arange(4.0))})
t = t.filter(pc.greater(t["v"], pa.scalar(0.5, pa.float64())))
g = t.group_by("k").aggregate([("v", "sum")])           # loads pyarrow.acero and _dataset
pq.write_table(g, PATH); back = pq.read_table(PATH)
import pyarrow.dataset
result = sorted(back.to_pylist(), key=lambda r: r["k"])
"""

PANDAS_WORK = """
import datetime as dt, decimal, pandas as pd, pyarrow as pa
frame = pd.DataFrame({
    "i": pd.Series([1, None, 3], dtype="Int64"),
    "b": pd.Series([True, None, False], dtype="boolean"),
    "c": pd.Categorical(["x", "y", "x"]),
    "s": pd.Series(["a", None, "c"], dtype="string"),
    "t": pd.Series(pd.to_datetime(["2013-01-01", None, "2013-01-03"]).tz_localize("UTC")),
    "d": pd.Series([decimal.Decimal("1.50"), None, decimal.Decimal("2.25")],
                   dtype=pd.ArrowDtype(pa.decimal128(15, 2))),
    "o": pd.Series([dt.date(2013, 1, 1), None, dt.date(2013, 1, 3)], dtype=object),
})
table = pa.Table.from_pandas(frame, preserve_index=False)
arrays = {name: pa.array(frame[name]) for name in frame}
back = table.to_pandas()
pandas_seen = {
    "schema": str(table.schema.remove_metadata()),
    "values": {k: [str(v) for v in table.column(k).to_pylist()] for k in table.column_names},
    "arrays": {k: [str(a.type), a.null_count, str(a.to_pylist())] for k, a in arrays.items()},
    "dtypes": {k: str(v) for k, v in back.dtypes.items()},
    "series": pa.array(pd.Series([1.5, None])).to_pylist(),
}
"""

PROBE = """
import json, sys
{setup}
{arrow}
seen = {{"pandas_after_arrow": "pandas" in sys.modules, "result": result}}
{pandas}
seen["pandas"] = pandas_seen
print(json.dumps(seen, default=str))
"""


def python(code: str) -> str:
    """What a fresh Python process running ``code`` prints (it must succeed)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout


def probe(setup: str, path: Path) -> dict:
    setup += f"\nPATH = {str(path)!r}"
    code = PROBE.format(setup=setup, arrow=ARROW_WORK, pandas=PANDAS_WORK)
    return json.loads(python(code).strip().splitlines()[-1])


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    tmp = tmp_path_factory.mktemp("deferred")
    deferred = probe("from chanbatch.deferred import defer_pandas\ndefer_pandas()", tmp / "a.pq")
    plain = probe("", tmp / "b.pq")
    return deferred, plain


def test_arrow_work_does_not_import_pandas(both: tuple[dict, dict]) -> None:
    deferred, plain = both
    assert deferred["pandas_after_arrow"] is False
    assert plain["pandas_after_arrow"] is True  # the probe does notice pyarrow importing it
    # the work itself: v > 0.5 keeps 1.0, 2.0, 3.0; k=1 has 1.0 + 3.0, k=2 has 2.0
    want = [{"k": 1, "v_sum": 4.0}, {"k": 2, "v_sum": 2.0}]
    assert deferred["result"] == plain["result"] == want


def test_pandas_objects_convert_as_without_deferring(both: tuple[dict, dict]) -> None:
    deferred, plain = both
    assert deferred["pandas"] == plain["pandas"]
    seen = deferred["pandas"]
    # and as pandas objects (not as Python sequences): nullable ints stay int64 with a null,
    # a categorical stays dictionary-encoded, an Arrow-backed decimal stays a decimal
    assert seen["arrays"]["i"][:2] == ["int64", 1]
    assert seen["arrays"]["c"][0].startswith("dictionary<")
    assert seen["arrays"]["d"][0] == "decimal128(15, 2)"
    assert seen["dtypes"]["i"] == "Int64" and seen["dtypes"]["c"] == "category"


def test_defer_is_a_no_op_once_pandas_is_imported() -> None:
    code = (
        "import sys, pandas, pyarrow as pa\n"
        "from chanbatch.deferred import defer_pandas\n"
        "before = list(sys.meta_path)\n"
        "defer_pandas()\n"
        "print(sys.meta_path == before, pa.lib._pandas_api.have_pandas)"
    )
    assert python(code).split() == ["True", "True"]


def test_pyarrow_loading_on_a_thread_hides_pandas_from_that_thread_only() -> None:
    """A run on an object store imports pyarrow on a thread while it plans. The pandas that
    pyarrow's loading hides is hidden from that thread only: another thread that imports
    pandas meanwhile gets it, and pyarrow then sees pandas objects as they are."""
    code = (
        "import sys, threading\n"
        "from chanbatch import deferred\n"
        "deferred.defer_pandas()\n"
        "inside, seen = threading.Event(), {}\n"
        "def other():\n"
        "    inside.wait(10)\n"
        "    import pandas\n"
        "    seen['other'] = pandas.__name__\n"
        "t = threading.Thread(target=other); t.start()\n"
        "with deferred._hidden('pandas'):\n"
        "    try:\n"
        "        import pandas\n"
        "        seen['this'] = 'imported'\n"
        "    except ImportError:\n"
        "        seen['this'] = 'hidden'\n"
        "    inside.set(); t.join(10)\n"
        "import pandas as pd, pyarrow as pa\n"
        "arr = pa.array(pd.Series([1, None], dtype='Int64'))\n"
        "print(seen['other'], seen['this'], arr.type, arr.null_count)"
    )
    assert python(code).split() == ["pandas", "hidden", "int64", "1"]
