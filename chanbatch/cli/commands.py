"""The root of the command tree: the ``chanbatch`` group, its global options, and what every
command shares (``--store``, ``--json``, ``--set``, ``--overwrite``, opening the store).

Each command parses, calls one method of the Python API (:mod:`chanbatch.api`), and hands the
result to :mod:`chanbatch.cli.render` (human output) or prints it as exactly one JSON
document. The commands live by group: :mod:`~chanbatch.cli.snapshots` (snapshot, gc, demo),
:mod:`~chanbatch.cli.blueprints` (validate, plan, run, explain, schema),
:mod:`~chanbatch.cli.caches` (cache), and the modules :mod:`chanbatch.cli.main` imports.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import click

from chanbatch.cli.kubeshape import parse_pairs
from chanbatch.errors import NoStoreError, UsageError
from chanbatch.ids import short
from chanbatch.version import __version__

STORE_HELP = "Store URL: a path, memory://, s3://... [default: $CHANBATCH_STORE, else ./snapshots]"
STORAGE_OPTION_HELP = (
    "An fsspec option for the store, such as endpoint_url=http://localhost:9000, "
    "profile=NAME or anon=true (repeatable; a.b=v nests; merged over "
    "$CHANBATCH_STORAGE_OPTIONS, a JSON object)."
)
_STORAGE_OPTIONS = "chanbatch.storage_options"


def store_option(func: Any) -> Any:
    """``--store URL`` and ``--storage-option KEY=VALUE``: :func:`open_store` reads both."""
    func = click.option(
        "--storage-option",
        "storage_option_items",
        multiple=True,
        metavar="KEY=VALUE",
        expose_value=False,
        callback=_keep_storage_options,
        help=STORAGE_OPTION_HELP,
    )(func)
    return click.option(
        "--store",
        "store_url",
        envvar="CHANBATCH_STORE",
        default="snapshots",
        show_default=False,
        help=STORE_HELP,
    )(func)


def _keep_storage_options(ctx: click.Context, _param: click.Parameter, items: Any) -> None:
    ctx.meta[_STORAGE_OPTIONS] = tuple(items or ())


def storage_options() -> dict[str, Any]:
    """The store's fsspec options for this command: ``$CHANBATCH_STORAGE_OPTIONS`` (a JSON
    object) with the command's ``--storage-option`` pairs over it. Raises UsageError for a
    malformed one."""
    from chanbatch.snapshot import options

    ctx = click.get_current_context(silent=True)
    items = ctx.meta.get(_STORAGE_OPTIONS, ()) if ctx is not None else ()
    return options.merged(options.from_environment(), options.parse_pairs(items))


def json_option(func: Any) -> Any:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print exactly one JSON document on stdout."
    )(func)


def complete_ref(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion of a REF or DATASET: the store's dataset names, and after ``NAME@`` the
    dataset's snapshot ids, newest first. The store is the one ``--store`` (given before the
    word being completed) or ``$CHANBATCH_STORE`` names.

    Completion runs on every TAB: it reads only ``refs/``, and any failure (no store, a broken
    one, a bad name) completes nothing rather than printing an error into the prompt.
    """
    from click.shell_completion import CompletionItem

    try:
        store = open_store(ctx.params.get("store_url") or "snapshots")
        name, at, prefix = incomplete.partition("@")
        if not at:
            return [CompletionItem(n) for n in store.datasets() if n.startswith(incomplete)]
        # A DATASET takes no @; and slice keys can be far too many to offer.
        if "ref" not in (param.name or "") or "[" in incomplete:
            return []
        ids = [e.snapshot for e in reversed(store.history(name))]
        return [CompletionItem(f"{name}@{short(i)}") for i in ids if i.startswith(prefix.lower())]
    except Exception:  # never fail while completing (see the docstring)
        return []


def emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False, default=str))


def open_store(url: str, *, create: bool = False) -> Any:
    """The API's :class:`chanbatch.api.Store` at ``url``.

    A command that only reads (``create`` False) refuses a store that is not there, so that a
    mistyped ``--store`` fails with where it looked instead of reporting an empty store. One
    that writes (freeze, demo) makes it; :func:`created_store` then says so. A ``memory://``
    store is never refused: each process starts with an empty one. Raises NoStoreError.
    """
    from chanbatch.api import Store

    store = Store(url, storage_options=storage_options())
    if not create and not _in_memory(url) and not store.storage.root_exists():
        raise NoStoreError(
            f"no store at {store.storage.location}",
            hint="run chanbatch init or chanbatch demo to make one, or pass --store "
            "(or set $CHANBATCH_STORE) to an existing store",
        )
    return store


