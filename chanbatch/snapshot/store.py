"""The store: one object over a store URL, with a method per verb of this package."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from chanbatch.errors import IntegrityError
from chanbatch.snapshot import options, refs
from chanbatch.snapshot.names import SliceKey
from chanbatch.snapshot.storage import Storage

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from chanbatch.snapshot import describe as _describe
    from chanbatch.snapshot import diff as _diff
    from chanbatch.snapshot import freeze as _freeze
    from chanbatch.snapshot import gc as _gc
    from chanbatch.snapshot import inspect as _inspect
    from chanbatch.snapshot import pins as _pins
    from chanbatch.snapshot import verify as _verify

DEFAULT_STORE = "snapshots"


def default_store_url() -> str:
    """``$CHANBATCH_STORE`` if set, else ``./snapshots``."""
    return os.environ.get("CHANBATCH_STORE") or DEFAULT_STORE


class SnapshotStore:
    """A content-addressed snapshot store at any fsspec URL (a path, ``memory://``, ``s3://``)."""

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        *,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        """Open the store at ``url`` (default ``$CHANBATCH_STORE``, else ``./snapshots``).

        ``storage_options`` are fsspec's keyword arguments for the store's filesystem, such as
        ``{"endpoint_url": "http://localhost:9000"}`` or ``{"profile": "prod"}`` for S3; None
        reads them from ``$CHANBATCH_STORAGE_OPTIONS`` (a JSON object; unset: none). Workers of
        a run open the store with the same options. Raises UsageError for a malformed
        ``$CHANBATCH_STORAGE_OPTIONS``, StoreUrlError for a URL that names no store (an unknown
        protocol), and StoreError when the store's filesystem cannot be made.
        """
        if storage_options is None:
            storage_options = options.from_environment()
        resolved = os.fspath(url) if url is not None else default_store_url()
        self.storage = Storage(resolved, dict(storage_options))
        options.remember(self.storage.url, self.storage.options)

    @property
    def url(self) -> str:
        return self.storage.url

    @property
    def storage_options(self) -> dict[str, Any]:
        """The fsspec options the store was opened with (secrets included: show
        :meth:`document` instead)."""
        return dict(self.storage.options)

    def document(self) -> dict[str, Any]:
        """``{"url", "options"}`` as reports show the store: credentials replaced by ``***``."""
        return {
            "url": options.redacted_url(self.url),
            "options": options.redacted(self.storage.options),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # -- writing --------------------------------------------------------------------------------

    def freeze(
        self,
        dataset: str,
        data: Any,
        *,
        slice: SliceKey | None = None,
        slice_by: str | None = None,
        lineage: dict[str, Any] | None = None,
        progress: _freeze.Progress | None = None,
        encoding: str = "utf-8",
        key_of: _freeze.KeyFunction | None = None,
    ) -> _freeze.FreezeResult:
        """Freeze a frame or files into ``dataset``; see :func:`chanbatch.snapshot.freeze.freeze`."""
        from chanbatch.snapshot import freeze as _freeze

        return _freeze.freeze(
            self.storage,
            dataset,
            data,
            slice=slice,
            slice_by=slice_by,
            lineage=lineage,
            progress=progress,
            encoding=encoding,
            key_of=key_of,
        )

    # -- reading --------------------------------------------------------------------------------

    def resolve(self, ref: str, *, lazy: bool = False) -> refs.Resolved:
        """Resolve a REF; raises RefNotFoundError or AmbiguousRefError (``lazy``: see
        :func:`chanbatch.snapshot.refs.resolve`)."""
        return refs.resolve(self.storage, ref, lazy=lazy)

    def snapshot(self, ref: str) -> _describe.Snapshot:
        """The snapshot a REF names, from its manifest and ref-log entry (no data is read).

        Raises RefNotFoundError or AmbiguousRefError as :meth:`resolve` does.
        """
        from chanbatch.snapshot import describe as _describe

        return _describe.describe(self.resolve(ref))

    def datasets(self) -> list[str]:
        """Names of the datasets in the store."""
        return refs.list_datasets(self.storage)

    def history(self, dataset: str) -> list[refs.RefEntry]:
        """The ref log of ``dataset``, oldest first."""
        return refs.history(self.storage, dataset)

    def slices(
        self, ref: str, *, start: SliceKey | None = None, stop: SliceKey | None = None
    ) -> list[Any]:
        """The slice entries a REF and an optional inclusive key range select."""
        from chanbatch.snapshot import read as _read

        resolved = self.resolve(ref)
        return _read.select_slices(
            resolved.manifest, key=resolved.slice_key, start=start, stop=stop
        )

    def read_table(
        self, ref: str, *, start: SliceKey | None = None, stop: SliceKey | None = None
    ) -> pa.Table:
        """A REF's rows as one Arrow table, verified as read."""
        from chanbatch.snapshot import read as _read

        resolved = self.resolve(ref)
        entries = _read.select_slices(
            resolved.manifest, key=resolved.slice_key, start=start, stop=stop
        )
        if not entries:
            return _read.arrow_schema(self.storage, resolved.manifest).empty_table()
        return _read.read_table(self.storage, entries)

    def read_pandas(
        self, ref: str, *, start: SliceKey | None = None, stop: SliceKey | None = None
    ) -> pd.DataFrame:
        """A REF's rows as one pandas frame, verified as read."""
        from chanbatch.snapshot import read as _read

        return _read.to_pandas(self.read_table(ref, start=start, stop=stop))

    # -- maintenance ----------------------------------------------------------------------------

    def inspect(self, ref: str) -> _inspect.InspectReport:
        """Schema, counts, column statistics, lineage and history of a REF."""
        from chanbatch.snapshot import inspect as _inspect

        return _inspect.inspect(self.storage, self.resolve(ref))

    def verify(self, ref: str | None = None) -> _verify.VerifyReport:
        """Re-hash the whole store, or what one REF needs.

        A REF whose own snapshot manifest is damaged is reported in ``corrupt``, not raised.
        """
        from chanbatch.snapshot import verify as _verify

        if not ref:
            return _verify.verify(self.storage, None)
        try:
            resolved = self.resolve(ref)
        except IntegrityError:
            entry = refs.resolve_entry(self.storage, ref)
            return _verify.verify_snapshot(self.storage, entry.snapshot)
        return _verify.verify(self.storage, resolved)

    def diff(self, a: str, b: str) -> _diff.DiffReport:
        """Compare two REFs slice by slice."""
        from chanbatch.snapshot import diff as _diff

        return _diff.diff(self.resolve(a), self.resolve(b))

    def pin(self, ref: str) -> tuple[_pins.Pin, bool]:
        """Pin a REF's snapshot so gc keeps it."""
        from chanbatch.snapshot import pins as _pins

        return _pins.pin(self.storage, self.resolve(ref))

    def unpin(self, ref: str) -> bool:
        """Unpin a REF's snapshot; returns whether it was pinned."""
        from chanbatch.snapshot import pins as _pins

        return _pins.unpin(self.storage, self.resolve(ref))

    def pins(self) -> list[_pins.Pin]:
        from chanbatch.snapshot import pins as _pins

        return _pins.list_pins(self.storage)

    def gc(
        self,
        *,
        grace_seconds: float = 3600.0,
        dry_run: bool = False,
        keep_versions: int | None = None,
    ) -> _gc.GcReport:
        """Sweep what nothing references; see :mod:`chanbatch.snapshot.gc`."""
        from chanbatch.snapshot import gc as _gc

        return _gc.gc(
            self.storage, grace_seconds=grace_seconds, dry_run=dry_run, keep_versions=keep_versions
        )
