"""The shape of a chanbatch Dask cluster on Kubernetes, and the DaskCluster manifest it renders.

Every worker is a Guaranteed pod whose cpu and memory requests equal their limits, with a whole
number of cpus, running ``dask worker --nthreads 1``. The kubelet's static CPU manager then gives
each worker container cores of its own, so a core's caches hold one slice's data at a time.
``render_cluster`` builds the manifest (a pure function returning a dict); ``check_shape``
refuses a shape whose worker pods would not get exclusive cores, using the kubelet's own rules
(``chanbatch.k8s.qos``) on the rendered pod, and returns warnings for the SMT caveats.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from chanbatch.errors import UsageError
from chanbatch.k8s.qos import cpu_explanation, exclusive_cpus, qos_class
from chanbatch.k8s.quantity import format_cpu, format_memory, parse_quantity
from chanbatch.k8s.schemas import prune_nulls
from chanbatch.version import __version__

DEFAULT_IMAGE = f"ghcr.io/chanbatch/chanbatch:{__version__}"
WORKER_CONTAINER, SCHEDULER_CONTAINER = "worker", "scheduler"
SCHEDULER_PORT, SCHEDULER_DASHBOARD, WORKER_DASHBOARD = 8786, 8787, 8788
RUN_AS_USER = 10001  # the non-root user of the project's Dockerfile
_CLUSTER_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")


class ShapeError(UsageError):
    """A worker shape that Kubernetes would not run as Guaranteed pods with exclusive cores."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerShape:
    """Workers and scheduler of one chanbatch Dask cluster on Kubernetes.

    ``cpu`` and ``memory`` are Kubernetes quantities per worker pod (``"2"``, ``"4Gi"``);
    ``cpu`` must be a whole number. ``threads_per_core`` (hardware threads per physical core of
    the nodes, 2 with SMT) and ``full_pcpus_only`` (the kubelet's static-policy option) are what
    the user knows about the nodes; ``None`` means unknown, and then the check warns.
    """

    workers: int = 2
    cpu: str = "1"
    memory: str = "4Gi"
    image: str = DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"
    env: Mapping[str, str] = field(default_factory=dict)
    env_from_secret: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    scheduler_cpu: str = "500m"
    scheduler_memory: str = "1Gi"
    threads_per_core: int | None = None
    full_pcpus_only: bool | None = None

    @classmethod
    def from_document(cls, doc: Mapping[str, Any] | None, *, where: str = "workers") -> WorkerShape:
        """A shape from its camelCase document (the Blueprint resource's ``spec.workers``).
        Raises ShapeError on an unknown field or a wrong type."""
        doc = dict(doc or {})
        names = {
            "replicas": "workers",
            "cpu": "cpu",
            "memory": "memory",
            "image": "image",
            "imagePullPolicy": "image_pull_policy",
            "env": "env",
            "envFromSecret": "env_from_secret",
            "nodeSelector": "node_selector",
            "tolerations": "tolerations",
            "schedulerCpu": "scheduler_cpu",
            "schedulerMemory": "scheduler_memory",
            "threadsPerCore": "threads_per_core",
            "fullPcpusOnly": "full_pcpus_only",
        }
        unknown = sorted(set(doc) - set(names))
        if unknown:
            raise ShapeError(
                f"{where}: unknown field {unknown[0]!r}", hint=f"known fields: {', '.join(names)}"
            )
        kwargs: dict[str, Any] = {names[k]: v for k, v in doc.items()}
        for key in ("cpu", "memory", "scheduler_cpu", "scheduler_memory"):
            if key in kwargs:
                kwargs[key] = str(kwargs[key])
        if isinstance(kwargs.get("env"), list):
            kwargs["env"] = {e["name"]: str(e.get("value", "")) for e in kwargs["env"]}
        kwargs["tolerations"] = tuple(kwargs.get("tolerations") or ())
        return cls(**kwargs)

    def document(self) -> dict[str, Any]:
        """The camelCase document ``from_document`` reads (defaults included)."""
        return {
            "replicas": self.workers,
            "cpu": self.cpu,
            "memory": self.memory,
            "image": self.image,
            "imagePullPolicy": self.image_pull_policy,
            "env": dict(self.env),
            "envFromSecret": self.env_from_secret,
            "nodeSelector": dict(self.node_selector),
            "tolerations": [dict(t) for t in self.tolerations],
            "schedulerCpu": self.scheduler_cpu,
            "schedulerMemory": self.scheduler_memory,
            "threadsPerCore": self.threads_per_core,
            "fullPcpusOnly": self.full_pcpus_only,
        }


