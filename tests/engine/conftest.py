"""Lets the engine tests share the expression strategies of ``tests/blueprint/blueprintkit.py``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "blueprint"))
