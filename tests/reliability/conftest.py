"""The reliability tests reuse the kits of the other test packages (``clikit``, ``storekit``,
``opskit``). pytest puts a test folder on ``sys.path`` only when it collects a test from it, so
these folders are added here, after the reliability folder itself, for runs of this folder alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]

for _kit in ("cli", "snapshot", "run"):
    _path = str(TESTS / _kit)
    if _path not in sys.path:
        sys.path.append(_path)
