"""The manifests under k8s/: valid for Kubernetes, least privilege, and consistent with the code.

- Built-in kinds pass ``kubernetes-validate --strict`` (its Python API: a kind it has no schema
  for is a failure here, not the CLI's warning) for the newest Kubernetes it knows and for 1.32.
- The Blueprint CRD is the code's output, and its schema is structural by the rules of the
  Kubernetes docs ("Specifying a structural schema") and of the API server's CRD validation
  (``ValidateCustomResourceDefinitionOpenAPISchema``): a checker written here, itself tested on
  schemas that break each rule.
- The example Blueprint validates against the CRD, the blueprint JSON Schema and the parser.
- ``kubectl kustomize k8s/`` renders the CRD and the operator, and nothing else.
- RBAC grants exactly what the operator needs (no wildcard; pods and services read-only).
- The operator's pod is Guaranteed and non-root; the Dockerfile's user is the pods' uid.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("kubernetes")  # the [k8s] extra: chanbatch.k8s parses quantities with it
try:  # kubernetes-validate is a [test] extra; without it only its own tests skip.
    import kubernetes_validate.utils as kv_utils
except ImportError:  # pragma: no cover
    kv_utils = None

from chanbatch.blueprint.parse import parse_blueprint  # noqa: E402
from chanbatch.blueprint.schema import blueprint_json_schema  # noqa: E402
from chanbatch.k8s.crd import blueprint_crd, crd_yaml  # noqa: E402
from chanbatch.k8s.qos import exclusive_cpus, qos_class  # noqa: E402
from chanbatch.k8s.schemas import CrdValidator  # noqa: E402
from chanbatch.k8s.shape import RUN_AS_USER, WorkerShape, check_shape  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OPERATOR = K8S / "operator"
EXAMPLES = K8S / "examples"
CUSTOM_KINDS = {"Blueprint", "KubeletConfiguration"}
OPERATOR_IMAGE = "ghcr.io/chanbatch/chanbatch:0.1.0"
NAMESPACE = "chanbatch-system"


def documents(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [d for d in yaml.safe_load_all(handle) if d]


def manifest_files() -> list[Path]:
    """Every YAML manifest under k8s/ (the kustomization is a build file, not a manifest)."""
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def built_in_documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in manifest_files():
        for doc in documents(path):
            if doc["kind"] not in CUSTOM_KINDS:
                out.append((f"{path.relative_to(K8S)}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for _, d in built_in_documents() if d["kind"] == kind]
    found = [d for d in found if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def latest_kubernetes() -> str:
    if kv_utils is None:
        pytest.skip("kubernetes-validate is not installed (pip install 'chanbatch[test]')")
    return kv_utils.latest_version()


KUBERNETES_VERSIONS = [kv_utils.latest_version() if kv_utils else "latest", "1.32.0"]


def test_the_validator_knows_a_recent_kubernetes() -> None:
    major, minor = (int(x) for x in latest_kubernetes().split(".")[:2])
    assert (major, minor) >= (1, 32)


# --- every built-in manifest against the Kubernetes schemas ------------------------------------


def test_k8s_folder_holds_the_expected_manifests() -> None:
    kinds = sorted(d["kind"] for _, d in built_in_documents())
    assert kinds == sorted(
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "Namespace",
            "ServiceAccount",
        ]
    )
    custom = sorted(d["kind"] for p in manifest_files() for d in documents(p) if d["kind"] in CUSTOM_KINDS)
    assert custom == ["Blueprint", "KubeletConfiguration"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    ("where", "doc"), built_in_documents(), ids=[w for w, _ in built_in_documents()]
)
def test_built_in_manifest_passes_kubernetes_validate_strict(
    where: str, doc: dict[str, Any], version: str
) -> None:
    latest_kubernetes()  # skips without kubernetes-validate
    # validate() raises SchemaNotFoundError for a kind it does not know: that fails the test.
    try:
        kv_utils.validate(doc, version, strict=True)
    except kv_utils.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{where} is invalid for Kubernetes {version}: {path}: {exc.message}")


def test_strict_validation_catches_a_misspelt_field() -> None:
    """The strict schemas reject unknown fields; without this the tests above prove little."""
    version = latest_kubernetes()
    deployment = copy.deepcopy(one("Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    with pytest.raises(kv_utils.ValidationError) as caught:
        kv_utils.validate(deployment, version, strict=True)
    assert "resourcez" in caught.value.message


def test_the_cli_passes_every_manifest_file() -> None:
    """The command users would run: ``kubernetes-validate --strict`` on each file, exit 0, and
    no "WARN" (which is how the CLI reports a kind it has no schema for)."""
    version = latest_kubernetes()
    exe = shutil.which("kubernetes-validate") or str(
        Path(sys.executable).with_name("kubernetes-validate")
    )
    if not Path(exe).exists():
        pytest.skip("the kubernetes-validate command is not installed")
    files = [str(p) for p in manifest_files() if p.parent != EXAMPLES]
    done = subprocess.run(
        [exe, "--strict", "-k", version, *files],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARN" not in done.stdout and "ERROR" not in done.stdout, done.stdout
    assert done.stdout.count("passed") == len(built_in_documents())


# --- the Blueprint CRD ------------------------------------------------------------------------


def test_crd_file_is_the_generated_crd() -> None:
    assert (K8S / "crds" / "blueprint.yaml").read_text(encoding="utf-8") == crd_yaml()


def test_crd_names_and_status_subresource() -> None:
    crd = documents(K8S / "crds" / "blueprint.yaml")[0]
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{spec['names']['plural']}.{spec['group']}"
    assert spec["group"] == "chanbatch.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "Blueprint"
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def _schema_at(schema: dict[str, Any], json_path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for part in json_path.strip(".").split("."):
        node = (node or {}).get("properties", {}).get(part)
    return node


def test_printer_columns_point_at_fields_of_the_schema() -> None:
    version = blueprint_crd()["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert list(columns) == ["Phase", "Progress", "Outputs", "Age"]
    assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"
    assert columns["Age"]["type"] == "date"
    for name in ("Phase", "Progress", "Outputs"):
        column = columns[name]
        assert column["jsonPath"].startswith(".status."), column
        field = _schema_at(schema, column["jsonPath"])
        assert field is not None, f"{name}: {column['jsonPath']} is not in the status schema"
        assert field["type"] == column["type"] == "string"
    phase = _schema_at(schema, ".status.phase")
    assert phase is not None and phase["enum"] == ["Pending", "Running", "Succeeded", "Failed"]


# A checker for structural schemas, after the Kubernetes docs ("Specifying a structural schema")
# and the API server's ValidateCustomResourceDefinitionOpenAPISchema.
TYPES = {"object", "array", "string", "integer", "number", "boolean"}
JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
NOT_IN_JUNCTORS = ("description", "type", "default", "additionalProperties", "nullable")
UNSUPPORTED = ("$ref", "$schema", "definitions", "dependencies", "patternProperties", "id", "additionalItems")


def structural_problems(schema: dict[str, Any]) -> list[str]:
    """Every way ``schema`` (a CRD version's openAPIV3Schema) is not structural."""
    problems: list[str] = []
    if schema.get("type") != "object":
        problems.append("(root): type must be object")
    if "additionalProperties" in schema:
        problems.append("(root): additionalProperties is not allowed at the root")
    metadata = schema.get("properties", {}).get("metadata")
    if metadata is not None:
        extra = sorted(set(metadata.get("properties", {})) - {"name", "generateName"})
        if extra:
            problems.append(f"metadata: only name and generateName may be restricted, not {extra}")
        if "default" in metadata or "additionalProperties" in metadata:
            problems.append("metadata: no default or additionalProperties at the root")
    _check_node(schema, "", problems, in_junctor=False)
    return problems


def _check_node(node: dict[str, Any], path: str, problems: list[str], *, in_junctor: bool) -> None:
    where = path or "(root)"
    escapes_type = node.get("x-kubernetes-int-or-string") or node.get(
        "x-kubernetes-preserve-unknown-fields"
    )
    if in_junctor:
        for key in NOT_IN_JUNCTORS:
            if key in node:
                problems.append(f"{where}: {key} is not allowed inside allOf/anyOf/oneOf/not")
    elif not node.get("type") and not escapes_type:
        problems.append(f"{where}: type must not be empty")
    if node.get("type") and node["type"] not in TYPES:
        problems.append(f"{where}: unknown type {node['type']!r}")
    for key in UNSUPPORTED:
        if key in node:
            problems.append(f"{where}: {key} is not supported")
    if node.get("uniqueItems") is True:
        problems.append(f"{where}: uniqueItems cannot be true")
    if "x-kubernetes-preserve-unknown-fields" in node and node["x-kubernetes-preserve-unknown-fields"] is not True:
        problems.append(f"{where}: x-kubernetes-preserve-unknown-fields must be true or absent")
    extra = node.get("additionalProperties")
    if node.get("properties") and extra is not None and extra is not True:
        problems.append(f"{where}: properties and additionalProperties are mutually exclusive")
    if node.get("type") == "array" and "items" not in node and not in_junctor:
        problems.append(f"{where}: an array must specify items")
    if node.get("x-kubernetes-embedded-resource") and not (
        node.get("type") == "object"
        and (node.get("properties") or node.get("x-kubernetes-preserve-unknown-fields"))
    ):
        problems.append(f"{where}: an embedded resource must be an object with properties")
    _check_list_map(node, where, problems)
    if "default" in node and not in_junctor:
        errors = list(jsonschema.Draft4Validator(_without_default(node)).iter_errors(node["default"]))
        if errors:
            problems.append(f"{where}: default {node['default']!r} is invalid: {errors[0].message}")
    for name, child in (node.get("properties") or {}).items():
        _check_node(child, f"{path}.{name}".lstrip("."), problems, in_junctor=in_junctor)
    if isinstance(extra, dict):
        _check_node(extra, f"{path}.*".lstrip("."), problems, in_junctor=in_junctor)
    if isinstance(node.get("items"), dict):
        _check_node(node["items"], f"{path}[]", problems, in_junctor=in_junctor)
    outside = set(node.get("properties") or {})
    for junctor in JUNCTORS:
        branches = node.get(junctor)
        if branches is None:
            continue
        for branch in branches if isinstance(branches, list) else [branches]:
            if not node.get("x-kubernetes-int-or-string"):
                _check_node(branch, f"{path}.{junctor}", problems, in_junctor=True)
            for name in branch.get("properties") or {}:
                if name not in outside:
                    problems.append(f"{where}: {junctor} names {name!r}, which is not specified outside it")


def _check_list_map(node: dict[str, Any], where: str, problems: list[str]) -> None:
    if node.get("x-kubernetes-list-map-keys") and node.get("x-kubernetes-list-type") != "map":
        problems.append(f"{where}: x-kubernetes-list-map-keys needs x-kubernetes-list-type: map")
    if node.get("x-kubernetes-list-type") != "map":
        return
    keys = node.get("x-kubernetes-list-map-keys") or []
    items = node.get("items") or {}
    if not keys:
        problems.append(f"{where}: a map list needs x-kubernetes-list-map-keys")
    if items.get("type") != "object":
        problems.append(f"{where}: the items of a map list must be objects")
    for key in keys:
        field = (items.get("properties") or {}).get(key)
        if field is None:
            problems.append(f"{where}: map key {key!r} is not a property of the items")
        elif field.get("type") in ("object", "array"):
            problems.append(f"{where}: map key {key!r} must be a scalar")
        elif key not in items.get("required", []) and "default" not in field:
            problems.append(f"{where}: map key {key!r} must be required or have a default")


def _without_default(node: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k != "default" and not k.startswith("x-kubernetes-")}


def test_blueprint_crd_schema_is_structural() -> None:
    for version in blueprint_crd()["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        assert structural_problems(schema) == []


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "object", "properties": {"spec": {"properties": {"a": {"type": "string"}}}}}, "spec: type must not be empty"),
        ({"type": "object", "properties": {"spec": {"type": "object", "additionalProperties": {}}}}, "spec.*: type must not be empty"),
        ({"type": "object", "properties": {"spec": {"type": "array", "items": {}}}}, "spec[]: type must not be empty"),
        (
            {"type": "object", "properties": {"spec": {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}}},
            "spec: properties and additionalProperties are mutually exclusive",
        ),
        (
            {"type": "object", "properties": {"metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}}},
            "metadata: only name and generateName may be restricted",
        ),
        ({"type": "object", "properties": {"spec": {"type": "array"}}}, "spec: an array must specify items"),
        ({"type": "object", "properties": {"spec": {"$ref": "#/definitions/x"}}}, "spec: $ref is not supported"),
        ({"type": "object", "properties": {"s": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}}}, "s: uniqueItems cannot be true"),
        (
            {"type": "object", "properties": {"c": {"type": "array", "x-kubernetes-list-type": "map", "items": {"type": "object", "properties": {"type": {"type": "string"}}}}}},
            "c: a map list needs x-kubernetes-list-map-keys",
        ),
        (
            {"type": "object", "properties": {"c": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"], "items": {"type": "object", "properties": {"type": {"type": "string"}}}}}},
            "c: map key 'type' must be required or have a default",
        ),
        (
            {"type": "object", "properties": {"s": {"type": "object", "properties": {"a": {"type": "string"}}, "anyOf": [{"type": "object", "properties": {"b": {"type": "string"}}}]}}},
            "s.anyOf: type is not allowed inside",
        ),
        (
            {"type": "object", "properties": {"s": {"type": "object", "properties": {"a": {"type": "string"}}, "anyOf": [{"properties": {"b": {}}}]}}},
            "s: anyOf names 'b', which is not specified outside it",
        ),
        ({"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "default": 0}}}, "n: default 0 is invalid"),
        ({"type": "object", "properties": {"n": {"type": "null"}}}, "n: unknown type 'null'"),
    ],
)
def test_structural_checker_catches_each_rule(schema: dict[str, Any], expected: str) -> None:
    problems = structural_problems(schema)
    assert any(p.startswith(expected) for p in problems), problems


def test_structural_checker_allows_the_two_escapes() -> None:
    schema = {
        "type": "object",
        "properties": {
            "port": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            "free": {"x-kubernetes-preserve-unknown-fields": True},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    assert structural_problems(schema) == []


# --- the example Blueprint --------------------------------------------------------------------


@pytest.fixture(scope="module")
def example() -> dict[str, Any]:
    (doc,) = documents(EXAMPLES / "blueprint.yaml")
    return doc


def test_example_blueprint_validates_against_the_crd(example: dict[str, Any]) -> None:
    assert example["apiVersion"] == "chanbatch.io/v1alpha1"
    assert example["kind"] == "Blueprint"
    assert CrdValidator(blueprint_crd()).problems(example) == []


def test_the_crd_validator_would_catch_a_mistake_in_the_example(example: dict[str, Any]) -> None:
    broken = copy.deepcopy(example)
    broken["spec"]["workers"]["cpus"] = broken["spec"]["workers"].pop("cpu")
    problems = CrdValidator(blueprint_crd()).problems(broken)
    assert any(p.startswith("spec.workers:") and "cpus" in p for p in problems), problems
    broken = copy.deepcopy(example)
    broken["spec"]["workers"]["cpu"] = 2
    problems = CrdValidator(blueprint_crd()).problems(broken)
    assert any(p.startswith("spec.workers.cpu:") for p in problems), problems


def test_example_blueprint_matches_the_blueprint_schema(example: dict[str, Any]) -> None:
    schema = blueprint_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(example["spec"]["blueprint"]))
    assert [e.message for e in errors] == []


def test_example_blueprint_parses_and_is_the_repository_blueprint(example: dict[str, Any]) -> None:
    embedded = example["spec"]["blueprint"]
    model = parse_blueprint(yaml.safe_dump(embedded, sort_keys=False), source="example")
    assert model.name == "carrier_delays"
    assert model.outputs == {"by_carrier": "carrier_delays"}
    assert list(model.stages) == ["late", "fast", "named", "by_carrier"]
    # The example embeds blueprints/carrier_delays.yaml; keep the two the same dataflow.
    path = ROOT / "blueprints" / "carrier_delays.yaml"
    repository = parse_blueprint(path.read_text(encoding="utf-8"), source=str(path))
    assert (model.name, model.inputs, model.outputs) == (
        repository.name, repository.inputs, repository.outputs
    )
    # Equal stages, wherever they sit in the two files.
    assert {n: dataclasses.replace(s, line=0) for n, s in model.stages.items()} == {
        n: dataclasses.replace(s, line=0) for n, s in repository.stages.items()
    }


def _keys(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [*value, *(k for v in value.values() for k in _keys(v))]
    if isinstance(value, list):
        return [k for v in value for k in _keys(v)]
    return []


def test_example_has_only_string_keys(example: dict[str, Any]) -> None:
    """kubectl reads YAML 1.1, where a bare ``on`` (join's key) is the boolean true: the API
    server would then store a key "true" and the blueprint would lose its join column."""
    odd = [k for k in _keys(example) if not isinstance(k, str)]
    assert odd == [], f"quote these keys in k8s/examples/blueprint.yaml: {odd}"


def test_example_blueprint_runs_where_pods_can_reach_and_shape(example: dict[str, Any]) -> None:
    spec = example["spec"]
    assert re.match(r"^[a-z0-9]+://", spec["store"]) and not spec["store"].startswith(("file:", "memory:"))
    workers = spec["workers"]
    assert workers["replicas"] == 4
    assert workers["cpu"] == "2" and isinstance(workers["cpu"], str)
    assert workers["memory"] == "4Gi"
    assert workers["envFromSecret"]
    shape = WorkerShape.from_document(workers)
    # 2 cpus on nodes of 2 threads per core: whole physical cores, nothing to warn about.
    assert check_shape(shape) == []


# --- kustomize --------------------------------------------------------------------------------


def test_kustomize_renders_the_crd_and_the_operator() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: cannot run `kubectl kustomize k8s/`")
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    rendered = [d for d in yaml.safe_load_all(done.stdout) if d]
    names = sorted((d["kind"], d["metadata"]["name"]) for d in rendered)
    assert names == sorted(
        [
            ("ClusterRole", "chanbatch-operator"),
            ("ClusterRoleBinding", "chanbatch-operator"),
            ("CustomResourceDefinition", "blueprints.chanbatch.io"),
            ("Deployment", "chanbatch-operator"),
            ("Namespace", NAMESPACE),
            ("ServiceAccount", "chanbatch-operator"),
        ]
    )
    crd = next(d for d in rendered if d["kind"] == "CustomResourceDefinition")
    assert crd == blueprint_crd()
    if kv_utils is not None:
        for doc in rendered:
            kv_utils.validate(doc, kv_utils.latest_version(), strict=True)


# --- RBAC -------------------------------------------------------------------------------------


def grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_rbac_has_no_wildcards_and_no_dangerous_verbs() -> None:
    role = one("ClusterRole", "chanbatch-operator")
    for rule in role["rules"]:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], rule
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"])
        assert "nonResourceURLs" not in rule
    resources = {resource for _, resource in grants(role)}
    assert not {"secrets", "configmaps", "nodes", "serviceaccounts/token"} & resources


def test_rbac_grants_exactly_what_the_operator_needs() -> None:
    assert grants(one("ClusterRole", "chanbatch-operator")) == {
        ("chanbatch.io", "blueprints"): {"get", "list", "watch", "patch"},
        ("chanbatch.io", "blueprints/status"): {"get", "patch", "update"},
        ("kubernetes.dask.org", "daskclusters"): {"get", "list", "watch", "create", "delete", "patch"},
        ("kubernetes.dask.org", "daskworkergroups"): {"get", "list", "watch"},
        ("", "pods"): {"get", "list", "watch"},
        ("", "services"): {"get", "list", "watch"},
        ("", "pods/log"): {"get"},
        ("", "events"): {"create", "patch"},
        ("events.k8s.io", "events"): {"create", "patch"},
    }


def test_pods_and_services_are_read_only() -> None:
    for (group, resource), verbs in grants(one("ClusterRole", "chanbatch-operator")).items():
        if group == "" and resource.split("/")[0] in ("pods", "services"):
            assert verbs <= {"get", "list", "watch"}, (resource, verbs)


def test_every_rbac_rule_says_why() -> None:
    lines = (OPERATOR / "rbac.yaml").read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip().startswith("- apiGroups:")]
    assert len(starts) == len(one("ClusterRole", "chanbatch-operator")["rules"])
    for i in starts:
        assert lines[i - 1].strip().startswith("#"), f"no comment above rbac.yaml line {i + 1}"


def test_binding_ties_the_role_to_the_operator_service_account() -> None:
    binding = one("ClusterRoleBinding", "chanbatch-operator")
    account = one("ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": one("ClusterRole")["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert account["metadata"]["namespace"] == NAMESPACE
    pod = one("Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]


def test_rbac_covers_the_crd_and_the_status_subresource() -> None:
    crd = blueprint_crd()
    plural, group = crd["spec"]["names"]["plural"], crd["spec"]["group"]
    granted = grants(one("ClusterRole"))
    assert (group, plural) in granted
    assert (group, f"{plural}/status") in granted


# --- the operator Deployment ------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return one("Deployment", "chanbatch-operator")


def test_deployment_runs_one_operator_at_a_time(deployment: dict[str, Any]) -> None:
    assert deployment["metadata"]["namespace"] == NAMESPACE
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


def test_deployment_command_and_liveness_probe_agree(deployment: dict[str, Any]) -> None:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == OPERATOR_IMAGE
    assert container["command"] == [
        "chanbatch", "k8s", "operator", "--all-namespaces", "--liveness", "http://0.0.0.0:8080/healthz",
    ]
    assert "args" not in container
    url = container["command"][container["command"].index("--liveness") + 1]
    port, path = re.match(r"^http://[^:/]+:(\d+)(/.*)$", url).groups()  # type: ignore[union-attr]
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == path
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports.get(probe["port"], probe["port"]) == int(port)


def test_deployment_pod_is_guaranteed(deployment: dict[str, Any]) -> None:
    pod = {"spec": deployment["spec"]["template"]["spec"]}
    for container in [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]:
        resources = container["resources"]
        assert resources["requests"] == resources["limits"] == {"cpu": "1", "memory": "1Gi"}
    assert qos_class(pod) == "Guaranteed"
    # cpu "1" in a Guaranteed pod: under the static CPU manager policy, one core of its own.
    assert exclusive_cpus(pod) == {"operator": 1}


def test_deployment_runs_as_non_root_with_nothing_extra(deployment: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == RUN_AS_USER == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["runAsNonRoot"] is True
    assert context.get("runAsUser", RUN_AS_USER) == RUN_AS_USER
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not context.get("privileged")
    # A read-only root needs somewhere to write: /tmp is an emptyDir.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


# --- the Dockerfile ---------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    text = (K8S / "Dockerfile").read_text(encoding="utf-8")
    logical, current = [], ""
    for line in text.splitlines():
        if line.strip().startswith("#") and not current:
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            logical.append(current.strip())
        current = ""
    out = []
    for line in logical:
        instruction, _, rest = line.partition(" ")
        out.append((instruction.upper(), rest.strip()))
    return out


def test_dockerfile_base_and_install() -> None:
    steps = dockerfile_instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    runs = [args for kind, args in steps if kind == "RUN"]
    assert any(re.search(r"pip install [^&]*[\"']\.\[k8s\][\"']", run) for run in runs), runs
    copied = [args.split()[0] for kind, args in steps if kind == "COPY"]
    for source in copied:
        assert (ROOT / source).exists(), source


def test_dockerfile_user_is_numeric_non_root_and_the_pods_uid() -> None:
    steps = dockerfile_instructions()
    users = [args for kind, args in steps if kind == "USER"]
    assert users, "no USER: the image would run as root"
    user, _, group = users[-1].partition(":")
    # runAsNonRoot can only verify a numeric user; a name would make the kubelet refuse the pod.
    assert user.isdigit() and int(user) != 0
    assert not group or (group.isdigit() and int(group) != 0)
    assert int(user) == RUN_AS_USER
    last_user = max(i for i, (kind, _) in enumerate(steps) if kind == "USER")
    assert all(kind != "RUN" for kind, _ in steps[last_user:]), "RUN after the final USER"
    assert any(f"--uid {RUN_AS_USER}" in args for kind, args in steps if kind == "RUN")


def test_dockerfile_has_no_entrypoint_and_shows_help() -> None:
    steps = dockerfile_instructions()
    # dask-kubernetes starts pods with args ["dask", "worker", ...] and no command: an
    # ENTRYPOINT would be prefixed to them.
    assert [kind for kind, _ in steps if kind == "ENTRYPOINT"] == []
    cmds = [args for kind, args in steps if kind == "CMD"]
    assert cmds and yaml.safe_load(cmds[-1]) == ["chanbatch", "--help"]


def test_dockerignore_sends_what_the_build_copies() -> None:
    ignore = (K8S / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [p.strip() for p in ignore if p.strip() and not p.startswith("#")]
    assert patterns[0] == "*"
    for needed in ("pyproject.toml", "README.md", "chanbatch/"):
        assert f"!{needed}" in patterns


# --- the KubeletConfiguration example ---------------------------------------------------------

# Field names of KubeletConfiguration v1beta1 (staging/src/k8s.io/kubelet/config/v1beta1/types.go)
# that an example about CPU and memory management may use.
KUBELET_FIELDS = {
    "apiVersion", "kind", "cpuManagerPolicy", "cpuManagerPolicyOptions", "cpuManagerReconcilePeriod",
    "memoryManagerPolicy", "reservedMemory", "topologyManagerPolicy", "topologyManagerScope",
    "topologyManagerPolicyOptions", "systemReserved", "kubeReserved", "reservedSystemCPUs",
    "systemReservedCgroup", "kubeReservedCgroup", "enforceNodeAllocatable", "evictionHard",
    "evictionSoft", "evictionSoftGracePeriod", "cgroupDriver", "featureGates", "maxPods",
}


def test_kubelet_configuration_example() -> None:
    path = EXAMPLES / "kubelet-config.yaml"
    (config,) = documents(path)
    assert config["apiVersion"] == "kubelet.config.k8s.io/v1beta1"
    assert config["kind"] == "KubeletConfiguration"
    assert set(config) <= KUBELET_FIELDS, sorted(set(config) - KUBELET_FIELDS)
    assert config["cpuManagerPolicy"] == "static"
    # The static policy needs a CPU reservation greater than zero.
    assert re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", config["reservedSystemCPUs"])
    # cpuManagerPolicyOptions is a map[string]string: "true", not true.
    assert config["cpuManagerPolicyOptions"] == {"full-pcpus-only": "true"}
    assert config["topologyManagerPolicy"] in {"none", "best-effort", "restricted", "single-numa-node"}
    assert config["topologyManagerScope"] in {"container", "pod"}
    from kubernetes.utils.quantity import parse_quantity

    reserved = sum(parse_quantity(config[k]["memory"]) for k in ("systemReserved", "kubeReserved"))
    assert reserved > 0
    assert parse_quantity(config["evictionHard"]["memory.available"]) > 0
    text = " ".join(path.read_text(encoding="utf-8").replace("#", " ").split())
    for why in ("reservation", "SMTAlignmentError", "requests == limits", "whole number"):
        assert why in text, f"the comments should explain {why!r}"
