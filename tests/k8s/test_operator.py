"""The Blueprint operator end to end, against kmock's Kubernetes API emulator.

kopf runs the real handlers of ``chanbatch.k8s.operator`` in a thread of its own (its own event
loop), talking HTTP to kmock, which serves the Kubernetes API from the test's loop. The operator
validates each Blueprint, creates an owned DaskCluster in kmock, runs the blueprint on a Dask
cluster, patches the status as it goes, and deletes the DaskCluster. No pods can start here, so
the Dask cluster itself is a LocalCluster, reached through the operator's ``ClusterBackend``
(the same code path that attaches to the DaskCluster's scheduler in production).

Results are checked against pandas on the same rows; statuses against kmock's stored history of
each object, so that transient phases are seen even when they pass quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

pytest.importorskip("dask_kubernetes")  # the [k8s] extra
km = pytest.importorskip("kmock")
kopf = pytest.importorskip("kopf")
pytest_asyncio = pytest.importorskip("pytest_asyncio")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from kr8s._api import Api as Kr8sApi  # noqa: E402

import chanbatch as cb  # noqa: E402
from chanbatch.k8s import operator as op  # noqa: E402
from chanbatch.k8s.cluster import KubernetesError  # noqa: E402
from chanbatch.k8s.qos import exclusive_cpus, qos_class  # noqa: E402
from chanbatch.k8s.schemas import daskcluster_validator  # noqa: E402

GROUP, VERSION, PLURAL = "chanbatch.io", "v1alpha1", "blueprints"
BLUEPRINTS = km.resource(GROUP, VERSION, PLURAL)
DASKCLUSTERS = km.resource("kubernetes.dask.org", "v1", "daskclusters")
CRUD = {"get", "list", "watch", "create", "update", "patch", "delete"}
NAMESPACE = "default"

BLUEPRINT = {
    "name": "sales_by_kind",
    "inputs": {"sales": "sales"},
    "stages": {
        "big": {"from": "sales", "filter": "v > 2"},
        "by_kind": {
            "from": "big",
            "group_by": ["kind"],
            "aggregate": {"n": "count()", "total": "sum(v)"},
        },
    },
    "outputs": {"by_kind": "sales_by_kind"},
}


@pytest.fixture
def sales() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    rows = 600
    return pd.DataFrame(
        {
            "day": np.repeat(np.arange(1, 7), rows // 6),
            "kind": rng.choice(["a", "b", "c"], rows),
            "v": rng.integers(0, 10, rows),
        }
    )


@pytest.fixture
def store_path(tmp_path: Any, sales: pd.DataFrame) -> str:
    path = str(tmp_path / "store")
    cb.Store(path).freeze("sales", sales, slice_by="day")
    return path


def expected_by_kind(sales: pd.DataFrame) -> pd.DataFrame:
    big = sales[sales["v"] > 2]
    out = big.groupby("kind").agg(n=("v", "size"), total=("v", "sum")).reset_index()
    out = out.sort_values("kind").reset_index(drop=True)
    return out.astype({"kind": str, "n": "int64", "total": "int64"})


@pytest.fixture
def k8s(kmock: Any) -> Any:
    """kmock (its pytest plugin's fixture) knowing the kinds the operator uses."""
    kmock.resources["v1/namespaces"] = km.ResourceInfo(kind="Namespace", namespaced=False, verbs=CRUD)
    kmock.resources["v1/events"] = km.ResourceInfo(kind="Event", namespaced=True, verbs=CRUD)
    kmock.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = km.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, verbs=CRUD
    )
    kmock.resources[BLUEPRINTS] = km.ResourceInfo(
        kind="Blueprint", singular="blueprint", namespaced=True, verbs=CRUD, subresources={"status"}
    )
    kmock.resources[DASKCLUSTERS] = km.ResourceInfo(
        kind="DaskCluster", singular="daskcluster", namespaced=True, verbs=CRUD
    )
    # kr8s asks for /version/ (with the slash) when it connects; kmock serves only /version.
    kmock["get /version/"] << {"major": "1", "minor": "33", "gitVersion": "v1.33.0"}
    return kmock


