"""The kubelet's QoS class and exclusive-CPU rules, on pods of every kind.

Expected values come from Kubernetes, not from chanbatch:

- "Pod Quality of Service Classes" (kubernetes.io) and ``ComputePodQOS`` /
  ``resourceQOS`` in pkg/apis/core/v1/helper/qos/qos.go: only cpu and memory count; a
  container is BestEffort with neither requested nor limited, Guaranteed when both are set and
  each request equals its limit, Burstable otherwise; init containers (sidecars too) count like
  the others; the pod is Guaranteed or BestEffort only if every container is, any mix is
  Burstable; pod-level ``spec.resources``, when set, decides alone. The API server defaults a
  missing request to its limit before the kubelet sees the pod.
- "Control CPU Management Policies on the Node" and ``guaranteedCPUs`` in
  pkg/kubelet/cm/cpumanager/policy_static.go: a container gets exclusive CPUs only in a
  Guaranteed pod and only for a whole-number cpu request (``Value()*1000 == MilliValue()``);
  "1.5" runs in the shared pool.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

pytest.importorskip("kubernetes")  # the [k8s] extra: quantities are parsed by its client
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from chanbatch.k8s.qos import cpu_explanation, exclusive_cpus, qos_class  # noqa: E402

GUARANTEED, BURSTABLE, BEST_EFFORT = "Guaranteed", "Burstable", "BestEffort"


def container(name: str, requests: dict | None = None, limits: dict | None = None, **extra: Any) -> dict:
    resources = {}
    if requests is not None:
        resources["requests"] = requests
    if limits is not None:
        resources["limits"] = limits
    return {"name": name, "image": "example", "resources": resources, **extra}


def pod(*containers: dict, init: tuple[dict, ...] = (), resources: dict | None = None) -> dict:
    spec: dict[str, Any] = {"containers": list(containers)}
    if init:
        spec["initContainers"] = list(init)
    if resources is not None:
        spec["resources"] = resources
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}


def same(cpu: str, memory: str) -> dict:
    return {"cpu": cpu, "memory": memory}


# --- the examples of the Kubernetes documentation ---------------------------------------------


def test_no_resources_is_best_effort_in_the_shared_pool() -> None:
    p = pod(container("nginx"))
    assert qos_class(p) == BEST_EFFORT
    assert exclusive_cpus(p) == {"nginx": 0}


def test_memory_request_below_limit_and_no_cpu_is_burstable() -> None:
    p = pod(container("nginx", requests={"memory": "100Mi"}, limits={"memory": "200Mi"}))
    assert qos_class(p) == BURSTABLE
    assert exclusive_cpus(p) == {"nginx": 0}


def test_cpu_request_below_limit_is_burstable() -> None:
    p = pod(container("nginx", requests=same("1", "100Mi"), limits=same("2", "200Mi")))
    assert qos_class(p) == BURSTABLE
    assert exclusive_cpus(p) == {"nginx": 0}


def test_equal_whole_cpu_is_guaranteed_with_that_many_cores() -> None:
    p = pod(container("nginx", requests=same("2", "200Mi"), limits=same("2", "200Mi")))
    assert qos_class(p) == GUARANTEED
    assert exclusive_cpus(p) == {"nginx": 2}


def test_fractional_cpu_is_guaranteed_but_gets_no_core() -> None:
    p = pod(container("nginx", requests=same("1.5", "200Mi"), limits=same("1.5", "200Mi")))
    assert qos_class(p) == GUARANTEED
    assert exclusive_cpus(p) == {"nginx": 0}
    (line,) = cpu_explanation(p)
    assert "'nginx'" in line and "1500m" in line


def test_limits_without_requests_default_the_requests() -> None:
    p = pod(container("nginx", limits=same("2", "200Mi")))
    assert qos_class(p) == GUARANTEED
    assert exclusive_cpus(p) == {"nginx": 2}


# --- which resources count --------------------------------------------------------------------


def test_memory_only_limits_are_burstable() -> None:
    # Guaranteed needs both cpu and memory limits on every container.
    p = pod(container("c", limits={"memory": "1Gi"}))
    assert qos_class(p) == BURSTABLE
    assert exclusive_cpus(p) == {"c": 0}


def test_cpu_only_limits_are_burstable() -> None:
    p = pod(container("c", requests={"cpu": "2"}, limits={"cpu": "2"}))
    assert qos_class(p) == BURSTABLE
    assert exclusive_cpus(p) == {"c": 0}


def test_zero_requests_count_as_none() -> None:
    p = pod(container("c", requests=same("0", "0")))
    assert qos_class(p) == BEST_EFFORT


def test_other_resources_do_not_count() -> None:
    only_storage = pod(container("c", requests={"ephemeral-storage": "1Gi"}))
    assert qos_class(only_storage) == BEST_EFFORT
    guaranteed_plus_storage = pod(
        container(
            "c",
            requests={"cpu": "1", "memory": "1Gi", "ephemeral-storage": "1Gi"},
            limits={"cpu": "1", "memory": "1Gi"},
        )
    )
    assert qos_class(guaranteed_plus_storage) == GUARANTEED
    assert exclusive_cpus(guaranteed_plus_storage) == {"c": 1}


def test_quantities_compare_by_value_not_by_spelling() -> None:
    p = pod(container("c", requests={"cpu": "2000m", "memory": "1Gi"}, limits={"cpu": "2", "memory": "1024Mi"}))
    assert qos_class(p) == GUARANTEED
    # 2000m is a whole number of cores: Value()*1000 == MilliValue().
    assert exclusive_cpus(p) == {"c": 2}


@pytest.mark.parametrize(
    ("cpu", "cores"), [("1", 1), ("3", 3), ("1000m", 1), ("0.5", 0), ("500m", 0), ("2500m", 0), ("1001m", 0)]
)
def test_only_whole_cpus_are_exclusive(cpu: str, cores: int) -> None:
    p = pod(container("c", limits=same(cpu, "1Gi")))
    assert qos_class(p) == GUARANTEED
    assert exclusive_cpus(p) == {"c": cores}


def test_a_bare_pod_spec_is_read_like_a_pod() -> None:
    p = pod(container("c", limits=same("2", "1Gi")))
    assert qos_class(p["spec"]) == GUARANTEED
    assert exclusive_cpus(p["spec"]) == {"c": 2}


# --- several containers, init containers and sidecars -----------------------------------------


def test_guaranteed_pod_with_a_fractional_container() -> None:
    p = pod(
        container("worker", limits=same("2", "4Gi")),
        container("helper", limits=same("500m", "128Mi")),
    )
    assert qos_class(p) == GUARANTEED
    assert exclusive_cpus(p) == {"worker": 2, "helper": 0}


def test_one_best_effort_container_makes_the_pod_burstable() -> None:
    p = pod(container("worker", limits=same("2", "4Gi")), container("logger"))
    assert qos_class(p) == BURSTABLE
    assert exclusive_cpus(p) == {"worker": 0, "logger": 0}
    lines = cpu_explanation(p)
    assert len(lines) == 2 and all("Burstable" in line for line in lines)


def test_init_container_without_limits_makes_the_pod_burstable() -> None:
    p = pod(
        container("worker", limits=same("2", "4Gi")),
        init=(container("fetch", requests={"cpu": "100m", "memory": "64Mi"}),),
    )
    assert qos_class(p) == BURSTABLE
    assert exclusive_cpus(p) == {"fetch": 0, "worker": 0}


def test_init_container_without_any_resources_makes_the_pod_burstable() -> None:
    p = pod(container("worker", limits=same("2", "4Gi")), init=(container("fetch"),))
    assert qos_class(p) == BURSTABLE
    assert exclusive_cpus(p)["worker"] == 0


def test_guaranteed_init_containers_get_their_own_cores() -> None:
    p = pod(
        container("worker", limits=same("2", "4Gi")),
        init=(container("fetch", limits=same("1", "1Gi")),),
    )
    assert qos_class(p) == GUARANTEED
    assert exclusive_cpus(p) == {"fetch": 1, "worker": 2}


def test_sidecar_init_containers_count_like_the_others() -> None:
    guaranteed_sidecar = container("proxy", limits=same("1", "256Mi"), restartPolicy="Always")
    p = pod(container("worker", limits=same("2", "4Gi")), init=(guaranteed_sidecar,))
    assert qos_class(p) == GUARANTEED
    assert exclusive_cpus(p) == {"proxy": 1, "worker": 2}
    loose_sidecar = container("proxy", requests={"cpu": "100m"}, restartPolicy="Always")
    p = pod(container("worker", limits=same("2", "4Gi")), init=(loose_sidecar,))
    assert qos_class(p) == BURSTABLE
    assert exclusive_cpus(p) == {"proxy": 0, "worker": 0}


def test_all_best_effort_containers_make_a_best_effort_pod() -> None:
    p = pod(container("a"), container("b"), init=(container("i"),))
    assert qos_class(p) == BEST_EFFORT


# --- pod-level resources (spec.resources, the PodLevelResources feature) ----------------------


def test_pod_level_resources_decide_alone() -> None:
    # Containers without resources, a Guaranteed pod-level budget: Guaranteed.
    p = pod(container("a"), container("b"), resources={"requests": same("2", "2Gi"), "limits": same("2", "2Gi")})
    assert qos_class(p) == GUARANTEED
    # No container asks for cpu itself, so none gets exclusive cores.
    assert exclusive_cpus(p) == {"a": 0, "b": 0}
    # Guaranteed containers under a Burstable pod-level budget: Burstable.
    p = pod(
        container("a", limits=same("1", "1Gi")),
        resources={"requests": same("1", "1Gi"), "limits": same("2", "2Gi")},
    )
    assert qos_class(p) == BURSTABLE
    assert exclusive_cpus(p) == {"a": 0}


def test_pod_level_limits_default_the_pod_level_requests() -> None:
    p = pod(container("a"), resources={"limits": same("2", "2Gi")})
    assert qos_class(p) == GUARANTEED


def test_pod_level_memory_only_is_burstable() -> None:
    p = pod(container("a"), resources={"limits": {"memory": "2Gi"}})
    assert qos_class(p) == BURSTABLE


# --- properties -------------------------------------------------------------------------------

cpus = st.one_of(
    st.integers(min_value=1, max_value=64).map(str),
    st.integers(min_value=1, max_value=64_000).map(lambda m: f"{m}m"),
)
memories = st.one_of(
    st.integers(min_value=1, max_value=64).map(lambda g: f"{g}Gi"),
    st.integers(min_value=1, max_value=65_536).map(lambda m: f"{m}Mi"),
)


def whole_cores(cpu: str) -> int:
    """Exclusive cores for a cpu quantity written as "N" or "Nm", by the kubelet's rule."""
    milli = int(cpu[:-1]) if cpu.endswith("m") else int(cpu) * 1000
    return milli // 1000 if milli % 1000 == 0 else 0


