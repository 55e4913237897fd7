"""Run records (``runs/<run id>.json``) and the documents they are made of.

A run writes its record twice: an intent (status ``running``: what it is about to use) before it
reads anything, and the full record (status ``finished``) at the end. Planning reads the last
one of a blueprint to explain what changed and to skip refreezing unchanged outputs; the report
is drawn from one; gc keeps alive what a recent one names, and verify checks that it is stored
under its run id and that the dataset versions it names are still in their ref logs (both read
only its ``roots``, in the format of :mod:`chanbatch.snapshot.roots`, which the run fills in:
chanbatch.run.recording). It lives in this layer so that every one of those readers
(compile, run, view) reads it through :func:`read_record`, which checks its checksum.

- :class:`TaskOutcome`: what one task did, as a worker reports it (the ledger).
- :class:`StageStats`: computed, reused, cut-off tasks and seconds of one stage, tallied once
  (:func:`tally`) from a record's tasks.
- :class:`RunRecord`: the record, sealed with its checksum.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from chanbatch.errors import StoreError, UsageError
from chanbatch.hashing import seal, unseal
from chanbatch.snapshot import layout
from chanbatch.snapshot.names import encode_key
from chanbatch.snapshot.roots import Roots
from chanbatch.snapshot.storage import Storage

RUNNING = "running"
FINISHED = "finished"


class RecordDamaged(StoreError):
    """A run record whose checksum, layout or members are wrong. Exit 1."""


def record_path(run_id: str) -> str:
    return f"{layout.RUNS}/{run_id}.json"


# -- what one task did ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskOutcome:
    """What one task did: reported by the task as it finishes (chanbatch.engine.graph), sent
    from a distributed worker as a plain document (:meth:`document`), read back with
    :meth:`parse`."""

    dask_key: str  # the task's key in the graph (a provisional task's placeholder)
    key: str  # the cache key it resolved to
    stage: str
    slice: Any
    kind: str
    outcome: str  # "computed" or "cutoff"
    start: float  # this process's perf_counter
    seconds: float
    # ``start`` is not comparable across workers: the wall clock at that moment lays tasks of
    # every process on one timeline (the run report)
    began: float
    rows: int | None = None
    stored: str | None = None  # the object id of its stored result
    pack: str | None = None  # the pack it was stored in, when in a pack of several
    worker: str | None = None
    worker_name: str | None = None
    run: str | None = None  # set on distributed workers, with ``time``
    time: float | None = None

    def document(self) -> dict[str, Any]:
        """Plain data a distributed worker's event log can carry (msgpack): the slice key in
        its JSON form (a date as its ISO text), as a run record writes it."""
        doc = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) is not None or f.name in _ALWAYS
        }
        if self.slice is not None:
            doc["slice"] = encode_key(self.slice)
        return doc

    @classmethod
    def parse(cls, document: Mapping[str, Any]) -> TaskOutcome:
        """Raises KeyError for a report that lacks a member every task sends."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in document.items() if k in known})


_ALWAYS = {"slice", "rows", "stored"}  # sent as null, as they always were


# -- per-stage statistics ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StageStats:
    """What one stage's tasks did in a run: ``computed`` ran, ``reused`` came from the cache,
    and ``cutoff`` (counted in ``reused``) were found in the cache once their recomputed inputs
    turned out unchanged; ``seconds`` is their task time summed over workers."""

    computed: int = 0
    reused: int = 0
    cutoff: int = 0
    seconds: float = 0.0

    def document(self) -> dict[str, Any]:
        return {
            "computed": self.computed,
            "reused": self.reused,
            "cutoff": self.cutoff,
            "seconds": self.seconds,
        }

    @classmethod
    def parse(cls, document: Mapping[str, Any]) -> StageStats:
        return cls(
            computed=int(document.get("computed", 0)),
            reused=int(document.get("reused", 0)),
            cutoff=int(document.get("cutoff", 0)),
            seconds=float(document.get("seconds") or 0.0),
        )


def tally(tasks: Iterable[Mapping[str, Any]]) -> dict[str, StageStats]:
    """Per stage, in order of first appearance, the statistics of a record's ``tasks``: a task
    without an ``outcome`` did not run (it was reused)."""
    counts: dict[str, list[Any]] = {}
    for task in tasks:
        row = counts.setdefault(str(task.get("stage")), [0, 0, 0, 0.0])
        outcome = task.get("outcome")
        row[0 if outcome == "computed" else 1] += 1
        row[2] += outcome == "cutoff"
        row[3] += float(task.get("seconds") or 0.0)
    return {
        stage: StageStats(computed=c, reused=r, cutoff=x, seconds=round(s, 3))
        for stage, (c, r, x, s) in counts.items()
    }


def run_stats(stages: Mapping[str, StageStats], seconds: float) -> dict[str, Any]:
    """A run's ``stats``: the totals over ``stages``, its wall time, and each stage's."""
    return {
        "computed": sum(s.computed for s in stages.values()),
        "reused": sum(s.reused for s in stages.values()),
        "cutoff": sum(s.cutoff for s in stages.values()),
        "seconds": round(seconds, 3),
        "stages": {name: s.document() for name, s in stages.items()},
    }


