"""The status of a Blueprint resource: pure builders, and a run's progress turned into patches.

The status stays small whatever the data: a phase, ``done/total``, counts per stage, the output
snapshots and a few conditions. Per-slice detail lives in the run record in the store
(``runs/<runId>.json``), which ``runId`` names.

Conditions follow the Kubernetes convention (``type``, ``status``, ``reason``, ``message``,
``lastTransitionTime``, ``observedGeneration``); the types are ``Valid`` (the spec was
accepted), ``Progressing`` (a run is under way), ``Complete`` and ``Failed`` (how the last run
for this generation ended), as a Job's are.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from chanbatch.ids import short

Patch = dict[str, Any]
MESSAGE_LIMIT = 1024


def now() -> str:
    """The current time as Kubernetes writes it: RFC 3339, UTC, whole seconds."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    kind: str,
    status: bool | str,
    reason: str,
    message: str = "",
    *,
    generation: int | None = None,
    at: str | None = None,
) -> dict[str, Any]:
    """One condition, ``status`` as ``"True"``/``"False"``/``"Unknown"``."""
    text = status if isinstance(status, str) else ("True" if status else "False")
    out: dict[str, Any] = {
        "type": kind,
        "status": text,
        "reason": reason,
        "message": message[:MESSAGE_LIMIT],
        "lastTransitionTime": at or now(),
    }
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def merge_conditions(
    current: list[Mapping[str, Any]] | None, updates: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``current`` with ``updates`` applied by type; a condition whose status does not change
    keeps its ``lastTransitionTime``, as the convention asks."""
    merged = {c["type"]: dict(c) for c in current or ()}
    for update in updates:
        old = merged.get(update["type"])
        if old is not None and old.get("status") == update["status"]:
            update = {
                **update,
                "lastTransitionTime": old.get("lastTransitionTime", update["lastTransitionTime"]),
            }
        merged[update["type"]] = update
    return list(merged.values())


def pending(
    generation: int, current: Mapping[str, Any] | None = None, *, run_request: str = ""
) -> Patch:
    """Accepted for ``generation`` (and rerun request ``run_request``) and about to run."""
    return {
        "phase": "Pending",
        "observedGeneration": generation,
        "runRequest": run_request or None,
        "progress": "0/0",
        "message": "validated; starting a Dask cluster",
        "stages": None,
        "outputs": None,
        "outputSummary": None,
        "runId": None,
        "startTime": now(),
        "completionTime": None,
        "conditions": merge_conditions(
            (current or {}).get("conditions"),
            [
                condition(
                    "Valid", True, "Validated", "the blueprint is valid", generation=generation
                ),
                condition("Progressing", True, "Starting", generation=generation),
                condition("Complete", False, "Starting", generation=generation),
                condition("Failed", False, "Starting", generation=generation),
            ],
        ),
    }


def invalid(generation: int, message: str, current: Mapping[str, Any] | None = None) -> Patch:
    """The spec of ``generation`` was refused: Failed, and not retried."""
    valid = condition("Valid", False, "InvalidSpec", message, generation=generation)
    return failed(generation, "InvalidSpec", message, current, first=[valid])


def failed(
    generation: int,
    reason: str,
    message: str,
    current: Mapping[str, Any] | None = None,
    *,
    first: list[dict[str, Any]] | None = None,
) -> Patch:
    """The run of ``generation`` failed for good (a stage raised, a REF is missing, ...).
    ``first``: conditions to set before the three every failure sets."""
    return {
        "phase": "Failed",
        "observedGeneration": generation,
        "message": message[:MESSAGE_LIMIT],
        "completionTime": now(),
        "conditions": merge_conditions(
            (current or {}).get("conditions"),
            [
                *(first or []),
                condition("Progressing", False, reason, generation=generation),
                condition("Complete", False, reason, generation=generation),
                condition("Failed", True, reason, message, generation=generation),
            ],
        ),
    }


def retrying(generation: int, message: str, current: Mapping[str, Any] | None = None) -> Patch:
    """A transient failure (store or network): the operator will try again."""
    return {
        "phase": "Pending",
        "observedGeneration": generation,
        "message": f"will retry: {message}"[:MESSAGE_LIMIT],
        "conditions": merge_conditions(
            (current or {}).get("conditions"),
            [condition("Progressing", True, "Retrying", message, generation=generation)],
        ),
    }


def output_summary(outputs: Mapping[str, Mapping[str, Any]]) -> str:
    """``dataset@<12 hex>`` of each output, comma-separated: the Outputs printer column."""
    return ",".join(f"{o['dataset']}@{short(o['snapshot'])}" for o in outputs.values())


def succeeded(
    generation: int, result: Mapping[str, Any], current: Mapping[str, Any] | None = None
) -> Patch:
    """The run of ``generation`` finished; ``result`` is ``RunResult.document()``."""
    outputs = {
        name: {"dataset": o["dataset"], "snapshot": o["snapshot"], "rows": int(o.get("rows", 0))}
        for name, o in result["outputs"].items()
    }
    stats = result["stats"]
    stages = stage_counts(stats.get("stages", {}))
    total = sum(s["total"] for s in stages.values())
    message = (
        f"{stats['computed']} tasks computed, {stats['reused']} reused "
        f"({stats.get('cutoff', 0)} cut off) in {stats['seconds']:.1f} s"
    )
    return {
        "phase": "Succeeded",
        "observedGeneration": generation,
        "progress": f"{total}/{total}",
        "message": message,
        "runId": result["run"],
        "stages": stages,
        "outputs": outputs,
        "outputSummary": output_summary(outputs),
        "completionTime": now(),
        "conditions": merge_conditions(
            (current or {}).get("conditions"),
            [
                condition("Progressing", False, "RunFinished", generation=generation),
                condition("Complete", True, "RunFinished", message, generation=generation),
                condition("Failed", False, "RunFinished", generation=generation),
            ],
        ),
    }


def stage_counts(stages: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Per stage ``total``/``computed``/``reused``/``cutoff`` from a run's statistics."""
    return {
        name: {
            "total": int(s["computed"]) + int(s["reused"]),
            "computed": int(s["computed"]),
            "reused": int(s["reused"]),
            "cutoff": int(s.get("cutoff", 0)),
        }
        for name, s in stages.items()
    }


class StatusProgress:
    """A run's progress (``chanbatch.run.Progress``) sent to the resource's status as it goes.

    ``send`` receives status patches. It is called at the start (the tasks each stage will
    compute; ``progress`` is done/total of those), then at most once per ``interval`` seconds while tasks finish, and
    once more by ``flush``. Tasks finish on Dask's threads, so counting is locked; sending is
    not done under the lock.
    """

    def __init__(self, send: Callable[[Patch], None], *, interval: float = 2.0) -> None:
        self._send = send
        self._interval = interval
        self._lock = threading.Lock()
        self._stages: dict[str, dict[str, int]] = {}
        self._done = self._total = 0
        self._last = 0.0
        self._dirty = False

    def begin(self, totals: dict[str, int]) -> None:
        with self._lock:
            self._stages = {
                stage: {"total": n, "computed": 0, "reused": 0, "cutoff": 0}
                for stage, n in totals.items()
            }
            self._total = sum(totals.values())
        self._emit(force=True, message="running")

    def advance(self, stage: str, outcome: str) -> None:
        with self._lock:
            counts = self._stages.setdefault(
                stage, {"total": 0, "computed": 0, "reused": 0, "cutoff": 0}
            )
            if outcome == "cutoff":
                counts["reused"] += 1
                counts["cutoff"] += 1
            else:
                counts["computed"] += 1
            self._done += 1
            self._dirty = True
            due = time.monotonic() - self._last >= self._interval
        if due:
            self._emit()

    def message(self, text: str) -> None:
        self._emit(force=True, message=text)

    def flush(self) -> None:
        """Send what has not been sent yet."""
        if self._dirty:
            self._emit(force=True)

    def patch(self, message: str | None = None) -> Patch:
        """The status patch for what is known now."""
        with self._lock:
            out: Patch = {
                "phase": "Running",
                "progress": f"{self._done}/{self._total}",
                "stages": {k: dict(v) for k, v in self._stages.items()},
            }
        if message:
            out["message"] = message[:MESSAGE_LIMIT]
        return out

    def _emit(self, *, force: bool = False, message: str | None = None) -> None:
        with self._lock:
            if not force and time.monotonic() - self._last < self._interval:
                return
            self._last = time.monotonic()
            self._dirty = False
        self._send(self.patch(message))
