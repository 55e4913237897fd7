"""Write: each slice's Parquet objects, then its slice manifest.

An object is complete (renamed into place) before a manifest names it, so a crash leaves at
most objects no manifest names yet; ``gc`` removes them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, assert_never

from chanbatch.hashing import digest_file
from chanbatch.ids import ObjectId, object_id
from chanbatch.snapshot.freeze import cut as _cut_module
from chanbatch.snapshot.freeze.cut import _WORKERS, Piece, SplitPiece, WholePiece
from chanbatch.snapshot.freeze.progress import Progress, _Reporter
from chanbatch.snapshot.layout import object_path
from chanbatch.snapshot.manifest import Part, SliceManifest
from chanbatch.snapshot.names import SliceKey
from chanbatch.snapshot.normalize import PART_ROWS, WRITE_OPTIONS
from chanbatch.snapshot.objects import HEALED, heal_object, object_state, write_manifest
from chanbatch.snapshot.storage import Storage

# Threads that write slices: more than the cores, since a writer spends much of its time waiting
# on the filesystem (creating and renaming two files per slice) with the GIL let go.
_WRITERS = 3 * _WORKERS

# A table of at most this many bytes (of Arrow memory) is encoded into memory, hashed there and
# written in one piece; a larger one is encoded into a temp file, which is then hashed.
_BUFFER_BYTES = 1 << 25

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True, slots=True)
class Held:
    """A slice's rows that an object in the store holds already: ``table`` is what the object
    was encoded from (or decodes to), ``size`` its size in bytes, and ``data`` its bytes when
    the caller read them (a store that cannot make a file young writes it again).

    A run's output slice is most often a result that the cache stores as an object of its own,
    in the bytes freezing it would write; the writer then names that object instead of
    encoding the same rows again."""

    table: pa.Table
    object: ObjectId
    size: int
    data: bytes | None = None


class _SliceWriter:
    """Writes one slice at a time (from any thread) as objects of ``PART_ROWS`` rows and a
    slice manifest, noting in ``healed`` the keys of slices whose files it found damaged, and
    telling ``reporter`` of each object and slice written."""

    def __init__(
        self,
        storage: Storage,
        schema: pa.Schema,
        healed: set[SliceKey] | None,
        reporter: _Reporter | None = None,
        held: Mapping[SliceKey, Held] | None = None,
    ) -> None:
        self.storage, self.schema, self.healed = storage, schema, healed
        self.reporter, self.held = reporter, held or {}

    def write(self, key: SliceKey, table: pa.Table) -> SliceManifest:
        table = table.combine_chunks()
        parts = []
        mended = False
        held = self.held.get(key)
        if held is not None and _holds(self.storage, held, table):
            parts.append(Part(object=held.object, rows=table.num_rows, bytes=held.size))
            if self.reporter is not None:
                self.reporter.wrote(table.num_rows, held.size)
        else:
            for start in range(0, max(table.num_rows, 1), PART_ROWS):
                chunk = table.slice(start, PART_ROWS)
                oid, size, damaged = _write_object(self.storage, chunk)
                parts.append(Part(object=oid, rows=chunk.num_rows, bytes=size))
                mended |= damaged
                if self.reporter is not None:
                    self.reporter.wrote(chunk.num_rows, size)
        manifest = SliceManifest(key=key, parts=tuple(parts))
        mended |= write_manifest(self.storage, manifest)[1]
        if self.reporter is not None:
            self.reporter.wrote(0, 0, slices=1)
        if mended and self.healed is not None:
            self.healed.add(key)
        return manifest

    def whole(self, key: SliceKey, piece: WholePiece) -> SliceManifest:
        import pyarrow as pa

        return self.write(key, pa.concat_tables(list(piece.tables)))

    def split(self, key: SliceKey, piece: SplitPiece) -> SliceManifest:
        """Put the slice together from its rows in each cut, and write it."""
        import pyarrow as pa

        batches = []
        for cut in piece.cuts:
            start, end = cut.spans[key]
            batches.append(cut.batch.slice(start, end - start))
        return self.write(key, pa.Table.from_batches(batches, schema=self.schema))


def _holds(storage: Storage, held: Held, table: pa.Table) -> bool:
    """Whether ``held``'s object is the one object freezing ``table`` would write, and is in
    the store (made young for gc, as a write finding it there would).

    Freezing encodes a slice of at most ``PART_ROWS`` rows in one chunk as it is; equal rows
    with an equal schema in one chunk encode to the same bytes, so those of ``held``."""
    if table.num_rows > PART_ROWS or any(c.num_chunks > 1 for c in held.table.columns):
        return False
    same = table.schema.equals(held.table.schema, check_metadata=True)
    if not (same and table.equals(held.table)):
        return False
    rel = object_path(held.object)
    if held.data is not None:
        return storage.refresh(rel, held.data)
    return bool(storage.touch(rel))


def _waves(keys: list[SliceKey], split: Mapping[SliceKey, SplitPiece]) -> list[list[SliceKey]]:
    """``keys`` in order, grouped into runs of about ``_WAVE_BYTES`` (a bigger slice alone)."""
    limit = _cut_module._WAVE_BYTES  # read when called: tests make waves small
    waves: list[list[SliceKey]] = []
    size = 0.0
    for key in keys:
        n = split[key].nbytes
        if not waves or size + n > limit:
            waves.append([])
            size = 0.0
        waves[-1].append(key)
        size += n
    return waves


def _write_slices(
    storage: Storage,
    keys: list[SliceKey],
    pieces: Mapping[SliceKey, Piece],
    schema: pa.Schema,
    progress: Progress | _Reporter | None,
    healed: set[SliceKey] | None = None,
    held: Mapping[SliceKey, Held] | None = None,
) -> list[SliceManifest]:
    """Write every slice's objects and manifest; returns the manifests in ``keys`` order.
    The keys of slices whose objects or manifest were there but damaged, and were rewritten,
    are added to ``healed``.

    Slices cut from split batches are handed to the pool in waves of about ``_WAVE_BYTES``,
    the next wave once the one before last is written, so the pool's queue stays short and a
    failed write stops the freeze soon. Each slice is put together from its rows in the cuts
    (one copy), then encoded.
    """
    reporter = progress if isinstance(progress, _Reporter) else _Reporter(progress)
    writer = _SliceWriter(storage, schema, healed, reporter if reporter.watching else None, held)
    whole: dict[SliceKey, WholePiece] = {}
    split: dict[SliceKey, SplitPiece] = {}
    rows = 0
    for key in keys:
        match pieces[key]:
            case WholePiece() as piece:
                whole[key] = piece
                rows += sum(table.num_rows for table in piece.tables)
            case SplitPiece() as piece:
                split[key] = piece
                rows += piece.rows
            case unknown:
                assert_never(unknown)
    reporter.writing(rows, len(keys))
    position = {key: i for i, key in enumerate(keys)}
    futures: dict[SliceKey, Future[SliceManifest]] = {}
    results: list[SliceManifest] = []

    def collect(count: int) -> None:
        """Wait for the first ``count`` slices, in key order, and report each as it is done."""
        while len(results) < count:
            results.append(futures.pop(keys[len(results)]).result())
            reporter.collected(len(results), len(keys))

    with ThreadPoolExecutor(_WRITERS) as pool:
        try:
            for key, whole_piece in whole.items():
                futures[key] = pool.submit(writer.whole, key, whole_piece)
            waves = _waves(list(split), split)
            for i, wave in enumerate(waves):
                for key in wave:
                    futures[key] = pool.submit(writer.split, key, split[key])
                if i >= 1:  # wave i - 1 is written before wave i + 1 is handed over
                    collect(position[waves[i - 1][-1]] + 1)
            collect(len(keys))
        except BaseException:
            pool.shutdown(cancel_futures=True)  # what is queued is of no use any more
            raise
    return results


def encode_parquet(table: pa.Table) -> memoryview:
    """The Parquet bytes of ``table`` with the store's fixed writer options."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **WRITE_OPTIONS)
    return memoryview(sink.getvalue())


