"""Writing a Blueprint's status: patches in order, from the event loop or from Dask's threads."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


class StatusWriter:
    """Patches one Blueprint's status subresource, in order, from the event loop or any thread.

    Patches from Dask's threads (progress) are queued on the loop; ``drain`` waits for them, so
    the final status is always the last one written."""

    def __init__(
        self, obj: Any, current: Mapping[str, Any], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._obj = obj
        self._loop = loop
        self._lock = asyncio.Lock()
        self._pending: list[Any] = []
        self.current: dict[str, Any] = dict(current or {})

    async def write(self, patch: Mapping[str, Any]) -> None:
        async with self._lock:
            await self._obj.patch({"status": dict(patch)}, subresource="status")
            for key, value in patch.items():
                if value is None:
                    self.current.pop(key, None)
                else:
                    self.current[key] = value

    def write_threadsafe(self, patch: Mapping[str, Any]) -> None:
        future = asyncio.run_coroutine_threadsafe(self._quietly(patch), self._loop)
        self._pending.append(future)

    async def _quietly(self, patch: Mapping[str, Any]) -> None:
        try:
            await self.write(patch)
        except Exception as exc:  # progress is best effort; the final status is not
            log.warning("could not patch the status with progress: %s", exc)

    async def drain(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            await asyncio.wrap_future(future)
