"""The worker-shape options of ``chanbatch k8s render`` and ``run --scheduler kubernetes``, and
the Dask cluster that ``run --scheduler kubernetes`` opens for one run."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import click

from chanbatch.errors import UsageError


def parse_pairs(
    items: tuple[str, ...], option: str, *, form: str = "KEY=VALUE", need_value: bool = False
) -> dict[str, str]:
    """``KEY=VALUE`` pairs of a repeatable option as a dict; UsageError on a malformed one
    (and on an empty value, with ``need_value``)."""
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or (need_value and not value.strip()):
            raise UsageError(f"cannot read {option} {item!r}", hint=f"write {option} {form}")
        out[key.strip()] = value.strip() if need_value else value
    return out


def parse_toleration(text: str) -> dict[str, str]:
    """A toleration written as a taint is: ``KEY[=VALUE][:EFFECT]``."""
    rest, _, effect = text.partition(":")
    key, eq, value = rest.partition("=")
    if not key:
        raise UsageError(f"cannot read --toleration {text!r}", hint="write KEY[=VALUE][:EFFECT]")
    toleration = {"key": key, "operator": "Equal" if eq else "Exists"}
    if eq:
        toleration["value"] = value
    if effect:
        effects = ("NoSchedule", "PreferNoSchedule", "NoExecute")
        if effect not in effects:
            raise UsageError(
                f"--toleration {text!r}: unknown effect {effect!r}", hint="one of " + ", ".join(effects)
            )
        toleration["effect"] = effect
    return toleration


SHAPE_OPTIONS: list[Callable[[Any], Any]] = [
    click.option("--cpu", metavar="C", help="Whole cpus per worker pod [default: 1]."),
    click.option("--memory", metavar="M", help="Memory per worker pod, e.g. 4Gi [default: 4Gi]."),
    click.option("--image", metavar="IMAGE", help="Image of the workers and scheduler."),
    click.option("--namespace", metavar="NS", help="Namespace of the DaskCluster."),
    click.option("--scheduler-cpu", metavar="C", help="Scheduler cpu [default: 500m]."),
    click.option("--scheduler-memory", metavar="M", help="Scheduler memory [default: 1Gi]."),
    click.option(
        "--node-selector", "node_selector", multiple=True, metavar="KEY=VALUE",
        help="Node label the pods require (repeatable).",
    ),
    click.option(
        "--toleration", "tolerations", multiple=True, metavar="KEY[=VALUE][:EFFECT]",
        help="Taint the pods tolerate (repeatable).",
    ),
    click.option("--env", "env", multiple=True, metavar="KEY=VALUE", help="Environment variable (repeatable)."),
    click.option(
        "--env-from-secret", metavar="SECRET", help="Secret whose keys become environment variables."
    ),
    click.option(
        "--threads-per-core", type=click.IntRange(min=1), metavar="N",
        help="Hardware threads per core of the nodes (2 with SMT), if you know it.",
    ),
    click.option(
        "--full-pcpus-only", is_flag=True, default=None,
        help="The kubelets set the static policy option full-pcpus-only.",
    ),
]


def shape_options(func: Any) -> Any:
    for option in reversed(SHAPE_OPTIONS):
        func = option(func)
    return func


def build_shape(workers: int | None, options: dict[str, Any]) -> Any:
    """A WorkerShape from the shape options (defaults where not given)."""
    from chanbatch.k8s.shape import WorkerShape

    fields: dict[str, Any] = {}
    if workers is not None:
        fields["workers"] = workers
    for key in ("cpu", "memory", "image", "scheduler_cpu", "scheduler_memory", "env_from_secret"):
        if options.get(key) is not None:
            fields[key] = options[key]
    fields["env"] = parse_pairs(options.get("env") or (), "--env")
    fields["node_selector"] = parse_pairs(options.get("node_selector") or (), "--node-selector")
    fields["tolerations"] = tuple(parse_toleration(t) for t in options.get("tolerations") or ())
    fields["threads_per_core"] = options.get("threads_per_core")
    fields["full_pcpus_only"] = options.get("full_pcpus_only")
    return WorkerShape(**fields)


def warn(lines: list[str]) -> None:
    from chanbatch.cli import render

    for line in lines:
        render.note(f"Warning: {line}")


K8S_PACKAGES = ("dask_kubernetes", "kopf", "kr8s", "jsonschema")


def require_k8s_extra(what: str) -> None:
    """Raise UsageError naming the extra when a package of ``chanbatch[k8s]`` is missing."""
    import importlib.util

    missing = [name for name in K8S_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(
            f"{what} needs the [k8s] extra ({', '.join(missing)} not installed)",
            hint="pip install 'chanbatch[k8s]'",
        )


def render_checked(shape: Any, name: str, namespace: str | None) -> dict[str, Any]:
    """The DaskCluster for ``shape``, after the exclusive-core check (warnings to stderr) and
    validation against the installed dask-kubernetes CRD."""
    require_k8s_extra("rendering a DaskCluster")
    from chanbatch.k8s.schemas import daskcluster_validator
    from chanbatch.k8s.shape import check_shape, render_cluster

    warn(check_shape(shape))
    manifest = render_cluster(shape, name=name, namespace=namespace)
    daskcluster_validator().validate(manifest)
    return manifest


@contextlib.contextmanager
def open_kubernetes(
    blueprint_name: str, store_url: str, workers: int | None, options: dict[str, Any]
) -> Iterator[Any]:
    """A Client on a new DaskCluster for one run of ``run --scheduler kubernetes``; the cluster
    is deleted when the run ends, however it ends."""
    import uuid

    from chanbatch.k8s.cluster import kube_cluster, require_reachable_store
    from chanbatch.k8s.shape import cluster_name

    require_reachable_store(store_url)
    shape = build_shape(workers, options)
    name = cluster_name(f"{blueprint_name[:28]}-{uuid.uuid4().hex[:6]}")
    manifest = render_checked(shape, name, options.get("namespace"))
    from chanbatch.cli import render
    from chanbatch.cli.commands import count

    render.note(
        f"starting Dask cluster {name} ({count(shape.workers, 'worker')} of {shape.cpu} cpu)"
    )
    with kube_cluster(manifest, namespace=options.get("namespace")) as client:
        yield client


