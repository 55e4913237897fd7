"""A ``map`` module that says when it is imported (issue 7, item 11).

Importing it appends a line to the file named by ``$CHANBATCH_HOSTILE_MARKER`` (when set): a
run that is refused before anything runs must leave that file absent, and the control run that
allows the module must create it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_MARKER = os.environ.get("CHANBATCH_HOSTILE_MARKER")
if _MARKER:
    with Path(_MARKER).open("a", encoding="utf-8") as _file:
        _file.write(f"imported by process {os.getpid()}\n")


def clean(frame: Any) -> Any:
    """The rows unchanged: the point of this module is its import, not its work."""
    return frame
