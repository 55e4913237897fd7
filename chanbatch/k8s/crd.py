"""The ``Blueprint`` CustomResourceDefinition (``chanbatch.io/v1alpha1``), built in code.

``k8s/crds/blueprint.yaml`` is this module's output (``chanbatch k8s crd``); a test keeps the two
equal. The embedded blueprint's top level (name, inputs, stages, outputs) takes its patterns
from the blueprint JSON Schema (``chanbatch schema``). Each stage is checked there only for its
``from``: a structural schema cannot say "a string or a list" (``group_by``, ``select``) or
"exactly one operation", so the operator validates the whole blueprint with the same parser as
``chanbatch validate`` and reports any problem in the status.

The status is kept small: counts per stage, not per slice. The full run record is in the store.
"""

from __future__ import annotations

from typing import Any

from chanbatch.blueprint.schema import blueprint_json_schema

GROUP, VERSION, KIND, PLURAL = "chanbatch.io", "v1alpha1", "Blueprint", "blueprints"
API_VERSION = f"{GROUP}/{VERSION}"
PHASES = ("Pending", "Running", "Succeeded", "Failed")
CONDITION_TYPES = ("Valid", "Progressing", "Complete", "Failed")

_WHOLE_CPUS = r"^[1-9][0-9]*$"
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"


def _string_map(description: str, pattern: str | None = None) -> dict[str, Any]:
    value: dict[str, Any] = {"type": "string"}
    if pattern:
        value["pattern"] = pattern
    return {"type": "object", "description": description, "additionalProperties": value}


def _embedded_blueprint() -> dict[str, Any]:
    source = blueprint_json_schema()
    top = source["properties"]
    stage_name = source["$defs"]["stageName"]["pattern"]
    return {
        "type": "object",
        "description": "The blueprint itself, in the schema of blueprint YAML files "
        "(`chanbatch schema`). The operator validates it in full before it runs.",
        "required": ["name", "inputs", "stages", "outputs"],
        "properties": {
            "name": {"type": "string", "pattern": top["name"]["pattern"], "maxLength": 128},
            "description": {"type": "string"},
            "inputs": {
                **_string_map("input name -> dataset REF", top["inputs"]["additionalProperties"]["pattern"]),
                "minProperties": 1,
            },
            "stages": {
                "type": "object",
                "description": "stage name -> stage: `from` and one operation",
                "minProperties": 1,
                "additionalProperties": {
                    "type": "object",
                    "required": ["from"],
                    "properties": {"from": {"type": "string", "pattern": stage_name}},
                    "x-kubernetes-preserve-unknown-fields": True,
                },
            },
            "outputs": {
                **_string_map("stage -> output dataset name", top["outputs"]["additionalProperties"]["pattern"]),
                "minProperties": 1,
            },
        },
    }


def _workers() -> dict[str, Any]:
    quantity = {"type": "string", "pattern": _QUANTITY}
    return {
        "type": "object",
        "description": "The shape of the Dask cluster: Guaranteed worker pods with whole cpus, "
        "one Dask thread each (see docs/kubernetes.md).",
        "properties": {
            "replicas": {"type": "integer", "minimum": 1, "default": 2},
            "cpu": {
                "type": "string",
                "pattern": _WHOLE_CPUS,
                "default": "1",
                "description": "whole cpus per worker, as a string: \"1\", \"2\"",
            },
            "memory": {**quantity, "default": "4Gi", "description": "memory per worker, e.g. 4Gi"},
            "image": {"type": "string", "description": "worker and scheduler image"},
            "imagePullPolicy": {"type": "string", "enum": ["Always", "IfNotPresent", "Never"]},
            "env": _string_map("environment variables of the scheduler and workers"),
            "envFromSecret": {
                "type": "string",
                "description": "a Secret whose keys become environment variables (store credentials)",
            },
            "nodeSelector": _string_map("node labels the worker and scheduler pods require"),
            "tolerations": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "key": {"type": "string"},
                        "operator": {"type": "string", "enum": ["Exists", "Equal"]},
                        "value": {"type": "string"},
                        "effect": {
                            "type": "string",
                            "enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"],
                        },
                        "tolerationSeconds": {"type": "integer"},
                    },
                },
            },
            "schedulerCpu": {**quantity, "default": "500m"},
            "schedulerMemory": {**quantity, "default": "1Gi"},
            "threadsPerCore": {
                "type": "integer",
                "minimum": 1,
                "description": "hardware threads per core of the nodes (2 with SMT), if known",
            },
            "fullPcpusOnly": {
                "type": "boolean",
                "description": "whether the kubelets set the static policy option full-pcpus-only",
            },
        },
    }


