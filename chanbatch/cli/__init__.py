"""The ``chanbatch`` command: a thin shell over the library.

This package is the only place that imports click and rich. It parses arguments, calls the
library, prints, and maps :class:`chanbatch.errors.ChanbatchError` to ``Error: ...`` and an exit
code in one place (:func:`main`).
"""

from chanbatch.cli.main import console, main

__all__ = ["console", "main"]
