"""Freeze: cut input into slices, write each slice's objects, then manifests, then a ref.

The order of writes is what keeps a store valid through any crash: an object is complete before
a manifest names it, a manifest is complete before a snapshot names it, and the ref that makes a
snapshot visible is written last, exclusively. A crash leaves at most unreferenced files, which
``gc`` removes.

One module per step: ``load`` reads what was given into Arrow, ``schema`` settles the schema
every slice is written with, ``cut`` cuts the inputs into slices, ``write`` writes the slices'
objects and manifests, and ``commit`` the snapshot manifest and ref.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chanbatch.errors import UsageError
from chanbatch.snapshot import refs
from chanbatch.snapshot.freeze.commit import _columns, _Proposal, _result
from chanbatch.snapshot.freeze.cut import KeyFunction, _cut
from chanbatch.snapshot.freeze.load import _label_inputs, _load
from chanbatch.snapshot.freeze.progress import Progress, SliceCount, Step, Watcher, _Reporter
from chanbatch.snapshot.freeze.result import FreezeResult, FrozenSlice
from chanbatch.snapshot.freeze.schema import (
    _base_label,
    _base_schema,
    _check_key_types,
    _unify_inputs,
)
from chanbatch.snapshot.freeze.write import Held, _write_slices, encode_parquet
from chanbatch.snapshot.manifest import SnapshotManifest
from chanbatch.snapshot.names import SliceKey, check_dataset_name, key_type, sort_token
from chanbatch.snapshot.objects import get_snapshot
from chanbatch.snapshot.storage import Storage

__all__ = [
    "FreezeResult",
    "FrozenSlice",
    "Held",
    "KeyFunction",
    "Progress",
    "SliceCount",
    "Step",
    "Watcher",
    "encode_parquet",
    "freeze",
]


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
    key_of: KeyFunction | None = None,
    held: Mapping[SliceKey, Held] | None = None,
) -> FreezeResult:
    """Freeze ``data`` into ``dataset`` and commit a new version if anything changed.

    By default the new slices are merged into the dataset's head: new keys are added, existing
    keys replaced, and the schema must match. With ``replace`` the new version holds exactly
    these slices, whatever the head held (a run's output: the result of this run, no more);
    history is kept either way.

    ``progress`` is told of each slice written as ``progress(done, total)``; one with a
    ``step`` method (a :class:`Watcher`) is told instead each :class:`Step` of reading,
    cutting and writing, with bytes and rows (:mod:`~chanbatch.snapshot.freeze.progress`).

    ``data`` is a pandas, pyarrow or dask DataFrame, one or more Parquet/CSV file paths, or a
    mapping of slice key to frame.
    Slices come from ``slice`` (all of it is one slice), ``slice_by`` (one slice per value of a
    column), or, for files with neither, one slice per file keyed by its stem. ``encoding`` is
    the text encoding of CSV files (Parquet strings are always UTF-8). ``key_of`` computes the
    slice key of each row instead of reading column ``slice_by`` (then ``slice_by`` is its text,
    as the snapshot records it). ``held``: slices whose rows an object in the store holds
    already (a run's outputs, :class:`~chanbatch.snapshot.freeze.write.Held`); a slice that
    comes out of the freeze's checks and casts as exactly those rows names that object.

    Raises InvalidNameError, InputError (unreadable file, missing column, bad key column),
    SchemaConflictError (a slice whose types disagree with the dataset's) and UsageError.
    Nothing is committed when any of these is raised.
    """
    check_dataset_name(dataset)
    if slice is not None and slice_by is not None:
        raise UsageError("give either a slice key or a column to slice by, not both")
    head = refs.head(storage, dataset)
    base = get_snapshot(storage, head.snapshot) if head else None
    read: dict[str, SnapshotManifest] = {head.snapshot: base} if head and base else {}

    reporter = _Reporter(progress)
    inputs = _load(data, slice, slice_by, base.key_type if base else None, encoding, reporter)
    _label_inputs(inputs, slice, slice_by)
    base_label = _base_label(dataset, base)
    if replace:
        base = None  # the head neither constrains the schema nor contributes slices
    target = _unify_inputs(inputs, _base_schema(storage, base) if base else None, base_label)
    split = key_of if key_of is not None else slice_by
    pieces = _cut(inputs, target, slice, split, base.key_type if base else None, reporter)
    _check_key_types(pieces.keys(), base, dataset)

    keys = sorted(pieces, key=sort_token)
    healed: set[SliceKey] = set()
    written = _write_slices(storage, keys, pieces, target, reporter, healed, held)

    proposal = _Proposal(
        storage=storage,
        dataset=dataset,
        written=written,
        schema=_columns(target),
        keys=keys,
        key_type=key_type(keys[0]) if keys else (base.key_type if base else "str"),
        slice_by=slice_by,
        replace=replace,
        operation=operation,
        lineage=lineage,
        read=read,
    )
    final, created = refs.commit(storage, dataset, proposal, seen=(head,))
    assert final is not None
    return _result(proposal, final, created, base, healed)
