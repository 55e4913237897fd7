"""Cache entries: ``cache/<key>.json`` names the object(s) holding a task's result.

Results are Parquet objects in the store's ``objects/``, so they are content-addressed and
deduplicated like frozen data: two keys with equal results share one object. An entry that is
missing, malformed, or whose object is missing or corrupt is a miss, never an error: the task is
computed again and the entry rewritten.

Small partials are *packed*: the partials of many slices, computed together, go into one
object, and each one's entry names that object and its rows in it (``range``: first row and
count). Writing an object per partial of a few rows cost more than computing it. A packed
result is identified by its ``content`` (:func:`content_id` of its rows), not by the pack's
object id, so that what the tasks above it hash does not depend on which partials were
computed together; a result stored alone is identified by its object id, as before.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chanbatch.errors import IntegrityError
from chanbatch.hashing import digest, seal, unseal
from chanbatch.snapshot import layout
from chanbatch.snapshot.freeze import encode_parquet
from chanbatch.snapshot.normalize import normalize_table
from chanbatch.snapshot.objects import get_object, put_object
from chanbatch.snapshot.read import parse_parquet, to_pandas
from chanbatch.snapshot.roots import Roots
from chanbatch.snapshot.storage import Storage

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheEntry:
    """Where one task's result is stored, and how big it is."""

    key: str
    object: str
    rows: int
    bytes: int
    kind: str = ""
    stage: str = ""
    created_at: str = ""
    range: tuple[int, int] | None = None  # in a pack: (first row, rows); None: all of it
    content: str = ""  # in a pack: content_id of its rows

    @property
    def ident(self) -> str:
        """What the tasks that read this result hash it as: its content id when it is packed,
        else its object's id."""
        return self.content or self.object

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "key": self.key,
            "objects": [self.object],
            "rows": self.rows,
            "bytes": self.bytes,
            "kind": self.kind,
            "stage": self.stage,
            "created_at": self.created_at,
            # what the snapshot layer reads of this entry (chanbatch.snapshot.roots): the object
            # it keeps alive (gc), the name it belongs at and its stage (verify)
            "roots": Roots.of(objects=(self.object,))
            .stating(name=self.key, stage=self.stage)
            .document(),
        }
        if self.range is not None:
            doc["range"] = list(self.range)
            doc["content"] = self.content
        return doc


def entry_path(key: str) -> str:
    return f"{layout.CACHE}/{key}.json"


