"""Export a snapshot's rows to files: Parquet, CSV or JSON lines, one file or one per slice.

Rows stream out one stored object at a time (only the asked columns are read), so an export
never holds more than one object's rows. Each file is written under a temporary name beside its
destination and renamed into place when complete: a failed export leaves no half-written file.

What survives a round trip through ``snapshot freeze``:

- Parquet keeps every type and value. Freezing the export with the source's slicing
  (``--slice-by`` its column, or, for a per-slice export, each file keyed by its name) gives
  the source's snapshot id.
- CSV keeps integers, floats, booleans, dates, UTC timestamps and text, except that a null text
  value comes back as an empty string, text made only of digits comes back as numbers, and
  decimals come back as floats.
- JSON lines is for other programs; freeze does not read it.
"""

from __future__ import annotations

import json
import math
import os
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chanbatch.errors import UsageError
from chanbatch.snapshot.names import SliceKey, encode_key

if TYPE_CHECKING:
    import pyarrow as pa

FORMATS = ("parquet", "csv", "jsonl")
SUFFIXES = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
#: The suffix a per-slice export gives each file.
FILE_SUFFIX = {"parquet": ".parquet", "csv": ".csv", "jsonl": ".jsonl"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportedFile:
    path: str
    rows: int
    slice: SliceKey | None = None

    def document(self) -> dict[str, Any]:
        key = encode_key(self.slice) if self.slice is not None else None
        return {"path": self.path, "rows": self.rows, "slice": key}


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportResult:
    """What an export wrote: the ``format``, the ``files`` and the rows in them."""

    path: str
    format: str
    files: tuple[ExportedFile, ...] = field(default_factory=tuple)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    def document(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "rows": self.rows,
            "files": [f.document() for f in self.files],
        }


def choose_format(path: str | os.PathLike[str], given: str | None, *, per_slice: bool) -> str:
    """The format named by ``given``, else by ``path``'s suffix (Parquet for a per-slice
    directory without one). Raises UsageError for a suffix that names no format."""
    if given is not None:
        if given not in FORMATS:
            raise UsageError(f"unknown export format {given!r}", hint="use parquet, csv or jsonl")
        return given
    suffix = Path(path).suffix.lower()
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    if per_slice:
        return "parquet"
    shown = f"its suffix {suffix!r}" if suffix else "a name without a suffix"
    raise UsageError(
        f"cannot tell which format to write {os.fspath(path)} in from {shown}",
        hint="name it .parquet, .csv or .jsonl, or give --format parquet|csv|jsonl",
    )


def slice_file_name(key: SliceKey, fmt: str) -> str:
    """The file a per-slice export writes slice ``key`` to: the key as text, with every
    character but letters, digits, ``-``, ``_`` and ``.`` percent-encoded (``a/b`` is
    ``a%2Fb``), so that freezing the file keys it as its slice again (for keys without such
    characters)."""
    text = str(encode_key(key))
    name = urllib.parse.quote(text, safe="-_.")
    if not name or name.startswith("."):
        name = "%2E" + name[1:] if name else "%00"
    return name + FILE_SUFFIX[fmt]


def check_target(path: Path, *, per_slice: bool, force: bool) -> None:
    """Raise UsageError unless an export may write to ``path``: its folder must exist, and an
    existing file (or, for ``per_slice``, a non-empty directory) is replaced only with
    ``force``."""
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(
            f"cannot write {path}: folder {parent} does not exist",
            hint=f"create it first (mkdir -p {parent})",
        )
    if per_slice:
        if path.exists() and not path.is_dir():
            raise UsageError(
                f"cannot write one file per slice into {path}: it is a file",
                hint="--per-slice writes into a directory; name a new one",
            )
        if path.is_dir() and any(path.iterdir()) and not force:
            raise UsageError(
                f"directory {path} is not empty",
                hint="name a new directory, or give --force to replace files of the same names",
            )
        return
    if path.is_dir():
        raise UsageError(
            f"cannot write {path}: it is a directory",
            hint="name a file, or give --per-slice to write one file per slice into it",
        )
    if path.exists() and not force:
        raise UsageError(f"{path} already exists", hint="give --force to replace it")


def export_tables(
    slices: Iterable[tuple[SliceKey, Iterable[pa.Table]]],
    path: str | os.PathLike[str],
    *,
    schema: pa.Schema,
    fmt: str,
    per_slice: bool = False,
    force: bool = False,
) -> ExportResult:
    """Write each slice's tables (slices in order, each with its key) to ``path`` in ``fmt``:
    one file, or with ``per_slice`` one file per slice (an empty slice too) into the directory
    ``path``.

    Raises UsageError (see :func:`check_target`) before anything is written.
    """
    target = Path(path)
    check_target(target, per_slice=per_slice, force=force)
    if not per_slice:
        with _Writer(target, schema, fmt) as writer:
            for _, tables in slices:
                for table in tables:
                    writer.write(table)
        done = ExportedFile(path=str(target), rows=writer.rows)
        return ExportResult(path=str(target), format=fmt, files=(done,))
    target.mkdir(exist_ok=True)
    files = []
    for key, tables in slices:
        with _Writer(target / slice_file_name(key, fmt), schema, fmt) as writer:
            for table in tables:
                writer.write(table)
        files.append(ExportedFile(path=str(writer.path), rows=writer.rows, slice=key))
    return ExportResult(path=str(target), format=fmt, files=tuple(files))


class _Writer:
    """One output file, written to a temporary name and renamed into place on close."""

    def __init__(self, path: Path, schema: pa.Schema, fmt: str) -> None:
        self.path = path
        self.temp = path.with_name(f".{path.name}.partial-{os.getpid()}")
        self.schema = schema
        self.fmt = fmt
        self.rows = 0
        self._sink: Any = None
        self._write: Callable[[pa.Table], None] | None = None

    def open(self) -> _Writer:
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            writer = pq.ParquetWriter(self.temp, self.schema, compression="snappy")
            self._sink, self._write = writer, writer.write_table
        elif self.fmt == "csv":
            import pyarrow.csv as pacsv

            writer = pacsv.CSVWriter(self.temp, self.schema)
            self._sink, self._write = writer, writer.write_table
        else:
            handle = open(self.temp, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
            self._sink = handle
            self._write = lambda table: handle.writelines(json_lines(table))
        return self

    def write(self, table: pa.Table) -> None:
        assert self._write is not None
        self._write(table)
        self.rows += table.num_rows

    def close(self) -> None:
        self._sink.close()
        os.replace(self.temp, self.path)

    def abort(self) -> None:
        try:
            self._sink.close()
        finally:
            self.temp.unlink(missing_ok=True)

    def __enter__(self) -> _Writer:
        return self.open()

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def json_lines(table: pa.Table) -> Iterable[str]:
    """Each row of ``table`` as one line of JSON (an object, columns in order)."""
    for row in json_rows(table):
        yield json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n"


def json_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The rows of ``table`` as JSON-ready dicts: dates and timestamps as ISO 8601 text,
    decimals as text (all their digits), binary as hex, NaN and infinities as null."""
    names = table.column_names
    columns = [[json_value(v) for v in column.to_pylist()] for column in table.columns]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def json_value(value: Any) -> Any:
    """One value as JSON holds it (see :func:`json_rows`)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    isoformat = getattr(value, "isoformat", None)
    if isoformat is not None:
        return isoformat()
    return str(value)