def cluster_name(name: str) -> str:
    """A DaskCluster name for ``name``: lower case, ``-`` for anything else, at most 40
    characters (the operator appends ``-scheduler`` and pod suffixes to it)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    slug = ("cb-" + slug)[:40].rstrip("-")
    if not _CLUSTER_NAME.match(slug):
        raise ShapeError(f"cannot make a DaskCluster name from {name!r}")
    return slug


def _quantity(value: str, what: str) -> Decimal:
    try:
        quantity = parse_quantity(value)
    except ValueError as exc:
        raise ShapeError(
            f"{what} {value!r} is not a Kubernetes quantity", hint="for example 2, 500m, 4Gi"
        ) from exc
    if quantity <= 0:
        raise ShapeError(f"{what} must be more than 0, not {value!r}")
    if "memory" in what and quantity != quantity.to_integral_value():
        raise ShapeError(
            f"{what} {value!r} is not a whole number of bytes", hint="write e.g. 512Mi or 4Gi"
        )
    return quantity


def _resources(cpu: Decimal, memory: Decimal) -> dict[str, Any]:
    amounts = {"cpu": format_cpu(cpu), "memory": format_memory(memory)}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _env(shape: WorkerShape, cpu: Decimal) -> list[dict[str, str]]:
    # Arrow and BLAS size their thread pools from the host's cores, which a pinned pod does
    # not own; OMP_NUM_THREADS (read by both) keeps them to the cores the pod was given.
    env = {"OMP_NUM_THREADS": str(max(1, int(cpu))), **shape.env}
    return [{"name": k, "value": str(v)} for k, v in env.items()]


def _security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "capabilities": {"drop": ["ALL"]},
    }


def render_cluster(
    shape: WorkerShape,
    *,
    name: str,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``kubernetes.dask.org/v1`` DaskCluster manifest for ``shape``, as a dict.

    ``name`` must already be a valid cluster name (see ``cluster_name``). Raises ShapeError for
    quantities that do not parse; it does not judge the shape (``check_shape`` does)."""
    cpu = _quantity(shape.cpu, "worker cpu")
    memory = _quantity(shape.memory, "worker memory")
    scheduler_cpu = _quantity(shape.scheduler_cpu, "scheduler cpu")
    scheduler_memory = _quantity(shape.scheduler_memory, "scheduler memory")
    if not isinstance(shape.workers, int) or shape.workers < 1:
        raise ShapeError(f"workers must be a whole number of at least 1, not {shape.workers!r}")
    common = {
        "app.kubernetes.io/name": "chanbatch",
        "app.kubernetes.io/managed-by": "chanbatch",
        **(labels or {}),
    }
    pod = _pod_common(shape)
    manifest = {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskCluster",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(common)},
        "spec": {
            "worker": {
                "replicas": shape.workers,
                "metadata": {"labels": {**common, "app.kubernetes.io/component": "worker"}},
                "spec": {**pod, "containers": [_worker_container(shape, cpu, memory)]},
            },
            "scheduler": {
                "metadata": {"labels": {**common, "app.kubernetes.io/component": "scheduler"}},
                "spec": {
                    **pod,
                    "containers": [_scheduler_container(shape, scheduler_cpu, scheduler_memory)],
                },
                "service": _scheduler_service(name),
            },
        },
    }
    return prune_nulls(manifest)


def _pod_common(shape: WorkerShape) -> dict[str, Any]:
    """What the worker and scheduler pod specs share: non-root, placement."""
    return {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "nodeSelector": dict(shape.node_selector) or None,
        "tolerations": [dict(t) for t in shape.tolerations] or None,
    }


def _env_from(shape: WorkerShape) -> list[dict[str, Any]] | None:
    return [{"secretRef": {"name": shape.env_from_secret}}] if shape.env_from_secret else None


def _worker_container(shape: WorkerShape, cpu: Decimal, memory: Decimal) -> dict[str, Any]:
    """One single-threaded ``dask worker`` whose requests equal its limits (Guaranteed)."""
    return {
        "name": WORKER_CONTAINER,
        "image": shape.image,
        "imagePullPolicy": shape.image_pull_policy,
        "args": [
            "dask",
            "worker",
            "--name",
            "$(DASK_WORKER_NAME)",
            "--nthreads",
            "1",
            "--memory-limit",
            format_memory(memory),
            "--dashboard-address",
            str(WORKER_DASHBOARD),
        ],
        "env": _env(shape, cpu),
        "envFrom": _env_from(shape),
        "resources": _resources(cpu, memory),
        "ports": [{"name": "http-dashboard", "containerPort": WORKER_DASHBOARD, "protocol": "TCP"}],
        "securityContext": _security(),
    }


