"""Schema: the one Arrow schema every slice of a freeze is written with, and the checks that
refuse inputs (or slice keys) that do not fit the dataset they are frozen into."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from chanbatch.errors import InputError, IntegrityError, SchemaConflictError
from chanbatch.snapshot.freeze.load import _Input
from chanbatch.snapshot.manifest import Column, SnapshotManifest
from chanbatch.snapshot.names import SliceKey, key_type
from chanbatch.snapshot.normalize import type_name
from chanbatch.snapshot.read import arrow_schema
from chanbatch.snapshot.storage import Storage

if TYPE_CHECKING:
    import pyarrow as pa


def _base_label(dataset: str, base: SnapshotManifest | None) -> str:
    """How schema conflicts name the dataset's head: with its slice keys, when it has any."""
    if base is None or not base.slices:
        return "the dataset"
    first, last = base.slices[0].key, base.slices[-1].key
    span = f"slice {first}" if len(base.slices) == 1 else f"slices {first}..{last}"
    return f"dataset {dataset!r} ({span})"


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


def _check_key_types(
    keys: Collection[SliceKey], base: SnapshotManifest | None, dataset: str
) -> None:
    """Refuse slice keys of more than one type (with the head's, if any), and no slices."""
    kinds = {key_type(k) for k in keys}
    if base is not None and base.slices:
        kinds.add(base.key_type)
    if len(kinds) > 1:
        raise InputError(
            f"slice keys of {dataset!r} would mix types ({', '.join(sorted(kinds))})",
            hint="keep one key type per dataset: all integers, all dates or all strings",
        )
    if not keys:
        raise InputError(f"nothing to freeze into {dataset!r}: the input has no rows")
