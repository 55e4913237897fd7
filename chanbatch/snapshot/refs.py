"""The ref log: one file per dataset version, created exclusively, and REF resolution.

A new version is ``refs/<dataset>/<n+1>.json``. Two writers may race for the same n+1; exactly
one wins the exclusive create, and the loser re-reads the head, merges its change onto it and
tries again, so no update is lost.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chanbatch.errors import (
    AmbiguousRefError,
    ChanbatchError,
    ConcurrencyError,
    IntegrityError,
    InvalidNameError,
    RefNotFoundError,
)
from chanbatch.errors import did_you_mean as suggest
from chanbatch.hashing import seal, unseal
from chanbatch.ids import SnapshotId, short, snapshot_id
from chanbatch.snapshot import layout
from chanbatch.snapshot.manifest import SnapshotManifest
from chanbatch.snapshot.names import Ref, SliceKey, check_dataset_name, parse_key, parse_ref
from chanbatch.snapshot.objects import get_snapshot
from chanbatch.snapshot.storage import Storage

MAX_ATTEMPTS = 200
# the fields of an entry written before entries carried a checksum
_LEGACY_KEYS = frozenset(
    (
        "dataset",
        "version",
        "snapshot",
        "parent",
        "created_at",
        "author",
        "operation",
        "added",
        "replaced",
        "lineage",
    )
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RefEntry:
    """One version in a dataset's ref log. Nothing here is hashed."""

    dataset: str
    version: int
    snapshot: SnapshotId
    parent: SnapshotId | None = None
    created_at: str = ""
    author: str = ""
    operation: str = "freeze"
    added: tuple[Any, ...] = ()
    replaced: tuple[Any, ...] = ()
    lineage: dict[str, Any] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "version": self.version,
            "snapshot": self.snapshot,
            "parent": self.parent,
            "created_at": self.created_at,
            "author": self.author,
            "operation": self.operation,
            "added": list(self.added),
            "replaced": list(self.replaced),
            "lineage": self.lineage,
        }

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> RefEntry:
        return cls(
            dataset=doc["dataset"],
            version=int(doc["version"]),
            snapshot=snapshot_id(doc["snapshot"]),
            parent=snapshot_id(doc["parent"]) if doc.get("parent") else None,
            created_at=doc.get("created_at", ""),
            author=doc.get("author", ""),
            operation=doc.get("operation", "freeze"),
            added=tuple(doc.get("added", ())),
            replaced=tuple(doc.get("replaced", ())),
            lineage=dict(doc.get("lineage") or {}),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """What a writer wants to commit on top of the current head."""

    snapshot: SnapshotId
    operation: str = "freeze"
    added: tuple[Any, ...] = ()
    replaced: tuple[Any, ...] = ()
    lineage: dict[str, Any] = field(default_factory=dict)


def list_datasets(storage: Storage) -> list[str]:
    """Names of every dataset with at least one version."""
    return [name for name in storage.listdir(layout.REFS) if _has_versions(storage, name)]


def versions(storage: Storage, dataset: str) -> list[int]:
    """Version numbers of ``dataset``'s ref log, oldest first."""
    names = storage.listdir(layout.ref_dir(dataset))
    return sorted(v for v in map(layout.ref_version, names) if v is not None)


def read_entry(storage: Storage, dataset: str, version: int) -> RefEntry:
    """One ref-log entry; raises IntegrityError if it is unreadable."""
    rel = layout.ref_path(dataset, version)
    try:
        entry = RefEntry.from_document(unseal(storage.read_bytes(rel), legacy=_legacy_entry))
    except FileNotFoundError:
        raise RefNotFoundError(f"dataset {dataset!r} has no version {version}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(
            f"ref {rel} is corrupt: {exc}",
            hint="run `chanbatch snapshot verify` to list every damaged file",
        ) from exc
    if (entry.dataset, entry.version) != (dataset, version):
        # a whole, valid entry in the wrong place: another version's file copied over this one
        raise IntegrityError(
            f"ref {rel} is corrupt: it holds version {entry.version} of {entry.dataset!r}",
            hint="run `chanbatch snapshot verify` to list every damaged file",
        )
    return entry


def record_pruned(storage: Storage, dataset: str, removed: dict[int, str]) -> None:
    """Record that gc is about to remove these versions (version -> snapshot id) of
    ``dataset``'s log, so that verify tells its pruning from a ref file deleted by hand.

    Written before the refs are deleted: a gc that dies in between leaves a record of versions
    still there, which is harmless. Each gc writes a file of its own, so concurrent ones lose
    nothing.
    """
    if not removed:
        return
    document = {"dataset": dataset, "versions": {str(v): s for v, s in sorted(removed.items())}}
    rel = layout.pruned_path(dataset, max(removed), uuid.uuid4().hex[:8])
    storage.write_atomic(rel, seal(document))


def pruned(storage: Storage, dataset: str) -> dict[int, str]:
    """The versions of ``dataset`` that gc removed (version -> snapshot id). A record that
    cannot be read counts for nothing: verify then reports those versions as missing."""
    found: dict[int, str] = {}
    folder = f"{layout.PRUNED}/{check_dataset_name(dataset)}"
    for name in storage.listdir(folder):
        if not name.endswith(".json"):
            continue
        try:
            doc = unseal(storage.read_bytes(f"{folder}/{name}"))
            if doc.get("dataset") != dataset:
                continue
            found.update({int(v): str(sid) for v, sid in doc["versions"].items()})
        except (FileNotFoundError, KeyError, TypeError, ValueError, AttributeError):
            continue
    return found


def _legacy_entry(document: dict[str, Any]) -> bool:
    """Whether ``document`` is a whole entry as written before entries were sealed."""
    return set(document) == _LEGACY_KEYS


def history(storage: Storage, dataset: str) -> list[RefEntry]:
    """Every version of ``dataset``, oldest first."""
    return [read_entry(storage, dataset, v) for v in versions(storage, dataset)]


def head(storage: Storage, dataset: str, known: Heads | None = None) -> RefEntry | None:
    """The latest version of ``dataset``, or None if it has none; as ``known`` holds it if it
    does (heads this command read already: :func:`heads`)."""
    if known is not None and dataset in known:
        return known[dataset]
    found = versions(storage, check_dataset_name(dataset))
    return read_entry(storage, dataset, found[-1]) if found else None


#: Heads read already (:func:`heads`), by dataset.
Heads = Mapping[str, "RefEntry | None"]


def heads(storage: Storage, datasets: Iterable[str]) -> dict[str, RefEntry | None]:
    """The heads of ``datasets`` (as :func:`head` reads each), read at once on an object store,
    where each is a LIST and then a GET: a run's inputs and outputs then cost the round trips
    of one. On a local disk, and for a single dataset, nothing is read here (the caller's own
    :func:`head` is as fast). A head that cannot be read (a bad name, a damaged entry, an
    unreachable store) is left out, for the caller's own read to raise its error."""
    names = list(dict.fromkeys(datasets))
    if storage.is_local or len(names) < 2:
        return {}
    from concurrent.futures import ThreadPoolExecutor

    def read(name: str) -> tuple[str, RefEntry | None] | None:
        try:
            return name, head(storage, name)
        except ChanbatchError:
            return None

    with ThreadPoolExecutor(min(len(names), 16), thread_name_prefix="chanbatch-head") as pool:
        return dict(found for found in pool.map(read, names) if found is not None)


def commit(
    storage: Storage,
    dataset: str,
    propose: Callable[[RefEntry | None], Change | None],
    *,
    seen: tuple[RefEntry | None] | None = None,
) -> tuple[RefEntry | None, bool]:
    """Append a version built by ``propose(head)``, retrying on lost races.

    ``propose`` is called with the current head and returns the change to commit, or None when
    there is nothing to do. Returns (the resulting head, whether a new version was written).
    Raises ConcurrencyError if the race is lost :data:`MAX_ATTEMPTS` times.

    ``seen`` holds the head the caller read (a freeze reads it for the schema): the first
    attempt builds on it without reading it again (on an object store, a LIST and a GET). That
    is safe because versions are created exclusively and in order: if another writer committed
    since, the version after ``seen`` exists, the create fails, and the next attempt reads the
    head afresh.
    """
    for attempt in range(MAX_ATTEMPTS):
        current = seen[0] if seen is not None and attempt == 0 else head(storage, dataset)
        change = propose(current)
        if change is None:
            return current, False
        entry = RefEntry(
            dataset=dataset,
            version=(current.version + 1) if current else 1,
            snapshot=change.snapshot,
            parent=current.snapshot if current else None,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            author=_author(),
            operation=change.operation,
            added=change.added,
            replaced=change.replaced,
            lineage=change.lineage,
        )
        data = seal(entry.document())
        if storage.create_exclusive(layout.ref_path(dataset, entry.version), data):
            return entry, True
        time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 25)))
    raise ConcurrencyError(
        f"gave up writing a new version of {dataset!r} after {MAX_ATTEMPTS} lost races",
        hint="another writer is committing continuously; retry later",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolved:
    """A REF resolved against the store: its ref-log entry, and the snapshot's manifest, read
    when it is first asked for if :func:`resolve` was told ``lazy``."""

    dataset: str
    entry: RefEntry
    slice_key: SliceKey | None = None
    # the manifest once read ([manifest]), or where to read it from ([storage])
    _manifest: list[Any] = field(default_factory=list, repr=False, compare=False)

    @property
    def snapshot(self) -> SnapshotId:
        return self.entry.snapshot

    @property
    def manifest(self) -> SnapshotManifest:
        """The snapshot's manifest; raises IntegrityError when it is damaged."""
        held = self._manifest[0]
        if not isinstance(held, SnapshotManifest):
            held = get_snapshot(held, self.entry.snapshot)
            self._manifest[0] = held
        return held

    def with_manifest(self, manifest: SnapshotManifest) -> Resolved:
        """The same REF, resolved to ``manifest`` (a plan over slices that are not stored)."""
        return dataclasses.replace(self, _manifest=[manifest])


def resolve(
    storage: Storage, ref: str | Ref, *, lazy: bool = False, known: Heads | None = None
) -> Resolved:
    """Resolve ``DATASET``, ``DATASET@prefix`` or ``DATASET[slice]`` to a snapshot.

    Raises RefNotFoundError when nothing matches, AmbiguousRefError when a prefix matches
    several snapshots, and IntegrityError when the snapshot's manifest is damaged. With
    ``lazy``, the manifest of a whole snapshot is read when it is first used, and its damage
    raised then: a run that finds nothing changed needs only the snapshot's id, and the
    manifest at 100,000 slices is 11 MB to read and parse. ``known``: heads read already
    (:func:`heads`), by dataset.
    """
    parsed = parse_ref(ref) if isinstance(ref, str) else ref
    entry = resolve_entry(storage, parsed, known)
    if lazy and parsed.slice is None:
        return Resolved(dataset=parsed.dataset, entry=entry, _manifest=[storage])
    manifest = get_snapshot(storage, entry.snapshot)
    key = None
    if parsed.slice is not None:
        key = parse_key(parsed.slice, manifest.key_type)
        if manifest.slice(key) is None:
            keys = [str(s.key) for s in manifest.slices]
            close = suggest(parsed.slice, keys) if manifest.key_type == "str" else None
            raise RefNotFoundError(
                f"snapshot {short(entry.snapshot)} of {parsed.dataset!r} has no slice {parsed.slice!r}",
                hint=close
                or (
                    f"its {len(keys)} slices run from {keys[0]} to {keys[-1]}"
                    if keys
                    else "it has no slices"
                ),
            )
    return Resolved(dataset=parsed.dataset, entry=entry, slice_key=key, _manifest=[manifest])


def resolve_entry(storage: Storage, ref: str | Ref, known: Heads | None = None) -> RefEntry:
    """The ref-log entry a REF names, without reading its manifest (which may be damaged).
    ``known``: heads read already (:func:`heads`), by dataset.

    Raises RefNotFoundError and AmbiguousRefError as :func:`resolve` does.
    """
    parsed = parse_ref(ref) if isinstance(ref, str) else ref
    # the latest snapshot needs only the newest entry: damage further back in the log (which
    # verify reports) must not stop a dataset's current version from being read
    if parsed.snapshot is not None:
        entries = history(storage, parsed.dataset)
    else:
        latest = head(storage, parsed.dataset, known)
        entries = [latest] if latest is not None else []
    if not entries:
        names = list_datasets(storage)
        raise RefNotFoundError(
            f"dataset {parsed.dataset!r} not found in store {storage.location}",
            hint=suggest(parsed.dataset, names, n=3)
            or ("known datasets: " + ", ".join(names) if names else "the store has no datasets"),
        )
    if parsed.snapshot is None:
        entry = entries[-1]
    else:
        matches = {e.snapshot: e for e in entries if e.snapshot.startswith(parsed.snapshot)}
        if not matches:
            recent = ", ".join(short(e.snapshot) for e in reversed(entries[-5:]))
            raise RefNotFoundError(
                f"no snapshot of {parsed.dataset!r} matches {parsed.snapshot!r}",
                hint=f"recent snapshots: {recent}",
            )
        if len(matches) > 1:
            listed = ", ".join(short(s) for s in sorted(matches))
            raise AmbiguousRefError(
                f"{parsed.dataset}@{parsed.snapshot} is ambiguous: it matches {listed}",
                hint="give more characters of the snapshot id",
            )
        # the newest ref entry carrying that snapshot
        entry = next(e for e in reversed(entries) if e.snapshot in matches)
    return entry


def _has_versions(storage: Storage, name: str) -> bool:
    try:
        check_dataset_name(name)
    except InvalidNameError:
        return False
    return bool(versions(storage, name))


def _author() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no user database entry (some containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
