"""A ``Blueprint`` custom resource read into what a run needs, with every check done up front.

``read_resource`` checks, in order: the CRD's schema (strictly: unknown fields are errors, not
silently dropped as the API server would), the embedded blueprint with the same parser as
``chanbatch validate``, the input bindings against the blueprint's inputs, the worker shape
against the kubelet's rules, and (when pods are to run it) that the store is reachable from pods.
Any failure is an ``InvalidResource`` whose one-line message names the resource and the field.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from chanbatch.blueprint.model import Blueprint
from chanbatch.blueprint.parse import parse_blueprint
from chanbatch.errors import ChanbatchError, UsageError, did_you_mean
from chanbatch.k8s.cluster import require_reachable_store
from chanbatch.k8s.crd import blueprint_crd
from chanbatch.k8s.schemas import CrdValidator
from chanbatch.k8s.shape import WorkerShape, check_shape


class InvalidResource(UsageError):
    """A Blueprint resource that cannot run as written; retrying will not help."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BlueprintRun:
    """One Blueprint resource, validated: what to run, where, and on what shape."""

    namespace: str
    name: str
    uid: str
    generation: int
    store: str
    blueprint: Blueprint
    bindings: dict[str, str]
    allow_modules: tuple[str, ...]
    shape: WorkerShape
    warnings: tuple[str, ...] = field(default=())


@functools.cache
def blueprint_validator() -> CrdValidator:
    """The strict validator of Blueprint resources, from ``chanbatch.k8s.crd``."""
    return CrdValidator(blueprint_crd())


def read_resource(body: Mapping[str, Any], *, pods_run_it: bool = True) -> BlueprintRun:
    """Validate a Blueprint resource (as the API returns it) and read it.

    ``pods_run_it`` False skips the reachable-store check, for clusters that share this
    machine's file system (tests, a local cluster). Raises InvalidResource."""
    meta = body.get("metadata") or {}
    where = f"Blueprint {meta.get('namespace', 'default')}/{meta.get('name', '?')}"
    problems = blueprint_validator().problems({k: v for k, v in body.items() if k != "status"})
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InvalidResource(f"{where}: {problems[0]}{more}", hint="kubectl explain blueprint.spec")
    spec = body["spec"]
    source = f"{where} spec.blueprint"
    try:
        model = parse_blueprint(yaml.safe_dump(spec["blueprint"], sort_keys=False), source=source)
    except ChanbatchError as exc:
        raise InvalidResource(_one_line(str(exc)), hint=exc.hint) from exc
    bindings = dict(spec.get("inputs") or {})
    for name in bindings:
        if name not in model.inputs:
            raise InvalidResource(
                f"{where}: spec.inputs.{name}: blueprint {model.name!r} has no input {name!r}",
                hint=did_you_mean(name, model.inputs) or "inputs: " + ", ".join(model.inputs),
            )
    try:
        shape = WorkerShape.from_document(spec.get("workers"), where=f"{where}: spec.workers")
        warnings = tuple(check_shape(shape))
        if pods_run_it:
            require_reachable_store(spec["store"])
    except ChanbatchError as exc:
        message = str(exc) if str(exc).startswith(where) else f"{where}: {exc}"
        raise InvalidResource(message, hint=exc.hint) from exc
    return BlueprintRun(
        namespace=meta.get("namespace", "default"),
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation", 1)),
        store=spec["store"],
        blueprint=model,
        bindings=bindings,
        allow_modules=tuple(spec.get("allowModules") or ()),
        shape=shape,
        warnings=warnings,
    )


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines)
