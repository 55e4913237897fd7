"""Freeze: cut input into slices, write each slice's objects, then manifests, then a ref.

The order of writes is what keeps a store valid through any crash: an object is complete before
a manifest names it, a manifest is complete before a snapshot names it, and the ref that makes a
snapshot visible is written last, exclusively. A crash leaves at most unreferenced files, which
``gc`` removes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chanbatch.errors import (
    InputError,
    IntegrityError,
    SchemaConflictError,
    UsageError,
    did_you_mean,
)
from chanbatch.hashing import digest_file
from chanbatch.ids import ObjectId, SliceId, object_id
from chanbatch.snapshot import describe, refs
from chanbatch.snapshot.layout import object_path
from chanbatch.snapshot.manifest import (
    Column,
    Part,
    SliceEntry,
    SliceManifest,
    SnapshotManifest,
)
from chanbatch.snapshot.names import (
    KeyType,
    SliceKey,
    check_dataset_name,
    encode_key,
    key_type,
    parse_key,
    sort_token,
)
from chanbatch.snapshot.normalize import (
    PART_ROWS,
    WRITE_OPTIONS,
    normalize_batch,
    normalize_schema,
    normalize_table,
    type_name,
)
from chanbatch.snapshot.objects import (
    HEALED,
    get_snapshot,
    heal_object,
    object_state,
    put_manifest,
    write_manifest,
)
from chanbatch.snapshot.read import arrow_schema
from chanbatch.snapshot.storage import Storage

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

Progress = Callable[[int, int], None]
_WORKERS = max(2, min(8, os.cpu_count() or 2))
# A split works on input batches of this many rows, so that one batch's columns stay in cache
# while its rows are cast, grouped by key and taken out.
_BATCH_ROWS = 1 << 17
# Split slices are taken out and written in waves of about this many bytes (of Arrow memory, as
# the input holds them): one or two waves' copies are all the memory a freeze adds to its input,
# and each wave reads every input batch once, so fewer, bigger waves read the input less often.
_WAVE_BYTES = 1 << 28


@dataclass(frozen=True, slots=True, kw_only=True)
class FrozenSlice:
    """A slice as one freeze saw it; ``new`` is False when the head already had it unchanged,
    ``healed`` is True when its objects (or manifest) were in the store but damaged, and this
    freeze rewrote them."""

    key: SliceKey
    id: SliceId
    rows: int
    bytes: int
    new: bool
    healed: bool = False

    def document(self) -> dict[str, Any]:
        return {
            "key": encode_key(self.key),
            "id": self.id,
            "rows": self.rows,
            "bytes": self.bytes,
            "new": self.new,
            "healed": self.healed,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class FreezeResult:
    """What a freeze did: the dataset's head afterwards and each slice it was given."""

    dataset: str
    snapshot: str
    version: int
    created: bool
    slices: tuple[FrozenSlice, ...]

    def __repr__(self) -> str:
        return describe.freeze_repr(self)

    def _repr_html_(self) -> str:
        return describe.freeze_html(self)

    @property
    def healed(self) -> int:
        """How many of the slices given had damaged files in the store, now rewritten."""
        return sum(1 for s in self.slices if s.healed)

    def document(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "snapshot": self.snapshot,
            "slices": [s.document() for s in self.slices],
            "healed": self.healed,
        }


@dataclass(slots=True)
class _Input:
    label: str
    table: pa.Table
    key: SliceKey | None = None
    lazy: bool = False  # normalised batch by batch as it is split (see normalize_table)

    @property
    def schema(self) -> pa.Schema:
        """The input's schema once normalised."""
        return normalize_schema(self.table.schema) if self.lazy else self.table.schema


