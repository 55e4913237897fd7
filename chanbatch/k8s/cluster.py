"""Dask clusters on Kubernetes, through dask-kubernetes, as ``distributed.Client`` contexts.

``kube_cluster`` is what ``chanbatch run --scheduler kubernetes`` uses: dask-kubernetes'
``KubeCluster(custom_cluster_spec=...)`` creates the DaskCluster rendered by
``chanbatch.k8s.shape``, waits for its scheduler, and deletes it on close. The operator creates
the DaskCluster itself (so that the Blueprint owns it) and attaches with ``attach_cluster``.

Pods cannot see the machine that starts a run, so a store must be a URL every pod can reach:
``require_reachable_store`` refuses local paths and ``memory://``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from chanbatch.errors import ChanbatchError, UsageError

log = logging.getLogger(__name__)
UNREACHABLE_SCHEMES = ("file", "local", "memory")


class KubernetesError(ChanbatchError):
    """The Kubernetes side failed: no credentials, no dask-kubernetes operator, a timeout."""


class UnreachableStoreError(UsageError):
    """A store the pods of a Kubernetes cluster cannot read: a local path or ``memory://``."""


def require_reachable_store(url: str) -> None:
    """Raise UnreachableStoreError unless ``url`` names a store pods can reach (s3://, gs://,
    abfs://, http(s)://, ...)."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() in UNREACHABLE_SCHEMES:
        where = "in this process's memory" if scheme.lower() == "memory" else "a local path"
        raise UnreachableStoreError(
            f"store {url!r} is {where}, which the pods of a Kubernetes cluster cannot reach",
            hint="put the store where every pod can read it, such as s3://bucket/snapshots, "
            "and give the pods its credentials (envFromSecret, or --env-from-secret)",
        )


def _workers_of(manifest: Mapping[str, Any]) -> int:
    return int(manifest["spec"]["worker"]["replicas"])


@contextlib.contextmanager
def kube_cluster(
    manifest: Mapping[str, Any], *, namespace: str | None = None, timeout: float = 600
) -> Iterator[Any]:
    """Create the DaskCluster ``manifest`` with ``KubeCluster(custom_cluster_spec=...)``, wait
    for every worker, yield a Client on it, and delete the cluster on the way out."""
    from dask_kubernetes.operator import KubeCluster

    name = manifest["metadata"]["name"]
    with _starting(KubeCluster, name):
        cluster = KubeCluster(
            custom_cluster_spec=dict(manifest),
            namespace=namespace,
            shutdown_on_close=True,
            resource_timeout=int(timeout),
            quiet=True,
        )
    with _connected(cluster, manifest, timeout) as client:
        yield client


@contextlib.contextmanager
def attach_cluster(
    manifest: Mapping[str, Any], *, namespace: str, timeout: float = 600
) -> Iterator[Any]:
    """A Client on the DaskCluster ``manifest`` that already exists (created by the operator),
    once every worker has joined. The cluster is left in place: its owner deletes it."""
    from dask_kubernetes.operator import KubeCluster

    name = manifest["metadata"]["name"]
    with _starting(KubeCluster, name):
        cluster = KubeCluster.from_name(
            name, namespace=namespace, resource_timeout=int(timeout), quiet=True
        )
    with _connected(cluster, manifest, timeout) as client:
        yield client


@contextlib.contextmanager
def _connected(cluster: Any, manifest: Mapping[str, Any], timeout: float) -> Iterator[Any]:
    """A Client on ``cluster`` once all of ``manifest``'s workers joined; closes the cluster
    object (not the DaskCluster resource, unless it was made with shutdown_on_close)."""
    from distributed import Client

    try:
        with Client(cluster) as client:
            client.wait_for_workers(_workers_of(manifest), timeout=timeout)
            yield client
    finally:
        cluster.close()


@contextlib.contextmanager
def _starting(kube_cluster_class: Any, name: str) -> Iterator[None]:
    """Turn a failure to start DaskCluster ``name`` into a KubernetesError, once.

    A KubeCluster registers itself before it starts; one that failed to start would otherwise
    be "reaped" again at exit, printing the same error a second time."""
    try:
        yield
    except Exception as exc:
        for instance in list(kube_cluster_class._instances):
            if getattr(instance, "name", None) == name:
                kube_cluster_class._instances.discard(instance)
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise KubernetesError(
            f"cannot start Dask cluster {name!r} on Kubernetes: {detail}",
            hint="check that kubectl reaches the cluster (kubeconfig or in-cluster credentials) "
            "and that the dask-kubernetes operator and its CRDs are installed",
        ) from exc