def _scheduler_container(shape: WorkerShape, cpu: Decimal, memory: Decimal) -> dict[str, Any]:
    """The ``dask scheduler``, with the health probes the dask-kubernetes operator waits on."""
    health = {"port": "http-dashboard", "path": "/health"}
    return {
        "name": SCHEDULER_CONTAINER,
        "image": shape.image,
        "imagePullPolicy": shape.image_pull_policy,
        "args": ["dask", "scheduler", "--host", "0.0.0.0"],
        "env": [{"name": k, "value": str(v)} for k, v in shape.env.items()] or None,
        "envFrom": _env_from(shape),
        "resources": _resources(cpu, memory),
        "ports": [
            {"name": "tcp-comm", "containerPort": SCHEDULER_PORT, "protocol": "TCP"},
            {"name": "http-dashboard", "containerPort": SCHEDULER_DASHBOARD, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": dict(health),
            "initialDelaySeconds": 0,
            "periodSeconds": 1,
            "timeoutSeconds": 300,
        },
        "livenessProbe": {
            "httpGet": dict(health),
            "initialDelaySeconds": 15,
            "periodSeconds": 20,
        },
        "securityContext": _security(),
    }


def _scheduler_service(name: str) -> dict[str, Any]:
    """The ClusterIP service in front of cluster ``name``'s scheduler: comm and dashboard."""
    return {
        "type": "ClusterIP",
        "selector": {"dask.org/cluster-name": name, "dask.org/component": "scheduler"},
        "ports": [
            {
                "name": "tcp-comm",
                "protocol": "TCP",
                "port": SCHEDULER_PORT,
                "targetPort": "tcp-comm",
            },
            {
                "name": "http-dashboard",
                "protocol": "TCP",
                "port": SCHEDULER_DASHBOARD,
                "targetPort": "http-dashboard",
            },
        ],
    }


def worker_pod(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The pod spec the dask-kubernetes operator will create for each worker of ``manifest``."""
    return {"spec": manifest["spec"]["worker"]["spec"]}


def check_shape(shape: WorkerShape) -> list[str]:
    """Refuse a shape whose worker pods would not each get exclusive whole cores; return
    warnings (one line each) for what depends on the nodes. Raises ShapeError saying why."""
    manifest = render_cluster(shape, name="cb-check")
    pod = worker_pod(manifest)
    qos = qos_class(pod)
    cores = exclusive_cpus(pod).get(WORKER_CONTAINER, 0)
    if cores == 0:
        why = "; ".join(cpu_explanation(pod)) or f"the pod is {qos}"
        raise ShapeError(
            f"worker pods with cpu {shape.cpu!r} would get no exclusive cores: {why}",
            hint="give each worker a whole number of cpus, such as --cpu 1 or --cpu 2; the "
            "kubelet's static CPU manager pins only integer cpu requests of Guaranteed pods",
        )
    warnings = []
    per_core = shape.threads_per_core
    if per_core is None and cores % 2:
        warnings.append(
            f"each worker asks for {cores} cpu: on nodes with SMT (2 hardware threads per core), "
            "the kubelet option full-pcpus-only rejects such pods (SMTAlignmentError), and "
            "without it a worker shares its physical core with another container's thread; on "
            "SMT nodes ask for an even number of cpus, or say --threads-per-core 1 if the nodes "
            "have no SMT"
        )
    elif per_core and cores % per_core:
        if shape.full_pcpus_only:
            raise ShapeError(
                f"worker pods asking for {cores} cpu would be rejected on nodes with "
                f"{per_core} hardware threads per core: the kubelet option full-pcpus-only "
                "admits only whole physical cores (SMTAlignmentError)",
                hint=f"ask for a multiple of {per_core} cpus per worker",
            )
        warnings.append(
            f"each worker asks for {cores} cpu on SMT nodes with {per_core} hardware threads "
            "per core: a worker shares a physical core with another container's thread, and the "
            f"kubelet option full-pcpus-only would reject it; ask for a multiple of {per_core}"
        )
    return warnings
