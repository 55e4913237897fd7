"""Roots: what a file outside the snapshot layer keeps alive and names, in the one format the
snapshot layer reads.

A run record (``runs/<run id>.json``), a cache entry (``cache/<key>.json``) and a memo
(``memo/<digest>.json``) are written by layers above this one, in formats this layer does not
know. Each of them carries a ``roots`` member in the format defined here::

    "roots": {"snapshots": [snapshot ids], "slices": [slice ids],
              "objects": [object ids], "cache": [cache keys],
              "answers": [cache keys], "records": [run ids],
              "name": "the file name it belongs at, without .json",
              "stage": "the stage whose results it holds (a cache entry)",
              "refs": [{"dataset": ..., "snapshot": snapshot id, "version": int or null,
                        "what": "how verify names it, e.g. input 'flights'"}]}

- ``snapshots``, ``slices``, ``objects``, ``cache`` are what the file keeps alive: gc reads them
  (:func:`read_roots`); which files are roots, and for how long, is gc's rule (see
  :mod:`chanbatch.snapshot.gc`).
- ``answers`` are the cache keys whose results a document under ``cache/`` holds, when they are
  not just its ``name``: a pack's members (``cache/packs/``). gc keeps such a document, and what
  it keeps alive, while one of them is live.
- ``records`` are run records (by run id) whose roots a run record keeps alive as well, however
  old they are: a run that found nothing changed since an earlier one records only that
  (:mod:`chanbatch.run.repeat`), and keeps alive what that one does.
- ``name``, ``stage`` and ``refs`` are what verify reads (:func:`read_document`): a file must be
  stored under its ``name`` (so a file copied over another is found); ``refs`` are the dataset
  versions it names, checked against the ref log (:mod:`chanbatch.snapshot.continuity`); a
  cache entry's ``stage`` labels it where verify traces a damaged object to the entries that
  point at it (:mod:`chanbatch.snapshot.trace`).

A document that states a ``name`` states all three (``stage`` and ``refs`` may be absent: none).

**The formats of earlier versions** (the one place this layer reads an upper floor's fields,
in the section at the end of this module). Stores written before documents stated a ``name``
must verify exactly as they did, so for such a document :func:`read_document` derives the
members from the fields those versions wrote: a run record's ``run`` (its name) and its
``inputs``, ``outputs`` and ``output_versions`` (its refs, none while its ``status`` is
``running``); a cache entry's ``key``, ``objects`` and ``stage``; a memo's ``blueprint`` (its
name is the digest of it). Those formats are history: they no longer change with the upper
floors, so this knowledge cannot go stale, and it is kept here rather than in ``cache/`` because
verify runs in this layer, which may not import the one above it (an upper layer cannot hand
down a migration without this layer reaching up, or without rewriting the user's store). The
same holds for gc: a sealed document without a ``roots`` member keeps alive the object ids of
its top-level ``objects`` list (what such a cache entry held); run records have carried a
``roots`` member since they could be collected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from chanbatch.errors import StoreError
from chanbatch.hashing import digest, unseal
from chanbatch.snapshot import layout
from chanbatch.snapshot.storage import Storage

MEMBER = "roots"


class RootsDamaged(StoreError):
    """A file that holds roots cannot be read: its checksum or layout is wrong. Exit 1.

    gc refuses to run past it, because it cannot know what that file keeps alive."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Ref:
    """A dataset version that a document names; ``what`` says where in it, as verify prints it
    ("input 'flights'", "output 'by_carrier'"). ``version`` is None when the writer did not
    know it."""

    dataset: str
    snapshot: str
    version: int | None = None
    what: str

    def document(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "snapshot": self.snapshot,
            "version": self.version,
            "what": self.what,
        }

    @classmethod
    def parse(cls, document: Any) -> Ref:
        """Raises ValueError when ``document`` is not one."""
        if not isinstance(document, dict):
            raise ValueError("its roots' refs are not objects")
        texts: dict[str, str] = {}
        for name in ("dataset", "snapshot", "what"):
            text = document.get(name)
            if not isinstance(text, str) or not text:
                raise ValueError(f"a ref in its roots has no {name}")
            texts[name] = text
        version = document.get("version")
        if version is not None and not _is_int(version):
            raise ValueError("a ref in its roots has a version that is not a number")
        return cls(**texts, version=version)