@dataclass
class LocalBackend:
    """Dask clusters for the operator: a LocalCluster shaped like the DaskCluster manifest.

    It records, at attach time, the manifest and whether kmock held that DaskCluster then."""

    k8s: Any
    fail_first: int = 0
    attached: list[dict[str, Any]] = field(default_factory=list)
    existed_at_attach: list[bool] = field(default_factory=list)

    @contextlib.contextmanager
    def attach(self, manifest: Mapping[str, Any], namespace: str) -> Iterator[Any]:
        from distributed import Client, LocalCluster

        name = manifest["metadata"]["name"]
        self.existed_at_attach.append(live(self.k8s, DASKCLUSTERS, name, namespace) is not None)
        self.attached.append(copy.deepcopy(dict(manifest)))
        if self.fail_first > 0:
            self.fail_first -= 1
            raise KubernetesError(f"scheduler of {name} did not come up (test)")
        workers = manifest["spec"]["worker"]["replicas"]
        with (
            LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=False, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client


@dataclass
class Operator:
    backend: LocalBackend


@pytest_asyncio.fixture
async def operator(k8s: Any, request: pytest.FixtureRequest) -> AsyncIterator[Operator]:
    url = str(k8s.url)
    fail_first = getattr(request, "param", 0)
    backend = LocalBackend(k8s, fail_first=fail_first)
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True
    settings.scanning.disabled = True
    settings.watching.reconnect_backoff = 0.0
    settings.networking.error_backoffs = [0.1, 0.2]

    @kopf.on.login(registry=op.registry, id="kmock-login")
    def login(**_: Any) -> Any:
        return kopf.ConnectionInfo(server=url, insecure=True, default_namespace=NAMESPACE)

    memo = kopf.Memo(
        backend=op.ClusterBackend(attach=backend.attach, pods_run_it=False),
        api_url=url,
        backoff_base=0.2,
    )
    stop, ready = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=op.registry,
                    settings=settings,
                    memo=memo,
                    namespaces=[NAMESPACE],
                    standalone=True,
                    stop_flag=stop,
                    ready_flag=ready,
                )
            )
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="kopf-operator", daemon=True)
    thread.start()
    try:
        assert await asyncio.to_thread(ready.wait, 10), "the operator did not start"
        yield Operator(backend=backend)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 30)  # kmock must keep serving while kopf stops
        handlers = op.registry._activities._handlers
        handlers[:] = [h for h in handlers if h.id != "kmock-login"]
        Kr8sApi._instances.clear()  # kr8s caches clients per thread and loop
        assert not thread.is_alive(), "the operator did not stop"
        if errors:
            raise errors[0]


def live(k8s: Any, resource: Any, name: str, namespace: str = NAMESPACE) -> Any:
    key = (resource, namespace, name)
    if key not in k8s.objects or k8s.objects[key].deleted:
        return None
    return k8s.objects[key]


def history(k8s: Any, resource: Any, name: str) -> list[dict[str, Any]]:
    return [v for v in k8s.objects[resource, NAMESPACE, name].history if v is not None]


def phases(k8s: Any, name: str) -> list[str]:
    seen: list[str] = []
    for version in history(k8s, BLUEPRINTS, name):
        phase = (version.get("status") or {}).get("phase")
        if phase and (not seen or seen[-1] != phase):
            seen.append(phase)
    return seen


