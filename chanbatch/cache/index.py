"""Cache entries: ``cache/<key>.json`` names the object(s) holding a task's result.

Results are Parquet objects in the store's ``objects/``, so they are content-addressed and
deduplicated like frozen data: two keys with equal results share one object. An entry that is
missing, malformed, or whose object is missing or corrupt is a miss, never an error: the task is
computed again and the entry rewritten.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chanbatch.errors import IntegrityError
from chanbatch.snapshot import layout
from chanbatch.snapshot.freeze import encode_parquet
from chanbatch.snapshot.normalize import normalize_table
from chanbatch.snapshot.objects import get_object, put_object
from chanbatch.snapshot.read import to_pandas
from chanbatch.snapshot.storage import Storage

if TYPE_CHECKING:
    import pandas as pd

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

    def document(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "objects": [self.object],
            "rows": self.rows,
            "bytes": self.bytes,
            "kind": self.kind,
            "stage": self.stage,
            "created_at": self.created_at,
        }


def entry_path(key: str) -> str:
    return f"{layout.CACHE}/{key}.json"


def lookup(storage: Storage, key: str, *, verify: bool = False) -> CacheEntry | None:
    """The entry for ``key`` if it is present and its object exists (and, with ``verify``,
    hashes correctly); otherwise None."""
    try:
        doc = json.loads(storage.read_bytes(entry_path(key)))
        entry = CacheEntry(
            key=key,
            object=str(doc["objects"][0]),
            rows=int(doc["rows"]),
            bytes=int(doc["bytes"]),
            kind=str(doc.get("kind", "")),
            stage=str(doc.get("stage", "")),
            created_at=str(doc.get("created_at", "")),
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, IndexError, TypeError):
        log.warning("cache entry %s is malformed; treating it as a miss", key[:12])
        return None
    if verify:
        try:
            get_object(storage, entry.object)
        except IntegrityError:
            log.warning("cache entry %s has a missing or corrupt object; recomputing", key[:12])
            return None
    elif not storage.exists(layout.object_path(entry.object)):
        return None
    return entry


def read_result(storage: Storage, entry: CacheEntry) -> pd.DataFrame:
    """The cached frame; raises IntegrityError if its object is missing or corrupt."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(pa.BufferReader(get_object(storage, entry.object)))
    return to_pandas(table)


def write_result(
    storage: Storage, key: str, frame: pd.DataFrame, *, kind: str = "", stage: str = ""
) -> CacheEntry:
    """Store ``frame`` as the result of ``key``; the entry is written after its object."""
    import pyarrow as pa

    table = normalize_table(pa.Table.from_pandas(frame, preserve_index=False))
    data = encode_parquet(table)
    oid, _new = put_object(storage, data)
    entry = CacheEntry(
        key=key,
        object=oid,
        rows=table.num_rows,
        bytes=len(data),
        kind=kind,
        stage=stage,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
    )
    storage.write_atomic(entry_path(key), json.dumps(entry.document()).encode())
    return entry