def freeze(
    storage: Storage,
    dataset: str,
    data: Any,
    *,
    slice: SliceKey | None = None,
    slice_by: str | None = None,
    lineage: dict[str, Any] | None = None,
    operation: str = "freeze",
    progress: Progress | None = None,
    replace: bool = False,
    encoding: str = "utf-8",
) -> FreezeResult:
    """Freeze ``data`` into ``dataset`` and commit a new version if anything changed.

    By default the new slices are merged into the dataset's head: new keys are added, existing
    keys replaced, and the schema must match. With ``replace`` the new version holds exactly
    these slices, whatever the head held (a run's output: the result of this run, no more);
    history is kept either way.

    ``data`` is a pandas, pyarrow or dask DataFrame, one or more Parquet/CSV file paths, or a
    mapping of slice key to frame.
    Slices come from ``slice`` (all of it is one slice), ``slice_by`` (one slice per value of a
    column), or, for files with neither, one slice per file keyed by its stem. ``encoding`` is
    the text encoding of CSV files (Parquet strings are always UTF-8).

    Raises InvalidNameError, InputError (unreadable file, missing column, bad key column),
    SchemaConflictError (a slice whose types disagree with the dataset's) and UsageError.
    Nothing is committed when any of these is raised.
    """
    check_dataset_name(dataset)
    if slice is not None and slice_by is not None:
        raise UsageError("give either a slice key or a column to slice by, not both")
    head = refs.head(storage, dataset)
    base = get_snapshot(storage, head.snapshot) if head else None

    inputs = _load(data, slice, slice_by, base.key_type if base else None, encoding)
    for item in inputs:
        if slice is not None:
            item.label += f" (slice {slice})"
        elif item.key is not None and not item.label.startswith("slice "):
            item.label += f" (slice {item.key})"
        elif slice_by is not None and slice_by in item.table.schema.names:
            item.label += f" ({_describe_keys(item.table[slice_by])})"
    base_label = "the dataset"
    if base is not None and base.slices:
        first, last = base.slices[0].key, base.slices[-1].key
        span = f"slice {first}" if len(base.slices) == 1 else f"slices {first}..{last}"
        base_label = f"dataset {dataset!r} ({span})"
    if replace:
        base = None  # the head neither constrains the schema nor contributes slices
    target = _unify_inputs(inputs, _base_schema(storage, base) if base else None, base_label)
    pieces = _cut(inputs, target, slice, slice_by, base.key_type if base else None)
    _check_key_types(pieces, base, dataset)

    keys = sorted(pieces, key=sort_token)
    healed: set[SliceKey] = set()
    written = _write_slices(storage, keys, pieces, target, progress, healed)

    schema = tuple(Column(name=f.name, type=type_name(f.type)) for f in target)
    ktype = key_type(keys[0]) if keys else (base.key_type if base else "str")

    def propose(current: refs.RefEntry | None) -> refs.Change | None:
        latest = get_snapshot(storage, current.snapshot) if current else None
        if latest is not None and latest.schema != schema and not replace:
            _raise_schema_conflict(dataset, latest, schema, keys)
        previous = {e.key: e for e in latest.slices} if latest else {}
        merged = {} if replace else dict(previous)
        added, replaced = [], []
        for manifest in written:
            before = previous.get(manifest.key)
            merged[manifest.key] = SliceEntry(
                key=manifest.key, id=manifest.id, rows=manifest.rows, bytes=manifest.bytes
            )
            if before is None:
                added.append(encode_key(manifest.key))
            elif before.id != manifest.id:
                replaced.append(encode_key(manifest.key))
        removed = [encode_key(k) for k in previous if k not in merged] if replace else []
        unchanged = not (added or replaced or removed)
        if latest is not None and unchanged and latest.schema == schema:
            return None
        snapshot = SnapshotManifest(
            key_type=latest.key_type if latest and not replace else ktype,
            slice_by=slice_by or (latest.slice_by if latest else None),
            schema=schema,
            slices=tuple(merged[k] for k in sorted(merged, key=sort_token)),
        )
        put_manifest(storage, snapshot)
        return refs.Change(
            snapshot=snapshot.id,
            operation=operation,
            added=tuple(added),
            replaced=tuple(replaced),
            lineage={**(lineage or {}), **({"removed": removed} if removed else {})},
        )

    final, created = refs.commit(storage, dataset, propose)
    assert final is not None
    before = {e.key: e.id for e in base.slices} if base else {}
    return FreezeResult(
        dataset=dataset,
        snapshot=final.snapshot,
        version=final.version,
        created=created,
        slices=tuple(
            FrozenSlice(
                key=m.key,
                id=m.id,
                rows=m.rows,
                bytes=m.bytes,
                new=before.get(m.key) != m.id,
                healed=m.key in healed,
            )
            for m in written
        ),
    )