# -- the record ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    """``runs/<run id>.json``. An intent record has the first five members only; a finished one
    has them all. A record written by an older version may lack some: readers take what is
    there, and members this version does not know are kept in ``extra`` as they were read."""

    run: str
    status: str | None = None
    started_at: str | None = None
    blueprint: str | None = None
    roots: Roots = field(default_factory=Roots)
    blueprint_hash: str | None = None
    source: str | None = None
    text: str | None = None
    salt: Any = None
    specs: dict[str, Any] | None = None
    scheduler: str | None = None
    inputs: dict[str, dict[str, Any]] | None = None
    tasks: list[dict[str, Any]] | None = None
    outputs: dict[str, dict[str, Any]] | None = None
    output_versions: dict[str, int] | None = None
    output_keys: dict[str, list[str]] | None = None
    stats: dict[str, Any] | None = None
    # a run that found its inputs and blueprint as an earlier run left them, and its outputs
    # still the heads: that run's id (its record has the tasks; this one has none)
    repeats: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status == FINISHED

    def stage_stats(self) -> dict[str, StageStats]:
        """Per-stage statistics: as recorded, or tallied from the tasks (older records)."""
        recorded = (self.stats or {}).get("stages")
        if recorded:
            return {name: StageStats.parse(doc) for name, doc in recorded.items()}
        return tally(self.tasks or [])

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = dict(self.extra)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or (value is None and f.name in _OPTIONAL):
                continue
            doc[f.name] = value.document() if isinstance(value, Roots) else value
        return doc

    def to_bytes(self) -> bytes:
        """The sealed record; a value JSON has no type for (a path) is recorded as its text."""
        return seal(self.document(), default=str)

    @classmethod
    def parse(cls, document: Mapping[str, Any]) -> RunRecord:
        """Raises ValueError for a document that is not a run record."""
        run = document.get("run")
        if not isinstance(run, str):
            raise ValueError("it names no run")
        known = {f.name for f in fields(cls)} - {"extra"}
        values: dict[str, Any] = {k: v for k, v in document.items() if k in known}
        values["roots"] = Roots.parse(document.get("roots", {}))
        for name in ("status", "started_at", "blueprint"):
            if not isinstance(values.get(name) or "", str):
                raise ValueError(f"its {name} is not text")
        for name in ("specs", "inputs", "outputs", "output_versions", "output_keys", "stats"):
            if not isinstance(values.get(name) or {}, dict):
                raise ValueError(f"its {name} are not an object")
        tasks = values.get("tasks")
        if tasks is not None and not (
            isinstance(tasks, list) and all(isinstance(t, dict) for t in tasks)
        ):
            raise ValueError("its tasks are not a list of objects")
        extra = {k: v for k, v in document.items() if k not in known and k != "checksum"}
        return cls(**values, extra=extra)


_OPTIONAL = {
    "repeats",
    "status",
    "started_at",
    "blueprint",
    "blueprint_hash",
    "source",
    "text",
    "salt",
    "specs",
    "scheduler",
    "inputs",
    "tasks",
    "outputs",
    "output_versions",
    "output_keys",
    "stats",
}


def write_record(storage: Storage, record: RunRecord) -> None:
    """Write (or replace) ``runs/<run id>.json``, atomically."""
    storage.write_atomic(record_path(record.run), record.to_bytes())


def read_record(storage: Storage, run_id: str) -> RunRecord:
    """The record of run ``run_id``, its checksum checked (a record written before records
    were sealed is taken as it is).

    Raises UsageError when it is gone, and RecordDamaged (a StoreError) naming it when its
    checksum, layout or members are wrong.
    """
    path = record_path(run_id)
    try:
        data = storage.read_bytes(path)
    except FileNotFoundError as exc:  # removed since it was listed (gc, a failed run)
        raise UsageError(f"run record {path} is gone") from exc
    try:
        return RunRecord.parse(unseal(data, legacy=lambda doc: "run" in doc))
    except ValueError as exc:
        raise RecordDamaged(
            f"run record {path} is damaged: {exc}",
            hint="chanbatch snapshot verify checks every sealed file",
        ) from exc


def run_ids(storage: Storage) -> list[str]:
    """Every recorded run id, oldest first (run ids sort by start time)."""
    names = storage.listdir(layout.RUNS)
    return sorted(n[: -len(".json")] for n in names if n.endswith(".json"))


def latest_record(
    storage: Storage,
    *,
    blueprint: str | None = None,
    scan: int | None = None,
    usable: Callable[[RunRecord], bool] = lambda record: record.finished,
) -> RunRecord | None:
    """The newest ``usable`` record (by default: finished) of ``blueprint`` (if given) among
    the last ``scan`` runs (all of them if None). Damaged and vanished records are passed over:
    a damaged record is no one's latest run; :func:`read_record` names the damage when asked
    for that run."""
    ids = run_ids(storage)
    for run_id in reversed(ids if scan is None else ids[-scan:]):
        try:
            record = read_record(storage, run_id)
        except (RecordDamaged, UsageError):
            continue
        if usable(record) and (blueprint is None or record.blueprint == blueprint):
            return record
    return None