def _write_object(storage: Storage, table: pa.Table) -> tuple[ObjectId, int, bool]:
    """Write ``table`` as an object; returns (id, size, whether a damaged copy already in the
    store was rewritten). An object already there is hashed before it is trusted: freezing
    the same data again is how a damaged object is healed.

    A small table (most slices: a day of a table) is encoded in memory and hashed there, and
    written only if the store lacks it: no temp file to read back, no hash of a file. A large
    one is encoded straight into a temp file (below)."""
    if not storage.is_local or table.nbytes <= _BUFFER_BYTES:
        data = encode_parquet(table)
        oid, state = heal_object(storage, data)
        return oid, len(data), state == HEALED
    # Encode straight into a temp file, hash the file, rename it into place: no growing
    # in-memory buffer, whose fresh pages cost more than the encoding on some machines.
    import pyarrow.parquet as pq

    tmp = storage.tmp_path()
    try:
        with storage.writing("a new object"):
            pq.write_table(table, tmp, **WRITE_OPTIONS)
        digest, size = digest_file(tmp)
        oid = object_id(digest)
        damaged = object_state(storage, oid) == HEALED
        storage.adopt(tmp, object_path(oid), replace=damaged)
    except BaseException:
        # never hide the failure: on a read-only filesystem even this unlink fails (EROFS)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return oid, size, damaged