async def eventually(predicate: Callable[[], Any], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        await asyncio.sleep(0.02)  # kmock serves from this loop: never block it


def resource(name: str, store: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Blueprint",
        # kmock assigns no uid, as the API server would: the test does.
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": str(uuid.uuid4())},
        "spec": {
            "store": store,
            "blueprint": copy.deepcopy(BLUEPRINT),
            "workers": {"replicas": 2, "cpu": "2", "memory": "2Gi", "threadsPerCore": 2},
            **spec,
        },
    }


async def create(k8s: Any, body: dict[str, Any]) -> dict[str, Any]:
    response = await k8s.post(f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}", json=body)
    assert response.status in (200, 201), await response.text()
    return await response.json()


def phase(k8s: Any, name: str) -> str | None:
    obj = live(k8s, BLUEPRINTS, name)
    return None if obj is None else (obj.get("status") or {}).get("phase")


def finished(k8s: Any, name: str) -> bool:
    return phase(k8s, name) in ("Succeeded", "Failed")


def output_frame(store_path: str, status: Mapping[str, Any]) -> pd.DataFrame:
    out = status["outputs"]["by_kind"]
    frame = cb.Store(store_path).read(f"{out['dataset']}@{out['snapshot']}").compute()
    frame = frame[["kind", "n", "total"]].sort_values("kind").reset_index(drop=True)
    return frame.astype({"kind": str, "n": "int64", "total": "int64"})


@pytest.mark.asyncio
async def test_a_blueprint_runs_on_an_owned_daskcluster_with_live_status(
    k8s: Any, operator: Operator, store_path: str, sales: pd.DataFrame
) -> None:
    created = await create(k8s, resource("sales", store_path))
    await eventually(lambda: finished(k8s, "sales"))
    status = live(k8s, BLUEPRINTS, "sales")["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert phases(k8s, "sales") == ["Pending", "Running", "Succeeded"]

    # The DaskCluster existed when the run attached to it: owned by the Blueprint, its worker
    # pods Guaranteed with whole cpus, valid for the installed dask-kubernetes CRD.
    assert operator.backend.existed_at_attach == [True]
    (manifest,) = operator.backend.attached
    name = manifest["metadata"]["name"]
    stored = history(k8s, DASKCLUSTERS, name)[0]
    assert stored["metadata"]["ownerReferences"] == [
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Blueprint",
            "name": "sales",
            "uid": created["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    daskcluster_validator().validate(stored)
    worker_pod = {"spec": stored["spec"]["worker"]["spec"]}
    assert qos_class(worker_pod) == "Guaranteed"
    assert exclusive_cpus(worker_pod) == {"worker": 2}
    (worker,) = worker_pod["spec"]["containers"]
    assert worker["resources"]["requests"] == worker["resources"]["limits"] == {
        "cpu": "2",
        "memory": "2Gi",
    }
    assert stored["spec"]["worker"]["replicas"] == 2
    # ... and it is gone once the run is over.
    assert live(k8s, DASKCLUSTERS, name) is None
    assert status["cluster"] == name

    # Live progress: a Running status with tasks done but not all, before the end.
    running = [v["status"] for v in history(k8s, BLUEPRINTS, "sales") if v.get("status", {}).get("phase") == "Running"]
    assert running, "no Running status was ever stored"
    done, total = (int(x) for x in status["progress"].split("/"))
    assert done == total > 0
    assert status["stages"]["big"] == {"total": 6, "computed": 6, "reused": 0, "cutoff": 0}
    assert status["stages"]["by_kind"]["computed"] >= 6  # one partial per slice, then combines
    assert status["observedGeneration"] == 1
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Valid"]["status"] == "True"
    assert conditions["Complete"]["status"] == "True"
    assert conditions["Failed"]["status"] == "False"
    assert conditions["Progressing"]["status"] == "False"
    assert status["startTime"] <= status["completionTime"]

    # The answer, from the store, equals pandas on the same rows.
    pd.testing.assert_frame_equal(output_frame(store_path, status), expected_by_kind(sales))
    out = status["outputs"]["by_kind"]
    assert status["outputSummary"] == f"sales_by_kind@{out['snapshot'][:12]}"
    assert out["rows"] == 3
    assert (cb.Store(store_path).storage.exists(f"runs/{status['runId']}.json"))


@pytest.mark.asyncio
async def test_a_second_blueprint_over_the_same_data_reuses_everything_without_a_cluster(
    k8s: Any, operator: Operator, store_path: str, sales: pd.DataFrame
) -> None:
    await create(k8s, resource("first", store_path))
    await eventually(lambda: finished(k8s, "first"))
    await create(k8s, resource("second", store_path))
    await eventually(lambda: finished(k8s, "second"))
    first = live(k8s, BLUEPRINTS, "first")["status"]
    second = live(k8s, BLUEPRINTS, "second")["status"]
    assert second["phase"] == "Succeeded", second.get("message")
    assert second["outputs"] == first["outputs"]
    assert all(s["computed"] == 0 for s in second["stages"].values())
    assert second["stages"]["big"]["reused"] == 6
    assert len(operator.backend.attached) == 1  # only the first run needed a cluster
    assert "cluster" not in second


@pytest.mark.asyncio
async def test_an_invalid_blueprint_fails_with_its_message_and_is_not_retried(
    k8s: Any, operator: Operator, store_path: str
) -> None:
    body = resource("broken", store_path)
    body["spec"]["blueprint"]["stages"]["by_kind"]["from"] = "bigg"
    await create(k8s, body)
    await eventually(lambda: finished(k8s, "broken"))
    status = live(k8s, BLUEPRINTS, "broken")["status"]
    assert status["phase"] == "Failed"
    assert "by_kind" in status["message"] and "'bigg'" in status["message"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Valid"]["status"] == "False"
    assert conditions["Valid"]["reason"] == "InvalidSpec"
    assert "'bigg'" in conditions["Valid"]["message"]
    assert conditions["Failed"]["status"] == "True"
    await asyncio.sleep(1.0)  # a retry would have come by now (backoff_base 0.2 s)
    assert phases(k8s, "broken") == ["Failed"]
    assert operator.backend.attached == []
    assert not [k for k in k8s.objects if k[0] == DASKCLUSTERS]


@pytest.mark.asyncio
async def test_a_missing_input_fails_before_any_cluster_starts(
    k8s: Any, operator: Operator, store_path: str
) -> None:
    await create(k8s, resource("nosales", store_path, inputs={"sales": "salez"}))
    await eventually(lambda: finished(k8s, "nosales"))
    status = live(k8s, BLUEPRINTS, "nosales")["status"]
    assert status["phase"] == "Failed"
    assert "salez" in status["message"]
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Failed"] == "InvalidInput"
    assert operator.backend.attached == []


@pytest.mark.asyncio
async def test_a_shape_without_exclusive_cores_is_refused(
    k8s: Any, operator: Operator, store_path: str
) -> None:
    body = resource("smt", store_path)
    body["spec"]["workers"] = {"cpu": "3", "threadsPerCore": 2, "fullPcpusOnly": True}
    await create(k8s, body)
    await eventually(lambda: finished(k8s, "smt"))
    status = live(k8s, BLUEPRINTS, "smt")["status"]
    assert status["phase"] == "Failed"
    assert "SMTAlignmentError" in status["message"]
    assert operator.backend.attached == []


@pytest.mark.parametrize("operator", [1], indirect=True)
@pytest.mark.asyncio
async def test_a_cluster_that_does_not_come_up_is_retried_then_runs(
    k8s: Any, operator: Operator, store_path: str, sales: pd.DataFrame
) -> None:
    await create(k8s, resource("flaky", store_path))
    await eventually(lambda: phase(k8s, "flaky") == "Succeeded")
    messages = [(v.get("status") or {}).get("message", "") for v in history(k8s, BLUEPRINTS, "flaky")]
    assert any(m.startswith("will retry: ") and "did not come up" in m for m in messages)
    assert len(operator.backend.attached) == 2
    status = live(k8s, BLUEPRINTS, "flaky")["status"]
    pd.testing.assert_frame_equal(output_frame(store_path, status), expected_by_kind(sales))
    # Each attempt's DaskCluster was deleted after it.
    assert not [k for k, v in k8s.objects.items() if k[0] == DASKCLUSTERS and not v.deleted]


@pytest.mark.asyncio
async def test_a_spec_change_runs_the_new_generation(
    k8s: Any, operator: Operator, store_path: str, sales: pd.DataFrame
) -> None:
    await create(k8s, resource("gen", store_path))
    await eventually(lambda: phase(k8s, "gen") == "Succeeded")
    # kmock does not count generations; the patch plays the API server, which bumps it on a
    # spec change.
    changed = copy.deepcopy(BLUEPRINT)
    changed["stages"]["big"]["filter"] = "v > 5"
    response = await k8s.patch(
        f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}/gen",
        json={"metadata": {"generation": 2}, "spec": {"blueprint": changed}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status == 200, await response.text()
    await eventually(
        lambda: (live(k8s, BLUEPRINTS, "gen").get("status") or {}).get("observedGeneration") == 2
        and finished(k8s, "gen")
    )
    status = live(k8s, BLUEPRINTS, "gen")["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    expected = expected_by_kind(sales[sales["v"] > 5])
    pd.testing.assert_frame_equal(output_frame(store_path, status), expected)


@pytest.mark.asyncio
async def test_a_rerun_request_after_a_new_slice_computes_only_that_slice(
    k8s: Any, operator: Operator, store_path: str, sales: pd.DataFrame
) -> None:
    await create(k8s, resource("daily", store_path))
    await eventually(lambda: phase(k8s, "daily") == "Succeeded")
    first = copy.deepcopy(dict(live(k8s, BLUEPRINTS, "daily")["status"]))

    # A new day arrives and is frozen as one more slice; then the user asks for a rerun.
    day7 = sales[sales["day"] == 6].assign(day=7, v=lambda f: (f["v"] + 1) % 10)
    cb.Store(store_path).freeze("sales", day7, slice_by="day")
    response = await k8s.patch(
        f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}/daily",
        json={"metadata": {"annotations": {"chanbatch.io/rerun": "day-7"}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status == 200, await response.text()
    await eventually(
        lambda: (live(k8s, BLUEPRINTS, "daily").get("status") or {}).get("runRequest") == "day-7"
        and finished(k8s, "daily")
    )
    status = live(k8s, BLUEPRINTS, "daily")["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert status["runId"] != first["runId"]
    # Only the new slice's filter ran; the six old slices' results were reused.
    assert status["stages"]["big"] == {"total": 7, "computed": 1, "reused": 6, "cutoff": 0}
    everything = pd.concat([sales, day7], ignore_index=True)
    pd.testing.assert_frame_equal(output_frame(store_path, status), expected_by_kind(everything))
    assert status["outputs"]["by_kind"]["snapshot"] != first["outputs"]["by_kind"]["snapshot"]