def _spec() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["store", "blueprint"],
        "properties": {
            "store": {
                "type": "string",
                "minLength": 1,
                "description": "fsspec URL of the snapshot store, reachable from the operator "
                "and every pod: s3://, gs://, abfs://, ...",
            },
            "blueprint": _embedded_blueprint(),
            "inputs": _string_map(
                "input bindings: input name -> dataset REF, in place of the blueprint's own"
            ),
            "allowModules": {
                "type": "array",
                "items": {"type": "string"},
                "description": "modules `map` stages may import functions from",
            },
            "workers": _workers(),
        },
    }


def _count() -> dict[str, Any]:
    return {"type": "integer", "minimum": 0}


def _status() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "phase": {"type": "string", "enum": list(PHASES)},
            "observedGeneration": {"type": "integer"},
            "progress": {"type": "string", "description": "tasks done/total, e.g. 40/268"},
            "message": {"type": "string"},
            "runId": {"type": "string"},
            "runRequest": {
                "type": "string",
                "description": "the chanbatch.io/rerun annotation this run answered",
            },
            "cluster": {"type": "string", "description": "the DaskCluster of the current run"},
            "startTime": {"type": "string", "format": "date-time"},
            "completionTime": {"type": "string", "format": "date-time"},
            "stages": {
                "type": "object",
                "description": "per stage: tasks computed, reused from the cache, cut off, total",
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "total": _count(),
                        "computed": _count(),
                        "reused": _count(),
                        "cutoff": _count(),
                    },
                },
            },
            "outputs": {
                "type": "object",
                "description": "output name -> the snapshot it was frozen as",
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "dataset": {"type": "string"},
                        "snapshot": {"type": "string"},
                        "rows": _count(),
                    },
                },
            },
            "outputSummary": {
                "type": "string",
                "description": "dataset@<snapshot id prefix> of each output, for kubectl get",
            },
            "conditions": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": {
                    "type": "object",
                    "required": ["type", "status"],
                    "properties": {
                        "type": {"type": "string", "enum": list(CONDITION_TYPES)},
                        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                        "reason": {"type": "string"},
                        "message": {"type": "string"},
                        "lastTransitionTime": {"type": "string", "format": "date-time"},
                        "observedGeneration": {"type": "integer"},
                    },
                },
            },
        },
    }


def blueprint_crd() -> dict[str, Any]:
    """The Blueprint CustomResourceDefinition, as a fresh dict."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": "blueprint",
                "shortNames": ["bp"],
                "categories": ["chanbatch"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
                        {"name": "Outputs", "type": "string", "jsonPath": ".status.outputSummary"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A chanbatch blueprint run on a Dask cluster of "
                            "Guaranteed, pinned workers, with its live status.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": _spec(),
                                "status": _status(),
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    """``k8s/crds/blueprint.yaml``: the CRD as YAML, with a header saying where it comes from."""
    import yaml

    header = "# Generated by `chanbatch k8s crd` from chanbatch/k8s/crd.py; do not edit by hand.\n"
    return header + yaml.safe_dump(blueprint_crd(), sort_keys=False, width=100)
