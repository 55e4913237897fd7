"""``import chanbatch`` stays light: neither dask nor pandas (docs/concepts.md, Architecture)."""

from __future__ import annotations

import json
from pathlib import Path

from storekit import python

import chanbatch

HEAVY = ("dask", "distributed", "pandas")

PROBE = """
import json, sys
{body}
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r}))))
"""


def loaded_after(body: str) -> list[str]:
    out = python(PROBE.format(body=body, heavy=HEAVY)).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_import_chanbatch_is_light() -> None:
    assert loaded_after("import chanbatch") == []


def test_import_snapshot_is_light() -> None:
    assert (
        loaded_after("import chanbatch.snapshot\nfrom chanbatch.snapshot import SnapshotStore")
        == []
    )


def test_listing_and_resolving_do_not_import_dask(tmp_path: Path) -> None:
    import pandas as pd

    url = str(tmp_path / "store")
    chanbatch.Store(url).freeze("ds", pd.DataFrame({"k": [1, 2]}), slice_by="k")
    body = f"""
import chanbatch
store = chanbatch.Store({url!r})
assert store.datasets() == ["ds"]
assert store.resolve("ds[2]").slice_key == 2
assert len(store.history("ds")) == 1
"""
    loaded = loaded_after(body)
    assert "dask" not in loaded and "distributed" not in loaded, loaded


def test_probe_sees_heavy_imports() -> None:
    """Guard the probe itself: it does notice a heavy import."""
    assert loaded_after("import pandas") == ["pandas"]
