"""The Python API of DESIGN.md section 4: ``chanbatch.Store`` and ``chanbatch.Blueprint``.

This module sits in the top layer, beside the CLI, because what users get back are dask
DataFrames, and only the upper layers import dask. It imports dask lazily, inside ``read``.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from chanbatch.snapshot import SnapshotStore
from chanbatch.snapshot.names import SliceKey

if TYPE_CHECKING:
    import dask.dataframe as dd

    from chanbatch.blueprint.model import Blueprint as BlueprintModel


class Store(SnapshotStore):
    """A snapshot store whose ``read`` returns a dask DataFrame aligned to slices."""

    def read(
        self, ref: str, *, start: SliceKey | None = None, stop: SliceKey | None = None
    ) -> dd.DataFrame:
        """A REF as a dask DataFrame: one partition per object, so at least one per slice.

        Partitions are in slice order and every partition holds rows of one slice only. Each
        object is re-hashed as it is read; a corrupt one raises IntegrityError.
        """
        from chanbatch.errors import RefNotFoundError
        from chanbatch.run.frames import to_dask

        entries = self.slices(ref, start=start, stop=stop)
        if not entries:
            raise RefNotFoundError(f"{ref} has no slices from {start} to {stop}")
        return to_dask(self.storage, entries)


class Blueprint:
    """A validated blueprint, ready to plan and run against any store.

    ``Blueprint.from_yaml`` parses and validates in full; ``plan`` and ``run`` take a store (or
    its URL) and optional ``sets`` rebinding inputs to other REFs, so one saved blueprint runs
    against other snapshots.
    """

    def __init__(self, model: BlueprintModel) -> None:
        self.model = model

    @classmethod
    def from_yaml(cls, path_or_text: str | os.PathLike[str]) -> Blueprint:
        """Parse a blueprint file or YAML text; raises BlueprintError listing every problem."""
        from chanbatch.blueprint.parse import load_blueprint

        return cls(load_blueprint(path_or_text))

    @property
    def name(self) -> str:
        return self.model.name

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
        )
        if report is not None:
            from chanbatch.view.report import write_report

            write_report(opened, result.run_id, report, model=self.model)
        return result


def _store(store: SnapshotStore | str) -> SnapshotStore:
    return store if isinstance(store, SnapshotStore) else Store(store)
