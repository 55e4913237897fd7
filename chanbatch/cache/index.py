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
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from chanbatch.errors import IntegrityError
from chanbatch.hashing import digest, seal, unseal
from chanbatch.snapshot import layout
from chanbatch.snapshot.objects import get_object, put_object
from chanbatch.snapshot.read import parse_parquet, to_pandas
from chanbatch.snapshot.roots import Roots
from chanbatch.snapshot.storage import Storage

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

# chain digest -> slice id -> record (chanbatch.compile.chains.ChainMemo, which is above)
ChainMemoDoc = dict[str, dict[str, list[str]]]


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
    pack: str = ""  # in a pack of several: the pack's name (not stored in the entry)
    pack_bytes: int = 0  # in a pack of several: its object's size (not stored in the entry)

    @property
    def object_bytes(self) -> int | None:
        """The size of its object, when known (a packed result's ``bytes`` are its share)."""
        if self.range is None:
            return self.bytes
        return self.pack_bytes or None

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
    storage: Storage,
    key: str,
    *,
    verify: bool = False,
    check_object: bool = True,
    packed: Mapping[str, CacheEntry] | None = None,
) -> CacheEntry | None:
    """The entry for ``key`` if it is present and its object exists (and, with ``verify``,
    hashes correctly); otherwise None. ``check_object=False`` reads the entry alone.

    ``packed`` holds the entries of packed results (:func:`chanbatch.cache.packs.read_packs`),
    where ``key`` is looked for when it has no entry file of its own."""
    entry = _read_entry(storage, key)
    if entry is None and packed is not None:
        entry = packed.get(key)
    if entry is None:
        return None
    if verify:
        try:
            get_object(storage, entry.object, entry.object_bytes)
        except IntegrityError:
            log.warning("cache entry %s has a missing or corrupt object; recomputing", key[:12])
            return None
    elif check_object and not storage.exists(layout.object_path(entry.object)):
        return None
    return entry


