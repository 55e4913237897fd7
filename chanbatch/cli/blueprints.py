"""``chanbatch validate``, ``plan``, ``run``, ``explain`` and ``schema``: working with blueprints.

Each command loads the blueprint through the Python API (:class:`chanbatch.api.RunnableBlueprint`)
and calls the one method that does what the command says.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import click

from chanbatch.cli.commands import (
    cli,
    count,
    emit_json,
    json_option,
    open_store,
    overwrite_option,
    parse_sets,
    set_option,
    store_option,
)
from chanbatch.errors import UsageError


def load(path: str) -> Any:
    """The blueprint at ``path``, parsed and validated (:meth:`RunnableBlueprint.from_yaml`)."""
    from chanbatch.api import RunnableBlueprint

    return RunnableBlueprint.from_yaml(path)


@cli.command("validate")
@click.argument("blueprint", type=click.Path(dir_okay=False))
@json_option
def validate_cmd(blueprint: str, as_json: bool) -> None:
    """Check BLUEPRINT in full: syntax, names, cycles, expressions, aggregates."""
    doc = load(blueprint).document()
    if as_json:
        emit_json({"ok": True, **doc})
    else:
        click.echo(
            f"ok: blueprint {doc['blueprint']!r}: {count(len(doc['inputs']), 'input')}, "
            f"{count(len(doc['stages']), 'stage')}, {count(len(doc['outputs']), 'output')}"
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
    report = load(blueprint).plan(open_store(store_url), sets=parse_sets(sets), overwrite=overwrite)
    if as_json:
        emit_json(report.document())
    else:
        from chanbatch.cli import render

        render.plan_report(report.document(), show_all=show_all)


def complete_scheduler(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion of ``--scheduler``: the names a run takes (an address is typed)."""
    from click.shell_completion import CompletionItem

    names = ("threads", "processes", "sync", "kubernetes")
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


RUN_OPTIONS: list[Callable[[Any], Any]] = [
    click.option(
        "--scheduler",
        default="threads",
        show_default=True,
        metavar="threads|sync|processes|ADDRESS|kubernetes",
        shell_complete=complete_scheduler,
        help="Where tasks run: local threads, one process, a LocalCluster of "
        "single-threaded workers, a tcp:// Dask scheduler address, or a new Dask cluster "
        "of pinned workers on Kubernetes (closed after the run).",
    ),
    click.option(
        "--workers",
        type=click.IntRange(min=1),
        metavar="N",
        help="Worker threads or processes [default: one per core].",
    ),
    click.option(
        "--pin-cpus",
        is_flag=True,
        help="Pin each worker process to a core of its own (Linux; with processes or ADDRESS).",
    ),
    click.option("--cpu", metavar="C", help="With kubernetes: whole cpus per worker [default: 1]."),
    click.option(
        "--memory", metavar="M", help="With kubernetes: memory per worker [default: 4Gi]."
    ),
    click.option("--image", metavar="IMAGE", help="With kubernetes: the workers' image."),
    click.option("--namespace", metavar="NS", help="With kubernetes: the cluster's namespace."),
    click.option(
        "--env-from-secret", metavar="SECRET", help="With kubernetes: Secret of store credentials."
    ),
    set_option,
    overwrite_option,
    click.option(
        "--allow-module",
        "allow_modules",
        multiple=True,
        metavar="MODULE",
        help="Allow `map` stages to import functions from MODULE (repeatable).",
    ),
    click.option(
        "--report",
        "report_path",
        type=click.Path(dir_okay=False, writable=True),
        metavar="PATH",
        help="Also write the run's HTML report (graph, stages, timeline, snapshots) to PATH.",
    ),
    store_option,
    json_option,
]


def run_options(func: Any) -> Any:
    for option in reversed(RUN_OPTIONS):
        func = option(func)
    return func


@cli.command("run")
@click.argument("blueprint", type=click.Path(dir_okay=False))
@run_options
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
    from chanbatch.api import check_report_target
    from chanbatch.run.schedulers import check_scheduler

    check_scheduler(scheduler, also=("kubernetes",))  # a typo fails before the store is read
    given = [f"--{k.replace('_', '-')}" for k, v in kube_options.items() if v is not None]
    if given and scheduler != "kubernetes":
        raise UsageError(f"{given[0]} applies only to --scheduler kubernetes")
    if scheduler == "kubernetes":  # a store no pod can reach is refused, whether or not it exists
        from chanbatch.k8s.cluster import require_reachable_store

        require_reachable_store(store_url)
    bp = load(blueprint)  # a mistake in the file comes first, as for plan
    store = open_store(store_url)
    if report_path is not None:
        check_report_target(report_path)
    with contextlib.ExitStack() as stack:
        where = stack.enter_context(
            _scheduler(bp, store, store_url, (scheduler, workers), sets, overwrite, kube_options)
        )
        # --json shows no progress, and spares the import of the terminal renderer (rich)
        progress = None if as_json else stack.enter_context(_terminal().run_progress())
        result = bp.run(
            store,
            scheduler=where[0],
            workers=where[1],
            sets=parse_sets(sets),
            allow_modules=allow_modules,
            progress=progress,
            pin_cpus=pin_cpus,
            report=report_path,  # a failed run raises before its report is written
            overwrite=overwrite,
        )
    if as_json:  # the store as the run reached it, its secrets hidden
        emit_json({**result.document(), "store": store.document()})
    else:
        _terminal().run_result(store, result.document())
        if report_path is not None:
            click.echo(f"report: {report_path}")


def _terminal() -> Any:
    from chanbatch.cli import render

    return render


@contextlib.contextmanager
def _scheduler(
    bp: Any,
    store: Any,
    store_url: str,
    given: tuple[str, int | None],
    sets: tuple[str, ...],
    overwrite: tuple[str, ...],
    kube_options: dict[str, Any],
) -> Iterator[tuple[Any, int | None]]:
    """``(scheduler, workers)`` for the run: as given, except that ``kubernetes`` becomes a
    Client on a new Dask cluster (deleted when the run ends), or local threads when every
    task is cached. The plan comes first, so a bad REF fails before any pod starts."""
    scheduler, workers = given
    if scheduler != "kubernetes":
        yield scheduler, workers
        return
    from chanbatch.cli import render
    from chanbatch.cli.kubeshape import open_kubernetes
    from chanbatch.k8s.cluster import require_reachable_store

    require_reachable_store(store_url)
    if not bp.plan(store, sets=parse_sets(sets), overwrite=overwrite).has_work:
        render.note("every task is cached: no cluster needed")
        yield "threads", workers
        return
    with open_kubernetes(bp.name, store_url, workers, kube_options) as client:
        yield client, None


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
    stage, _, slice_text = target.partition("@")
    docs = load(blueprint).explain(
        open_store(store_url), stage, slice_text or None, sets=parse_sets(sets)
    )
    if as_json:
        emit_json({"tasks": docs})
    else:
        from chanbatch.cli import render

        render.explain_report(docs)
