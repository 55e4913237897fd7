"""Which schedulers a run can use, checked before the run writes anything, and connecting to
one by its address.

A run writes its intent record (``runs/<id>.json``, status ``running``) before it reads
anything, so a scheduler that cannot work must be refused before that: a typo
(``--scheduler thread``) would otherwise leave a record of a run that never ran.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from chanbatch.errors import ChanbatchError, UsageError, did_you_mean

if TYPE_CHECKING:
    from distributed import Client

#: The schedulers a run starts by itself; anything else is a scheduler address or a Client.
LOCAL = ("threads", "sync", "processes")
_ADDRESS = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


class SchedulerUnreachable(ChanbatchError):
    """A Dask scheduler address that does not answer. Exit 1."""


def check_scheduler(scheduler: Any, *, also: tuple[str, ...] = ()) -> None:
    """Refuse a scheduler no run can use: anything but ``threads``, ``sync``, ``processes``,
    an address such as ``tcp://host:8786``, None (threads), a ``distributed.Client``, or one
    of the names in ``also`` (the CLI's ``kubernetes``).

    Raises UsageError naming it, with the closest name ("did you mean 'threads'?").
    """
    if not isinstance(scheduler, str):
        return  # None, or a Client: it is checked by using it
    names = (*LOCAL, *also)
    if scheduler in names or _ADDRESS.fullmatch(scheduler):
        return
    choices = f"use {', '.join(names)}, or a scheduler address such as tcp://host:8786"
    close = did_you_mean(scheduler, names)
    raise UsageError(
        f"unknown scheduler {scheduler!r}", hint=f"{close} ({choices})" if close else choices
    )


@contextlib.contextmanager
def connect(address: str) -> Iterator[Client]:
    """A Client of the scheduler at ``address``, closed on exit.

    Raises SchedulerUnreachable when nothing answers there.
    """
    from distributed import Client

    try:
        client = Client(address)
    except OSError as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise SchedulerUnreachable(
            f"cannot reach scheduler {address}: {reason}",
            hint="check that a Dask scheduler listens there (`dask scheduler`), or use "
            "--scheduler processes",
        ) from exc
    with client:
        yield client