def lookup(
    storage: Storage, key: str, *, verify: bool = False, check_object: bool = True
) -> CacheEntry | None:
    """The entry for ``key`` if it is present and its object exists (and, with ``verify``,
    hashes correctly); otherwise None. ``check_object=False`` reads the entry alone."""
    try:
        # an entry written before entries were sealed is a miss too: recomputing is safe, and
        # trusting it is not
        doc = unseal(storage.read_bytes(entry_path(key)))
        if doc["key"] != key:  # another entry's file copied over this one
            raise ValueError(f"it holds the entry of {str(doc['key'])[:12]}")
        entry = CacheEntry(
            key=key,
            object=str(doc["objects"][0]),
            rows=int(doc["rows"]),
            bytes=int(doc["bytes"]),
            kind=str(doc.get("kind", "")),
            stage=str(doc.get("stage", "")),
            created_at=str(doc.get("created_at", "")),
            range=_range(doc.get("range")),
            content=str(doc.get("content", "")) if "range" in doc else "",
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        log.warning("cache entry %s is corrupt (%s); treating it as a miss", key[:12], exc)
        return None
    if verify:
        try:
            get_object(storage, entry.object)
        except IntegrityError:
            log.warning("cache entry %s has a missing or corrupt object; recomputing", key[:12])
            return None
    elif check_object and not storage.exists(layout.object_path(entry.object)):
        return None
    return entry


def _range(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    first, rows = (int(v) for v in value)
    if first < 0 or rows < 0:
        raise ValueError("a negative range")
    return first, rows


def cached_table(storage: Storage, entry: CacheEntry) -> pa.Table:
    """The cached rows as the store keeps them (of a packed result, only its own); raises
    IntegrityError if its object is missing or corrupt."""
    table = parse_parquet(get_object(storage, entry.object))
    if entry.range is None:
        return table
    first, rows = entry.range
    if first + rows > table.num_rows:
        raise IntegrityError(f"cache entry {entry.key[:12]} names rows its pack does not have")
    return table.slice(first, rows)


def read_result(storage: Storage, entry: CacheEntry) -> pd.DataFrame:
    """The cached frame; raises IntegrityError if its object is missing or corrupt."""
    return to_pandas(cached_table(storage, entry))


def write_result(
    storage: Storage, key: str, frame: pd.DataFrame, *, kind: str = "", stage: str = ""
) -> CacheEntry:
    """Store ``frame`` as the result of ``key``; the entry is written after its object."""
    import pyarrow as pa

    table = normalize_table(pa.Table.from_pandas(frame, preserve_index=False))
    return write_table(storage, key, table, kind=kind, stage=stage)


def write_table(
    storage: Storage, key: str, table: Any, *, kind: str = "", stage: str = ""
) -> CacheEntry:
    """Store an already normalised Arrow ``table`` as the result of ``key``; the entry is
    written after its object."""
    data = encode_parquet(table)
    # ``repair``: this result may be recomputed because its object was found corrupt
    oid, _new = put_object(storage, data, repair=True)
    entry = CacheEntry(
        key=key,
        object=oid,
        rows=table.num_rows,
        bytes=len(data),
        kind=kind,
        stage=stage,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
    )
    storage.write_atomic(entry_path(key), seal(entry.document()))
    return entry


# A partial of at most this many rows is packed with the others computed beside it.
PACK_ROWS = 4096


def content_id(table: pa.Table) -> str:
    """The id of ``table``'s rows as a packed result: blake3 of its column names, types and
    values as JSON (exact: Python writes floats as the shortest text that reads back the same,
    decimals and dates as their text), so equal rows have equal ids however they were built."""
    columns = [[field.name, str(field.type)] for field in table.schema]
    values = [column.to_pylist() for column in table.columns]
    text = json.dumps([columns, values], separators=(",", ":"), default=str, allow_nan=True)
    return digest(text.encode())


def write_pack(
    storage: Storage, members: list[tuple[str, pa.Table]], *, kind: str, stage: str
) -> list[CacheEntry]:
    """Store normalised Arrow tables of one schema (at most PACK_ROWS rows each) as the
    results of their keys, in one object; each entry is written after it."""
    import pyarrow as pa

    table = pa.concat_tables([t for _, t in members])
    data = encode_parquet(table)
    oid, _new = put_object(storage, data, repair=True)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    entries = []
    first = 0
    for key, rows in members:
        entry = CacheEntry(
            key=key,
            object=oid,
            rows=rows.num_rows,
            bytes=len(data) * rows.num_rows // max(table.num_rows, 1),
            kind=kind,
            stage=stage,
            created_at=now,
            range=(first, rows.num_rows),
            content=content_id(rows),
        )
        storage.write_atomic(entry_path(key), seal(entry.document()))
        entries.append(entry)
        first += rows.num_rows
    return entries


class CacheView:
    """What planning asks the cache, answered with as few reads as possible.

    A plan asks about every stored task: tens of thousands for a big input. The cache folder is
    listed once, so a key without an entry costs no read; the blueprint's memo (see
    :func:`read_memo`) answers most of the rest without opening their entries.
    """

    def __init__(self, storage: Storage, blueprint: str) -> None:
        self.storage = storage
        self.memo = read_memo(storage, blueprint)
        self._present: set[str] | None = None

    def has_entry(self, key: str) -> bool:
        """Whether ``key`` had an entry when the cache was listed (first call)."""
        if self._present is None:
            self._present = {
                name[:-5] for name in self.storage.listdir(layout.CACHE) if name.endswith(".json")
            }
        return key in self._present

    def content_of(self, key: str) -> str | None:
        """The object id of ``key``'s result, or None when it has no entry."""
        known = self.memo.get(key)
        if known is not None:
            return known
        if not self.has_entry(key):
            return None
        entry = lookup(self.storage, key, check_object=False)
        return entry.ident if entry is not None else None


# -- the contents memo -------------------------------------------------------------------------


def memo_name(blueprint: str) -> str:
    """The file name (without ``.json``) of ``blueprint``'s memo."""
    return digest(blueprint.encode())[:32]


def memo_path(blueprint: str) -> str:
    return f"{layout.MEMO}/{memo_name(blueprint)}.json"


def read_memo(storage: Storage, blueprint: str) -> dict[str, str]:
    """Cache key -> object id of every stored result of ``blueprint``'s last run.

    Planning hashes the content of stored results into the keys above them; this one file
    saves reading one cache entry per stored task. It is only a hint: a key names the same
    content for as long as the engine salt is the same, whether or not its entry still exists.
    """
    try:
        doc = unseal(storage.read_bytes(memo_path(blueprint)))
        contents = doc["contents"]
        if doc.get("blueprint") != blueprint or not isinstance(contents, dict):
            return {}
        return contents
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return {}


def write_memo(storage: Storage, blueprint: str, contents: dict[str, str]) -> None:
    """Replace ``blueprint``'s memo (see :func:`read_memo`). Its roots keep nothing alive (gc
    does not read memos); they state the name verify checks it is stored under."""
    memo = {
        "blueprint": blueprint,
        "contents": contents,
        "roots": Roots().stating(name=memo_name(blueprint)).document(),
    }
    storage.write_atomic(memo_path(blueprint), seal(memo))