@dataclass(frozen=True, slots=True, kw_only=True)
class Roots:
    """Snapshots, slices, objects and cache keys that one file keeps alive; the name it belongs
    at, its stage and the dataset versions it names (None and empty when not stated)."""

    snapshots: tuple[str, ...] = ()
    slices: tuple[str, ...] = ()
    objects: tuple[str, ...] = ()
    cache: tuple[str, ...] = ()
    answers: tuple[str, ...] = ()
    records: tuple[str, ...] = ()
    name: str | None = None
    stage: str | None = None
    refs: tuple[Ref, ...] = ()

    @classmethod
    def of(
        cls,
        *,
        snapshots: Iterable[str] = (),
        slices: Iterable[str] = (),
        objects: Iterable[str] = (),
        cache: Iterable[str] = (),
    ) -> Roots:
        return cls(
            snapshots=tuple(snapshots),
            slices=tuple(slices),
            objects=tuple(objects),
            cache=tuple(cache),
        )

    def stating(self, *, name: str, stage: str | None = None, refs: Iterable[Ref] = ()) -> Roots:
        """These roots, stating the name their document belongs at, the stage whose results it
        holds and the dataset versions it names."""
        return dataclasses.replace(self, name=name, stage=stage or None, refs=tuple(refs))

    def repeating(self, runs: Iterable[str]) -> Roots:
        """These roots, keeping alive what the records of ``runs`` keep alive too."""
        return dataclasses.replace(self, records=tuple(runs))

    def answering(self, keys: Iterable[str]) -> Roots:
        """These roots, stating the cache keys whose results their document holds."""
        return dataclasses.replace(self, answers=tuple(keys))

    def __bool__(self) -> bool:
        """Whether it keeps anything alive."""
        return bool(self.snapshots or self.slices or self.objects or self.cache)

    def document(self) -> dict[str, Any]:
        """The ``roots`` member: snapshots and cache always, the other members when stated."""
        doc: dict[str, Any] = {"snapshots": list(self.snapshots), "cache": list(self.cache)}
        if self.slices:
            doc["slices"] = list(self.slices)
        if self.objects:
            doc["objects"] = list(self.objects)
        if self.answers:
            doc["answers"] = list(self.answers)
        if self.records:
            doc["records"] = list(self.records)
        if self.name is not None:
            doc["name"] = self.name
        if self.stage:
            doc["stage"] = self.stage
        if self.refs:
            doc["refs"] = [ref.document() for ref in self.refs]
        return doc

    @classmethod
    def parse(cls, document: Any) -> Roots:
        """The roots a ``roots`` member names; raises ValueError when it is not one."""
        if not isinstance(document, dict):
            raise ValueError("its roots are not an object")
        members: dict[str, Any] = {}
        for name in ("snapshots", "slices", "objects", "cache", "answers", "records"):
            values = document.get(name, [])
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise ValueError(f"its roots' {name} are not a list of ids")
            members[name] = tuple(values)
        for name in ("name", "stage"):
            value = document.get(name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"its roots' {name} is not text")
            members[name] = value
        refs = document.get("refs", [])
        if not isinstance(refs, list):
            raise ValueError("its roots' refs are not a list")
        members["refs"] = tuple(Ref.parse(ref) for ref in refs)
        return cls(**members)

    @classmethod
    def of_document(cls, document: dict[str, Any]) -> Roots:
        """The roots of a whole document: its ``roots`` member, or (the fallback in the module
        docstring) its top-level ``objects``. Raises ValueError when neither is well formed."""
        if MEMBER in document:
            return cls.parse(document[MEMBER])
        return cls(objects=_objects(document))


def read_roots(storage: Storage, rel: str) -> Roots | None:
    """The roots of the sealed file ``rel``; None when it is gone (removed since it was
    listed).

    A file written before files were sealed (it has no checksum) is taken as it is. Raises
    RootsDamaged, naming the file, when its checksum or layout is wrong or its roots are
    malformed.
    """
    try:
        data = storage.read_bytes(rel)
    except FileNotFoundError:
        return None
    try:
        document = unseal(data, legacy=lambda doc: True)
        return Roots.of_document(document)
    except ValueError as exc:
        raise RootsDamaged(
            f"{rel} is damaged: {exc}; gc cannot tell what it keeps alive, so it deletes nothing",
            hint="`chanbatch snapshot verify` lists damaged files; restore or remove this one, "
            "then run gc again",
        ) from exc


