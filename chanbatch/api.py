"""The Python API of DESIGN.md section 4: ``chanbatch.Store`` and ``chanbatch.Blueprint``.

This module sits in the top layer, beside the CLI, because what users get back are dask
DataFrames, and only the upper layers import dask. It imports dask lazily, inside ``read``.
The ``chanbatch`` command is a shell over this module: each command parses its arguments,
calls one method here, and prints the result.

Two classes carry the name "blueprint", one per layer:

- ``chanbatch.blueprint.model.Blueprint`` (imported here as ``BlueprintModel``) is the pure,
  validated data model that the parser returns and the compiler reads;
- :class:`RunnableBlueprint` wraps one model with what users do with it (plan, run, explain,
  draw), and is what the public name ``chanbatch.Blueprint`` stands for.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chanbatch.errors import RefNotFoundError, UsageError, did_you_mean
from chanbatch.snapshot import SnapshotStore
from chanbatch.snapshot.names import SliceKey
from chanbatch.snapshot.select import Selection, SortKey

if TYPE_CHECKING:
    import dask.dataframe as dd
    import pyarrow as pa

    from chanbatch.blueprint.model import Blueprint as BlueprintModel
    from chanbatch.cache.index import CacheEntry
    from chanbatch.snapshot.export import ExportResult
    from chanbatch.snapshot.freeze import FreezeResult
    from chanbatch.snapshot.refs import Resolved
    from chanbatch.view.flow import Flow

__all__ = ["RunnableBlueprint", "Store", "check_report_target"]


class Store(SnapshotStore):
    """A snapshot store whose ``read`` returns a dask DataFrame aligned to slices.

    ``Store(url, storage_options={...})`` opens any fsspec URL with fsspec's options for its
    filesystem, such as ``{"endpoint_url": "http://minio:9000"}`` or ``{"profile": "prod"}`` for
    ``s3://``; without ``storage_options`` they come from ``$CHANBATCH_STORAGE_OPTIONS`` (a JSON
    object), if set. A run's workers open the store with the same options.
    """

    def freeze(
        self,
        dataset: str,
        data: Any,
        *,
        slice: SliceKey | None = None,
        slice_by: str | None = None,
        **options: Any,
    ) -> FreezeResult:
        """Freeze a frame or files into ``dataset``
        (:func:`chanbatch.snapshot.freeze.freeze`). ``slice_by`` is a column, or an expression
        of the blueprint language computing each row's slice key from its columns, such as
        ``"date(time_hour)"`` or ``"year_month(l_shipdate)"``: an integer, date or string."""
        key_of = None
        if slice_by is not None and slice is None and not slice_by.isidentifier():
            # an expression: the engine (and pandas) are imported only for one
            from chanbatch.engine.slicing import slice_key

            key_of = slice_key(slice_by)
        return super().freeze(
            dataset, data, slice=slice, slice_by=slice_by, key_of=key_of, **options
        )

    def read(
        self, ref: str, *, start: SliceKey | None = None, stop: SliceKey | None = None
    ) -> dd.DataFrame:
        """A REF as a dask DataFrame: one partition per object, so at least one per slice.

        Partitions are in slice order and every partition holds rows of one slice only. Each
        object is re-hashed as it is read; a corrupt one raises IntegrityError.
        """
        from chanbatch.run.frames import to_dask

        entries = self.slices(ref, start=start, stop=stop)
        if not entries:
            raise RefNotFoundError(f"{ref} has no slices from {start} to {stop}")
        return to_dask(self.storage, entries)

    def select(
        self,
        ref: str,
        *,
        columns: Sequence[str] | None = None,
        where: str | None = None,
        sort: Sequence[str] = (),
        limit: int | None = None,
    ) -> Selection:
        """The rows of a REF that ``where`` keeps (an expression of the blueprint language; a
        null does not keep a row), sorted by ``sort`` (column names, ``-name`` descending; nulls
        last, ties in slice and row order), at most ``limit`` of them, with only ``columns``.

        Reads only the columns it needs, and without a sort stops reading slices once it has
        ``limit`` rows. Returns a Selection (``.table``, ``.total``, ``.matched``). Raises
        RefNotFoundError for a REF that names nothing, and UsageError for an unknown column or
        a condition that does not parse or is not a condition.
        """
        from chanbatch.snapshot.select import select_rows

        resolved = self.resolve(ref)
        ask = _RowQuery.build(resolved, columns=columns, where=where, sort=sort)
        return select_rows(
            self.storage,
            self.slices(ref),
            columns=ask.columns,
            condition=ask.condition,
            condition_columns=ask.condition_columns,
            sort=ask.sort,
            limit=limit,
        )

    def export(
        self,
        ref: str,
        path: str | os.PathLike[str],
        *,
        format: str | None = None,
        columns: Sequence[str] | None = None,
        where: str | None = None,
        per_slice: bool = False,
        force: bool = False,
    ) -> ExportResult:
        """Write a REF's rows (only ``columns``, those ``where`` keeps) to ``path`` as Parquet,
        CSV or JSON lines (``format``, else ``path``'s suffix): one file, or with ``per_slice``
        one file per slice, named by its key, into the directory ``path``.

        An existing file (a non-empty directory) is replaced only with ``force``. Raises
        UsageError for that, for an unknown format, column or bad condition, and
        RefNotFoundError for a REF that names nothing; see :mod:`chanbatch.snapshot.export`.
        """
        from pathlib import Path

        from chanbatch.snapshot.export import check_target, choose_format, export_tables
        from chanbatch.snapshot.read import arrow_schema
        from chanbatch.snapshot.select import slice_tables

        resolved = self.resolve(ref)
        check_target(Path(path), per_slice=per_slice, force=force)
        fmt = choose_format(path, format, per_slice=per_slice)
        ask = _RowQuery.build(resolved, columns=columns, where=where)
        entries = self.slices(ref)
        if not entries:
            raise RefNotFoundError(f"{ref} has no slices to export")
        schema = arrow_schema(self.storage, resolved.manifest)
        slices = (
            (
                entry.key,
                slice_tables(
                    self.storage,
                    entry,
                    columns=ask.columns,
                    condition=ask.condition,
                    condition_columns=ask.condition_columns,
                ),
            )
            for entry in entries
        )
        return export_tables(
            slices,
            path,
            schema=_project(schema, ask.columns),
            fmt=fmt,
            per_slice=per_slice,
            force=force,
        )

    def catalog(self) -> list[dict[str, Any]]:
        """One document per dataset, by name: its head ``snapshot`` and ``version``, its
        ``slices``, ``rows`` and ``bytes``, and when it was ``updated``.

        Raises IntegrityError when a head's manifest is missing or corrupt."""
        from chanbatch.snapshot.objects import get_snapshot

        rows = []
        for name in self.datasets():
            head = self.history(name)[-1]
            manifest = get_snapshot(self.storage, head.snapshot)
            rows.append(
                {
                    "dataset": name,
                    "snapshot": head.snapshot,
                    "version": head.version,
                    "slices": len(manifest.slices),
                    "rows": manifest.rows,
                    "bytes": manifest.bytes,
                    "updated": head.created_at,
                }
            )
        return rows

    def versions(self, dataset: str) -> list[dict[str, Any]]:
        """The version history of ``dataset``, oldest first, as documents.

        Raises InvalidNameError for a name no dataset can have, and RefNotFoundError when the
        dataset does not exist."""
        from chanbatch.snapshot.names import check_dataset_name

        check_dataset_name(dataset)
        self.resolve(dataset)  # a clear error when the dataset does not exist
        return [e.document() for e in self.history(dataset)]

    def cache_entries(self, *, stage: str | None = None) -> list[CacheEntry]:
        """Every readable cache entry (only ``stage``'s, if given), oldest first."""
        from chanbatch.cache.manage import list_entries

        return list_entries(self.storage, stage=stage)

    def cache_usage(self) -> dict[str, Any]:
        """Cache entries and bytes, in total and per stage (a shared object counts once)."""
        from chanbatch.cache.manage import usage

        return usage(self.storage)

    def evict(
        self, prefixes: Collection[str] = (), *, stage: str | None = None, everything: bool = False
    ) -> list[str]:
        """Evict the cache entries whose key starts with one of ``prefixes``, or of ``stage``,
        or all of them; returns the evicted keys. Objects stay until :meth:`gc`."""
        from chanbatch.cache.manage import evict

        return evict(self.storage, prefixes=prefixes, stage=stage, everything=everything)

    def report(
        self,
        path: str | os.PathLike[str],
        run_id: str | None = None,
        *,
        blueprint: str | None = None,
    ) -> dict[str, Any]:
        """Write the HTML report of run ``run_id`` (an id or unique prefix; None: the latest
        finished run, of the blueprint named ``blueprint`` if given) to ``path``; returns the
        run's record. Raises UsageError for an unknown or unfinished run, or a path that cannot
        be written."""
        from chanbatch.view.report import write_report

        return write_report(self, run_id, path, blueprint=blueprint)


def check_report_target(path: str | os.PathLike[str]) -> None:
    """Raise UsageError now if no report can be written at ``path`` (a directory, a missing or
    read-only folder): what :meth:`RunnableBlueprint.run` checks before running, for callers
    that do expensive work of their own first (the CLI starts a Kubernetes cluster)."""
    from chanbatch.view.report import check_target

    check_target(path)


class RunnableBlueprint:
    """A validated blueprint, ready to plan and run against any store: ``chanbatch.Blueprint``.

    It wraps one ``chanbatch.blueprint.model.Blueprint`` (``.model``), the parser's pure data,
    and adds what users do with it. ``from_yaml`` parses and validates in full; ``plan`` and
    ``run`` take a store (or its URL) and optional ``sets`` rebinding inputs to other REFs, so
    one saved blueprint runs against other snapshots.
    """

    def __init__(self, model: BlueprintModel) -> None:
        self.model = model

    @classmethod
    def from_yaml(cls, path_or_text: str | os.PathLike[str]) -> RunnableBlueprint:
        """Parse a blueprint file or YAML text; raises BlueprintError listing every problem."""
        from chanbatch.blueprint.parse import load_blueprint

        return cls(load_blueprint(path_or_text))

    @property
    def name(self) -> str:
        return self.model.name

    def document(self) -> dict[str, Any]:
        """The blueprint's ``blueprint`` name, ``inputs`` (name -> REF), ``stages`` (names, in
        order) and ``outputs`` (stage -> dataset), as ``chanbatch validate --json`` shows it."""
        return {
            "blueprint": self.model.name,
            "inputs": self.model.inputs,
            "stages": list(self.model.stages),
            "outputs": self.model.outputs,
        }

    def __repr__(self) -> str:
        # imported here: the run layer is not needed to parse, plan or print a blueprint
        from chanbatch.run.display import blueprint_repr

        return blueprint_repr(self.model)

    def _repr_html_(self) -> str:
        """Inputs, stages (with a one-line summary of each spec) and outputs, as tables."""
        from chanbatch.run.display import blueprint_html

        return blueprint_html(self.model)

    def plan(
        self,
        store: SnapshotStore | str,
        *,
        sets: Mapping[str, str] | None = None,
        overwrite: Collection[str] = (),
    ) -> Any:
        """What a run would compute and reuse, and why (a PlanReport; ``.document()``).

        Raises UsageError, as :meth:`run` does, for outputs the run may not write."""
        from chanbatch.run import plan_blueprint

        return plan_blueprint(self.model, _store(store), sets=sets, overwrite=overwrite)

    def explain(
        self,
        store: SnapshotStore | str,
        stage: str,
        slice_key: str | None = None,
        *,
        sets: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """The cache-key components of ``stage``'s tasks (on the slice ``slice_key`` only, if
        given), and which of them differ from the last run; one document per task.

        Raises UsageError for an unknown stage or slice, and RefError for an input REF that
        does not resolve."""
        from chanbatch.run.planned import explain_task

        return explain_task(self.model, _store(store), stage, slice_key, sets=sets)

    def flow(self, store: SnapshotStore | str, *, sets: Mapping[str, str] | None = None) -> Flow:
        """The blueprint's flow graph (``.dot()``, ``.mermaid()``, ``.html()``, ``.render()``),
        each stage coloured by what the next run would do.

        A picture writes nothing, so the outputs a run may write are not checked here (as
        :meth:`plan` and :meth:`run` do). Each output shows its dataset's current snapshot.
        Raises RefError for an input that does not resolve."""
        from chanbatch.run import plan_blueprint
        from chanbatch.view.flow import plan_flow

        opened = _store(store)
        return plan_flow(plan_blueprint(self.model, opened, sets=sets, overwrite=None), opened)

    def run(
        self,
        store: SnapshotStore | str,
        *,
        scheduler: Any = "threads",
        workers: int | None = None,
        sets: Mapping[str, str] | None = None,
        allow_modules: tuple[str, ...] = (),
        progress: Any = None,
        pin_cpus: bool = False,
        report: str | os.PathLike[str] | None = None,
        overwrite: Collection[str] = (),
    ) -> Any:
        """Run and freeze the outputs; returns a RunResult (``.outputs``, ``.stats``).

        ``scheduler`` is ``"threads"``, ``"sync"``, ``"processes"``, a ``tcp://`` address or a
        ``distributed.Client``. ``pin_cpus`` pins each worker process to a core of its own
        (Linux; a warning elsewhere). ``progress`` receives ``begin(totals)``,
        ``advance(stage, outcome)`` and ``message(text)`` calls. ``report`` is a path to write
        the run's HTML report to (a failed run writes none). Raises BlueprintError, RefError
        or StageFailed, and UsageError for a report path that cannot be written (before
        running). An output dataset that exists and was not written by this blueprint (frozen
        by hand, or another blueprint's) is replaced only when ``overwrite`` names it; an
        output that is also an input is always refused (UsageError).
        """
        from chanbatch.run import run_blueprint

        if report is not None:
            from chanbatch.view.report import check_target

            check_target(report)
        opened = _store(store)
        result = run_blueprint(
            self.model,
            opened,
            scheduler=scheduler,
            workers=workers,
            sets=sets,
            allow_modules=allow_modules,
            progress=progress,
            pin_cpus=pin_cpus,
            overwrite=overwrite,
            repeat=report is None,  # a report draws the run's tasks: plan them
        )
        if report is not None:
            from chanbatch.view.report import write_report

            write_report(opened, result.run_id, report, model=self.model)
        return result


@dataclass(frozen=True, slots=True, kw_only=True)
class _RowQuery:
    """The checked parts of a ``select`` or ``export``: the columns to return, the condition
    (a function of a table) with the columns it reads, and the sort."""

    columns: list[str]
    condition: Callable[[pa.Table], Any] | None
    condition_columns: list[str]
    sort: list[SortKey]

    @classmethod
    def build(
        cls,
        resolved: Resolved,
        *,
        columns: Sequence[str] | None,
        where: str | None,
        sort: Sequence[str] = (),
    ) -> _RowQuery:
        """Raises UsageError for an unknown column, an empty column list, and a condition that
        does not parse, mixes types or is not a condition."""
        types = {c.name: c.type for c in resolved.manifest.schema}
        if columns is not None and not columns:
            raise UsageError(
                "no columns given", hint=f"{resolved.dataset}'s columns: {_names(types)}"
            )
        chosen = list(dict.fromkeys(columns if columns is not None else types))
        for name in chosen:
            _check_column(name, types, resolved.dataset, "")
        keys = []
        for text in sort:
            name = text[1:] if text.startswith("-") else text
            _check_column(name, types, resolved.dataset, "sort by ")
            keys.append(SortKey(column=name, descending=text.startswith("-")))
        if where is None:
            return cls(columns=chosen, condition=None, condition_columns=[], sort=keys)
        condition, reads = _condition(where, types, resolved.dataset)
        return cls(columns=chosen, condition=condition, condition_columns=reads, sort=keys)


def _names(types: Mapping[str, str]) -> str:
    names = list(types)
    return ", ".join(names[:12]) + (f" ... ({len(names)} in all)" if len(names) > 12 else "")


def _check_column(name: str, types: Mapping[str, str], dataset: str, doing: str) -> None:
    if name not in types:
        raise UsageError(
            f"cannot {doing or 'select '}column {name!r}: {dataset} has no such column",
            hint=did_you_mean(name, types) or f"its columns: {_names(types)}",
        )


def _condition(
    where: str, types: Mapping[str, str], dataset: str
) -> tuple[Callable[[pa.Table], Any], list[str]]:
    """The condition ``where`` as a function from a table to its boolean mask, and the columns it
    reads; checked against the column types first, as a blueprint's filter is at plan time."""
    from chanbatch.blueprint.expr import parse_expr
    from chanbatch.blueprint.problems import ExprError
    from chanbatch.compile.types import TypeProblem, infer, kind_of_arrow

    try:
        expr = parse_expr(where)
    except ExprError as exc:
        raise UsageError(f"cannot read condition {where!r}: {exc}", hint=exc.hint) from exc
    reads = sorted(expr.columns())
    for name in reads:
        if name not in types:
            raise UsageError(
                f"condition {where!r} reads column {name!r}, which {dataset} does not have",
                hint=did_you_mean(name, types) or f"its columns: {_names(types)}",
            )
    try:
        kind = infer(expr, {n: kind_of_arrow(t) for n, t in types.items()})
    except TypeProblem as exc:
        raise UsageError(f"condition {where!r}: {exc}") from exc
    if kind not in ("bool", "other", None):
        raise UsageError(
            f"{where!r} is not a condition: it gives a {kind} for each row",
            hint="compare it with something, e.g. dep_delay > 60",
        )

    def mask(table: pa.Table) -> Any:
        import pyarrow as pa

        from chanbatch.engine.arrow_eval import ArrowEvaluator, Unsupported, is_array, value_kind

        try:
            value = ArrowEvaluator(table).eval(expr)
            if is_array(value) and value_kind(value) == "bool":
                return value
        except (Unsupported, pa.ArrowException, ArithmeticError):
            pass  # the pandas evaluator defines what an expression means: it decides
        from chanbatch.engine import evaluate_mask
        from chanbatch.snapshot.read import to_pandas

        return pa.array(evaluate_mask(expr, to_pandas(table)).to_numpy(dtype=bool))

    return mask, reads


def _project(schema: pa.Schema, columns: Sequence[str]) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([schema.field(name) for name in columns])


def _store(store: SnapshotStore | str) -> SnapshotStore:
    return store if isinstance(store, SnapshotStore) else Store(store)
