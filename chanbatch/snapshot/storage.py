"""Byte-level access to a store over fsspec, with the two write primitives the layout needs.

- :meth:`Storage.write_atomic`: the file appears whole or not at all. Locally it is written
  under ``tmp/`` and renamed into place; on object stores (and ``memory://``) one put already is
  atomic.
- :meth:`Storage.create_exclusive`: as above, and it fails if the file exists. Locally it uses a
  hard link, which is both atomic and exclusive (``link(2)`` refuses to replace), so a reader
  never sees a half-written ref; elsewhere it uses fsspec's ``mode="create"``.
- :meth:`Storage.refresh`: a content-addressed file that a writer reuses instead of writing
  gets a fresh mtime, because gc's grace period is counted from the mtime (see its docstring).
- :meth:`Storage.create_new`: on an object store, a content-addressed file is written with one
  conditional request, which also says whether it was there already; looking first would cost
  two more (on S3 a HEAD, and a LIST after its 404).

Paths given to this class are relative to the store root and always built by the layout
functions in this package, never from raw user input.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from chanbatch.errors import ChanbatchError, NoStoreError, StoreError, StoreUrlError

if TYPE_CHECKING:
    from concurrent.futures import Future

TMP_DIR = "tmp"
#: On stores that cannot set a file's mtime (object stores, ``memory://``), a reused file is
#: written again (same bytes, one atomic put) when it is older than this, and left alone when
#: younger: gc's grace period must exceed this plus the longest freeze or run (default 1h).
REFRESH_AFTER = 60.0
#: Reads :meth:`Storage.read_ahead` has in flight at once on an object store.
_AHEAD_THREADS = 32

#: The content-addressed files this process created on remote stores, with when (monotonic),
#: while a command that writes some twice runs (:func:`remembering`): see
#: :meth:`Storage.made_here`. Shared by every Storage of one store (a run opens several).
_MADE: dict[tuple[str, str, str], float] = {}
_REMEMBERING = [0]  # how many :func:`remembering` blocks are open
_REMEMBER_LOCK = threading.Lock()


@contextlib.contextmanager
def remembering() -> Iterator[None]:
    """While the block runs, the content-addressed files this process creates are trusted when
    it writes them again (:meth:`Storage.made_here`): a run stores a result in the cache and
    then in its output. Forgotten when the last such block ends: a store deleted and made
    again by a later command of the same process is written in full."""
    with _REMEMBER_LOCK:
        _REMEMBERING[0] += 1
    try:
        yield
    finally:
        with _REMEMBER_LOCK:
            _REMEMBERING[0] -= 1
            if not _REMEMBERING[0]:
                _MADE.clear()


class Storage:
    """A store root on any fsspec filesystem, opened with ``storage_options`` (fsspec's keyword
    arguments for it, such as an S3 ``endpoint_url``; a plain local path takes none)."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = str(url)
        self.options: dict[str, Any] = dict(storage_options or {})
        self._whole: dict[str, Any] | None = None  # see _whole_reads
        self._fs: Any = None
        self._identity = (self.url, repr(sorted(self.options.items())))
        self._ahead: dict[str, Future[bytes]] = {}  # see read_ahead
        self._listing: dict[str, Future[list[str]]] = {}  # see list_ahead
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
        so a missing root means nothing was ever written to this URL.

        Raises NoStoreError when the first part of a remote store's path (an object store's
        bucket) is not there either: no write could make the store."""
        if self.is_local:
            return os.path.isdir(self.root)
        with self.reaching():
            # one listing answers (an object store's exists is a HEAD, then that listing)
            with contextlib.suppress(FileNotFoundError):
                if self.fs.ls(self._fresh(""), detail=False):
                    return True
            # fsspec gives an object store's paths as "bucket/key" (no leading slash), and a
            # missing bucket is worth its own message: no write can make the store there
            top = self.root.split("/", 1)[0]
            if self.root.startswith("/") or top == self.root:
                return False
            if self.fs.exists(self._fresh_path(top)):
                return False
        raise NoStoreError(
            f"no store at {self.url}: {_top(self.url)} was not found",
            hint="create the bucket, or check its name in the store URL (and that the "
            "credentials in use may see it)",
        )

    def _fresh(self, rel: str) -> str:
        """The filesystem path of ``rel``, with what the filesystem cached about it forgotten.

        Some fsspec filesystems (s3fs, gcsfs, adlfs) cache directory listings per instance and
        answer ``exists``, ``info`` and ``ls`` from them. Other processes write the store (a
        concurrent freeze, a gc), so a cached listing would hide a new ref version, and the
        ref log's retry after a lost race would read the same stale head again and again."""
        return self._fresh_path(self.full(rel))

    def _fresh_path(self, path: str) -> str:
        self.fs.invalidate_cache(path)
        return path

    # -- reads --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def reaching(self) -> Iterator[None]:
        """Turn a remote store's failure to answer (no such host, refused, timed out, denied,
        no credentials, busy after its client's retries) into a StoreError that names the
        store; a missing file passes through.

        The filesystem's client raises what it likes (OSError subclasses, or its own classes
        such as a missing-credentials error): only fsspec calls run in here, so every other
        error is the store's, and is wrapped once, here."""
        try:
            yield
        except (FileNotFoundError, FileExistsError, ChanbatchError):
            raise
        except Exception as exc:
            raise _reach_error(self.url, exc) from exc

    def read_bytes(self, rel: str, *, small: bool = False) -> bytes:
        """The bytes of ``rel``; raises FileNotFoundError if it does not exist. ``small``: the
        caller knows it is (a data object whose size a manifest or cache entry states), so a
        remote store reads it in one request."""
        if self.is_local:
            with open(self.full(rel), "rb") as handle:
                return handle.read()
        ahead = self._ahead.pop(rel, None)
        if ahead is not None:
            return ahead.result()
        return self._cat(rel, small)

    def read_ahead(self, rels: list[str], *, small: bool = False) -> None:
        """Start reading the files ``rels`` at once, for the next :meth:`read_bytes` of each to
        take (once), as a command that reads them one after another would wait on each.

        On an object store they are read on threads (at most ``_AHEAD_THREADS`` at once), so
        that they cost about one round trip together; ``small`` as for :meth:`read_bytes`. On a
        local disk the kernel is asked to read them into its page cache
        (``posix_fadvise(WILLNEED)``), which it does at once for all of them: files that are
        not there already (a cold run over data frozen days ago) are then read from the disk
        together, not one by one, and those that are cost a system call each."""
        if self.is_local:
            _advise([self.full(rel) for rel in dict.fromkeys(rels)])
            return
        from concurrent.futures import ThreadPoolExecutor

        todo = [rel for rel in dict.fromkeys(rels) if rel not in self._ahead]
        if not todo:
            return
        pool = ThreadPoolExecutor(
            min(len(todo), _AHEAD_THREADS), thread_name_prefix="chanbatch-read"
        )
        for rel in todo:
            self._ahead[rel] = pool.submit(self._cat, rel, small)
        pool.shutdown(wait=False)  # its threads end as their reads do; the futures keep them

    def forget_ahead(self, rels: list[str]) -> None:
        """Drop what :meth:`read_ahead` read of ``rels`` and nobody took (a caller that stopped
        early, on an error): its bytes are not kept for the life of this Storage."""
        for rel in rels:
            self._ahead.pop(rel, None)

    def _cat(self, rel: str, small: bool) -> bytes:
        """A remote store's read of ``rel``, now (not through :meth:`read_ahead`)."""
        with self.reaching():
            return self.fs.cat_file(self.full(rel), **self._whole_reads(rel, small))

    def _whole_reads(self, rel: str, small: bool) -> dict[str, Any]:
        """Options that read ``rel`` in one request. A filesystem that can read a big file in
        parallel ranges (s3fs) first asks for its size: a HEAD before the GET of every
        manifest, ref, entry and record, which are small. A data object of unknown size keeps
        the default (a big one is read faster in parallel ranges)."""
        if rel.startswith("objects/") and not small:
            return {}
        if self._whole is None:
            cat = getattr(type(self.fs), "_cat_file", None)
            try:
                takes = cat is not None and "max_concurrency" in inspect.signature(cat).parameters
            except (TypeError, ValueError):
                takes = False
            self._whole = {"max_concurrency": 1} if takes else {}
        return self._whole

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
        ahead = self._listing.pop(rel, None)
        if ahead is not None:
            return ahead.result()
        return self._list(rel)

    def list_ahead(self, rel: str) -> None:
        """Start listing ``rel`` on a thread, for the next :meth:`listdir` of it to take (once),
        as :meth:`read_ahead` reads files: the listing then costs no round trip of its own.
        Nothing on a local disk."""
        if self.is_local or rel in self._listing:
            return
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(1, thread_name_prefix="chanbatch-list")
        self._listing[rel] = pool.submit(self._list, rel)
        pool.shutdown(wait=False)

    def _list(self, rel: str) -> list[str]:
        """A remote store's listing of ``rel``, now (see :meth:`listdir`)."""
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
        except FileNotFoundError as exc:
            if self.is_local or verb != "write":
                raise
            # a put names no folder that could be missing: the bucket (container) is
            raise StoreError(
                f"cannot {verb} {what} in store {self.url}: {_short(exc)}",
                hint=f"{_top(self.url)} does not exist: create it, or check its name in the "
                "store URL; nothing was published",
            ) from exc
        except (FileExistsError, ChanbatchError):
            raise
        except OSError as exc:
            if self.is_local:
                reason = os.strerror(exc.errno) if exc.errno else _short(exc)
            else:  # the server's own words ("Please reduce your request rate.")
                reason = exc.strerror or _short(exc)
            if not self.is_local and isinstance(exc, PermissionError):
                hint = _DENIED_HINT
            else:
                default = "check the store's disk and permissions"
                hint = _WRITE_HINTS.get(exc.errno or 0, default)
            if verb == "write":
                hint += "; nothing partial was published, so the command can simply be run again"
            raise StoreError(
                f"cannot {verb} {what} in store {self.url}: {reason}", hint=hint
            ) from exc
        except Exception as exc:
            if self.is_local:
                raise
            # the client's own errors (no credentials, a connection closed after its retries)
            raise _reach_error(self.url, exc, f"cannot {verb} {what} in") from exc

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
                _in_folder(target, lambda: os.replace(tmp, target))
            except BaseException:
                _remove(tmp)
                raise

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` holding ``data``; False (and nothing written) if it already exists."""
        with self.writing(rel):
            if not self.is_local:
                # the filesystem's own exclusive put (S3: a conditional PUT with
                # If-None-Match: *; fsspec's generic pipe_file checks exists first itself)
                try:
                    self.fs.pipe_file(self._fresh(rel), data, mode="create")
                except FileExistsError:
                    return False
                return True
            tmp = self._write_tmp(data)
            target = self.full(rel)
            try:
                _in_folder(target, lambda: os.link(tmp, target))
            except FileExistsError:
                return False
            finally:
                _remove(tmp)
            return True

    def create_new(self, rel: str, data: bytes | memoryview) -> bool | None:
        """Write the content-addressed file ``rel`` if it is not there, in one request on an
        object store: True if this wrote it, False if it was there already (then nothing was
        written, and the caller refreshes or checks it). None on a local disk, where nothing
        is tried: there a look (a stat) costs less than writing a file that may be there."""
        if self.is_local:
            return None
        if self.made_here(rel):
            return False
        made = self.create_exclusive(rel, bytes(data))
        if made and _REMEMBERING[0]:
            _MADE[(*self._identity, rel)] = time.monotonic()
        return made

    def made_here(self, rel: str) -> bool:
        """Whether this process created the content-addressed file ``rel`` (:meth:`create_new`)
        in the :func:`remembering` block still open, less than ``REFRESH_AFTER`` seconds ago
        (always False outside one). Then it is there, whole, with the bytes its
        name says, and young enough for gc: writing it again (a run stores one result as a
        cache entry and again in its output) needs no request to look, check or refresh it.
        A read that finds it missing or damaged since takes this back (:meth:`distrust`)."""
        made = _MADE.get((*self._identity, rel))
        return made is not None and time.monotonic() - made < REFRESH_AFTER

    def distrust(self, rel: str) -> None:
        """Forget that this process made ``rel``: a read found it missing or damaged since."""
        _MADE.pop((*self._identity, rel), None)

    def touch(self, rel: str) -> bool | None:
        """:meth:`refresh` where it needs no bytes: True if the content-addressed file ``rel``
        is there and now young for gc, False if it is missing, None where making it young
        means writing it again (another user's file on a local disk, or on an object store
        one that this process did not just create)."""
        if self.made_here(rel):
            return True
        if not self.is_local:
            return None
        try:
            with self.writing(rel):
                os.utime(self.full(rel))
        except FileNotFoundError:
            return False
        except StoreError as exc:
            if not isinstance(exc.__cause__, PermissionError):
                raise  # a read-only filesystem: replacing the file fails the same way
            return None
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
        touched = self.touch(rel)
        if touched is not None:
            return touched
        if self.is_local:  # another user's file: replacing it needs only the folder
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
        return os.path.join(tmp_dir, _tmp_name())

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
                _in_folder(target, lambda: os.replace(tmp, target))
            except BaseException:
                _remove(tmp)
                raise
        return True

    def _write_tmp(self, data: bytes | memoryview) -> str:
        """``data`` in a new temp file; its folder is made only when the open finds it missing
        (a freeze writes thousands of files, and a failed ``mkdir`` per file adds up)."""
        tmp = os.path.join(self.full(TMP_DIR), _tmp_name())
        try:
            _in_folder(tmp, lambda: _write_file(tmp, data))
        except BaseException:  # a full disk leaves no half-written temp file behind
            _remove(tmp)
            raise
        return tmp


_DENIED_HINT = (
    "the store refused the credentials in use: check which ones the filesystem picks up (its "
    "standard environment variables or profile, or --storage-option) and that they may use "
    "this store"
)
_BUSY_HINT = (
    "the store is busy or unavailable, and its client's retries ran out: run the command "
    "again later (the client's retry settings are its own, e.g. AWS_MAX_ATTEMPTS for s3fs)"
)
_WRITE_HINTS = {
    errno.EBUSY: _BUSY_HINT,
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
        return _reach_error(url, exc)
    return StoreError(
        f"cannot open store {url}: {type(exc).__name__}: {_short(exc)}",
        hint="check the URL and the store's credentials",
    )


def _reach_error(url: str, exc: BaseException, doing: str = "cannot reach") -> StoreError:
    """The error for a store whose filesystem did not answer, refused, or could not sign in:
    ``{doing} store {url}: {reason}``, with a hint chosen by the kind of failure."""
    if isinstance(exc, OSError):
        reason = exc.strerror if exc.strerror and not exc.filename else _short(exc)
    else:  # the client's own class, whose name says what went wrong (NoCredentialsError, ...)
        reason = f"{type(exc).__name__}: {_short(exc)}"
    if isinstance(exc, PermissionError):
        return StoreError(f"access denied to store {url}: {reason}", hint=_DENIED_HINT)
    if isinstance(exc, OSError) and exc.errno == errno.EBUSY:
        return StoreError(f"{doing} store {url}: {reason}", hint=_BUSY_HINT)
    if "credential" in reason.lower():
        return StoreError(
            f"{doing} store {url}: {reason}",
            hint="no credentials were found for the store: set the filesystem's standard "
            "environment variables or profile (for s3://, AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE), or pass --storage-option",
        )
    return StoreError(
        f"{doing} store {url}: {reason}",
        hint="check the URL's host and port, the network, and the store's credentials",
    )


def _top(url: str) -> str:
    """The first part of a store URL's path, as messages name it: an object store's bucket."""
    protocol, _, path = url.partition("://")
    return f"{protocol}://{path.split('/', 1)[0]}" if path else url


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


def _in_folder(path: str, make: Callable[[], object]) -> None:
    """``make()``, which creates the local file ``path`` (an open, a rename, a link), run again
    once ``path``'s folder is made if it found the folder missing. Tried without first: the
    folder is there for all but a store's first few files, and a ``mkdir`` that finds it there
    costs a failed system call each time."""
    try:
        make()
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        make()


def _advise(paths: list[str]) -> None:
    """Ask the kernel to read the files ``paths`` into its page cache now (see
    :meth:`Storage.read_ahead`); a file that cannot be opened is left for its reader to fail
    on. Nothing where ``posix_fadvise`` does not exist (macOS, Windows)."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            advise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)


def _write_file(path: str, data: bytes | memoryview) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


def _tmp_name() -> str:
    """A temp file name no other thread or process picks: a random prefix per process (drawn
    again in a forked child), then a count."""
    return f"{_TMP_PREFIX[0]}-{next(_TMP_COUNT)}.tmp"


def _new_tmp_prefix() -> None:
    _TMP_PREFIX[0] = uuid.uuid4().hex


_TMP_PREFIX = [""]
_TMP_COUNT = itertools.count()
_new_tmp_prefix()
os.register_at_fork(after_in_child=_new_tmp_prefix)
