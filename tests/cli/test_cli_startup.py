"""What the CLI loads before it knows the command: as little as possible.

``chanbatch --help``, ``validate`` and a fully cached ``run`` are judged by their start-up
(docs/performance.md measures it against DuckDB's). Each command imports what it needs when
it runs; nothing heavy may creep back into the import of the command tree.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("rich", "dask", "distributed", "pandas", "pyarrow", "numpy", "graphviz", "yaml")


def loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    modules = json.loads(out.stdout.splitlines()[-1])
    return sorted({m.split(".")[0] for m in modules} & set(HEAVY))


def test_the_command_tree_loads_nothing_heavy() -> None:
    assert loaded_after("import chanbatch.cli") == []


def test_help_loads_nothing_heavy() -> None:
    code = (
        "from chanbatch.cli.commands import cli\n"
        "import chanbatch.cli.main\n"
        "try:\n"
        "    cli.main(args=['--help'], prog_name='chanbatch', standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass"
    )
    assert loaded_after(code) == []


def test_the_console_script_collects_less_often_and_freezes_at_exit() -> None:
    """The installed ``chanbatch`` is ``console``: while a command runs, the cyclic collector
    waits for many more new objects than Python's default 700 (still collecting cycles), and
    once it is done everything is frozen, so the collections at exit walk nothing. ``main``,
    which embedding callers use, leaves the collector as it found it."""
    import tomllib
    from pathlib import Path

    scripts = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert scripts["project"]["scripts"]["chanbatch"] == "chanbatch.cli:console"
    probe = (
        "import gc, json, sys\n"
        "from chanbatch.cli import console\n"
        "seen = {}\n"
        "m = sys.modules['chanbatch.cli.main']  # the module: the package's `main` is the function\n"
        "inner = m.main\n"
        "def spy():\n"
        "    seen['during'] = gc.get_threshold()\n"
        "    seen['enabled'] = gc.isenabled()\n"
        "    inner()\n"
        "m.main = spy\n"
        "sys.argv = ['chanbatch', '--version']\n"
        "try:\n"
        "    console()\n"
        "except SystemExit:\n"
        "    pass\n"
        "seen['frozen'] = gc.get_freeze_count()\n"
        "print(json.dumps(seen))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout.splitlines()[-1])
    assert seen["enabled"] is True
    assert seen["during"][0] >= 10_000  # Python's default is 700
    assert seen["frozen"] > 10_000  # the objects of the process, frozen at the end
