"""Packs: the small partials of many slices, and the combines over them, computed together,
stored as one object.

Writing an object and an entry per partial of a few rows cost more than computing it: at daily
slices, most of a cold run. A batch (:mod:`chanbatch.engine.batch`) stores its partials as one
Parquet object, the *pack*, with one index, ``cache/packs/<name>.json``, that names each
member's key, its rows in the pack (first row and count) and its content id. A member is a
cache entry like any other to every reader (:class:`~chanbatch.cache.index.CacheEntry` with a
``range``), found through :func:`read_packs`.

A packed result is identified by :func:`content_id` of its rows, not by the pack's object id,
so that what the tasks above it hash does not depend on which partials were computed together;
a partial stored alone (a pack of one, with an entry file of its own) is identified the same
way. The index's roots keep the pack alive while one of its members is live, and state the
members, so that gc reads them without this module (:mod:`chanbatch.snapshot.roots`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chanbatch.cache.index import CacheEntry, Staged, parse_range
from chanbatch.hashing import canonical_json, digest, seal, unseal
from chanbatch.snapshot import layout
from chanbatch.snapshot.roots import Roots
from chanbatch.snapshot.storage import Storage

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

# A partial or combine of at most this many rows is packed (alone, or with the others computed
# beside it).
PACK_ROWS = 4096
PACKED_KINDS = frozenset({"partial", "combine"})


def content_id(table: pa.Table, first: int = 0, rows: int | None = None) -> str:
    """The id of ``table``'s rows (``rows`` of them from ``first``, or all) as a packed result:
    blake3 of their column names, types and values as JSON. Exact: Python writes a float as
    the shortest text that reads back the same, decimals and dates as their text; so equal rows
    have equal ids however they were computed."""
    return content_ids(table, [(first, table.num_rows - first if rows is None else rows)])[0]


def content_ids(table: pa.Table, spans: list[tuple[int, int]]) -> list[str]:
    """:func:`content_id` of each span (first row, rows) of ``table``, its columns converted
    to Python once."""
    columns = [[field.name, str(field.type)] for field in table.schema]
    values = [column.to_pylist() for column in table.columns]
    out = []
    for first, rows in spans:
        mine = [v[first : first + rows] for v in values]
        text = json.dumps([columns, mine], separators=(",", ":"), default=str, allow_nan=True)
        out.append(digest(text.encode()))
    return out


def pack_path(name: str) -> str:
    return f"{layout.PACKS}/{name}.json"


def write_pack(
    storage: Storage,
    table: pa.Table,
    members: list[tuple[str, int]],
    *,
    kind: str,
    stage: str,
    contents: list[str] | None = None,
) -> list[CacheEntry]:
    """Store the rows of normalised Arrow ``table`` as the results of ``members`` (key, rows),
    in order: one object, then one entry for a single member, else one pack index.
    ``contents``: the members' :func:`content_id`, when the caller has them already."""
    staged = stage_pack(table, members, kind=kind, stage=stage, contents=contents)
    staged.store(storage)
    return list(staged.entries)


def stage_pack(
    table: pa.Table,
    members: list[tuple[str, int]],
    *,
    kind: str,
    stage: str,
    contents: list[str] | None = None,
) -> Staged:
    """:func:`write_pack`'s object and entries, to be stored (:meth:`Staged.store`)."""
    from chanbatch.snapshot.freeze import encode_parquet

    data = encode_parquet(table)
    oid = digest(data)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    spans = []
    first = 0
    for _key, rows in members:
        spans.append((first, rows))
        first += rows
    if contents is None:
        contents = content_ids(table, spans)
    # the pack's name, known before its members: each entry is made once, naming it
    name = Pack.name_of(oid, [key for key, _ in members]) if len(members) > 1 else ""
    entries = tuple(
        CacheEntry(
            key=key,
            object=oid,
            rows=rows,
            bytes=len(data) * rows // max(table.num_rows, 1),
            kind=kind,
            stage=stage,
            created_at=now,
            range=span,
            content=content,
            pack=name,
            pack_bytes=len(data),
        )
        for (key, rows), span, content in zip(members, spans, contents, strict=True)
    )
    if len(entries) == 1:
        return Staged(data=data, entries=entries, table=table)
    pack = Pack(name=name, object=oid, bytes=len(data), members=entries)
    return Staged(data=data, entries=entries, index=pack)


