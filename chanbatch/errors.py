"""The error tree of chanbatch.

Every error the library raises on purpose derives from :class:`ChanbatchError`. The CLI catches
that one class, prints ``Error: <message>`` (plus a hint line when there is one) and exits with
the error's ``exit_code``; anything else is a bug and is reported as an internal error.

::

    ChanbatchError                      exit_code
    ├── UsageError                      2  the user asked for something that cannot be done
    │   ├── InvalidNameError               a dataset name that fails the name rule
    │   ├── InputError                     a missing or unreadable input file, a missing column
    │   ├── StoreUrlError                  a store URL naming a file, or an unknown protocol
    │   ├── SchemaConflictError            a slice whose schema disagrees with its dataset's
    │   ├── RefError                       a REF that cannot be resolved
    │   │   ├── RefNotFoundError           ... resolves to nothing
    │   │   └── AmbiguousRefError          ... resolves to more than one snapshot
    │   ├── BlueprintError                 every problem of a blueprint (blueprint.problems)
    │   └── ExprError                      an expression that does not parse (blueprint.expr)
    ├── StoreError                      1  the store itself is unwell, busy or out of reach
    │   ├── NoStoreError                   nothing at the store URL a reading command was given
    │   ├── IntegrityError                 bytes that do not match their content hash
    │   └── ConcurrencyError               a write that kept losing races and gave up
    ├── ExprEvalError                   1  an expression that fails on the data (blueprint.expr)
    ├── SchedulerUnreachable            1  a Dask scheduler address that does not answer (run)
    └── StageFailed                     1  a stage that raised on a slice (compile.execute)

Messages name the thing at fault (dataset, file, column, slice) and, where one exists, carry a
``hint`` that says what to do next.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ChanbatchError(Exception):
    """Base of every error chanbatch raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(ChanbatchError):
    """Bad input from the user: a name, a file, a REF, an option. Exit code 2."""

    exit_code = 2


class InvalidNameError(UsageError):
    """A dataset name that does not match ``^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$``."""


class InputError(UsageError):
    """An input that cannot be read or does not have what was asked of it."""


class StoreUrlError(UsageError):
    """A store URL that cannot name a store: a regular file, an unknown protocol."""


class SchemaConflictError(UsageError):
    """A slice whose column types disagree with the dataset's schema."""


class RefError(UsageError):
    """A REF (``DATASET``, ``DATASET@prefix``, ``DATASET[slice]``) that cannot be resolved."""


class RefNotFoundError(RefError):
    """A REF that resolves to nothing."""


class AmbiguousRefError(RefError):
    """An id prefix that matches more than one snapshot."""


class StoreError(ChanbatchError):
    """The store cannot do what was asked, for reasons other than the user's input. Exit 1."""


class NoStoreError(StoreError):
    """No store at the URL a command that reads was given (a mistyped ``--store``). Exit 1."""


class IntegrityError(StoreError):
    """Stored bytes whose hash does not match their name: corruption, never silently ignored."""


class ConcurrencyError(StoreError):
    """A write that lost the race for the next ref too many times in a row."""


def did_you_mean(word: str, choices: Iterable[str], *, n: int = 1) -> str | None:
    """Return ``"did you mean 'x'?"`` for the closest of ``choices`` (with ``n`` above one, up
    to ``n`` of them, closest first: ``"did you mean 'x' or 'y'?"``), or None if none is close."""
    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)
    if not close:
        return None
    named = [repr(c) for c in close]
    listed = named[0] if len(named) == 1 else f"{', '.join(named[:-1])} or {named[-1]}"
    return f"did you mean {listed}?"
