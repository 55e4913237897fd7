"""Roots: what a file outside the snapshot layer keeps alive, in the one format gc reads.

A run record (``runs/<run id>.json``) and a cache entry (``cache/<key>.json``) are written by
layers above this one, in formats this layer does not know. Each of them carries a ``roots``
member in the format defined here::

    "roots": {"snapshots": [snapshot ids], "slices": [slice ids],
              "objects": [object ids], "cache": [cache keys]}

and gc reads that member alone (:func:`read_roots`), through the file's checksum. Which files
are roots, and for how long, is gc's rule (see :mod:`chanbatch.snapshot.gc`); what they keep
alive is theirs to say, in this format.

Documented fallback, for stores written before cache entries carried ``roots``: a sealed
document without a ``roots`` member keeps alive the object ids of its top-level ``objects``
list (what such a cache entry held). Run records have carried a ``roots`` member in this
format since they could be collected.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from chanbatch.errors import StoreError
from chanbatch.hashing import unseal
from chanbatch.snapshot.storage import Storage

MEMBER = "roots"


class RootsDamaged(StoreError):
    """A file that holds roots cannot be read: its checksum or layout is wrong. Exit 1.

    gc refuses to run past it, because it cannot know what that file keeps alive."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Roots:
    """Snapshots, slices, objects and cache keys that one file keeps alive."""

    snapshots: tuple[str, ...] = ()
    slices: tuple[str, ...] = ()
    objects: tuple[str, ...] = ()
    cache: tuple[str, ...] = ()

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

    def __bool__(self) -> bool:
        return bool(self.snapshots or self.slices or self.objects or self.cache)

    def document(self) -> dict[str, list[str]]:
        """The ``roots`` member: snapshots and cache always, slices and objects when any."""
        doc = {"snapshots": list(self.snapshots), "cache": list(self.cache)}
        if self.slices:
            doc["slices"] = list(self.slices)
        if self.objects:
            doc["objects"] = list(self.objects)
        return doc

    @classmethod
    def parse(cls, document: Any) -> Roots:
        """The roots a ``roots`` member names; raises ValueError when it is not one."""
        if not isinstance(document, dict):
            raise ValueError("its roots are not an object")
        members = {}
        for name in ("snapshots", "slices", "objects", "cache"):
            values = document.get(name, [])
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise ValueError(f"its roots' {name} are not a list of ids")
            members[name] = tuple(values)
        return cls(**members)

    @classmethod
    def of_document(cls, document: dict[str, Any]) -> Roots:
        """The roots of a whole document: its ``roots`` member, or (the fallback in the module
        docstring) its top-level ``objects``. Raises ValueError when neither is well formed."""
        if MEMBER in document:
            return cls.parse(document[MEMBER])
        objects = document.get("objects", [])
        if not isinstance(objects, list) or not all(isinstance(o, str) for o in objects):
            raise ValueError("its objects are not a list of ids")
        return cls(objects=tuple(objects))


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
