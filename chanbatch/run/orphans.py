"""A scheduler plugin that frees tasks whose preferred workers have all gone.

chanbatch sends each slice's tasks to one worker, with a loose restriction
(``allow_other_workers``): any worker may run them when that one cannot. distributed honours
that while some worker is alive, but a task left without any worker (all of them died together:
one worker OOM-killed, or a whole node) waits in ``no-worker`` for a worker its restriction
names. A restarted worker has a new address, so it never comes, and the run hangs for ever:
``Scheduler.bulk_schedule_unrunnable_after_adding_worker`` checks the restriction and ignores
that it is loose.

:class:`ReleaseOrphans` runs on the scheduler. When a worker joins, it drops the restriction of
every waiting task whose loose restriction names only workers that are gone, just before the
scheduler looks for tasks the new worker can run. Where a task runs never changes its result.

This module imports nothing from chanbatch, and is sent to the scheduler by value, so a
scheduler without chanbatch installed can run it.
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin


class ReleaseOrphans(SchedulerPlugin):
    """Drop loose worker restrictions that no live worker can satisfy (see the module)."""

    name = "chanbatch-release-orphans"
    idempotent = True

    def add_worker(self, scheduler: Any, worker: str) -> None:
        alive = scheduler.workers
        for ts in list(scheduler.unrunnable):
            wanted = ts.worker_restrictions
            if ts.loose_restrictions and wanted and not any(a in alive for a in wanted):
                ts.worker_restrictions = None