@st.composite
def equal_pods(draw: st.DrawFn) -> dict:
    """Pods whose every container, init containers too, has cpu and memory requests == limits."""
    n_main = draw(st.integers(min_value=1, max_value=3))
    n_init = draw(st.integers(min_value=0, max_value=2))
    names = [f"c{i}" for i in range(n_main + n_init)]

    def one(name: str) -> dict:
        amounts = same(draw(cpus), draw(memories))
        if draw(st.booleans()):
            return container(name, requests=dict(amounts), limits=dict(amounts))
        return container(name, limits=dict(amounts))  # requests default to the limits

    sidecar = draw(st.booleans())
    init = tuple(
        {**one(name), **({"restartPolicy": "Always"} if sidecar else {})} for name in names[n_main:]
    )
    return pod(*(one(name) for name in names[:n_main]), init=init)


def _cpu_of(c: dict) -> str:
    resources = c["resources"]
    return (resources.get("requests") or resources["limits"])["cpu"]


@settings(max_examples=200, deadline=None)
@given(equal_pods())
def test_equal_requests_and_limits_are_guaranteed(p: dict) -> None:
    assert qos_class(p) == GUARANTEED
    everyone = [*p["spec"].get("initContainers", []), *p["spec"]["containers"]]
    assert exclusive_cpus(p) == {c["name"]: whole_cores(_cpu_of(c)) for c in everyone}


@settings(max_examples=200, deadline=None)
@given(equal_pods(), st.data())
def test_removing_one_limit_makes_it_burstable(p: dict, data: st.DataObject) -> None:
    p = copy.deepcopy(p)
    everyone = [*p["spec"].get("initContainers", []), *p["spec"]["containers"]]
    victim = data.draw(st.sampled_from(everyone))
    resource = data.draw(st.sampled_from(["cpu", "memory"]))
    resources = victim["resources"]
    # The request stays (it was defaulted from the limit if not written); the limit goes.
    resources.setdefault("requests", dict(resources["limits"]))
    del resources["limits"][resource]
    assert qos_class(p) == BURSTABLE
    assert set(exclusive_cpus(p).values()) == {0}


@settings(max_examples=100, deadline=None)
@given(equal_pods(), st.data())
def test_one_container_asking_for_nothing_makes_it_burstable(p: dict, data: st.DataObject) -> None:
    p = copy.deepcopy(p)
    everyone = [*p["spec"].get("initContainers", []), *p["spec"]["containers"]]
    if len(everyone) < 2:
        return
    data.draw(st.sampled_from(everyone))["resources"] = {}
    assert qos_class(p) == BURSTABLE
    assert set(exclusive_cpus(p).values()) == {0}
