"""Freezing a run's outputs: each output stage's result becomes a snapshot of its dataset, with
its lineage, unless the last run's snapshot of the same keys is still the dataset's head.
"""

from __future__ import annotations

from typing import Any

from chanbatch.blueprint.model import Blueprint
from chanbatch.cache.runs import RunRecord, TaskOutcome
from chanbatch.compile.keys import blueprint_digest
from chanbatch.compile.plan import Plan
from chanbatch.errors import ChanbatchError, UsageError
from chanbatch.ids import object_id
from chanbatch.snapshot import SnapshotStore, refs
from chanbatch.snapshot.freeze import Held, freeze
from chanbatch.snapshot.manifest import SnapshotManifest
from chanbatch.snapshot.objects import get_snapshot


def freeze_outputs(
    store: SnapshotStore,
    blueprint: Blueprint,
    plan: Plan,
    parts: dict[str, Any],
    done: dict[str, TaskOutcome],
    run_id: str,
    previous: RunRecord | None,
) -> tuple[dict[str, list[str]], dict[str, dict[str, Any]], dict[str, int]]:
    """Freeze each output stage's result as its dataset (unless the last run's snapshot, made
    from the same keys, is still the head): the keys of each output, its snapshot, and the
    version of its dataset that holds it."""
    storage = store.storage
    resolved = {dask_key: entry.key for dask_key, entry in done.items()}
    lineage_base = {
        "blueprint": blueprint.name,
        "blueprint_hash": blueprint_digest(blueprint),
        "run": run_id,
        "inputs": {name: r.snapshot for name, r in plan.inputs.items()},
    }
    snapshots: dict[str, dict[str, Any]] = {}
    output_keys: dict[str, list[str]] = {}
    versions: dict[str, int] = {}
    for stage, dataset in blueprint.outputs.items():
        result = plan.results[stage]
        keys = output_keys[stage] = [resolved.get(k, k) for k in result.keys]
        unchanged = _unchanged_output(store, previous, stage, dataset, keys)
        if unchanged is not None:  # same keys as the last run, whose snapshot is still the head
            snapshots[stage], versions[stage] = unchanged
            continue
        held: dict[Any, Held] = {}

        def table_of(slice_key: Any, key: str, held: dict[Any, Held] = held) -> Any:
            return _output_table(parts.get(key), key, storage.url, slice_key, held)

        # When the head is the last run's output, only the slices whose keys changed are
        # frozen, merged into it: the same slices, so the same snapshot id, as a whole freeze.
        found = _changed_slices(store, previous, stage, dataset, result, keys)
        data = None
        if found is not None:
            changed, head = found
            data = _typed_like_head(head, {s: table_of(s, k) for s, k in changed})
        merge = data is not None
        if data is None and result.sliced is not None:
            data = unify_types({s: table_of(s, k) for s, k in result.sliced})
        elif data is None:
            data = {"all": table_of("all", result.whole or "")}
        if not data and not merge:
            raise UsageError(f"output {stage!r} has no slices to freeze: its input is empty")
        info = freeze(
            storage,
            dataset,
            data,
            lineage={**lineage_base, "stage": stage},
            operation="run",
            replace=not merge,
            held=held,
        )
        rows = (
            sum(e.rows for e in get_snapshot(storage, info.snapshot).slices)
            if merge
            else sum(s.rows for s in info.slices)
        )
        snapshots[stage] = {"dataset": dataset, "snapshot": info.snapshot, "rows": rows}
        versions[stage] = info.version
    return output_keys, snapshots, versions


def _output_table(part: Any, key: str, url: str, slice_key: Any, held: dict[Any, Held]) -> Any:
    """The Arrow rows of the result ``key`` (``part``, or cached when None) for the output
    slice ``slice_key``, noted in ``held`` when an object of the store holds them alone."""
    from chanbatch.engine.graph import Part, stored_table

    if part is None:
        part = Part(key=key, ident="", url=url, outcome="cached")
    rows = _held(part)
    if rows is None:
        return stored_table(part)
    held[slice_key] = rows
    return rows.table


def _held(part: Any) -> Held | None:
    """``part``'s rows as the object the cache stores them in alone (not in a pack), to be
    named by the output slice they make instead of encoded again: the rows that object was
    encoded from, for a result computed in this run, or those read from it."""
    from chanbatch.cache.index import cached_object
    from chanbatch.engine.graph import storable_table, storage_for, stored_entry

    entry = stored_entry(part)
    if entry is None or entry.range is not None:
        return None
    if part.frame is not None or part.table is not None:
        table = storable_table(part)
        return Held(table=table, object=object_id(entry.object), size=entry.bytes)
    table, data = cached_object(storage_for(part.url), entry)
    return Held(table=table, object=object_id(entry.object), size=entry.bytes, data=data)


