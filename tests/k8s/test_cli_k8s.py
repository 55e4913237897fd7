"""The Kubernetes commands as a user meets them: ``run --scheduler kubernetes``, ``k8s crd`` and
``k8s operator``, through the real console script. There is no cluster here, so these are the
paths that must fail cleanly (one ``Error:`` line, the right exit code, no traceback) before
any pod would start, and the one that must not need a cluster at all."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("dask_kubernetes")  # the [k8s] extra

from tests.cli.clikit import assert_one_error_line, base_env, run

ROOT = Path(__file__).resolve().parents[2]
CARRIER_DELAYS = ROOT / "blueprints" / "carrier_delays.yaml"


def no_kube_env(tmp_path: Path) -> dict[str, str]:
    """No kubeconfig and no in-cluster service account."""
    env = base_env(KUBECONFIG=str(tmp_path / "no-kubeconfig"), HOME=str(tmp_path))
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return env


def test_k8s_crd_prints_the_committed_crd() -> None:
    result = run("k8s", "crd")
    assert result.code == 0, str(result)
    assert result.stdout == (ROOT / "k8s" / "crds" / "blueprint.yaml").read_text()


def test_run_on_kubernetes_refuses_a_local_store(tmp_path: Path) -> None:
    result = run(
        "run", CARRIER_DELAYS, "--scheduler", "kubernetes", store=tmp_path / "snapshots",
        env=no_kube_env(tmp_path),
    )
    line = assert_one_error_line(result, 2, "local path", "pods")
    assert "s3://" in line  # the hint says what to use instead


def test_run_on_kubernetes_refuses_a_memory_store(tmp_path: Path) -> None:
    result = run(
        "run", CARRIER_DELAYS, "--scheduler", "kubernetes", store="memory://x",
        env=no_kube_env(tmp_path),
    )
    assert_one_error_line(result, 2, "memory")


def test_shape_options_need_the_kubernetes_scheduler(tmp_path: Path) -> None:
    result = run("run", CARRIER_DELAYS, "--cpu", "2", store=tmp_path / "s")
    assert_one_error_line(result, 2, "--cpu", "kubernetes")


def test_a_missing_input_fails_before_any_cluster_is_asked_for(tmp_path: Path) -> None:
    # A store URL pods could reach, with no datasets in it: the plan fails on the input first.
    result = run(
        "run", CARRIER_DELAYS, "--scheduler", "kubernetes", "--cpu", "2",
        store="http://127.0.0.1:9/snapshots", env=no_kube_env(tmp_path),
    )
    assert result.code != 0, str(result)
    assert "Traceback" not in result.stderr
    assert "starting Dask cluster" not in result.stderr
    assert result.stderr.strip().startswith("Error:")


def test_operator_without_credentials_says_so(tmp_path: Path) -> None:
    result = run("k8s", "operator", "--all-namespaces", env=no_kube_env(tmp_path), timeout=60)
    assert_one_error_line(result, 1, "no Kubernetes credentials", "kubeconfig")


def test_operator_needs_to_know_its_namespaces() -> None:
    result = run("k8s", "operator")
    assert_one_error_line(result, 2, "--namespace", "--all-namespaces")


def test_kube_cluster_without_credentials_raises_one_error_and_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from dask_kubernetes.operator import KubeCluster

    from chanbatch.k8s.cluster import KubernetesError, kube_cluster
    from chanbatch.k8s.shape import WorkerShape, render_cluster

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    manifest = render_cluster(WorkerShape(cpu="2"), name="cb-nocreds")
    with pytest.raises(KubernetesError) as caught, kube_cluster(manifest, timeout=5):
        pass
    assert "cb-nocreds" in str(caught.value)
    assert caught.value.hint and "kubeconfig" in caught.value.hint
    # A cluster that failed to start is not left for dask-kubernetes to reap (and report
    # again) at exit.
    assert not [c for c in KubeCluster._instances if getattr(c, "name", None) == "cb-nocreds"]


def test_a_missing_k8s_extra_is_named_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    from chanbatch.cli.kubeshape import require_k8s_extra
    from chanbatch.errors import UsageError

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "kopf" else real(name, *a)
    )
    with pytest.raises(UsageError) as caught:
        require_k8s_extra("the operator")
    assert "kopf" in str(caught.value) and "[k8s]" in str(caught.value)
    assert caught.value.hint == "pip install 'chanbatch[k8s]'"
