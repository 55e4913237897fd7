"""The blueprint package stays pure data (docs/concepts.md, Architecture): light to import, and its modules
import each other in one direction only."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from chanbatch.blueprint.graph import find_cycles

HERE = Path(__file__).parent
REPO = HERE.parent.parent
PACKAGE = REPO / "chanbatch" / "blueprint"
EXAMPLE = HERE / "good" / "carrier_delays.yaml"


def test_import_stays_light() -> None:
    # A fresh interpreter: this test process has long since imported the dataframe libraries.
    code = (
        "import importlib, pkgutil, sys, chanbatch.blueprint as b;"
        "every = pkgutil.iter_modules(b.__path__, 'chanbatch.blueprint.');"
        "[importlib.import_module(m.name) for m in every];"
        "b.load_blueprint(sys.argv[1]);"
        "b.parse_blueprint(open(sys.argv[1]).read());"
        "b.blueprint_json_schema();"
        "heavy = sorted(m for m in ('pandas', 'numpy', 'pyarrow', 'dask') if m in sys.modules);"
        "assert not heavy, heavy"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code, str(EXAMPLE)], check=True, env=env)


def _module(name: str) -> str | None:
    """The module of this package that a dotted name lies in, ``__init__`` for the package."""
    prefix = "chanbatch.blueprint"
    if name == prefix:
        return "__init__"
    if name.startswith(prefix + "."):
        return name[len(prefix) + 1 :].split(".")[0]
    return None


def _imported(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports anywhere: at the top, inside functions or
    under ``if TYPE_CHECKING`` (each of these still ties the two modules together)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(_module(alias.name) or "" for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1:
                base = f"chanbatch.blueprint.{base}" if base else "chanbatch.blueprint"
            for alias in node.names:
                # ``from chanbatch.blueprint import checks`` imports the module checks
                module = _module(f"{base}.{alias.name}")
                found.add(module if module in modules else _module(base) or "")
    return (found & modules) - {path.stem}


def test_modules_import_in_one_direction() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    modules = {file.stem for file in files}
    edges = {file.stem: sorted(_imported(file, modules)) for file in files}
    # the check sees the imports it is meant to see
    assert "model" in edges["parse"] and "stages" in edges["parse"]
    assert find_cycles(edges) == []