def unify_types(tables: dict[Any, Any]) -> dict[Any, Any]:
    """Per-slice Arrow tables of one output with one type per column.

    A slice's column can differ in type only because of its data: a column that is all null in
    one slice has no type there (it takes the type the other slices agree on), and a function
    whose result type follows its values (``coalesce`` of an int column with a float) can give
    int64 in one slice and double in another: then every slice gets double. The rule looks at
    the set of slices only, never at which of them were computed in this run, so an
    incremental run gives the types a cold run gives.
    """
    import pyarrow as pa

    from chanbatch.snapshot.normalize import normalize_table

    if len(tables) < 2:
        return tables
    tables = {key: normalize_table(table) for key, table in tables.items()}
    names = next(iter(tables.values())).column_names
    casts: dict[str, Any] = {}
    for name in names:
        types = {
            t.schema.field(name).type
            for t in tables.values()
            if name in t.column_names and not pa.types.is_null(t.schema.field(name).type)
        }
        if len(types) == 1:
            (target,) = types
        elif types and all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in types):
            target = pa.float64()
        else:
            continue  # freeze names the conflict
        casts[name] = target
    out = {}
    for key, table in tables.items():
        for name, target in casts.items():
            if name in table.column_names:
                index = table.column_names.index(name)
                if table.schema.field(index).type != target:
                    table = table.set_column(index, name, table.column(index).cast(target))
        out[key] = table
    return out


def _unchanged_output(
    store: SnapshotStore,
    previous: RunRecord | None,
    stage: str,
    dataset: str,
    keys: list[str],
) -> tuple[dict[str, Any], int] | None:
    """The last run's output, if it came from the same keys and is still the dataset's head
    (and the head's version).

    This is what lets a fully cached run finish without reading (or importing pandas for) a
    single result.
    """
    if previous is None:
        return None
    before = (previous.outputs or {}).get(stage)
    if not before or before.get("dataset") != dataset:
        return None
    if (previous.output_keys or {}).get(stage) != keys:
        return None
    head = refs.head(store.storage, dataset)
    if head is None or head.snapshot != before.get("snapshot"):
        return None
    return dict(before), head.version


def _changed_slices(
    store: SnapshotStore,
    previous: RunRecord | None,
    stage: str,
    dataset: str,
    result: Any,
    keys: list[str],
) -> tuple[list[tuple[Any, str]], SnapshotManifest] | None:
    """The (slice key, task key) of a sliced output's slices whose result changed since the
    last run (``keys``: the output's result keys, as its tasks resolved them), when only those
    need freezing: the dataset's head is the last run's output of this stage, and every slice
    it has is still there. None when the whole output must be frozen (no such run, another
    writer since, a slice gone, or nothing sliced). With them, the head's manifest."""
    sliced = result.sliced
    if sliced is None or previous is None or not sliced:
        return None
    before = (previous.outputs or {}).get(stage)
    before_keys = (previous.output_keys or {}).get(stage)
    if not before or before.get("dataset") != dataset or before_keys is None:
        return None
    head = refs.head(store.storage, dataset)
    if head is None or head.snapshot != before.get("snapshot"):
        return None
    try:
        manifest = get_snapshot(store.storage, head.snapshot)
    except ChanbatchError:
        return None
    if len(manifest.slices) != len(before_keys):
        return None
    was = {entry.key: key for entry, key in zip(manifest.slices, before_keys, strict=True)}
    if not set(was) <= {slice_key for slice_key, _ in sliced}:
        return None
    changed = [
        (slice_key, task)
        for (slice_key, task), key in zip(sliced, keys, strict=True)
        if was.get(slice_key) != key
    ]
    return (changed, manifest) if changed else None


def _typed_like_head(head: SnapshotManifest, tables: dict[Any, Any]) -> Any:
    """The changed slices of an output, normalised, when each column has the type the head's
    slices have; None when one differs (a column all null in a slice has no type of its own,
    or a type that follows the values): then the whole output is frozen again, and its types
    unified over every slice, as a cold run's are."""
    from chanbatch.snapshot.normalize import normalize_table, type_name

    schema = {c.name: c.type for c in head.schema}
    out = {}
    for slice_key, table in tables.items():
        table = normalize_table(table)
        if table.column_names != list(schema) or any(
            type_name(field.type) != schema[field.name] for field in table.schema
        ):
            return None
        out[slice_key] = table
    return out
