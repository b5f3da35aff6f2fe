"""Every manifest under k8s/, rendered by `kubectl kustomize` per overlay (and with the optional component),
passes the KubeRay CRD schemas (unknown fields rejected) and the operator's rules, and has the shape the
issue asks for: CPU head with num-cpus 0, autoscaler v2, GPU groups from zero, token auth from a Secret,
RayJobs with deletion rules, retries and deadlines, S3 through the ServiceAccount or a Secret, metrics.

    .venv/bin/pytest tests/unit/cluster/test_k8s_manifests.py -q
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # kuberay_schema: shared helper (importlib mode)
from kuberay_schema import REPO, crds_available, kubectl_available, kustomize, schema_errors  # noqa: E402

from potstill.cluster.kuberay_rules import GPU_RESOURCE, check_manifest, credential_problems  # noqa: E402
from potstill.schemas import GenerationConfig, TrainingConfig, load_config  # noqa: E402

OVERLAYS = ("cpu", "gpu")
COMPONENTS = ("prometheus-operator",)

pytestmark = [
    pytest.mark.skipif(not kubectl_available(), reason="needs `kubectl` (kustomize) on PATH"),
    pytest.mark.skipif(not crds_available(), reason="needs the KubeRay CRDs in ../shared/kuberay-crds or $POTSTILL_KUBERAY_CRDS"),
]


def test_every_overlay_and_component_is_tested():
    assert sorted(p.name for p in (REPO / "k8s" / "overlays").iterdir()) == sorted(OVERLAYS)
    assert sorted(p.name for p in (REPO / "k8s" / "components").iterdir()) == sorted(COMPONENTS)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    """Each overlay, and each overlay with each component, as `kubectl kustomize` renders it."""
    out = {ov: kustomize(REPO / "k8s" / "overlays" / ov) for ov in OVERLAYS}
    for ov in OVERLAYS:
        for comp in COMPONENTS:
            folder = tmp_path_factory.mktemp(f"{ov}-{comp}")
            (folder / "kustomization.yaml").write_text(yaml.safe_dump({  # relative: kustomize refuses absolute paths
                "resources": [os.path.relpath(REPO / "k8s" / "overlays" / ov, folder)],
                "components": [os.path.relpath(REPO / "k8s" / "components" / comp, folder)]}))
            out[f"{ov}+{comp}"] = kustomize(folder)
    return out


def _one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def _pods(cluster_spec):
    return [("head", cluster_spec["headGroupSpec"])] + [(g["groupName"], g) for g in cluster_spec["workerGroupSpecs"]]


@pytest.mark.parametrize("variant", [*OVERLAYS, *(f"{o}+{c}" for o in OVERLAYS for c in COMPONENTS)])
def test_rendered_manifests_pass_the_crd_schemas_and_operator_rules(rendered, variant):
    docs = rendered[variant]
    assert {d["kind"] for d in docs} >= {"Namespace", "ServiceAccount", "ConfigMap", "RayCluster", "RayJob"}
    for doc in docs:
        where = f"{variant}: {doc['kind']} {doc['metadata']['name']}"
        assert schema_errors(doc) == [], where
        assert check_manifest(doc) == [], where
        assert doc["metadata"].get("namespace", "potstill") == "potstill", where
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "potstill", where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_raycluster_shape(rendered, overlay):
    docs = rendered[overlay]
    spec = _one(docs, "RayCluster", "potstill")["spec"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert spec["enableInTreeAutoscaling"] is True and spec["autoscalerOptions"]["version"] == "v2"
    assert spec["authOptions"] == {"mode": "token", "secretName": "potstill-ray-token"}
    assert not any(d["kind"] == "Secret" for d in docs), "no token or key ships in the manifests"
    image = {"cpu": "potstill-cpu:0.1.0", "gpu": "ghcr.io/your-org/potstill-gpu:0.1.0"}[overlay]
    for name, group in _pods(spec):
        pod = group["template"]["spec"]
        c = pod["containers"][0]
        assert c["image"] == image, f"{name}: the kustomize `images:` tag names every Ray container"
        assert c["lifecycle"]["preStop"]["exec"]["command"] == ["/bin/sh", "-c", "ray stop"], name
        assert {"secretRef": {"name": "potstill-s3", "optional": True}} in c["envFrom"], name
        assert pod["serviceAccountName"] == "potstill", name
        assert group["template"]["metadata"]["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"}
        assert {"containerPort": 8080, "name": "metrics"} in c["ports"] and group["rayStartParams"]["metrics-export-port"] == "8080"
        assert credential_problems({e["name"]: e.get("value") for e in c.get("env", [])}, name) == []
        if name != "head":
            assert pod["restartPolicy"] == "Never", name
            assert group["replicas"] == 0 and group["minReplicas"] == 0 and group["maxReplicas"] > 0, name
    gpu_groups = [g for _, g in _pods(spec)[1:] if GPU_RESOURCE in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    if overlay == "cpu":
        assert gpu_groups == []
        return
    assert [g["groupName"] for g in gpu_groups] == ["gpu-spot", "gpu-ondemand"]
    spot, ondemand = gpu_groups
    assert spot["priority"] > ondemand["priority"] > 0, "spot first, on-demand as the fallback"
    for g in gpu_groups:
        pod = g["template"]["spec"]
        res = pod["containers"][0]["resources"]
        assert res["limits"][GPU_RESOURCE] == res["requests"][GPU_RESOURCE] == "1"
        assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert pod["nodeSelector"], f"{g['groupName']}: a nodeSelector placeholder to point at the GPU pool"
    assert spot["template"]["spec"]["nodeSelector"] != ondemand["template"]["spec"]["nodeSelector"]
    sa = _one(docs, "ServiceAccount", "potstill")
    assert "eks.amazonaws.com/role-arn" in sa["metadata"]["annotations"], "S3 through IRSA on the gpu overlay"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rayjobs_run_the_configmap_configs_with_retries_deadlines_and_deletion_rules(rendered, overlay):
    docs = rendered[overlay]
    cluster = _one(docs, "RayCluster", "potstill")["spec"]
    configs = _one(docs, "ConfigMap", "potstill-configs")["data"]
    runs = {}
    for name, kind, model in (("potstill-generate", "generate", GenerationConfig), ("potstill-train", "train", TrainingConfig)):
        spec = _one(docs, "RayJob", name)["spec"]
        assert spec["entrypoint"] == f"potstill {kind} /config/{kind}.yaml"
        assert spec["rayClusterSpec"] == cluster, "a RayJob's cluster is a copy of the RayCluster (kustomize replacements)"
        volume = next(v for v in cluster["headGroupSpec"]["template"]["spec"]["volumes"] if v["name"] == "configs")
        assert volume["configMap"]["name"] == "potstill-configs" and f"{kind}.yaml" in configs
        mounts = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        assert {"name": "configs", "mountPath": "/config", "readOnly": True} in mounts
        assert "shutdownAfterJobFinishes" not in spec and "ttlSecondsAfterFinished" not in spec
        rules = spec["deletionStrategy"]["deletionRules"]
        assert {r["condition"].get("jobStatus") for r in rules} >= {"SUCCEEDED", "FAILED"}
        assert all(r["policy"] == "DeleteCluster" for r in rules), "DeleteWorkers is refused with autoscaling"
        assert spec["backoffLimit"] >= 1 and spec["activeDeadlineSeconds"] > 0 and spec["preRunningDeadlineSeconds"] > 0
        env = yaml.safe_load(spec["runtimeEnvYAML"])
        assert credential_problems(env["env_vars"], "runtimeEnvYAML") == []
        path = REPO / "k8s" / "overlays" / overlay / "configs" / f"{kind}.yaml"
        assert configs[f"{kind}.yaml"] == path.read_text()
        runs[kind] = load_config(path, model)
        run_id = runs[kind].run_id if kind == "generate" else runs[kind].name
        assert spec["jobId"] == f"potstill-{kind}-{run_id}-1", "the id `potstill submit` gives attempt 1: logs/stop find it"
        assert spec["metadata"] == {"potstill_run_id": run_id, "potstill_kind": kind, "potstill_attempt": "1"}
    gen, train = runs["generate"], runs["train"]
    assert gen.run_id, "a fixed run id: every RayJob attempt resumes the same run"
    out = gen.output.uri.replace("{run_id}", gen.run_id)
    assert out.startswith("s3://") and train.data.runs == [out], "training reads the generation run's output"
    assert train.checkpoint.storage_path.startswith("s3://")
    if overlay == "gpu":
        assert gen.replicas.gpus_per_replica == 1 and train.scaling.use_gpu is True, "GPU pods start at 0: say GPU explicitly"
    else:
        assert gen.output.storage.endpoint_url == train.data.storage.endpoint_url == "http://minio.potstill.svc.cluster.local:9000"


def test_cpu_overlay_brings_minio_with_credentials_only_from_the_secret(rendered):
    docs = rendered["cpu"]
    minio = _one(docs, "Deployment", "minio")["spec"]["template"]["spec"]["containers"][0]
    assert all("valueFrom" in e and e["valueFrom"]["secretKeyRef"]["name"] == "potstill-s3" for e in minio["env"])
    bucket = _one(docs, "Job", "minio-bucket")["spec"]["template"]["spec"]["containers"][0]
    assert bucket["envFrom"] == [{"secretRef": {"name": "potstill-s3"}}] and bucket["image"] == "potstill-cpu:0.1.0"
    service = _one(docs, "Service", "minio")
    assert service["spec"]["ports"][0]["port"] == 9000


def test_prometheus_component_adds_podmonitors_for_head_and_workers(rendered):
    monitors = [d for d in rendered["gpu+prometheus-operator"] if d["kind"] == "PodMonitor"]
    assert {m["spec"]["selector"]["matchLabels"]["ray.io/node-type"] for m in monitors} == {"head", "worker"}
    assert all(e["port"] in ("metrics", "as-metrics", "dash-metrics") for m in monitors for e in m["spec"]["podMetricsEndpoints"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_packaged_templates_are_the_rendered_overlays(rendered, overlay):
    """`--render-k8s` reads cluster/k8s_templates/ from the wheel; after an edit under k8s/ run k8s/sync-templates.sh."""
    shipped = REPO / "cluster" / "k8s_templates" / f"{overlay}.yaml"
    docs = [d for d in yaml.safe_load_all(shipped.read_text()) if d]
    assert docs == rendered[overlay], f"{shipped} is stale: run `bash k8s/sync-templates.sh`"