# -- loading ------------------------------------------------------------------------------------


def _load(
    data: Any,
    slice: SliceKey | None,
    slice_by: str | None,
    kind: KeyType | None,
    encoding: str = "utf-8",
) -> list[_Input]:
    if isinstance(data, str | os.PathLike) or (
        isinstance(data, Sequence) and not isinstance(data, str) and _all_paths(data)
    ):
        paths = [data] if isinstance(data, str | os.PathLike) else list(data)
        if not paths:
            raise UsageError("no files given to freeze")
        if slice is None and slice_by is None:
            _check_stems(paths, kind)
        lazy = slice is None and slice_by is not None
        inputs = []
        for path in paths:
            raw = _read_file(Path(path), encoding)
            if raw.num_rows == 0:
                # A header-only CSV or a zero-row Parquet file is most often a failed export; a
                # slice frozen from it would replace real rows with none, so say so instead.
                raise InputError(
                    f"{path} has no rows: nothing to freeze",
                    hint="a file must hold at least one row; check the export that wrote it",
                )
            table = normalize_table(raw, lazy=lazy)
            key = None
            if slice is None and slice_by is None:
                key = parse_key(_stem(Path(path)), kind)
            inputs.append(_Input(label=str(path), table=table, key=key, lazy=lazy))
        return inputs
    if isinstance(data, Mapping) and slice is None and slice_by is None:
        return [
            _Input(label=f"slice {key}", table=normalize_table(_to_arrow(frame)), key=key)
            for key, frame in data.items()
        ]
    if slice is None and slice_by is None:
        raise UsageError(
            "a frame needs a slice key or a column to slice by",
            hint="pass slice='2013-01' for one slice, or slice_by='month' to cut by a column",
        )
    lazy = slice is None
    table = normalize_table(_to_arrow(data), lazy=lazy)
    return [_Input(label="input frame", table=table, lazy=lazy)]


def _check_stems(paths: Sequence[Any], kind: KeyType | None) -> None:
    """Refuse, before reading any, two files that would be one slice (``a/data.csv`` and
    ``b/data.csv``, or ``1.csv`` and ``01.csv`` for integer keys): each file is one slice keyed
    by its stem, and the second would silently replace or merge into the first."""
    seen: dict[Any, Any] = {}
    for path in paths:
        stem = _stem(Path(path))
        try:
            key: Any = parse_key(stem, kind)
        except UsageError:
            key = stem  # reported with its file when that is read
        if key not in seen:
            seen[key] = path
            continue
        first = seen[key]
        if os.path.abspath(first) == os.path.abspath(path):
            raise UsageError(f"{path} is given twice", hint="give each file once")
        raise UsageError(
            f"{first} and {path} would both be slice '{encode_key(key)}': each file is one "
            "slice, keyed by its name without the extension",
            hint="rename one of them, freeze them one at a time with --slice KEY, or cut "
            "their rows by a column with --slice-by COLUMN",
        )


def _all_paths(items: Sequence[Any]) -> bool:
    return bool(items) and all(isinstance(i, str | os.PathLike) for i in items)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".bz2", ".zst", ".xz"):
        name = name.removesuffix(suffix)
    return name.rsplit(".", 1)[0] if "." in name else name


