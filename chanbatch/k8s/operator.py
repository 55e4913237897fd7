"""The Blueprint operator: kopf handlers that run a Blueprint resource on its own Dask cluster.

For each new Blueprint, each change of its spec (a new generation), each new value of its
``chanbatch.io/rerun`` annotation (to run again on new data), and each one left unfinished when
the operator restarts, ``reconcile``:

1. validates the resource (``chanbatch.k8s.resource``) and plans the run against the store, so
   a bad blueprint, binding, shape or REF fails before any pod starts: phase ``Failed``, the
   message in the ``Valid``/``Failed`` conditions, and no retry (``kopf.PermanentError``);
2. when something is left to compute, creates a DaskCluster of the resource's worker shape,
   owned by the Blueprint (so Kubernetes deletes it with its owner), and attaches to it;
   when everything is cached, runs in the operator without a cluster;
3. runs the blueprint, patching the status as tasks finish (phase ``Running``, ``done/total``,
   per-stage counts), then ``Succeeded`` with the output snapshots;
4. deletes the DaskCluster, however the run ended.

A store or network failure is retried with exponential backoff (``kopf.TemporaryError``); a
stage that raises is not, since it would raise again on the same immutable inputs.

The handlers are thin: they call pure builders (shape, status) and sort errors. Where the Dask
cluster comes from is a ``ClusterBackend`` in kopf's memo: dask-kubernetes in production, a
LocalCluster in the tests (kmock serves the Kubernetes API there, and no pods can start).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from chanbatch.errors import ChanbatchError, IntegrityError, StoreError, UsageError
from chanbatch.k8s import status as st
from chanbatch.k8s.cluster import KubernetesError, attach_cluster
from chanbatch.k8s.crd import GROUP, PLURAL, VERSION
from chanbatch.k8s.resource import BlueprintRun, InvalidResource, read_resource
from chanbatch.k8s.schemas import daskcluster_validator
from chanbatch.k8s.shape import cluster_name, render_cluster
from chanbatch.k8s.writer import StatusWriter

registry = kopf.OperatorRegistry()
ANNOTATION_PREFIX = "kopf.chanbatch.io"  # not chanbatch.io: kopf hides its own prefix from diffs
BLUEPRINT_LABEL = "chanbatch.io/blueprint"
# Set (to anything new) to run a finished Blueprint again, e.g. after new slices were frozen:
#   kubectl annotate blueprint NAME chanbatch.io/rerun="$(date +%s)" --overwrite
RERUN_ANNOTATION = "chanbatch.io/rerun"
MAX_BACKOFF = 600.0

Attach = Callable[[Mapping[str, Any], str], contextlib.AbstractContextManager[Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterBackend:
    """How the operator gets a Client on the DaskCluster it created.

    ``attach(manifest, namespace)`` is a context manager yielding a ``distributed.Client``.
    ``pods_run_it`` says whether the workers are pods (then the store must be reachable from
    them: no local paths)."""

    attach: Attach
    pods_run_it: bool = True


KUBERNETES = ClusterBackend(
    attach=lambda manifest, namespace: attach_cluster(manifest, namespace=namespace)
)


def backoff(retry: int, base: float = 15.0) -> float:
    """Seconds before retry number ``retry + 1``: ``base`` (15 s), doubling, at most 10 minutes."""
    return min(MAX_BACKOFF, base * 2**retry)


@functools.cache
def _kinds() -> tuple[Any, Any]:
    from kr8s.asyncio.objects import new_class

    blueprint = new_class("Blueprint", f"{GROUP}/{VERSION}", namespaced=True, plural=PLURAL)
    daskcluster = new_class(
        "DaskCluster", "kubernetes.dask.org/v1", namespaced=True, plural="daskclusters"
    )
    return blueprint, daskcluster


def _is_finished(status: Mapping[str, Any], generation: int, request: str) -> bool:
    """Whether this generation, at this rerun request, already ran to an end."""
    return (
        status.get("observedGeneration") == generation
        and (status.get("runRequest") or "") == request
        and status.get("phase") in ("Succeeded", "Failed")
    )


def _run_request(meta: Mapping[str, Any]) -> str:
    return str((meta.get("annotations") or {}).get(RERUN_ANNOTATION) or "")


def _plan_needs_cluster(run: BlueprintRun, store: Any) -> bool:
    from chanbatch.run.planned import plan_blueprint

    return plan_blueprint(run.blueprint, store, sets=run.bindings).has_work


def _execute(run: BlueprintRun, store: Any, scheduler: Any, progress: Any) -> dict[str, Any]:
    from chanbatch.run import run_blueprint

    result = run_blueprint(
        run.blueprint,
        store,
        scheduler=scheduler,
        sets=run.bindings,
        allow_modules=run.allow_modules,
        progress=progress,
    )
    return result.document()


def _run_on_cluster(
    run: BlueprintRun,
    store: Any,
    backend: ClusterBackend,
    manifest: Mapping[str, Any],
    progress: st.StatusProgress,
    ready: Callable[[int], None],
) -> dict[str, Any]:
    with backend.attach(manifest, run.namespace) as client:
        ready(len(client.scheduler_info().get("workers", {})))
        return _execute(run, store, client, progress)


def _classify(exc: BaseException) -> tuple[str, bool]:
    """``(reason, permanent)`` for a failed run."""
    from chanbatch.engine.execute import StageFailed

    if isinstance(exc, InvalidResource):
        return "InvalidSpec", True
    if isinstance(exc, StageFailed):
        return "StageFailed", True
    if isinstance(exc, IntegrityError):
        return "StoreCorrupt", True
    if isinstance(exc, UsageError):
        return "InvalidInput", True
    if isinstance(exc, StoreError):
        return "StoreUnavailable", False
    if isinstance(exc, KubernetesError):
        return "ClusterUnavailable", False
    if isinstance(exc, ChanbatchError):
        return "RunFailed", True
    return "Unavailable", False


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    hint = getattr(exc, "hint", None)
    return f"{text}; {hint}" if hint else text


@kopf.on.startup(registry=registry)
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Keep kopf's bookkeeping in annotations: the CRD's structural schema would prune it from
    the status, and the status stays ours."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO  # what kopf.info/kopf.warn post as Events
    # Discover the kinds once; watching CRDs and namespaces would need more RBAC than we ask.
    settings.scanning.disabled = True


@kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry, id="resume")
@kopf.on.create(GROUP, VERSION, PLURAL, registry=registry, id="run")
@kopf.on.update(GROUP, VERSION, PLURAL, registry=registry, id="rerun", field="spec")
@kopf.on.update(
    GROUP,
    VERSION,
    PLURAL,
    registry=registry,
    id="rerun-requested",
    field=("metadata", "annotations", RERUN_ANNOTATION),
)
async def reconcile(
    body: kopf.Body,
    meta: kopf.Meta,
    status: kopf.Status,
    memo: kopf.Memo,
    logger: Any,
    retry: int,
    **_: Any,
) -> None:
    """Run the Blueprint's current generation, once; see the module docstring."""
    generation = int(meta.get("generation") or 1)
    request = _run_request(meta)
    if _is_finished(status, generation, request):
        logger.debug(f"generation {generation} already ran")
        return
    backend: ClusterBackend = memo.get("backend") or KUBERNETES
    api = await _api(memo)
    live = await _live_blueprint(api, meta, generation, request, logger)
    if live is None:
        return
    writer = StatusWriter(live, live.raw.get("status") or {}, asyncio.get_running_loop())
    lease = _ClusterLease(logger)
    try:
        run = read_resource(body, pods_run_it=backend.pods_run_it)
        for warning in run.warnings:
            logger.warning(warning)
        document = await _run(body, run, api, backend, writer, lease, generation, request)
        await lease.release()  # gone before the status says the run is over
        await writer.write(st.succeeded(generation, document, writer.current))
        logger.info(writer.current.get("message", "run finished"))
        kopf.info(body, reason="Succeeded", message=writer.current.get("outputSummary", ""))
    except Exception as exc:
        await writer.drain()
        await lease.release()
        delay = backoff(retry, memo.get("backoff_base", 15.0))
        await _report_failure(body, writer, generation, exc, delay)
    finally:
        await lease.release()