@dataclass(frozen=True, slots=True, kw_only=True)
class Pack:
    """One pack's index: its object and its members' entries."""

    name: str
    object: str
    bytes: int
    members: tuple[CacheEntry, ...]

    @classmethod
    def of(cls, oid: str, size: int, members: Iterable[CacheEntry]) -> Pack:
        members = tuple(members)
        name = cls.name_of(oid, [m.key for m in members])
        members = tuple(dataclasses.replace(m, pack=name, pack_bytes=size) for m in members)
        return cls(name=name, object=oid, bytes=size, members=members)

    @staticmethod
    def name_of(oid: str, keys: list[str]) -> str:
        """The name of the pack of object ``oid`` answering for ``keys``: named by both, as one
        object may answer for other keys."""
        return digest(canonical_json([oid, keys]))

    def document(self) -> dict[str, Any]:
        first = self.members[0]
        roots = (
            Roots.of(objects=(self.object,))
            .answering(m.key for m in self.members)
            .stating(name=self.name, stage=first.stage)
        )
        return {
            "pack": self.name,
            "object": self.object,
            "bytes": self.bytes,
            "kind": first.kind,
            "stage": first.stage,
            "created_at": first.created_at,
            "members": [[m.key, *(m.range or (0, m.rows)), m.content] for m in self.members],
            "roots": roots.document(),
        }

    def write(self, storage: Storage) -> None:
        storage.write_atomic(pack_path(self.name), seal(self.document()))

    @classmethod
    def parse(cls, document: dict[str, Any]) -> Pack:
        """Raises ValueError, KeyError or TypeError when ``document`` is not a pack index."""
        oid = str(document["object"])
        size = int(document["bytes"])
        total = max(1, sum(int(member[2]) for member in document["members"]))
        members = []
        for key, first, rows, content in document["members"]:
            span = parse_range([first, rows])
            assert span is not None
            members.append(
                CacheEntry(
                    key=str(key),
                    object=oid,
                    rows=span[1],
                    bytes=size * span[1] // total,
                    kind=str(document.get("kind", "")),
                    stage=str(document.get("stage", "")),
                    created_at=str(document.get("created_at", "")),
                    range=span,
                    content=str(content),
                    pack=str(document["pack"]),
                    pack_bytes=size,
                )
            )
        return cls(
            name=str(document["pack"]),
            object=oid,
            bytes=int(document["bytes"]),
            members=tuple(members),
        )

    def without(self, keys: set[str]) -> Pack | None:
        """This pack without the members ``keys``; None when none is left."""
        kept = tuple(m for m in self.members if m.key not in keys)
        if not kept:
            return None
        return Pack(name=self.name, object=self.object, bytes=self.bytes, members=kept)


def read_pack(storage: Storage, rel: str) -> Pack | None:
    """The pack index at ``rel``; None when it is gone or damaged (its members are then misses,
    computed again, as a damaged entry's result is)."""
    try:
        pack = Pack.parse(unseal(storage.read_bytes(rel)))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        log.warning("cache pack %s is corrupt (%s); its results are recomputed", rel, exc)
        return None
    if rel != pack_path(pack.name):  # another pack's index copied over this one
        log.warning("cache pack %s holds the index of %s; ignoring it", rel, pack.name[:12])
        return None
    return pack


def list_packs(storage: Storage) -> list[tuple[str, Pack]]:
    """Every readable pack index: (its path, the pack)."""
    out = []
    for rel, _mtime, _size in storage.walk(layout.PACKS):
        if rel.endswith(".json"):
            pack = read_pack(storage, rel)
            if pack is not None:
                out.append((rel, pack))
    return out


def read_packs(storage: Storage) -> PackDirectory:
    """Key -> entry of every packed result. A key in two packs (computed again after its first
    pack was found damaged) is taken from the newer one."""
    directory = PackDirectory()
    for rel, _mtime, _size in storage.walk(layout.PACKS):
        if not rel.endswith(".json"):
            continue
        try:
            document = unseal(storage.read_bytes(rel))
            members = document["members"]
            if rel != pack_path(str(document["pack"])) or not isinstance(members, list):
                raise ValueError("not the index it is stored as")
        except FileNotFoundError:
            continue
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("cache pack %s is unreadable (%s); its results are recomputed", rel, exc)
            continue
        directory.add(document, members)
    return directory


class PackDirectory(Mapping[str, CacheEntry]):
    """Key -> entry of the packed results, each pack index parsed when one of its members is
    asked for: a plan asks about a few of the hundreds of thousands of members they name."""

    def __init__(self) -> None:
        self._documents: list[dict[str, Any]] = []
        self._packs: list[Pack | None] = []
        self._where: dict[str, tuple[int, int]] = {}  # key -> (document, member index)

    def add(self, document: dict[str, Any], members: list[Any]) -> None:
        number = len(self._documents)
        self._documents.append(document)
        self._packs.append(None)
        created = str(document.get("created_at", ""))
        where, documents = self._where, self._documents
        for index, member in enumerate(members):
            key = member[0]
            known = where.get(key)
            if known is None or created > str(documents[known[0]].get("created_at", "")):
                where[key] = (number, index)

    def __getitem__(self, key: str) -> CacheEntry:
        number, index = self._where[key]
        pack = self._packs[number]
        if pack is None:
            try:
                pack = self._packs[number] = Pack.parse(self._documents[number])
            except (ValueError, KeyError, IndexError, TypeError, AssertionError) as exc:
                raise KeyError(key) from exc
        return pack.members[index]

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)
