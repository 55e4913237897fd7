"""How many examples a property test draws: a third in the default run (CI), all with
``--runslow``.

A property test that takes seconds per hundred examples says how many it wants with
``examples(n)``; the default run draws ``n // 3`` (at least 10) of them, so that the suite stays
within CI's budget, and ``pytest --runslow`` draws all ``n``. Every run draws afresh (the
database and the seed are hypothesis's own), so the default runs cover the whole space over
time; a failure found in either prints its example to reproduce.

``tests/conftest.py`` sets ``THOROUGH`` from ``--runslow`` before any test module is collected,
so a module-level ``settings(max_examples=examples(n))`` sees it.

Public names (test packages import them; keep them stable): ``examples``.
"""

from __future__ import annotations

#: Set by tests/conftest.py: ``--runslow`` was given.
THOROUGH = False


def examples(n: int) -> int:
    """``n`` with ``--runslow``; else a third of it, at least 10 (or ``n``, if less)."""
    if THOROUGH:
        return n
    return min(n, max(10, n // 3))
