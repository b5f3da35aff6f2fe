"""Offline validation of Kubernetes manifests against the KubeRay CRDs, strict as `kubectl apply` is.

    errors = schema_errors(doc)            # [] when the API server would accept doc's fields
    docs = kustomize("k8s/overlays/gpu")   # `kubectl kustomize`, parsed

The CRDs' `openAPIV3Schema` becomes JSON Schema (jsonschema, Draft 2020-12):
objects with `properties` reject unknown fields (kubectl's strict field
validation) unless marked `x-kubernetes-preserve-unknown-fields`;
`x-kubernetes-int-or-string` accepts an integer or a string (the pattern
applies to strings); int32/int64 are range-checked; list-map keys
(`x-kubernetes-list-map-keys`, e.g. containers by name, worker groups by
groupName) and set lists must be unique. `metadata` gets ObjectMeta's fields.
Deployments and Jobs have their pod template checked with the PodTemplateSpec
schema embedded in the RayCluster CRD; other built-in kinds only by apiVersion.

The CRDs are KubeRay's (ray-operator/config/crd/bases), found at
$POTSTILL_KUBERAY_CRDS or ../shared/kuberay-crds next to the repository.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[3]
CRD_DIR = Path(os.environ.get("POTSTILL_KUBERAY_CRDS", REPO.parent / "shared" / "kuberay-crds"))
CRD_FILES = ("ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the CRDs are 2.3 MB
INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
BUILTIN_KINDS = {
    ("v1", "Namespace"), ("v1", "ServiceAccount"), ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Service"),
    ("v1", "PersistentVolumeClaim"), ("apps/v1", "Deployment"), ("batch/v1", "Job"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
}
OBJECT_META = {
    "type": "object", "additionalProperties": False, "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63,
                                                              "pattern": r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "generateName": {"type": "string"}, "finalizers": {"type": "array", "items": {"type": "string"}},
    },
}


def crds_available() -> bool:
    return all((CRD_DIR / f).is_file() for f in CRD_FILES)


def to_json_schema(node: Any) -> Any:
    """One openAPIV3Schema node as strict JSON Schema (see the module docstring)."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items() if k not in ("description", "x-kubernetes-validations")}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if out.get("format") in INT_RANGES:
        out["minimum"], out["maximum"] = INT_RANGES[out["format"]]
    if out.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    return out


def _unique_list_map_keys(validator: Any, keys: list[str], instance: Any, schema: dict[str, Any]):
    if not isinstance(instance, list):
        return
    seen = set()
    for item in instance:
        if not isinstance(item, dict):
            continue
        key = tuple(item.get(k, "TCP" if k == "protocol" else None) for k in keys)
        if key in seen:
            yield jsonschema.ValidationError(f"duplicate entry with {dict(zip(keys, key, strict=True))} (list-map keys must be unique)")
        seen.add(key)


StrictValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {"x-kubernetes-list-map-keys": _unique_list_map_keys})


@cache
def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for name in CRD_FILES:
        crd = yaml.load((CRD_DIR / name).read_text(), Loader=_LOADER)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = to_json_schema(version["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = OBJECT_META
            schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
            schema["properties"]["apiVersion"] = {"const": f"{group}/{version['name']}"}
            schema["properties"]["kind"] = {"const": kind}
            schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


@cache
def _pod_template_schema() -> dict[str, Any]:
    cluster = _crd_schemas()[("ray.io/v1", "RayCluster")]
    return copy.deepcopy(cluster["properties"]["spec"]["properties"]["headGroupSpec"]["properties"]["template"])


def _errors(schema: dict[str, Any], instance: Any, prefix: str = "") -> list[str]:
    found = sorted(StrictValidator(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [f"{prefix}{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message[:300]}" for e in found]


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """Schema errors of one manifest: a KubeRay kind against its CRD, a built-in kind structurally."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    schemas = _crd_schemas()
    if key in schemas:
        return _errors(schemas[key], doc)
    if key not in BUILTIN_KINDS:
        return [f"<root>: unknown kind {key} (not a KubeRay CRD nor a built-in kind the tests know)"]
    errors = _errors(OBJECT_META, doc.get("metadata"), "metadata.")
    if doc["kind"] in ("Deployment", "Job"):
        errors += _errors(_pod_template_schema(), doc["spec"]["template"], "spec.template.")
    return errors


def kubectl_available() -> bool:
    return shutil.which("kubectl") is not None


def kustomize(path: str | Path) -> list[dict[str, Any]]:
    """`kubectl kustomize PATH`, parsed into documents."""
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"kubectl kustomize {path} failed:\n{out.stderr}"
    return [d for d in yaml.load_all(out.stdout, Loader=_LOADER) if d]