def _read_file(path: Path, encoding: str = "utf-8") -> pa.Table:
    import pyarrow as pa

    if not path.is_file():
        raise InputError(f"file not found: {path}", hint="check the path; globs must be expanded")
    suffixes = [s.lower() for s in path.suffixes]
    try:
        if ".parquet" in suffixes or ".pq" in suffixes:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            pandas_meta = table.schema.pandas_metadata or {}
            index = [c for c in pandas_meta.get("index_columns", []) if isinstance(c, str)]
            return table.drop_columns(index) if index else table
        if ".csv" in suffixes or ".tsv" in suffixes:
            return _read_csv(path, "\t" if ".tsv" in suffixes else ",", encoding)
    except LookupError as exc:  # codecs: an encoding Python does not know
        raise UsageError(
            f"unknown text encoding {encoding!r} for {path}",
            hint="name a Python codec, such as utf-8, latin-1 or cp1252",
        ) from exc
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        detail = " ".join(str(exc).split())
        raise InputError(f"cannot read {path}: {detail}") from exc
    raise InputError(
        f"cannot freeze {path}: unknown file type {path.suffix or '(none)'}",
        hint="chanbatch freezes Parquet (.parquet, .pq) and CSV (.csv, .tsv, optionally .gz)",
    )


def _read_csv(path: Path, delimiter: str, encoding: str) -> pa.Table:
    """A CSV file's table; raises InputError when its text is not in ``encoding``.

    pyarrow reads bytes that are not valid UTF-8 as ``binary`` columns, without a word: frozen
    like that, a column of names could neither be grouped nor read back as text.
    """
    import codecs

    import pyarrow as pa
    import pyarrow.csv as pacsv

    codec = codecs.lookup(encoding).name
    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(encoding=codec),
        parse_options=pacsv.ParseOptions(delimiter=delimiter),
    )
    binary = [f.name for f in table.schema if pa.types.is_binary(f.type)]
    if binary:
        column = table.column(binary[0])
        line, example = _first_invalid_text(column)
        names = ", ".join(repr(n) for n in binary[:3]) + (" ..." if len(binary) > 3 else "")
        where = f" (first at data row {line}: {example!r})" if example is not None else ""
        raise InputError(
            f"{path} is not valid {codec} text: column{'s' if len(binary) > 1 else ''} "
            f"{names} cannot be read as text{where}",
            hint="name the file's encoding, e.g. --encoding latin-1 (or encoding='latin-1')",
        )
    return table


def _first_invalid_text(column: pa.ChunkedArray) -> tuple[int, bytes | None]:
    row = 0
    for chunk in column.chunks:
        for value in chunk.to_pylist():
            row += 1
            if value is None:
                continue
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return row, value[:40]
    return 0, None


def _describe_keys(column: Any) -> str:
    import pyarrow.compute as pc

    keys = sorted((k for k in pc.unique(column).to_pylist() if k is not None), key=sort_token)
    shown = ", ".join(str(k) for k in keys[:5]) + (" ..." if len(keys) > 5 else "")
    return f"slice {shown}" if len(keys) == 1 else f"slices {shown}"


