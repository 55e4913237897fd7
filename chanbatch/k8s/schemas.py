"""Validate manifests against a CustomResourceDefinition's schema, as strictly as the API server.

A CRD's ``openAPIV3Schema`` is a structural schema: the API server drops null values, prunes
fields the schema does not name, and validates the rest. To catch a misspelt field instead of
losing it silently, ``CrdValidator`` prunes nulls and then *rejects* unknown fields: every object
node that lists ``properties`` and neither ``additionalProperties`` nor
``x-kubernetes-preserve-unknown-fields`` gets ``additionalProperties: false``.

The DaskCluster CRD is the one that ships inside the installed dask-kubernetes package, so a
rendered cluster is checked against exactly the operator version that will receive it.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from importlib import resources
from typing import Any

import yaml

from chanbatch.errors import UsageError

DASK_CRDS = "dask_kubernetes/operator/deployment/helm/dask-kubernetes-operator/crds"

_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": _DNS_SUBDOMAIN},
        "generateName": {"type": "string"},
        "namespace": {"type": "string", "maxLength": 63, "pattern": _DNS_SUBDOMAIN},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
        "ownerReferences": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["apiVersion", "kind", "name", "uid"],
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "name": {"type": "string"},
                    "uid": {"type": "string"},
                    "controller": {"type": "boolean"},
                    "blockOwnerDeletion": {"type": "boolean"},
                },
                "additionalProperties": False,
            },
        },
        "finalizers": {"type": "array", "items": {"type": "string"}},
    },
    # Fields the API server sets (uid, generation, resourceVersion, ...) are accepted as read.
    "additionalProperties": True,
}


class ManifestError(UsageError):
    """A manifest that its CRD's schema rejects."""


def prune_nulls(value: Any) -> Any:
    """A copy of ``value`` without null map values or list items, as the API server stores it."""
    if isinstance(value, Mapping):
        return {k: prune_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [prune_nulls(v) for v in value if v is not None]
    return value


def strict_schema(node: Any) -> Any:
    """An OpenAPI v3 structural schema turned into a JSON Schema that rejects unknown fields."""
    if isinstance(node, list):
        return [strict_schema(v) for v in node]
    if not isinstance(node, Mapping):
        return node
    out = {k: strict_schema(v) for k, v in node.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    if out.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", OBJECT_META)
    return out


class CrdValidator:
    """Validates manifests of one kind against the version's schema in a CRD document."""

    def __init__(self, crd: Mapping[str, Any], version: str | None = None) -> None:
        spec = crd["spec"]
        served = [v for v in spec["versions"] if v.get("served", True)]
        chosen = next((v for v in served if v["name"] == version), None) if version else None
        chosen = chosen or next((v for v in served if v.get("storage")), served[0])
        self.group, self.version = spec["group"], chosen["name"]
        self.kind = spec["names"]["kind"]
        schema = copy.deepcopy(chosen["schema"]["openAPIV3Schema"])
        props = schema.setdefault("properties", {})
        props["apiVersion"] = {"type": "string", "enum": [f"{self.group}/{self.version}"]}
        props["kind"] = {"type": "string", "enum": [self.kind]}
        props["metadata"] = OBJECT_META
        schema["required"] = sorted({*schema.get("required", ()), "apiVersion", "kind", "metadata"})
        self.schema = strict_schema(schema)
        import jsonschema  # only where a manifest is validated: shape.py needs prune_nulls alone

        jsonschema.Draft4Validator.check_schema(self.schema)
        self._validator = jsonschema.Draft4Validator(self.schema)

    def problems(self, manifest: Mapping[str, Any]) -> list[str]:
        """Every violation, one line each as ``<path>: <message>``; empty when valid."""
        document = prune_nulls(manifest)
        found = sorted(self._validator.iter_errors(document), key=lambda e: list(e.absolute_path))
        return [f"{_path(e.absolute_path)}: {_message(e)}" for e in found]

    def validate(self, manifest: Mapping[str, Any], *, what: str | None = None) -> None:
        """Raise ManifestError naming the first violation (and how many there are)."""
        problems = self.problems(manifest)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            name = what or f"{self.kind} {manifest.get('metadata', {}).get('name', '')}".strip()
            raise ManifestError(
                f"{name} does not match the {self.kind} CRD schema: {problems[0]}{more}",
                hint=f"the schema is the {self.group}/{self.version} CustomResourceDefinition",
            )


def _path(path: Any) -> str:
    parts = []
    for part in path:
        parts.append(f"[{part}]" if isinstance(part, int) else f".{part}")
    return "".join(parts).lstrip(".") or "(top level)"


def _message(error: Any) -> str:
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = sorted(error.schema.get("properties", {}))
        return f"{error.message}; known fields: {', '.join(known)}"
    return error.message


@functools.cache
def dask_crd(kind: str = "daskcluster") -> dict[str, Any]:
    """A CRD shipped inside the installed dask-kubernetes package (``daskcluster``,
    ``daskworkergroup``, ``daskjob``, ``daskautoscaler``)."""
    package, _, folder = DASK_CRDS.partition("/")
    try:
        root = resources.files(package)
    except ModuleNotFoundError as exc:
        raise UsageError(
            "dask-kubernetes is not installed", hint="pip install 'chanbatch[k8s]'"
        ) from exc
    text = root.joinpath(folder, f"{kind}.yaml").read_text(encoding="utf-8")
    # libyaml's loader where it is built in: these CRDs are 140-470 kB of YAML.
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@functools.cache
def daskcluster_validator() -> CrdValidator:
    """The validator of ``kubernetes.dask.org/v1`` DaskCluster, from the installed package."""
    return CrdValidator(dask_crd("daskcluster"), "v1")