async def _api(memo: kopf.Memo) -> Any:
    """The kr8s client: of ``memo.api_url`` if set (the tests' kmock), else the default."""
    import kr8s.asyncio

    api_url = memo.get("api_url")
    return await kr8s.asyncio.api(url=api_url) if api_url else await kr8s.asyncio.api()


async def _live_blueprint(
    api: Any, meta: kopf.Meta, generation: int, request: str, logger: Any
) -> Any | None:
    """The Blueprint as it is now, or None when there is nothing to do.

    The event may be older than the object (a watch replays what it missed): nothing is done
    if this generation already ran, or a newer generation or rerun request exists."""
    blueprint_kind, _ = _kinds()
    live = await blueprint_kind.get(meta["name"], namespace=meta.get("namespace"), api=api)
    live_meta = live.raw.get("metadata", {})
    if int(live_meta.get("generation") or 1) != generation or _run_request(live_meta) != request:
        logger.debug("superseded by a newer generation or rerun request")
        return None
    if _is_finished(dict(live.raw.get("status") or {}), generation, request):
        logger.debug(f"generation {generation} already ran")
        return None
    return live


class _ClusterLease:
    """The DaskCluster a run created, if any; ``release`` deletes it, once."""

    def __init__(self, logger: Any) -> None:
        self.cluster: Any = None
        self.logger = logger

    async def release(self) -> None:
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            await _delete(cluster, self.logger)