def _to_arrow(data: Any) -> pa.Table:
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if hasattr(data, "__dask_graph__") and hasattr(data, "compute"):
        data = data.compute()
    if type(data).__module__.split(".")[0] == "pandas" and hasattr(data, "columns"):
        bad = [c for c in data.columns if not isinstance(c, str)]
        if bad:
            raise InputError(f"column names must be strings; got {bad[:3]!r}")
        try:
            return pa.Table.from_pandas(data, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InputError(f"cannot convert the frame to Arrow: {exc}") from exc
    raise UsageError(
        f"cannot freeze a {type(data).__name__}",
        hint="pass a pandas, pyarrow or dask DataFrame, or Parquet/CSV file paths",
    )


# -- schemas ------------------------------------------------------------------------------------


def _base_schema(storage: Storage, base: SnapshotManifest) -> pa.Schema:
    """The head's Arrow schema, from the first of its slices whose footer reads.

    A damaged object must not stop the freeze that heals it (freezing its slice's source file
    again rewrites it); raises IntegrityError only when no slice can be read.
    """
    first: IntegrityError | None = None
    for entry in base.slices or ():
        try:
            return arrow_schema(storage, dataclasses.replace(base, slices=(entry,)))
        except IntegrityError as exc:
            first = first or exc
    if first is not None:
        raise first
    return arrow_schema(storage, base)


def _unify_inputs(
    inputs: list[_Input], base: pa.Schema | None, base_label: str = "the dataset"
) -> pa.Schema:
    """The schema every slice will be written with; raises SchemaConflictError.

    Columns are matched by name (their order follows the dataset's), and an all-null column
    takes the type the other slices give it.
    """
    import pyarrow as pa

    order = list(base.names) if base is not None else list(inputs[0].schema.names)
    known: dict[str, tuple[pa.DataType, str]] = (
        {f.name: (f.type, base_label) for f in base} if base is not None else {}
    )
    problems: list[str] = []
    for item in inputs:
        schema = item.schema
        names = schema.names
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise InputError(f"{item.label} has duplicate columns: {', '.join(dupes)}")
        missing = [n for n in order if n not in names]
        extra = [n for n in names if n not in order]
        if missing or extra:
            what = []
            if missing:
                what.append("lacks column " + ", ".join(repr(n) for n in missing))
            if extra:
                what.append("adds column " + ", ".join(repr(n) for n in extra))
            problems.append(f"{item.label} {' and '.join(what)}")
            continue
        for field in schema:
            if pa.types.is_null(field.type):
                continue
            seen = known.get(field.name)
            if seen is None:
                known[field.name] = (field.type, item.label)
            elif seen[0] != field.type:
                problems.append(
                    f"column {field.name!r} is {type_name(seen[0])} in {seen[1]} "
                    f"but {type_name(field.type)} in {item.label}"
                )
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise SchemaConflictError(
            "schema conflict: " + "; ".join(problems[:5]) + more,
            hint="every slice of a dataset has the same columns and types; cast the input, "
            "or freeze it as a new dataset",
        )
    untyped = [n for n in order if n not in known or pa.types.is_null(known[n][0])]
    if untyped:
        names = ", ".join(repr(n) for n in untyped)
        where = ", ".join(item.label for item in inputs[:3]) + (" ..." if len(inputs) > 3 else "")
        raise InputError(
            f"column{'s' if len(untyped) > 1 else ''} {names} {'have' if len(untyped) > 1 else 'has'} "
            f"no type: every value is null in {where}",
            hint="a dataset's column types are fixed by its first slice; freeze a slice with "
            "values first, or cast the column",
        )
    return pa.schema([pa.field(n, known[n][0]) for n in order])


def _conform(table: Any, schema: pa.Schema) -> Any:
    """``table`` (or a record batch) with the columns and types of ``schema``."""
    if table.schema.equals(schema):
        return table
    table = table.select(schema.names)
    return table.cast(schema)


def _raise_schema_conflict(
    dataset: str, latest: SnapshotManifest, schema: tuple[Column, ...], keys: list[SliceKey]
) -> None:
    had = {c.name: c.type for c in latest.schema}
    now = {c.name: c.type for c in schema}
    diffs = [
        f"{n!r} is {had[n]} in the dataset but {now[n]}"
        for n in had
        if n in now and had[n] != now[n]
    ]
    diffs += [f"{n!r} is missing" for n in had if n not in now]
    diffs += [f"{n!r} is new" for n in now if n not in had]
    shown = ", ".join(str(k) for k in keys[:5]) + (" ..." if len(keys) > 5 else "")
    raise SchemaConflictError(
        f"schema conflict in {dataset!r}: {'; '.join(diffs)} (slices {shown})",
        hint="every slice of a dataset has the same columns and types",
    )


# -- cutting ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Cut:
    """One input batch with its rows grouped by slice key, not yet copied out or normalised."""

    seq: int  # position among all batches of the freeze, so that rows keep the input order
    batch: Any  # pa.RecordBatch, as given (normalised only if not ``lazy``)
    lazy: bool  # the batch's columns still need normalize_batch
    row_bytes: float  # Arrow memory per row of the input this batch is from
    order: np.ndarray | None  # row positions grouped by key, in input order; None: one key
    spans: dict[SliceKey, tuple[int, int]]  # key -> [start, end) in ``order``

    def rows(self, key: SliceKey) -> int:
        start, end = self.spans[key]
        return end - start


def _cut(
    inputs: list[_Input],
    schema: pa.Schema,
    slice: SliceKey | None,
    slice_by: str | None,
    kind: KeyType | None,
) -> dict[SliceKey, list[Any]]:
    """Each slice key's pieces, in input order: whole tables, or ``_Cut``s of split batches."""
    pieces: dict[SliceKey, list[Any]] = defaultdict(list)
    if slice is None and slice_by is not None:
        for cut in _split(inputs, slice_by):
            for key in cut.spans:
                pieces[key].append(cut)
        return pieces
    for item in inputs:
        table = _conform(item.table, schema)
        if slice is not None:
            key = parse_key(slice, kind) if isinstance(slice, str) and kind else slice
            pieces[key].append(table)
        else:
            assert item.key is not None
            pieces[item.key].append(table)
    return pieces


def _split(inputs: list[_Input], column: str) -> list[_Cut]:
    """Cut the inputs into batches whose rows are grouped by ``column``, keeping input order.

    Only the key column is read here (a stable sort of its codes, per batch, in a thread pool).
    Rows are copied out, normalised and conformed later, a wave of slices at a time, when the
    slices are written: a normalised or sorted copy of the whole input up front would add as
    much fresh memory as the input takes, and fresh memory is what costs most.
    """
    for item in inputs:
        _check_split_column(item, column)
    batches = []
    for item in inputs:
        row_bytes = item.table.nbytes / max(item.table.num_rows, 1)
        for batch in item.table.to_batches(max_chunksize=_BATCH_ROWS):
            batches.append((item.lazy, row_bytes, batch))

    def cut(seq: int) -> _Cut:
        lazy, row_bytes, batch = batches[seq]
        return _group(seq, batch, lazy, row_bytes, column)

    with ThreadPoolExecutor(_WORKERS) as pool:
        return list(pool.map(cut, range(len(batches))))


def _check_split_column(item: _Input, column: str) -> None:
    import pyarrow as pa

    schema = item.schema
    if column not in schema.names:
        hint = did_you_mean(column, schema.names)
        raise InputError(
            f"column {column!r} not found in {item.label}",
            hint=hint or "available columns: " + ", ".join(schema.names),
        )
    ctype = schema.field(column).type
    if not (pa.types.is_integer(ctype) or pa.types.is_date32(ctype) or pa.types.is_string(ctype)):
        raise InputError(
            f"cannot slice by column {column!r} of type {ctype}",
            hint="slice by an integer, date or string column; derive one (for example a "
            "'YYYY-MM' month) first",
        )
    nulls = item.table[column].null_count
    if nulls:
        raise InputError(
            f"column {column!r} has {nulls} null values in {item.label}; every row needs a slice key"
        )


def _group(seq: int, batch: pa.RecordBatch, lazy: bool, row_bytes: float, column: str) -> _Cut:
    import numpy as np
    import pyarrow.compute as pc

    keys = batch.select([column])
    if lazy:
        keys = normalize_batch(keys)
    encoded = pc.dictionary_encode(keys.column(0))
    values = encoded.dictionary.to_pylist()
    if len(values) <= 1:
        spans = {v: (0, batch.num_rows) for v in values}
        return _Cut(seq=seq, batch=batch, lazy=lazy, row_bytes=row_bytes, order=None, spans=spans)
    # Arrow's stable sort counts small integer codes, and lets go of the GIL while it does, so
    # the batches are grouped in parallel (numpy's sorts hold the GIL).
    order = pc.array_sort_indices(encoded.indices).to_numpy()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    ends = np.cumsum(np.bincount(codes, minlength=len(values))).tolist()
    starts = [0, *ends[:-1]]
    return _Cut(
        seq=seq,
        batch=batch,
        lazy=lazy,
        row_bytes=row_bytes,
        order=order,
        spans={v: (s, e) for v, s, e in zip(values, starts, ends, strict=True)},
    )


def _check_key_types(
    pieces: dict[SliceKey, list[Any]], base: SnapshotManifest | None, dataset: str
) -> None:
    kinds = {key_type(k) for k in pieces}
    if base is not None and base.slices:
        kinds.add(base.key_type)
    if len(kinds) > 1:
        raise InputError(
            f"slice keys of {dataset!r} would mix types ({', '.join(sorted(kinds))})",
            hint="keep one key type per dataset: all integers, all dates or all strings",
        )
    if not pieces:
        raise InputError(f"nothing to freeze into {dataset!r}: the input has no rows")


# -- writing ------------------------------------------------------------------------------------

# The rows of a wave taken out of one cut: the taken batch, and where each key's rows are in it.
_Taken = tuple[Any, dict[SliceKey, tuple[int, int]]]


def _write_slices(
    storage: Storage,
    keys: list[SliceKey],
    pieces: dict[SliceKey, list[Any]],
    schema: pa.Schema,
    progress: Progress | None,
    healed: set[SliceKey] | None = None,
) -> list[SliceManifest]:
    """Write every slice's objects and manifest; returns the manifests in ``keys`` order.
    The keys of slices whose objects or manifest were there but damaged, and were rewritten,
    are added to ``healed``.

    Slices cut from split batches go in waves of about ``_WAVE_BYTES``: first each batch's
    rows of the wave are taken out in one ``take`` (so the batch is read once per wave, while it
    is in cache), then each slice is assembled from its pieces and written. The next wave is
    taken while this one's last slices are written, so two waves at most are in memory.
    """
    import pyarrow as pa

    def write(key: SliceKey, table: pa.Table) -> SliceManifest:
        table = table.combine_chunks()
        parts = []
        mended = False
        for start in range(0, max(table.num_rows, 1), PART_ROWS):
            chunk = table.slice(start, PART_ROWS)
            oid, size, damaged = _write_object(storage, chunk)
            parts.append(Part(object=oid, rows=chunk.num_rows, bytes=size))
            mended |= damaged
        manifest = SliceManifest(key=key, parts=tuple(parts))
        mended |= write_manifest(storage, manifest)[1]
        if mended and healed is not None:
            healed.add(key)
        return manifest

    def write_whole(key: SliceKey) -> SliceManifest:
        return write(key, pa.concat_tables(pieces[key]))

    def write_split(key: SliceKey, taken: list[_Taken]) -> SliceManifest:
        batches = []
        for batch, spans in taken:
            span = spans.get(key)
            if span is not None:
                batches.append(batch.slice(span[0], span[1] - span[0]))
        return write(key, pa.Table.from_batches(batches, schema=schema))

    split = [k for k in keys if isinstance(pieces[k][0], _Cut)]
    position = {key: i for i, key in enumerate(keys)}
    futures: dict[SliceKey, Future[SliceManifest]] = {}
    results: list[SliceManifest] = []

    def collect(count: int) -> None:
        """Wait for the first ``count`` slices, in key order, and report each as it is done."""
        while len(results) < count:
            results.append(futures.pop(keys[len(results)]).result())
            if progress is not None:
                progress(len(results), len(keys))

    with ThreadPoolExecutor(_WORKERS) as pool:
        try:
            for key in keys:
                if not isinstance(pieces[key][0], _Cut):
                    futures[key] = pool.submit(write_whole, key)
            waves = _waves(split, pieces)
            taking = _take_wave(pool, waves[0], pieces, schema) if waves else []
            for i, wave in enumerate(waves):
                taken = [f.result() for f in taking]
                for key in wave:
                    futures[key] = pool.submit(write_split, key, taken)
                del taken
                taking = (
                    _take_wave(pool, waves[i + 1], pieces, schema) if i + 1 < len(waves) else []
                )
                if i >= 1:  # wave i - 1 is written before wave i + 2 is taken: two in memory
                    collect(position[waves[i - 1][-1]] + 1)
            collect(len(keys))
        except BaseException:
            pool.shutdown(cancel_futures=True)  # what is queued is of no use any more
            raise
    return results


def _waves(keys: list[SliceKey], pieces: dict[SliceKey, list[_Cut]]) -> list[list[SliceKey]]:
    """``keys`` in order, grouped into runs of about ``_WAVE_BYTES`` (a bigger slice alone)."""
    waves: list[list[SliceKey]] = []
    size = 0.0
    for key in keys:
        n = sum(cut.rows(key) * cut.row_bytes for cut in pieces[key])
        if not waves or size + n > _WAVE_BYTES:
            waves.append([])
            size = 0.0
        waves[-1].append(key)
        size += n
    return waves


def _take_wave(
    pool: ThreadPoolExecutor,
    wave: list[SliceKey],
    pieces: dict[SliceKey, list[_Cut]],
    schema: pa.Schema,
) -> list[Future[_Taken]]:
    """Start taking the rows of ``wave`` out of every cut that has some, in input order."""
    cuts = {cut.seq: cut for key in wave for cut in pieces[key]}
    return [pool.submit(_take, cuts[seq], wave, schema) for seq in sorted(cuts)]


def _take(cut: _Cut, wave: list[SliceKey], schema: pa.Schema) -> _Taken:
    """``cut``'s rows of the keys in ``wave``, copied out, grouped by key in wave order,
    normalised and conformed to ``schema``."""
    import numpy as np

    keys = [k for k in wave if k in cut.spans]
    if cut.order is None:  # one key: the batch itself
        taken, spans = cut.batch, {keys[0]: (0, cut.batch.num_rows)}
    else:
        spans = {}
        positions = []
        at = 0
        for key in keys:
            start, end = cut.spans[key]
            positions.append(cut.order[start:end])
            spans[key] = (at, at + end - start)
            at += end - start
        taken = _take_rows(cut.batch, np.concatenate(positions))
    if cut.lazy:
        taken = normalize_batch(taken)
    return _conform(taken, schema), spans


def _take_rows(batch: pa.RecordBatch, positions: np.ndarray) -> pa.RecordBatch:
    """``batch.take(positions)``, also for view types, which have no take kernel."""
    import pyarrow as pa

    indices = pa.array(positions)
    if not any(_is_view(t) for t in batch.schema.types):
        try:
            return _gather(batch, indices)
        except pa.ArrowNotImplementedError:  # a view type inside a list or struct
            pass
    columns = [_take_column(column, indices) for column in batch.columns]
    return pa.RecordBatch.from_arrays(
        columns,
        schema=pa.schema(
            [pa.field(f.name, c.type) for f, c in zip(batch.schema, columns, strict=True)]
        ),
    )


def _gather(data: Any, indices: pa.Array) -> Any:
    """``take`` without the bounds check: positions come from sorting the batch's own rows."""
    import pyarrow.compute as pc

    return pc.take(data, indices, boundscheck=False)


def _take_column(column: pa.Array, indices: pa.Array) -> pa.Array:
    import pyarrow as pa

    if _is_view(column.type):
        return _take_views(column, indices)
    try:
        return _gather(column, indices)
    except pa.ArrowNotImplementedError:  # a view type inside a list or struct: cast it first
        single = pa.RecordBatch.from_arrays([column], names=["column"])
        return _gather(normalize_batch(single).column(0), indices)


def _is_view(t: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_string_view(t) or pa.types.is_binary_view(t))


def _take_views(array: pa.Array, indices: pa.Array) -> pa.Array:
    """Take rows of a ``string_view`` or ``binary_view`` array: its 16-byte views are taken as
    fixed-size binaries, and keep pointing into the same data buffers, so no string is copied
    here (the cast to ``string`` that follows copies each one once)."""
    import pyarrow as pa

    validity, views, *data = array.buffers()
    fixed = pa.Array.from_buffers(
        pa.binary(16), len(array), [validity, views], array.null_count, array.offset
    )
    taken = _gather(fixed, indices)
    return pa.Array.from_buffers(
        array.type, len(taken), [*taken.buffers(), *data], taken.null_count
    )


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
    the same data again is how a damaged object is healed."""
    if storage.is_local:
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
    data = encode_parquet(table)
    oid, state = heal_object(storage, data)
    return oid, len(data), state == HEALED
