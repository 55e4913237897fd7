"""DaskCluster manifests rendered from worker shapes, and the check that refuses bad shapes.

Every manifest is validated against the DaskCluster CRD shipped inside the installed
dask-kubernetes (nulls pruned, unknown fields rejected). The worker pod must be one the kubelet
pins: every container with cpu and memory requests == limits, cpu a whole number written as a
string, so that under the static CPU manager it gets ``cpu`` cores of its own (the rules are
tested on their own in test_qos.py). ``--memory-limit`` is checked with dask's own byte parser
against the Kubernetes quantity, both independent of chanbatch.

The SMT rules come from ``staticPolicy.Allocate`` (pkg/kubelet/cm/cpumanager/policy_static.go):
with ``full-pcpus-only`` a container whose exclusive cpu count is not a multiple of the node's
CPUs per core fails admission with SMTAlignmentError.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("dask_kubernetes")  # the [k8s] extra
pytest.importorskip("jsonschema")
kubernetes_quantity = pytest.importorskip("kubernetes.utils.quantity")
yaml = pytest.importorskip("yaml")
pytest.importorskip("hypothesis")
from dask.utils import parse_bytes  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from chanbatch.k8s.qos import exclusive_cpus, qos_class  # noqa: E402
from chanbatch.k8s.schemas import ManifestError, daskcluster_validator  # noqa: E402
from chanbatch.k8s.shape import (  # noqa: E402
    RUN_AS_USER,
    ShapeError,
    WorkerShape,
    check_shape,
    cluster_name,
    render_cluster,
)

quantity = kubernetes_quantity.parse_quantity
WHOLE = re.compile(r"^[1-9][0-9]*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
CHANBATCH = Path(sys.executable).with_name("chanbatch")


def worker_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["worker"]["spec"]


def scheduler_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["scheduler"]["spec"]


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def arg_after(args: list[str], flag: str) -> str:
    assert args.count(flag) == 1, (flag, args)
    return args[args.index(flag) + 1]


# --- shapes -----------------------------------------------------------------------------------

env_names = st.from_regex(r"[A-Z_][A-Z0-9_]{0,15}", fullmatch=True).filter(
    lambda name: name != "OMP_NUM_THREADS"
)
env_values = st.text(st.characters(codec="ascii", categories=("L", "N", "P")), max_size=20)
label_keys = st.from_regex(r"(example\.com/)?[a-z][a-z0-9-]{0,14}[a-z0-9]", fullmatch=True)
label_values = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,14}[a-z0-9])?", fullmatch=True)
tolerations = st.one_of(
    st.builds(
        lambda key, effect: {"key": key, "operator": "Exists", "effect": effect},
        label_keys,
        st.sampled_from(["NoSchedule", "PreferNoSchedule", "NoExecute"]),
    ),
    st.builds(
        lambda key, value: {"key": key, "operator": "Equal", "value": value, "effect": "NoSchedule"},
        label_keys,
        label_values,
    ),
)
# More than the scheduler's default 1Gi, as any real worker has.
memories = st.one_of(
    st.integers(min_value=2, max_value=256).map(lambda g: f"{g}Gi"),
    st.integers(min_value=1025, max_value=262_144).map(lambda m: f"{m}Mi"),
)
shapes = st.builds(
    WorkerShape,
    workers=st.integers(min_value=1, max_value=200),
    cpu=st.integers(min_value=1, max_value=64).map(str),
    memory=memories,
    image=st.sampled_from(["ghcr.io/chanbatch/chanbatch:0.1.0", "registry.example.com/cb:dev"]),
    env=st.dictionaries(env_names, env_values, max_size=4),
    env_from_secret=st.one_of(st.none(), st.sampled_from(["store-credentials", "s3"])),
    node_selector=st.dictionaries(label_keys, label_values, max_size=3),
    tolerations=st.lists(tolerations, max_size=3).map(tuple),
)


@settings(max_examples=150, deadline=None)
@given(shapes, st.sampled_from([None, "default", "team-a"]))
def test_rendered_cluster_matches_the_installed_daskcluster_crd(
    shape: WorkerShape, namespace: str | None
) -> None:
    manifest = render_cluster(shape, name="cb-test", namespace=namespace)
    assert manifest["apiVersion"] == "kubernetes.dask.org/v1"
    assert manifest["kind"] == "DaskCluster"
    assert daskcluster_validator().problems(manifest) == []
    assert manifest["metadata"].get("namespace") == namespace
    assert manifest["spec"]["worker"]["replicas"] == shape.workers


@settings(max_examples=150, deadline=None)
@given(shapes)
def test_every_worker_container_is_pinnable(shape: WorkerShape) -> None:
    manifest = render_cluster(shape, name="cb-test")
    spec = worker_spec(manifest)
    for container in all_containers(spec):
        requests = container["resources"]["requests"]
        limits = container["resources"]["limits"]
        assert requests == limits
        assert set(limits) >= {"cpu", "memory"}
        assert isinstance(limits["cpu"], str) and WHOLE.match(limits["cpu"]), limits
        assert isinstance(limits["memory"], str)
    (worker,) = spec["containers"]
    assert worker["resources"]["limits"]["cpu"] == shape.cpu
    assert quantity(worker["resources"]["limits"]["memory"]) == quantity(shape.memory)
    args = worker["args"]
    assert args[:2] == ["dask", "worker"]
    assert "command" not in worker  # the image has no ENTRYPOINT; args are the whole command
    assert arg_after(args, "--nthreads") == "1"
    # dask reads the limit in bytes exactly as Kubernetes reads the container's memory.
    assert parse_bytes(arg_after(args, "--memory-limit")) == quantity(shape.memory)
    assert worker["image"] == shape.image


@settings(max_examples=100, deadline=None)
@given(shapes)
def test_worker_pod_is_guaranteed_with_cpu_exclusive_cores(shape: WorkerShape) -> None:
    pod = {"spec": worker_spec(render_cluster(shape, name="cb-test"))}
    assert qos_class(pod) == "Guaranteed"
    assert exclusive_cpus(pod) == {"worker": int(shape.cpu)}


@settings(max_examples=100, deadline=None)
@given(shapes)
def test_scheduler_gets_smaller_resources_of_its_own(shape: WorkerShape) -> None:
    manifest = render_cluster(shape, name="cb-test")
    (scheduler,) = scheduler_spec(manifest)["containers"]
    (worker,) = worker_spec(manifest)["containers"]
    s, w = scheduler["resources"], worker["resources"]
    assert s["requests"] == s["limits"]
    for resource in ("cpu", "memory"):
        assert quantity(s["limits"][resource]) < quantity(w["limits"][resource]), resource
    assert scheduler["args"][:2] == ["dask", "scheduler"]
    assert scheduler["image"] == shape.image


@settings(max_examples=100, deadline=None)
@given(shapes)
def test_env_node_selector_and_tolerations_reach_the_pods(shape: WorkerShape) -> None:
    manifest = render_cluster(shape, name="cb-test")
    for spec in (worker_spec(manifest), scheduler_spec(manifest)):
        assert spec.get("nodeSelector", {}) == dict(shape.node_selector)
        assert spec.get("tolerations", []) == [dict(t) for t in shape.tolerations]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == RUN_AS_USER
        (container,) = spec["containers"]
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        assert all(isinstance(v, str) for v in env.values())
        assert env.items() >= dict(shape.env).items()
        if shape.env_from_secret:
            assert container["envFrom"] == [{"secretRef": {"name": shape.env_from_secret}}]
        else:
            assert "envFrom" not in container


def test_scheduler_service_selects_the_scheduler_pod_of_this_cluster() -> None:
    manifest = render_cluster(WorkerShape(), name="cb-carrier-delays")
    service = manifest["spec"]["scheduler"]["service"]
    # The dask-kubernetes operator labels the pods it creates with these two labels.
    assert service["selector"] == {
        "dask.org/cluster-name": "cb-carrier-delays",
        "dask.org/component": "scheduler",
    }
    (scheduler,) = scheduler_spec(manifest)["containers"]
    container_ports = {p["name"] for p in scheduler["ports"]}
    assert {p["targetPort"] for p in service["ports"]} <= container_ports
    # KubeCluster looks the ports up by these names.
    assert {p["name"] for p in service["ports"]} >= {"tcp-comm", "http-dashboard"}


# --- the validator rejects what the API server would drop or refuse ---------------------------


@pytest.fixture
def manifest() -> dict[str, Any]:
    return render_cluster(WorkerShape(workers=3, cpu="2", memory="8Gi"), name="cb-test")


def test_misspelt_field_is_rejected_with_its_path(manifest: dict[str, Any]) -> None:
    broken = copy.deepcopy(manifest)
    container = worker_spec(broken)["containers"][0]
    container["resourcez"] = container.pop("resources")
    problems = daskcluster_validator().problems(broken)
    assert any(
        p.startswith("spec.worker.spec.containers[0]:") and "'resourcez'" in p for p in problems
    ), problems
    with pytest.raises(ManifestError) as caught:
        daskcluster_validator().validate(broken)
    assert "spec.worker.spec.containers[0]" in str(caught.value)
    assert "resourcez" in str(caught.value)


def test_misspelt_top_level_field_is_rejected(manifest: dict[str, Any]) -> None:
    broken = copy.deepcopy(manifest)
    broken["spec"]["workers"] = broken["spec"].pop("worker")
    problems = daskcluster_validator().problems(broken)
    assert any(p.startswith("spec:") and "'workers'" in p for p in problems), problems


def test_int_cpu_is_rejected_with_its_path(manifest: dict[str, Any]) -> None:
    broken = copy.deepcopy(manifest)
    worker_spec(broken)["containers"][0]["resources"]["limits"]["cpu"] = 2
    problems = daskcluster_validator().problems(broken)
    assert any(
        p.startswith("spec.worker.spec.containers[0].resources.limits.cpu:") for p in problems
    ), problems
    with pytest.raises(ManifestError) as caught:
        daskcluster_validator().validate(broken)
    assert "spec.worker.spec.containers[0].resources.limits.cpu" in str(caught.value)


def test_replicas_as_text_is_rejected(manifest: dict[str, Any]) -> None:
    broken = copy.deepcopy(manifest)
    broken["spec"]["worker"]["replicas"] = "3"
    problems = daskcluster_validator().problems(broken)
    assert any(p.startswith("spec.worker.replicas:") for p in problems), problems


def test_nulls_are_pruned_as_the_api_server_does(manifest: dict[str, Any]) -> None:
    with_nulls = copy.deepcopy(manifest)
    worker_spec(with_nulls)["nodeSelector"] = None
    worker_spec(with_nulls)["containers"][0]["envFrom"] = None
    assert daskcluster_validator().problems(with_nulls) == []


# --- check_shape ------------------------------------------------------------------------------


@pytest.mark.parametrize("cpu", ["1500m", "0.5", "2.5", "500m"])
def test_fractional_cpus_are_refused_with_the_reason(cpu: str) -> None:
    shape = WorkerShape(cpu=cpu)
    with pytest.raises(ShapeError) as caught:
        check_shape(shape)
    message = str(caught.value)
    assert repr(cpu) in message
    assert "exclusive cores" in message and "whole number" in message
    assert caught.value.hint and "whole number" in caught.value.hint
    # render_cluster draws what was asked; the kubelet would run it in the shared pool.
    pod = {"spec": worker_spec(render_cluster(shape, name="cb-test"))}
    assert qos_class(pod) == "Guaranteed"
    assert exclusive_cpus(pod) == {"worker": 0}


@pytest.mark.parametrize("cpu", ["two", "-1", "0"])
def test_cpus_that_are_not_positive_quantities_are_refused(cpu: str) -> None:
    with pytest.raises(ShapeError):
        check_shape(WorkerShape(cpu=cpu))


@pytest.mark.parametrize("cpu", ["1", "3", "5"])
def test_odd_cpus_warn_about_full_pcpus_only_and_smt(cpu: str) -> None:
    for threads_per_core in (None, 2):
        warnings = check_shape(WorkerShape(cpu=cpu, threads_per_core=threads_per_core))
        assert len(warnings) == 1
        assert "full-pcpus-only" in warnings[0] and "SMT" in warnings[0]
        assert f"{cpu} cpu" in warnings[0]


@pytest.mark.parametrize("cpu", ["2", "4", "16"])
def test_even_cpus_do_not_warn(cpu: str) -> None:
    assert check_shape(WorkerShape(cpu=cpu)) == []
    assert check_shape(WorkerShape(cpu=cpu, threads_per_core=2, full_pcpus_only=True)) == []


def test_nodes_without_smt_do_not_warn() -> None:
    assert check_shape(WorkerShape(cpu="1", threads_per_core=1)) == []
    assert check_shape(WorkerShape(cpu="3", threads_per_core=1, full_pcpus_only=True)) == []


@pytest.mark.parametrize("cpu", ["1", "3"])
def test_full_pcpus_only_on_smt_nodes_refuses_odd_cpus(cpu: str) -> None:
    with pytest.raises(ShapeError) as caught:
        check_shape(WorkerShape(cpu=cpu, threads_per_core=2, full_pcpus_only=True))
    assert "SMTAlignmentError" in str(caught.value)
    assert caught.value.hint and "2" in caught.value.hint


def test_full_pcpus_only_refuses_cpus_not_a_multiple_of_threads_per_core() -> None:
    with pytest.raises(ShapeError):
        check_shape(WorkerShape(cpu="2", threads_per_core=4, full_pcpus_only=True))


def test_cpus_not_a_multiple_of_threads_per_core_warn() -> None:
    assert check_shape(WorkerShape(cpu="2", threads_per_core=4)) != []


def test_dask_pods_meet_the_restricted_pod_security_standard() -> None:
    manifest = render_cluster(WorkerShape(), name="cb-test")
    for spec in (worker_spec(manifest), scheduler_spec(manifest)):
        pod_seccomp = spec.get("securityContext", {}).get("seccompProfile", {}).get("type")
        for container in all_containers(spec):
            context = container.get("securityContext", {})
            assert context.get("allowPrivilegeEscalation") is False
            assert context.get("capabilities", {}).get("drop") == ["ALL"]
            assert True in (context.get("runAsNonRoot"), spec["securityContext"].get("runAsNonRoot"))
            seccomp = context.get("seccompProfile", {}).get("type", pod_seccomp)
            assert seccomp in ("RuntimeDefault", "Localhost")


# --- names and documents ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [("carrier_delays", "cb-carrier-delays"), ("Q1.Daily", "cb-q1-daily"), ("x" * 80, "cb-" + "x" * 37)],
)
def test_cluster_names_are_dns_labels(name: str, expected: str) -> None:
    made = cluster_name(name)
    assert made == expected
    # Room for the "-scheduler" and pod suffixes the dask operator appends.
    assert len(made) <= 40 and DNS_LABEL.match(made)


def test_shape_document_round_trips() -> None:
    shape = WorkerShape(
        workers=4, cpu="2", memory="4Gi", env={"A": "1"}, env_from_secret="creds",
        node_selector={"pool": "cpu"}, tolerations=({"key": "dedicated", "operator": "Exists"},),
        threads_per_core=2, full_pcpus_only=True,
    )
    assert WorkerShape.from_document(shape.document()) == shape


def test_shape_document_refuses_unknown_fields() -> None:
    with pytest.raises(ShapeError) as caught:
        WorkerShape.from_document({"replicas": 2, "cpus": "2"})
    assert "'cpus'" in str(caught.value)


# --- the command ------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    if not CHANBATCH.exists():
        pytest.skip("the chanbatch console script is not installed next to this Python")
    return subprocess.run(
        [str(CHANBATCH), *args], capture_output=True, text=True, check=False, timeout=120
    )


def test_render_command_prints_a_valid_daskcluster() -> None:
    done = run_cli("k8s", "render", "--workers", "4", "--cpu", "2", "--memory", "8Gi", "--namespace", "team-a")
    assert done.returncode == 0, done.stderr
    manifest = yaml.safe_load(done.stdout)
    assert daskcluster_validator().problems(manifest) == []
    assert manifest["metadata"]["namespace"] == "team-a"
    assert manifest["spec"]["worker"]["replicas"] == 4
    (worker,) = worker_spec(manifest)["containers"]
    assert worker["resources"]["limits"] == {"cpu": "2", "memory": "8Gi"}
    assert done.stderr == ""


def test_render_command_warns_on_stderr_only() -> None:
    done = run_cli("k8s", "render", "--cpu", "1")
    assert done.returncode == 0, done.stderr
    assert "full-pcpus-only" in done.stderr
    assert daskcluster_validator().problems(yaml.safe_load(done.stdout)) == []


def test_render_command_refuses_fractional_cpus() -> None:
    done = run_cli("k8s", "render", "--cpu", "1500m")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("Error:") and "whole number" in done.stderr


def test_render_command_refuses_odd_cpus_with_full_pcpus_only_on_smt() -> None:
    done = run_cli("k8s", "render", "--cpu", "1", "--threads-per-core", "2", "--full-pcpus-only")
    assert done.returncode == 2
    assert "SMTAlignmentError" in done.stderr


def test_memory_limit_is_the_container_memory_for_decimal_units() -> None:
    manifest = render_cluster(WorkerShape(memory="4G"), name="cb-test")
    (worker,) = worker_spec(manifest)["containers"]
    assert quantity(worker["resources"]["limits"]["memory"]) == Decimal(4 * 10**9)
    assert parse_bytes(arg_after(worker["args"], "--memory-limit")) == 4 * 10**9
