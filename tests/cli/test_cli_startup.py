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