async def _run(
    body: kopf.Body,
    run: BlueprintRun,
    api: Any,
    backend: ClusterBackend,
    writer: StatusWriter,
    lease: _ClusterLease,
    generation: int,
    request: str,
) -> dict[str, Any]:
    """Plan, then run on a new DaskCluster (or here, when every task is cached); the run's
    document once its progress is all written."""
    store = await asyncio.to_thread(_open_store, run.store)
    needs_cluster = await asyncio.to_thread(_plan_needs_cluster, run, store)
    await writer.write(st.pending(generation, writer.current, run_request=request))
    progress = st.StatusProgress(writer.write_threadsafe)
    if needs_cluster:
        manifest = await _start_cluster(body, run, api, writer, lease, generation)

        def ready(workers: int) -> None:
            writer.write_threadsafe({"phase": "Running", "message": f"running on {workers} workers"})

        document = await asyncio.to_thread(
            _run_on_cluster, run, store, backend, manifest, progress, ready
        )
    else:
        await writer.write({"phase": "Running", "message": "every task is cached"})
        document = await asyncio.to_thread(_execute, run, store, "threads", progress)
    progress.flush()
    await writer.drain()
    return document


async def _start_cluster(
    body: kopf.Body,
    run: BlueprintRun,
    api: Any,
    writer: StatusWriter,
    lease: _ClusterLease,
    generation: int,
) -> dict[str, Any]:
    """Create the run's DaskCluster, owned by the Blueprint, held by ``lease``; its manifest."""
    manifest = render_cluster(
        run.shape,
        name=cluster_name(f"{run.name}-g{generation}"),
        namespace=run.namespace,
        labels={BLUEPRINT_LABEL: run.name},
    )
    kopf.adopt(manifest, owner=body)
    daskcluster_validator().validate(manifest)
    _, daskcluster_kind = _kinds()
    cluster = lease.cluster = daskcluster_kind(manifest, api=api)
    await _create(cluster)
    await writer.write({"cluster": cluster.name, "message": "waiting for workers"})
    lease.logger.info(f"created DaskCluster {cluster.name}")
    kopf.info(body, reason="ClusterCreated", message=f"DaskCluster {cluster.name}")
    return manifest


async def _report_failure(
    body: kopf.Body, writer: StatusWriter, generation: int, exc: Exception, delay: float
) -> None:
    """Write the failure to the status and as an Event, and raise the kopf error that says
    whether to retry (after ``delay`` seconds)."""
    reason, permanent = _classify(exc)
    message = _one_line(exc)
    if isinstance(exc, InvalidResource):
        patch = st.invalid(generation, message, writer.current)
    elif permanent:
        patch = st.failed(generation, reason, message, writer.current)
    else:
        patch = st.retrying(generation, message, writer.current)
    with contextlib.suppress(Exception):
        await writer.write(patch)
    kopf.warn(body, reason=reason, message=message)
    if permanent:
        raise kopf.PermanentError(message) from exc
    raise kopf.TemporaryError(message, delay=delay) from exc


def _open_store(url: str) -> Any:
    from chanbatch.snapshot import SnapshotStore

    return SnapshotStore(url)


async def _create(obj: Any) -> None:
    """Create ``obj``; one left by an earlier attempt of the same generation is reused."""
    import kr8s

    try:
        await obj.create()
    except kr8s.ServerError as exc:
        if getattr(exc.response, "status_code", None) != 409:
            raise KubernetesError(f"cannot create DaskCluster {obj.name}: {exc}") from exc


async def _delete(obj: Any, logger: Any) -> None:
    import kr8s

    try:
        await obj.delete()
        logger.info(f"deleted DaskCluster {obj.name}")
    except kr8s.NotFoundError:
        pass
    except Exception as exc:  # its owner reference still lets Kubernetes collect it
        logger.warning(f"could not delete DaskCluster {obj.name}: {exc}")


def run_operator(
    *,
    namespaces: tuple[str, ...] = (),
    all_namespaces: bool = False,
    liveness: str | None = None,
) -> None:
    """Run the operator until interrupted (``chanbatch k8s operator``): in a pod with its
    service account, or elsewhere with the current kubeconfig context."""
    _require_credentials()
    _register_logins()
    kopf.run(
        registry=registry,
        standalone=True,
        clusterwide=all_namespaces,
        namespaces=list(namespaces),
        liveness_endpoint=liveness,
        memo=kopf.Memo(backend=KUBERNETES),
    )


SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def _require_credentials() -> None:
    """Fail in one line, before kopf starts, when there is nothing to log in with."""
    import os

    kubeconfigs = os.environ.get("KUBECONFIG", os.path.expanduser("~/.kube/config"))
    if os.path.exists(SERVICE_ACCOUNT_TOKEN) and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return
    if any(os.path.isfile(path) for path in kubeconfigs.split(os.pathsep) if path):
        return
    raise KubernetesError(
        "no Kubernetes credentials: not in a pod with a service account, and no kubeconfig "
        f"at {kubeconfigs}",
        hint="run the operator in the cluster (kubectl apply -k k8s/), or point KUBECONFIG "
        "at a kubeconfig file",
    )


def _register_logins() -> None:
    """kopf's own logins (service account, then kubeconfig): a plain registry has none."""
    ids = {h.id for h in registry._activities.get_all_handlers()}
    if "login-service-account" not in ids:
        kopf.on.login(registry=registry, id="login-service-account")(
            kopf.login_with_service_account
        )
        kopf.on.login(registry=registry, id="login-kubeconfig")(kopf.login_with_kubeconfig)
