"""The kubelet's rules for a pod's QoS class and the exclusive cores it gets, as pure functions.

Both take a pod as a dict (``{"spec": {...}}``, or a bare pod spec) and mirror the kubelet:

- ``qos_class`` follows ``ComputePodQOS`` (``pkg/apis/core/v1/helper/qos``). Each container,
  init containers (sidecars included) as well, is classed on its own from its cpu and memory:
  BestEffort when it asks for nothing, Guaranteed when cpu and memory requests equal their limits
  and are set, Burstable otherwise. The pod is Guaranteed or BestEffort only when every container
  is; any mix is Burstable. Pod-level ``spec.resources`` (the ``PodLevelResources`` feature), when
  present, decides alone.
- ``exclusive_cpus`` follows the static CPU manager policy (``guaranteedCPUs`` in
  ``pkg/kubelet/cm/cpumanager/policy_static.go``): a container gets exclusive cores only in a
  Guaranteed pod, and only for an integer cpu request; ``1500m`` gets none, not one.

As the API server does before the kubelet sees a pod, a limit with no request makes the request
equal to the limit.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from chanbatch.k8s.quantity import format_cpu, parse_quantity

GUARANTEED, BURSTABLE, BEST_EFFORT = "Guaranteed", "Burstable", "BestEffort"
QOS_RESOURCES = ("cpu", "memory")


def pod_spec(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    """The pod spec of a Pod (``{"spec": ...}``) or of a bare pod spec."""
    spec = pod.get("spec")
    return spec if isinstance(spec, Mapping) and "containers" in spec else pod


def containers(pod: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(kind, container)`` for every init container, then every container."""
    spec = pod_spec(pod)
    for kind in ("initContainers", "containers"):
        for container in spec.get(kind) or ():
            yield kind, container


def effective_resources(resources: Mapping[str, Any] | None) -> tuple[dict, dict]:
    """``(requests, limits)`` as the API server stores them: a missing request defaults to its
    limit. Values are parsed to Decimal; absent means zero."""
    resources = resources or {}
    limits = {name: parse_quantity(v) for name, v in (resources.get("limits") or {}).items()}
    requests = {name: parse_quantity(v) for name, v in (resources.get("requests") or {}).items()}
    for name, value in limits.items():
        requests.setdefault(name, value)
    return requests, limits


def resource_qos(resources: Mapping[str, Any] | None) -> str:
    """The QoS class of one set of resource requirements (a container's, or the pod's)."""
    requests, limits = effective_resources(resources)
    if not requests and not limits:
        return BEST_EFFORT
    qos = None
    for name in QOS_RESOURCES:
        request, limit = requests.get(name, Decimal(0)), limits.get(name, Decimal(0))
        if request != limit:
            return BURSTABLE
        best_effort = request == 0
        if qos is None:
            qos = BEST_EFFORT if best_effort else GUARANTEED
        elif best_effort != (qos == BEST_EFFORT):
            return BURSTABLE
    return qos or BEST_EFFORT


def qos_class(pod: Mapping[str, Any]) -> str:
    """The pod's QoS class: ``Guaranteed``, ``Burstable`` or ``BestEffort``, as the kubelet
    computes it. Raises ValueError on a quantity that does not parse."""
    spec = pod_spec(pod)
    if spec.get("resources") is not None:
        return resource_qos(spec["resources"])
    pod_qos = None
    for _, container in containers(pod):
        qos = resource_qos(container.get("resources"))
        if qos == BURSTABLE:
            return BURSTABLE
        if pod_qos is None:
            pod_qos = qos
        elif pod_qos != qos:
            return BURSTABLE
    return pod_qos or BEST_EFFORT


def _integer_cpus(container: Mapping[str, Any]) -> int:
    requests, _ = effective_resources(container.get("resources"))
    cpu = requests.get("cpu", Decimal(0))
    return int(cpu) if cpu == cpu.to_integral_value() else 0


def exclusive_cpus(pod: Mapping[str, Any]) -> dict[str, int]:
    """Exclusive cores per container name (init containers too) under the static CPU manager
    policy: the integer cpu request in a Guaranteed pod, else 0."""
    guaranteed = qos_class(pod) == GUARANTEED
    return {c["name"]: _integer_cpus(c) if guaranteed else 0 for _, c in containers(pod)}


def cpu_explanation(pod: Mapping[str, Any]) -> list[str]:
    """Why each container that gets no exclusive core gets none: one line per container."""
    qos = qos_class(pod)
    lines = []
    for kind, container in containers(pod):
        name = container.get("name", "?")
        where = f"{'init container' if kind == 'initContainers' else 'container'} {name!r}"
        requests, limits = effective_resources(container.get("resources"))
        cpu = requests.get("cpu", Decimal(0))
        if qos != GUARANTEED:
            unequal = [
                r
                for r in QOS_RESOURCES
                if requests.get(r, Decimal(0)) != limits.get(r, Decimal(0))
                or requests.get(r, Decimal(0)) == 0
            ]
            detail = f": {', '.join(unequal)} requests must be set and equal their limits"
            lines.append(f"{where}: the pod is {qos}, not Guaranteed{detail if unequal else ''}")
        elif cpu != cpu.to_integral_value():
            lines.append(f"{where}: cpu {format_cpu(cpu)} is not a whole number of cores")
    return lines
