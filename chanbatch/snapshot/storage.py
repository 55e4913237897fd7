"""Byte-level access to a store over fsspec, with the two write primitives the layout needs.

- :meth:`Storage.write_atomic`: the file appears whole or not at all. Locally it is written
  under ``tmp/`` and renamed into place; on object stores (and ``memory://``) one put already is
  atomic.
- :meth:`Storage.create_exclusive`: as above, and it fails if the file exists. Locally it uses a
  hard link, which is both atomic and exclusive (``link(2)`` refuses to replace), so a reader
  never sees a half-written ref; elsewhere it uses fsspec's ``mode="create"``.
- :meth:`Storage.refresh`: a content-addressed file that a writer reuses instead of writing
  gets a fresh mtime, because gc's grace period is counted from the mtime (see its docstring).

Paths given to this class are relative to the store root and always built by the layout
functions in this package, never from raw user input.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

from chanbatch.errors import ChanbatchError, StoreError, StoreUrlError

TMP_DIR = "tmp"
#: On stores that cannot set a file's mtime (object stores, ``memory://``), a reused file is
#: written again (same bytes, one atomic put) when it is older than this, and left alone when
#: younger: gc's grace period must exceed this plus the longest freeze or run (default 1h).
REFRESH_AFTER = 60.0


class Storage:
    """A store root on any fsspec filesystem, opened with ``storage_options`` (fsspec's keyword
    arguments for it, such as an S3 ``endpoint_url``; a plain local path takes none)."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = str(url)
        self.options: dict[str, Any] = dict(storage_options or {})
        self._fs: Any = None
        local = _local_path(self.url)
        if local is not None:
            # A plain path needs no fsspec: importing it costs more than listing a store.
            self.root: str = os.path.abspath(local).rstrip("/") or "/"
            self.is_local = True
            _check_local_root(self.url, self.root)
            return
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        try:
            fs, root = fsspec.core.url_to_fs(self.url, **self.options)
        except Exception as exc:  # fsspec's, its backends' and their clients' errors alike
            raise _open_error(self.url, exc) from exc
        self._fs = fs
        self.root = root.rstrip("/") if root not in ("/", "") else root
        self.is_local = isinstance(fs, LocalFileSystem)

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (made on first use for local stores)."""
        if self._fs is None:
            from fsspec.implementations.local import LocalFileSystem

            self._fs = LocalFileSystem()
        return self._fs

    # -- paths ------------------------------------------------------------------------------

    def full(self, rel: str) -> str:
        """The filesystem path of ``rel``."""
        return f"{self.root}/{rel}" if rel else self.root

    def local_path(self, rel: str) -> str | None:
        """The OS path of ``rel`` if the store is on a local disk, else None."""
        return self.full(rel) if self.is_local else None

    @property
    def location(self) -> str:
        """Where the store is, as messages name it: the absolute path of a local store (a
        relative ``--store`` typo then shows where it was looked for), else its URL."""
        return self.root if self.is_local else self.url

    def root_exists(self) -> bool:
        """Whether the store's root is there: a store is made by its first write (or ``init``),
        so a missing root means nothing was ever written to this URL."""
        if self.is_local:
            return os.path.isdir(self.root)
        with self.reaching():
            return bool(self.fs.exists(self._fresh("")))

    def _fresh(self, rel: str) -> str:
        """The filesystem path of ``rel``, with what the filesystem cached about it forgotten.

        Some fsspec filesystems (s3fs, gcsfs, adlfs) cache directory listings per instance and
        answer ``exists``, ``info`` and ``ls`` from them. Other processes write the store (a
        concurrent freeze, a gc), so a cached listing would hide a new ref version, and the
        ref log's retry after a lost race would read the same stale head again and again."""
        path = self.full(rel)
        self.fs.invalidate_cache(path)
        return path

    # -- reads --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def reaching(self) -> Iterator[None]:
        """Turn a remote store's failure to answer (no such host, refused, timed out, denied)
        into a StoreError that names the store; a missing file passes through."""
        try:
            yield
        except (FileNotFoundError, FileExistsError):
            raise
        except OSError as exc:
            raise _open_error(self.url, exc) from exc

    def read_bytes(self, rel: str) -> bytes:
        """The bytes of ``rel``; raises FileNotFoundError if it does not exist."""
        if self.is_local:
            with open(self.full(rel), "rb") as handle:
                return handle.read()
        with self.reaching():
            return self.fs.cat_file(self.full(rel))

    def exists(self, rel: str) -> bool:
        if self.is_local:
            return os.path.exists(self.full(rel))
        with self.reaching():
            return bool(self.fs.exists(self._fresh(rel)))

    def listdir(self, rel: str) -> list[str]:
        """Names (not paths) of the entries directly under ``rel``; empty if it does not exist."""
        if self.is_local:
            try:
                return sorted(os.listdir(self.full(rel)))
            except FileNotFoundError:
                return []
        try:
            with self.reaching():
                entries = self.fs.ls(self._fresh(rel), detail=False)
        except FileNotFoundError:
            return []
        return sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries)

    def walk(self, rel: str) -> Iterator[tuple[str, float, int]]:
        """Every file under ``rel``: (path relative to the root, mtime in epoch seconds, size)."""
        if self.is_local:
            base = self.full(rel)
            for dirpath, _dirs, files in os.walk(base):
                for name in files:
                    path = os.path.join(dirpath, name)
                    try:
                        stat = os.stat(path)
                    except FileNotFoundError:  # removed while walking
                        continue
                    yield os.path.relpath(path, self.root), stat.st_mtime, stat.st_size
            return
        try:
            with self.reaching():
                found = self.fs.find(self._fresh(rel), detail=True)
        except FileNotFoundError:
            return
        prefix = len(self.root) + 1 if self.root else 0
        for path, info in found.items():
            yield path[prefix:].lstrip("/"), _mtime(info), int(info.get("size") or 0)

    def mtime(self, rel: str) -> float | None:
        """Modification time of ``rel`` in epoch seconds, or None if it does not exist."""
        if self.is_local:
            try:
                return os.stat(self.full(rel)).st_mtime
            except FileNotFoundError:
                return None
        try:
            with self.reaching():
                return _mtime(self.fs.info(self._fresh(rel)))
        except FileNotFoundError:
            return None

    # -- writes -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def writing(self, what: str, *, verb: str = "write") -> Iterator[None]:
        """Turn the system's refusal to write ``what`` (a full disk, a quota, a read-only or
        forbidden folder) into a StoreError that says so; other errors pass through.

        ``verb`` is what was refused: ``write``, or ``remove`` (gc, cache evict), after which
        the command may have removed some files already, all of them unreferenced."""
        try:
            yield
        except (FileNotFoundError, FileExistsError):
            raise
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else _short(exc)
            hint = _WRITE_HINTS.get(exc.errno or 0, "check the store's disk and permissions")
            if verb == "write":
                hint += "; nothing partial was published, so the command can simply be run again"
            raise StoreError(
                f"cannot {verb} {what} in store {self.url}: {reason}", hint=hint
            ) from exc

    def write_atomic(self, rel: str, data: bytes | memoryview) -> None:
        """Write ``data`` to ``rel`` so that readers see all of it or nothing.

        Raises StoreError when the system refuses the write (see :meth:`writing`)."""
        with self.writing(rel):
            if not self.is_local:
                self.fs.pipe_file(self.full(rel), bytes(data))
                return
            tmp = self._write_tmp(data)
            target = self.full(rel)
            try:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(tmp, target)
            except BaseException:
                _remove(tmp)
                raise

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` holding ``data``; False (and nothing written) if it already exists."""
        with self.writing(rel):
            if not self.is_local:
                path = self._fresh(rel)
                if self.fs.exists(path):  # spares the upload when the race is already lost
                    return False
                try:
                    self.fs.pipe_file(path, data, mode="create")
                except FileExistsError:
                    return False
                return True
            tmp = self._write_tmp(data)
            target = self.full(rel)
            try:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.link(tmp, target)
            except FileExistsError:
                return False
            finally:
                _remove(tmp)
            return True

    def refresh(self, rel: str, data: bytes | memoryview) -> bool:
        """Whether ``rel`` exists; if it does, it is made young again for gc.

        A writer that finds a content-addressed file already there (debris of a failed freeze,
        an object whose cache entry gc removed, another writer's) references it instead of
        writing it. Its old mtime would let gc delete it between that check and the writer's
        ref commit, leaving the ref pointing at nothing; so its mtime is set to now. ``data``
        is the file's content (equal to what is there, being content-addressed): where the
        mtime cannot be set, the file is written again instead. When this returns False the
        caller writes the file.
        """
        if self.is_local:
            try:
                with self.writing(rel):
                    os.utime(self.full(rel))
            except FileNotFoundError:
                return False
            except StoreError as exc:
                if not isinstance(exc.__cause__, PermissionError):
                    raise  # a read-only filesystem: replacing the file fails the same way
                # another user's file: replacing it needs only the folder
                self.write_atomic(rel, data)
            return True
        # fsspec's touch(truncate=False) is NotImplemented on most object stores: rewrite.
        mtime = self.mtime(rel)
        if mtime is None:
            return False
        if time.time() - mtime >= REFRESH_AFTER:
            with self.writing(rel):
                self.fs.pipe_file(self.full(rel), bytes(data))
        return True

    def delete(self, rel: str) -> None:
        """Remove ``rel``; a file that is already gone is not an error.

        Raises StoreError when the system refuses (a read-only or forbidden store)."""
        try:
            with self.writing(rel, verb="remove"):
                if self.is_local:
                    os.unlink(self.full(rel))
                else:
                    self.fs.rm_file(self.full(rel))
        except FileNotFoundError:
            pass

    def tmp_path(self) -> str:
        """A fresh local path under ``tmp/`` to write a file into (local stores only)."""
        tmp_dir = self.full(TMP_DIR)
        with self.writing(TMP_DIR):
            os.makedirs(tmp_dir, exist_ok=True)
        return os.path.join(tmp_dir, f"{uuid.uuid4().hex}.tmp")

    def adopt(self, tmp: str, rel: str, *, replace: bool = False) -> bool:
        """Move a finished local temp file to ``rel``; False (and the temp file removed) if
        ``rel`` already exists, as it does for content-addressed files seen before. An existing
        file is refreshed for gc, as by :meth:`refresh`. With ``replace`` (what is there is
        damaged) the temp file takes its place whatever is there."""
        target = self.full(rel)
        with self.writing(rel):
            try:
                if not replace:
                    os.utime(target)
            except FileNotFoundError:
                pass  # new, or removed by gc since a writer last saw it: move ours into place
            except PermissionError:
                pass  # another user's file that we cannot touch: replace it with ours (same bytes)
            else:
                if not replace:
                    os.unlink(tmp)
                    return False
        with self.writing(rel):
            try:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(tmp, target)
            except BaseException:
                _remove(tmp)
                raise
        return True

    def _write_tmp(self, data: bytes | memoryview) -> str:
        tmp = self.tmp_path()
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
        except BaseException:  # a full disk leaves no half-written temp file behind
            _remove(tmp)
            raise
        return tmp


_WRITE_HINTS = {
    errno.ENOSPC: "the disk is full: free some space (`chanbatch gc` removes debris)",
    errno.EDQUOT: "the disk quota is used up: free some space (`chanbatch gc` removes debris)",
    errno.EROFS: "the store is on a read-only filesystem: use a writable store, or remount it "
    "read-write",
    errno.EACCES: "you may not write to the store's folder: check its permissions, or use a "
    "store of your own",
    errno.EPERM: "you may not write to the store's folder: check its permissions, or use a "
    "store of your own",
}


def _remove(path: str) -> None:
    """Clean up a temp file on the way out of a failure, which it must never hide: on a
    read-only filesystem even removing a file that is not there fails (EROFS)."""
    with contextlib.suppress(OSError):
        os.unlink(path)


def _check_local_root(url: str, root: str) -> None:
    """Refuse a store path that is, or runs through, a regular file (``--store flights.csv``):
    every read would fail with NotADirectoryError, and a freeze could not create it."""
    existing = root  # a new store is made on the first write: look at what it would be made in
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if os.path.isdir(existing):
        return
    what = f"store {url} is" if existing == root else f"store {url}: {existing} is"
    raise StoreUrlError(
        f"{what} a file, not a directory",
        hint="a store is a directory: give --store the path of a new or existing store folder, "
        "such as ./snapshots",
    )


def _short(exc: BaseException, limit: int = 120) -> str:
    """A foreign error's message on one short line (some quote pages of search paths)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _open_error(url: str, exc: BaseException) -> ChanbatchError:
    """The error for a store URL that fsspec cannot open or whose filesystem does not answer."""
    if isinstance(exc, ValueError) and "protocol" in str(exc).lower():
        protocol = url.split("://", 1)[0]
        return StoreUrlError(
            f"cannot open store {url}: unknown protocol {protocol!r}",
            hint="give a local path, or a URL of an installed fsspec filesystem "
            "(memory://, s3:// with s3fs, gs:// with gcsfs, ...)",
        )
    if isinstance(exc, ImportError):
        return StoreError(
            f"cannot open store {url}: {_short(exc)}",
            hint="install the filesystem package its protocol needs, or give a local path",
        )
    if isinstance(exc, OSError):
        reason = exc.strerror if exc.strerror and not exc.filename else _short(exc)
        return StoreError(
            f"cannot reach store {url}: {reason}",
            hint="check the URL's host and port, the network, and the store's credentials",
        )
    return StoreError(
        f"cannot open store {url}: {type(exc).__name__}: {_short(exc)}",
        hint="check the URL and the store's credentials",
    )


def _local_path(url: str) -> str | None:
    """The OS path of a store URL that names a local directory, else None."""
    if url.startswith("file://"):
        return url[len("file://") :]
    return None if "://" in url or "::" in url else url


def _mtime(info: dict[str, Any]) -> float:
    for field in ("mtime", "LastModified", "last_modified", "created", "updated"):
        value = info.get(field)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return time.time()  # unknown age: treat as brand new, so gc's grace period protects it