def _in_memory(url: str) -> bool:
    return url.partition("://")[0].lower() == "memory" and "://" in url


def created_store(store: Any, existed: bool, *, as_json: bool) -> None:
    """End a writing command's report with the store it made, by absolute path (a new path may
    be a typo); never with ``--json``, whose stdout is one document, nor with ``-q``."""
    if not existed and not as_json and not _in_memory(store.url):
        from chanbatch.cli import render

        if not render.quiet():
            render.console.print(f"created store at {store.storage.location}", markup=False)


def count(n: int, word: str, many: str | None = None) -> str:
    """``n`` and ``word`` agreeing in number: ``1 slice``, ``2 slices``, ``1,200 entries``."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def parse_duration(text: str) -> float:
    """Seconds in ``30s``, ``15m``, ``1h``, ``2d`` or a bare number of seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match:
        raise UsageError(f"cannot read duration {text!r}", hint="write e.g. 30s, 15m, 1h, 2d")
    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match[2]]
    return float(match[1]) * scale


@dataclass(frozen=True, slots=True)
class Display:
    """What the global options ask of human output; the root context's ``obj``, read by
    :mod:`chanbatch.cli.render`."""

    verbose: bool = False
    quiet: bool = False
    progress: bool = True


class _LogFormat(logging.Formatter):
    """``warning: message``, or with ``-v`` ``debug chanbatch.run.runner: message``."""

    def __init__(self, named: bool) -> None:
        super().__init__("%(level)s %(name)s: %(message)s" if named else "%(level)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.level = record.levelname.lower()
        return super().format(record)


def configure_logging(display: Display) -> None:
    """Send log records to stderr: WARNING and up by default, DEBUG with -v, ERROR with -q.

    The library only logs (through ``chanbatch.*`` loggers with a NullHandler); deciding what
    reaches the terminal is the program's job, done here once per invocation. The handler
    replaces the one a previous in-process invocation installed, never anyone else's.
    """
    level = (
        logging.DEBUG if display.verbose else logging.ERROR if display.quiet else logging.WARNING
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "chanbatch_cli", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler()
    handler.chanbatch_cli = True  # type: ignore[attr-defined]
    handler.setFormatter(_LogFormat(named=display.verbose))
    # Libraries that set their own loggers' levels (distributed sets INFO) propagate records
    # past the root's level: only the handler's own level holds them back.
    handler.setLevel(level)
    root.addHandler(handler)
    root.setLevel(level)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chanbatch")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks and debug logs.")
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="Print only errors and the data asked for: no progress, notes or warnings.",
)
@click.option("--no-progress", is_flag=True, help="Draw no progress bars.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, quiet: bool, no_progress: bool) -> None:
    """chanbatch: batch dataframes on Dask over immutable, content-hashed Parquet snapshots.

    \b
    Start with the demo data, or a project of your own:
      chanbatch demo
      chanbatch snapshot inspect flights
      chanbatch init myproject

    -v, -q and --no-progress may also follow the command.
    """
    if verbose and quiet:
        raise click.UsageError("-v/--verbose and -q/--quiet cannot be used together")
    ctx.obj = Display(verbose=verbose, quiet=quiet, progress=not (no_progress or quiet))
    configure_logging(ctx.obj)


def parse_sets(items: tuple[str, ...]) -> dict[str, str]:
    """``--set input=REF`` pairs as a dict; raises UsageError on a malformed one."""
    return parse_pairs(items, "--set", form="INPUT=REF", need_value=True)


def overwrite_option(func: Any) -> Any:
    return click.option(
        "--overwrite",
        "overwrite",
        multiple=True,
        metavar="DATASET",
        help="Let this run replace the head of output DATASET, although this blueprint did not "
        "write it (it was frozen by hand, or is another blueprint's output). Repeatable.",
    )(func)


def set_option(func: Any) -> Any:
    return click.option(
        "--set",
        "sets",
        multiple=True,
        metavar="INPUT=REF",
        help="Bind INPUT to another REF (repeatable).",
    )(func)