def _read_entry(storage: Storage, key: str) -> CacheEntry | None:
    try:
        # an entry written before entries were sealed is a miss too: recomputing is safe, and
        # trusting it is not
        doc = unseal(storage.read_bytes(entry_path(key)))
        if doc["key"] != key:  # another entry's file copied over this one
            raise ValueError(f"it holds the entry of {str(doc['key'])[:12]}")
        return CacheEntry(
            key=key,
            object=str(doc["objects"][0]),
            rows=int(doc["rows"]),
            bytes=int(doc["bytes"]),
            kind=str(doc.get("kind", "")),
            stage=str(doc.get("stage", "")),
            created_at=str(doc.get("created_at", "")),
            range=parse_range(doc.get("range")),
            content=str(doc.get("content", "")) if "range" in doc else "",
            # an entry file with a range is a pack of one (write_pack): its bytes are the
            # object's, which lets a remote store read it in one request
            pack_bytes=int(doc["bytes"]) if "range" in doc else 0,
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        log.warning("cache entry %s is corrupt (%s); treating it as a miss", key[:12], exc)
        return None


def parse_range(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    first, rows = (int(v) for v in value)
    if first < 0 or rows < 0:
        raise ValueError("a negative range")
    return first, rows


def cached_table(storage: Storage, entry: CacheEntry) -> pa.Table:
    """The cached rows as the store keeps them (of a packed result, only its own); raises
    IntegrityError if its object is missing or corrupt."""
    if entry.range is None:
        return parse_parquet(_object_bytes(storage, entry))
    table = _PACKS.get(storage.url, entry.object)
    if table is None:
        table = parse_parquet(_object_bytes(storage, entry))
        _PACKS.put(storage.url, entry.object, table)
    first, rows = entry.range
    if first + rows > table.num_rows:
        raise IntegrityError(f"cache entry {entry.key[:12]} names rows its pack does not have")
    return table.slice(first, rows)


class _Objects:
    """Objects of this process's stores, verified, by store and object id, within ``budget``
    bytes (the least recently used dropped first, none bigger than ``largest``). An object
    never changes (its id is its content's hash), so what is kept is what a read would give.

    Two are kept: the packs read (parsed), because a combine reads up to eight children and the
    partials and small combines of one batch share a pack (on a new slice's path to the root,
    43 reads fall on 6 packs); and the bytes a plan on a remote store read to verify a result,
    for the one task that reads it next (one GET and one hash, not two), taken once."""

    def __init__(self, budget: int, largest: int, size: Callable[[Any], int]) -> None:
        self.budget = budget
        self.largest = largest
        self._size = size
        self._items: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, url: str, oid: str, *, take: bool = False) -> Any:
        """The object kept, or None; ``take`` removes it."""
        with self._lock:
            item = self._items.get((url, oid))
            if item is not None:
                if take:
                    del self._items[(url, oid)]
                    self._bytes -= self._size(item)
                else:
                    self._items.move_to_end((url, oid))
            return item

    def put(self, url: str, oid: str, item: Any) -> None:
        size = self._size(item)
        if size > self.largest:
            return
        with self._lock:
            if (url, oid) in self._items:
                return
            self._items[(url, oid)] = item
            self._bytes += size
            while self._bytes > self.budget:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= self._size(dropped)


_PACKS = _Objects(64 << 20, 16 << 20, lambda table: table.nbytes)  # parsed packs
_VERIFIED = _Objects(64 << 20, 8 << 20, len)  # bytes planning verified: see keep_verified


def cached_object(storage: Storage, entry: CacheEntry) -> tuple[pa.Table, bytes]:
    """A result stored as an object of its own (``entry.range`` is None): its rows, and the
    object's verified bytes."""
    data = _object_bytes(storage, entry)
    return parse_parquet(data), data


def _object_bytes(storage: Storage, entry: CacheEntry) -> bytes:
    """The verified bytes of ``entry``'s object: as planning kept them, else read."""
    data = _VERIFIED.get(storage.url, entry.object, take=True)
    if data is not None:
        return data
    return get_object(storage, entry.object, entry.object_bytes)


def keep_verified(storage: Storage, oid: str, data: bytes) -> None:
    """Keep the bytes of object ``oid``, which planning just read and verified, for the task of
    this run that reads them next in this process (under the threads scheduler); a local store
    keeps none (a read there is cheap)."""
    if not storage.is_local:
        _VERIFIED.put(storage.url, oid, data)


def read_result(storage: Storage, entry: CacheEntry) -> pd.DataFrame:
    """The cached frame; raises IntegrityError if its object is missing or corrupt."""
    return to_pandas(cached_table(storage, entry))


def write_result(
    storage: Storage, key: str, frame: pd.DataFrame, *, kind: str = "", stage: str = ""
) -> CacheEntry:
    """Store ``frame`` as the result of ``key``; the entry is written after its object."""
    return write_table(storage, key, frame_table(frame), kind=kind, stage=stage)


def frame_table(frame: pd.DataFrame) -> pa.Table:
    """``frame`` as the cache stores it: a normalised Arrow table, without its index."""
    import pyarrow as pa

    from chanbatch.snapshot.normalize import normalize_table

    return normalize_table(pa.Table.from_pandas(frame, preserve_index=False))


def write_table(
    storage: Storage, key: str, table: Any, *, kind: str = "", stage: str = ""
) -> CacheEntry:
    """Store an already normalised Arrow ``table`` as the result of ``key``; the entry is
    written after its object."""
    staged = stage_table(key, table, kind=kind, stage=stage)
    staged.store(storage)
    return staged.entries[0]


def stage_table(key: str, table: Any, *, kind: str = "", stage: str = "") -> Staged:
    """An already normalised Arrow ``table`` encoded as the result of ``key``, with its entry,
    to be stored (:meth:`Staged.store`)."""
    # the writer, when a result is stored: a run that only reads the cache never loads it
    from chanbatch.snapshot.freeze import encode_parquet

    data = encode_parquet(table)
    entry = CacheEntry(
        key=key,
        object=digest(data),
        rows=table.num_rows,
        bytes=len(data),
        kind=kind,
        stage=stage,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
    )
    return Staged(data=data, entries=(entry,))


class _Index(Protocol):
    def write(self, storage: Storage) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Staged:
    """Results encoded and named, not stored yet: their object's bytes, and the entries that
    will name it (written as one entry file, or as the pack ``index`` of several).

    Everything a task needs of its result is known here, its id included, so the requests
    that store it can be made later, on another thread (:mod:`chanbatch.cache.behind`)."""

    data: bytes | memoryview
    entries: tuple[CacheEntry, ...]
    index: _Index | None = None
    #: the rows, for a packed result stored alone: a writer may pack it with others instead
    table: Any = None

    def store(self, storage: Storage, *, with_object: bool = True) -> None:
        """Write the object, then what names it: a reader never finds an entry before its
        object. Without ``with_object``, only what names it (its object is written already)."""
        # ``repair``: these results may be recomputed because their object was found corrupt
        if with_object:
            put_object(storage, self.data, self.entries[0].object, repair=True)
        if self.index is not None:
            self.index.write(storage)
        else:
            entry = self.entries[0]
            storage.write_atomic(entry_path(entry.key), seal(entry.document()))


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
    return read_memo_hints(storage, blueprint)[0]


def read_memo_hints(storage: Storage, blueprint: str) -> tuple[dict[str, str], dict[str, str]]:
    """The memo (:func:`read_memo`) and its pack hints: key -> the name of the pack its result
    was stored in, for the packed results among them (a hint too: the pack is checked)."""
    try:
        doc = unseal(storage.read_bytes(memo_path(blueprint)))
        contents = doc["contents"]
        packs = doc.get("packs") or {}
        if doc.get("blueprint") != blueprint or not isinstance(contents, dict):
            return {}, {}
        return contents, packs if isinstance(packs, dict) else {}
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return {}, {}


def write_memo(
    storage: Storage,
    blueprint: str,
    contents: dict[str, str],
    packs: Mapping[str, str] | None = None,
) -> str:
    """Replace ``blueprint``'s memo (see :func:`read_memo`), with the ``packs`` its packed
    results are in (:func:`read_memo_hints`); returns the blake3 of the file written. Its
    roots keep nothing alive (gc does not read memos); they state the name verify checks it
    is stored under."""
    memo: dict[str, Any] = {
        "blueprint": blueprint,
        "contents": contents,
        "roots": Roots().stating(name=memo_name(blueprint)).document(),
    }
    if packs:
        memo["packs"] = dict(packs)
    data = seal(memo)
    storage.write_atomic(memo_path(blueprint), data)
    return digest(data)


# -- the last outcome ------------------------------------------------------------------------------


def outcome_path(blueprint: str) -> str:
    return f"{layout.MEMO}/{memo_name(blueprint)}.last.json"


def read_outcome(storage: Storage, blueprint: str) -> dict[str, Any] | None:
    """What ``blueprint``'s last computing run left (:mod:`chanbatch.run.repeat`), or None
    when there is none or it is damaged (a hint only: the normal path then plans the run)."""
    try:
        doc = unseal(storage.read_bytes(outcome_path(blueprint)))
    except (FileNotFoundError, ValueError):
        return None
    return doc if doc.get("blueprint") == blueprint else None


def write_outcome(storage: Storage, blueprint: str, outcome: dict[str, Any]) -> None:
    """Replace what ``blueprint``'s last run left. Its roots keep nothing alive; they state the
    name verify checks it is stored under."""
    name = memo_name(blueprint) + ".last"
    doc = {**outcome, "blueprint": blueprint, "roots": Roots().stating(name=name).document()}
    storage.write_atomic(outcome_path(blueprint), seal(doc))


# -- the chain memo --------------------------------------------------------------------------------


def chains_path(blueprint: str) -> str:
    return f"{layout.MEMO}/{memo_name(blueprint)}.chains.json"


def chain_delta_path(blueprint: str) -> str:
    return f"{layout.MEMO}/{memo_name(blueprint)}.chains.delta.json"


# A run that changed a few slices' records leaves only those, in a small delta file beside the
# memo (its *base*), until they are more than this share of the base's records: at 100,000
# slices, writing the whole memo again took a third of a second for one new slice.
_DELTA_SHARE = 8


@dataclass(slots=True)
class ChainsRead:
    """A chain memo as read: its records, the delta's over the base's, and what a run needs
    to leave only what it changed (:meth:`delta_with`)."""

    memo: ChainMemoDoc
    base: str = ""  # the base file's checksum; "" when there is none (or in an old layout)
    base_records: int = 0
    delta: ChainMemoDoc = field(default_factory=dict)  # the delta's records, as read
    delta_file: bool = False  # a delta file was there, whether used or not

    def delta_with(self, changed: Mapping[str, Mapping[str, list[str]]]) -> ChainMemoDoc | None:
        """The delta to leave for a run that changed the records ``changed`` (chain digest ->
        slice id -> record), with those read before: None when the whole memo must be
        written (no base, a chain the base does not have, or too many records changed)."""
        if not self.base or any(chain not in self.memo for chain in changed):
            return None
        merged = {chain: dict(records) for chain, records in self.delta.items()}
        for chain, records in changed.items():
            merged.setdefault(chain, {}).update(records)
        if sum(map(len, merged.values())) * _DELTA_SHARE > self.base_records:
            return None
        return merged


def read_chains(storage: Storage, blueprint: str) -> dict[str, dict[str, list[str]]]:
    """What ``blueprint``'s last run left of its slice chains (chain digest -> slice id ->
    [partial key, content id, pack, kept keys...]: :mod:`chanbatch.compile.chains`); empty
    when there is none or it is damaged. Only a hint, as the memo is: planning checks it."""
    return read_chain_memo(storage, blueprint).memo


def read_chain_memo(storage: Storage, blueprint: str) -> ChainsRead:
    """:func:`read_chains`, with what the next write needs (:class:`ChainsRead`). A delta
    written over another base than the one read (a whole memo written since, or the base
    damaged or gone) is not used."""
    try:
        data = storage.read_bytes(chains_path(blueprint))
        doc = unseal(data)
        chains = doc["chains"]
        if doc.get("blueprint") != blueprint or not isinstance(chains, dict):
            return ChainsRead({})
        if doc.get("layout") != _CHAIN_COLUMNS:
            return ChainsRead(chains)  # a memo of an earlier version: slice id -> record
        memo = {chain: _chain_records(columns) for chain, columns in chains.items()}
    except (FileNotFoundError, ValueError, KeyError, TypeError, IndexError):
        return ChainsRead({})
    base = bytes(data[-67:-3]).decode("ascii")  # its checksum: unseal checked the layout
    read = ChainsRead(memo, base, sum(map(len, memo.values())))
    read.delta, read.delta_file = _read_delta(storage, blueprint, base)
    for chain, records in read.delta.items():
        memo.setdefault(chain, {}).update(records)
    return read


def _read_delta(storage: Storage, blueprint: str, base: str) -> tuple[ChainMemoDoc, bool]:
    """The records of ``blueprint``'s chain delta over the base ``base`` (empty when there is
    none, when it is damaged, or when it was written over another base), and whether a delta
    file was there at all."""
    try:
        data = storage.read_bytes(chain_delta_path(blueprint))
    except FileNotFoundError:
        return {}, False
    try:
        doc = unseal(data)
        chains = doc["chains"]
        if (
            doc.get("blueprint") != blueprint
            or doc.get("base") != base
            or doc.get("layout") != _CHAIN_COLUMNS
            or not isinstance(chains, dict)
        ):
            return {}, True
        return {chain: _chain_records(columns) for chain, columns in chains.items()}, True
    except (ValueError, KeyError, TypeError, IndexError):
        return {}, True


# The chain memo is stored by columns: at 100,000 slices one object per slice made it three
# times slower to write and four times slower to read (JSON of lists of strings is the fast
# case of the encoder and the parser), and a pack's name is stored once, not once per slice.
_CHAIN_COLUMNS = 2


def _chain_columns(records: Mapping[str, list[str]]) -> dict[str, list[Any]]:
    packs: dict[str, int] = {}
    values = list(records.values())
    return {
        "slices": list(records),
        "partials": [r[0] for r in values],
        "contents": [r[1] for r in values],
        "pack": [packs.setdefault(r[2], len(packs)) for r in values],
        "packs": list(packs),
        "kept": [r[3:] for r in values],
    }


def _chain_records(columns: dict[str, list[Any]]) -> dict[str, list[str]]:
    packs = columns["packs"]
    rows = zip(
        columns["slices"],
        columns["partials"],
        columns["contents"],
        columns["pack"],
        columns["kept"],
        strict=True,
    )
    return {
        sid: [partial, content, packs[pack], *kept] for sid, partial, content, pack, kept in rows
    }


def write_chains(
    storage: Storage,
    blueprint: str,
    chains: Mapping[str, dict[str, list[str]]],
    *,
    drop_delta: bool = True,
) -> None:
    """Replace ``blueprint``'s chain memo (see :func:`read_chains`), and remove its delta file
    unless ``drop_delta`` is false (the caller saw none: on an object store, a request
    saved). Its roots keep nothing alive (the run records do); they state the name verify
    checks it is stored under."""
    name = memo_name(blueprint) + ".chains"
    doc = {
        "blueprint": blueprint,
        "chains": {digest: _chain_columns(records) for digest, records in chains.items()},
        "layout": _CHAIN_COLUMNS,
        "roots": Roots().stating(name=name).document(),
    }
    storage.write_atomic(chains_path(blueprint), seal(doc))
    if drop_delta:  # after the base: a delta over another base is never used, only litter
        storage.delete(chain_delta_path(blueprint))


def write_chain_delta(
    storage: Storage, blueprint: str, base: str, delta: Mapping[str, dict[str, list[str]]]
) -> None:
    """Leave ``delta`` (chain digest -> slice id -> record: what changed since the base memo
    whose checksum is ``base``) beside ``blueprint``'s chain memo (see
    :meth:`ChainsRead.delta_with`)."""
    doc = {
        "base": base,
        "blueprint": blueprint,
        "chains": {chain: _chain_columns(records) for chain, records in delta.items()},
        "layout": _CHAIN_COLUMNS,
        "roots": Roots().stating(name=memo_name(blueprint) + ".chains.delta").document(),
    }
    storage.write_atomic(chain_delta_path(blueprint), seal(doc))
