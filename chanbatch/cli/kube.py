"""``chanbatch k8s ...``: render the DaskCluster, print the Blueprint CRD, start the operator."""

from __future__ import annotations

from typing import Any

import click

from chanbatch.cli.commands import cli, emit_json, json_option
from chanbatch.cli.kubeshape import build_shape, render_checked, require_k8s_extra, shape_options
from chanbatch.errors import UsageError


@cli.group("k8s")
def k8s_group() -> None:
    """Kubernetes: render Dask clusters of pinned workers, the Blueprint CRD, the operator."""


@k8s_group.command("render")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True, metavar="N")
@click.option("--name", default="chanbatch", show_default=True, help="DaskCluster name.")
@shape_options
@json_option
def render_cmd(workers: int, name: str, as_json: bool, **options: Any) -> None:
    """Print the DaskCluster manifest of Guaranteed, whole-cpu, single-thread workers.

    The manifest is validated against the DaskCluster CRD of the installed dask-kubernetes,
    and refused if its worker pods would get no exclusive cores.

    \b
    chanbatch k8s render --workers 4 --cpu 2 --memory 8Gi | kubectl apply -f -
    """
    import yaml

    from chanbatch.k8s.shape import cluster_name

    manifest = render_checked(build_shape(workers, options), cluster_name(name), options["namespace"])
    if as_json:
        emit_json(manifest)
    else:
        click.echo(yaml.safe_dump(manifest, sort_keys=False, width=100), nl=False)


@k8s_group.command("crd")
def crd_cmd() -> None:
    """Print the Blueprint CustomResourceDefinition (k8s/crds/blueprint.yaml)."""
    from chanbatch.k8s.crd import crd_yaml

    click.echo(crd_yaml(), nl=False)


@k8s_group.command("operator")
@click.option("--namespace", "namespaces", multiple=True, metavar="NS", help="Watch NS (repeatable).")
@click.option("-A", "--all-namespaces", is_flag=True, help="Watch every namespace.")
@click.option("--liveness", metavar="URL", help="Serve a liveness probe, e.g. http://0.0.0.0:8080/healthz.")
def operator_cmd(namespaces: tuple[str, ...], all_namespaces: bool, liveness: str | None) -> None:
    """Run the Blueprint operator (kopf) until interrupted."""
    require_k8s_extra("the operator")
    from chanbatch.k8s.operator import run_operator

    if bool(namespaces) == all_namespaces:
        raise UsageError("say which namespaces to watch", hint="give --namespace NS or --all-namespaces")
    run_operator(namespaces=namespaces, all_namespaces=all_namespaces, liveness=liveness)
