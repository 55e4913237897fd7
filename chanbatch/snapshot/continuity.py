"""Continuity of the ref log: no version is missing, and nothing names a version that is gone.

Each ref-log entry is checked on its own (its checksum, its path), but a ref file that was
deleted leaves nothing behind to check. Two things still show it:

- a **gap**: a dataset's versions run from 1 to its head, so a number missing in between (or
  before the first one there) is a deleted file, unless gc removed it (``gc --keep-versions``
  records what it prunes, :func:`chanbatch.snapshot.refs.record_pruned`);
- a **dangling reference**: a run record (the ``refs`` of its roots, :mod:`chanbatch.snapshot
  .roots`: its inputs and outputs) or a pin names a snapshot and version that the log no
  longer has. This is how a deleted *head* is found: the log itself
  looks whole (it just ends one version earlier, silently rolling the dataset back), but the
  run that wrote that head, or a pin of it, still names it.

A head deleted that nothing else names cannot be told from a dataset that never had it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from chanbatch.ids import short
from chanbatch.snapshot import layout, refs, roots
from chanbatch.snapshot.storage import Storage


@dataclass(frozen=True, slots=True)
class _Log:
    """What verify read of one dataset's ref log."""

    present: frozenset[int]  # version files there (readable or not)
    entries: Mapping[int, refs.RefEntry]  # the readable ones
    pruned: Mapping[int, str]  # version -> snapshot, removed by gc

    @property
    def head(self) -> int:
        return max(self.present, default=0)


def check(
    storage: Storage,
    entries: Iterable[refs.RefEntry],
    versions: Mapping[str, list[int]],
    *,
    references: bool = True,
    only: str | None = None,
) -> list[dict[str, Any]]:
    """Gaps in the logs of ``versions`` (dataset -> version files present) and, with
    ``references``, run records and pins that name a version no log has. ``entries`` are the
    readable entries; ``only`` keeps the references to that one dataset. Returns one record per
    problem: ``{"dataset", "version", "problem"
    ("gap" or "dangling"), "path" (the ref file that is missing), "named_by", "snapshot",
    "message"}``."""
    by_dataset: dict[str, dict[int, refs.RefEntry]] = {}
    for entry in entries:
        by_dataset.setdefault(entry.dataset, {})[entry.version] = entry
    logs = {
        dataset: _Log(
            present=frozenset(found),
            entries=by_dataset.get(dataset, {}),
            pruned=refs.pruned(storage, dataset),
        )
        for dataset, found in versions.items()
    }
    found = [problem for dataset, log in sorted(logs.items()) for problem in _gaps(dataset, log)]
    if references:
        for source, what, dataset, sid, version in _references(storage):
            if only is not None and dataset != only:
                continue
            problem = _dangling(storage, logs, source, what, dataset, sid, version)
            if problem is not None:
                found.append(problem)
    return found


def _gaps(dataset: str, log: _Log) -> list[dict[str, Any]]:
    missing = [v for v in range(1, log.head) if v not in log.present and v not in log.pruned]
    runs: list[list[int]] = []
    for v in missing:
        if runs and runs[-1][-1] == v - 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    out = []
    for run in runs:
        first, last = run[0], run[-1]
        before = max((v for v in log.present if v < first), default=None)
        after = min(v for v in log.present if v > last)
        span = f"version {first}" if first == last else f"versions {first}-{last}"
        files = layout.ref_path(dataset, first) + (
            "" if first == last else f" to {layout.ref_path(dataset, last)}"
        )
        around = f"between versions {before} and {after}" if before else f"before version {after}"
        for version in run:
            out.append(
                {
                    "dataset": dataset,
                    "version": version,
                    "problem": "gap",
                    "path": layout.ref_path(dataset, version),
                    "named_by": None,
                    "snapshot": None,
                    "message": f"the ref log of {dataset!r} is missing {span} ({around}): "
                    f"{files} was deleted",
                }
            )
    return out  # the records of one run of missing versions share its message


def _references(
    storage: Storage,
) -> Iterable[tuple[str, str, str, str, int | None]]:
    """(file, what in it, dataset, snapshot id, version or None) of every reference to a
    snapshot in run records (the ``refs`` of their roots, :mod:`chanbatch.snapshot.roots`) and
    pins. Files that cannot be read are verify's to report."""
    for rel, _mtime, _size in storage.walk(layout.RUNS):
        try:
            stated = roots.read_document(storage, rel)
        except ValueError:
            continue
        for ref in stated.refs if stated is not None else ():
            yield rel, ref.what, ref.dataset, ref.snapshot, ref.version
    for name in storage.listdir(layout.PINS):
        rel = f"{layout.PINS}/{name}"
        try:
            doc = json.loads(storage.read_bytes(rel))
        except (FileNotFoundError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("dataset") and doc.get("snapshot"):
            yield rel, "pin", doc["dataset"], doc["snapshot"], _int(doc.get("version"))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _dangling(
    storage: Storage,
    logs: Mapping[str, _Log],
    source: str,
    what: str,
    dataset: str,
    sid: str,
    version: int | None,
) -> dict[str, Any] | None:
    log = logs.get(dataset)
    if log is None:
        try:
            layout.ref_dir(dataset)
        except Exception:  # not a dataset name: nothing a ref file could be missing for
            return None
        log = _Log(present=frozenset(), entries={}, pruned=refs.pruned(storage, dataset))
    known = {e.snapshot for e in log.entries.values()} | set(log.pruned.values())
    unreadable = log.present - set(log.entries)
    if version is not None:
        entry = log.entries.get(version)
        if (entry is not None and entry.snapshot == sid) or log.pruned.get(version) == sid:
            return None
        if version in unreadable:
            return None  # verify reports that file as corrupt
        if entry is None and version not in log.pruned and sid in known:
            return None  # an old record's version may be off; the snapshot is still there
    elif sid in known or unreadable:
        return None
    if version is None:  # an older record: the child entry, if any, tells the version
        child = next((e for e in log.entries.values() if e.parent == sid), None)
        version = child.version - 1 if child is not None else None
    named = f"{dataset}@{short(sid)}"
    where = f"{what} in {source}" if what != "pin" else f"pin {source}"
    if version is None:
        detail = (
            f"which the ref log of {dataset!r} no longer has (its head is version {log.head}): "
            "a ref file was deleted, the dataset's head if that snapshot was the newest"
            if log.present
            else f"but dataset {dataset!r} has no ref log any more: its ref files were deleted"
        )
        path = None
    else:
        path = layout.ref_path(dataset, version)
        entry = log.entries.get(version)
        if entry is not None:
            detail = (
                f"but version {version} of {dataset!r} now names {short(entry.snapshot)}: "
                f"{path} was deleted and that version written again"
            )
        else:
            rolled = (
                f" (the head is now version {log.head}: the dataset was silently rolled back)"
                if version > log.head
                else ""
            )
            detail = f"which the ref log of {dataset!r} no longer has: {path} was deleted{rolled}"
    return {
        "dataset": dataset,
        "version": version,
        "problem": "dangling",
        "path": path,
        "named_by": source,
        "snapshot": sid,
        "message": f"{where} names {named}"
        + (f" (version {version})" if version is not None else "")
        + f", {detail}",
    }
