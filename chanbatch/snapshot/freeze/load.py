"""Load: what a freeze was given (frames, a mapping of frames, Parquet or CSV files) as Arrow.

Each input becomes one :class:`_Input`: a table, a label for messages, and its slice key when
the input is one slice (a file keyed by its stem, or an entry of a mapping).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chanbatch.errors import InputError, UsageError
from chanbatch.snapshot.freeze.progress import _Reporter
from chanbatch.snapshot.names import KeyType, SliceKey, encode_key, parse_key, sort_token
from chanbatch.snapshot.normalize import normalize_schema, normalize_table

if TYPE_CHECKING:
    import pyarrow as pa


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


def _load(
    data: Any,
    slice: SliceKey | None,
    slice_by: str | None,
    kind: KeyType | None,
    encoding: str = "utf-8",
    reporter: _Reporter | None = None,
) -> list[_Input]:
    if isinstance(data, str | os.PathLike) or (
        isinstance(data, Sequence) and not isinstance(data, str) and _all_paths(data)
    ):
        paths = [data] if isinstance(data, str | os.PathLike) else list(data)
        return _load_files(paths, slice, slice_by, kind, encoding, reporter)
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


def _load_files(
    paths: list[Any],
    slice: SliceKey | None,
    slice_by: str | None,
    kind: KeyType | None,
    encoding: str,
    reporter: _Reporter | None = None,
) -> list[_Input]:
    if not paths:
        raise UsageError("no files given to freeze")
    if slice is None and slice_by is None:
        _check_stems(paths, kind)
    lazy = slice is None and slice_by is not None
    inputs = []
    watch = _read_watch(paths, reporter)
    for i, path in enumerate(paths):
        raw = _read_file(Path(path), encoding, watch(i))
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


def _label_inputs(inputs: list[_Input], slice: SliceKey | None, slice_by: str | None) -> None:
    """Add to each input's label the slice or slices it holds, for the messages that name it."""
    for item in inputs:
        if slice is not None:
            item.label += f" (slice {slice})"
        elif item.key is not None and not item.label.startswith("slice "):
            item.label += f" (slice {item.key})"
        elif slice_by is not None and slice_by in item.table.schema.names:
            item.label += f" ({_describe_keys(item.table[slice_by])})"


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


_OnRead = Callable[[int], None]


def _read_watch(paths: list[Any], reporter: _Reporter | None) -> Callable[[int], _OnRead | None]:
    """For the ``i``-th file, a callback counting the bytes read of it into ``reporter``'s
    reading step (None when nobody watches)."""
    if reporter is None or not reporter.watching:
        return lambda i: None
    sizes = []
    for path in paths:
        try:
            sizes.append(os.path.getsize(path))
        except OSError:  # reported with its file when that is read
            sizes.append(0)
    total = sum(sizes)

    def watch(i: int) -> _OnRead:
        name = Path(paths[i]).name + (f" ({i + 1} of {len(paths)})" if len(paths) > 1 else "")
        reporter.reading(name, 0, total)
        return lambda n: reporter.reading(name, n, total)

    return watch


class _CountedFile(io.FileIO):
    """A file read for pyarrow that tells ``on_read`` how many bytes each read took, so a
    watcher sees a big file being read rather than nothing until it is all in."""

    def __init__(self, path: Path, on_read: _OnRead) -> None:
        super().__init__(path, "rb")
        self.on_read = on_read

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if data:
            self.on_read(len(data))
        return data

    def readinto(self, buffer: Any) -> int | None:
        n = super().readinto(buffer)
        if n:
            self.on_read(n)
        return n


# compressions pyarrow detects from a CSV path's suffix, named for a counted file that has none
_CODECS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".lz4": "lz4"}


@contextlib.contextmanager
def _source(path: Path, on_read: _OnRead | None, compressed: bool = False) -> Iterator[Any]:
    """What pyarrow reads ``path`` from: the path itself, or a counted file when watched."""
    if on_read is None:
        yield path
        return
    import pyarrow as pa

    with _CountedFile(path, on_read) as counted:
        codec = _CODECS.get(path.suffix.lower()) if compressed else None
        yield pa.input_stream(counted, compression=codec) if codec else counted


def _read_file(path: Path, encoding: str = "utf-8", on_read: _OnRead | None = None) -> pa.Table:
    import pyarrow as pa

    if not path.is_file():
        raise InputError(f"file not found: {path}", hint="check the path; globs must be expanded")
    suffixes = [s.lower() for s in path.suffixes]
    try:
        if ".parquet" in suffixes or ".pq" in suffixes:
            import pyarrow.parquet as pq

            with _source(path, on_read) as source:
                table = pq.read_table(source)
            pandas_meta = table.schema.pandas_metadata or {}
            index = [c for c in pandas_meta.get("index_columns", []) if isinstance(c, str)]
            return table.drop_columns(index) if index else table
        if ".csv" in suffixes or ".tsv" in suffixes:
            delimiter = "\t" if ".tsv" in suffixes else ","
            with _source(path, on_read, compressed=True) as source:
                return _read_csv(path, delimiter, encoding, source)
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


def _read_csv(path: Path, delimiter: str, encoding: str, source: Any) -> pa.Table:
    """A CSV file's table; raises InputError when its text is not in ``encoding``.

    pyarrow reads bytes that are not valid UTF-8 as ``binary`` columns, without a word: frozen
    like that, a column of names could neither be grouped nor read back as text.
    """
    import codecs

    import pyarrow as pa
    import pyarrow.csv as pacsv

    codec = codecs.lookup(encoding).name
    table = pacsv.read_csv(
        source,
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