def read_document(storage: Storage, rel: str) -> Roots | None:
    """The roots that the sealed document ``rel`` (a run record, cache entry or memo) states,
    with its ``name``, ``stage`` and ``refs``: as written, or derived from the fields of a
    document written by an earlier version (see the module docstring). None when it is gone.

    A document without a checksum is taken only where earlier versions wrote such documents
    (run records, memos). Raises ValueError when its checksum, layout or roots are wrong; its
    ``name`` is None when it names none (so it belongs nowhere).
    """
    top = rel.split("/", 1)[0]
    try:
        data = storage.read_bytes(rel)
    except FileNotFoundError:
        return None
    try:
        document = unseal(data, legacy=_UNSEALED.get(top))
        if MEMBER in document:
            roots = Roots.parse(document[MEMBER])
            if roots.name is not None:
                return roots
        return _earlier(top, document)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"it is not a document of {top}/: {exc}") from exc


def _objects(document: dict[str, Any]) -> tuple[str, ...]:
    objects = document.get("objects", [])
    if not isinstance(objects, list) or not all(isinstance(o, str) for o in objects):
        raise ValueError("its objects are not a list of ids")
    return tuple(objects)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- the formats of earlier versions ----------------------------------------------------------
#
# Read only for documents that state no ``name`` in their roots: what chanbatch wrote before
# documents stated their name, stage and refs. These formats are fixed; do not extend them.
# A new member goes into the roots format above, filled by the writer.


# documents written before documents were sealed: run records (they name a run) and memos
_UNSEALED: dict[str, Callable[[dict[str, Any]], bool]] = {
    layout.RUNS: lambda doc: "run" in doc,
    layout.MEMO: lambda doc: set(doc) == {"blueprint", "contents"},
}


def _earlier(top: str, document: dict[str, Any]) -> Roots:
    """The roots of ``document`` (under ``top``), its name, stage and refs taken from the
    fields earlier versions wrote. Raises ValueError when they are malformed."""
    if top == layout.RUNS:
        roots = Roots.parse(document.get(MEMBER, {}))
        run = document.get("run")
        name = run if isinstance(run, str) else None
        refs = () if document.get("status") == "running" else tuple(_run_refs(document))
        return dataclasses.replace(roots, name=name, refs=refs)
    if top == layout.CACHE:
        # these entries named their objects in ``objects`` (the later ones in their roots too)
        if "objects" not in document:
            raise ValueError("it names no objects")
        roots = Roots.of_document(document)
        key = document.get("key")
        return dataclasses.replace(
            roots,
            name=key if isinstance(key, str) else None,
            stage=str(document.get("stage", "")),
        )
    if top == layout.MEMO:
        blueprint = document.get("blueprint")
        if blueprint is None:
            return Roots()
        return Roots(name=digest(str(blueprint).encode())[:32])
    return Roots.of_document(document)


def _run_refs(document: dict[str, Any]) -> Iterable[Ref]:
    """A run record's ``inputs`` (name -> {dataset, snapshot, version}) and ``outputs`` (stage
    -> {dataset, snapshot}, their versions in ``output_versions``), in the order verify has
    always reported them: inputs, then outputs, each by name (as the record stores them)."""
    inputs = document.get("inputs") or {}
    outputs = document.get("outputs") or {}
    versions = document.get("output_versions") or {}
    if not isinstance(versions, dict):
        versions = {}
    for name, info in inputs.items() if isinstance(inputs, dict) else ():
        if isinstance(info, dict):
            yield from _ref(f"input {name!r}", info, info.get("version"))
    for stage, info in outputs.items() if isinstance(outputs, dict) else ():
        if isinstance(info, dict):
            yield from _ref(f"output {stage!r}", info, versions.get(stage))


def _ref(what: str, info: dict[str, Any], version: Any) -> Iterable[Ref]:
    dataset, snapshot = info.get("dataset"), info.get("snapshot")
    if isinstance(dataset, str) and dataset and isinstance(snapshot, str) and snapshot:
        yield Ref(
            dataset=dataset,
            snapshot=snapshot,
            version=version if _is_int(version) else None,
            what=what,
        )
