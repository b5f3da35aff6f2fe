"""The manifest checks can fail: each ported KubeRay operator rule, each potstill rule and the CRD schema
validation reject a manifest crafted to break them (starting from the shipped gpu overlay, which passes).

    .venv/bin/pytest tests/unit/cluster/test_kuberay_rules.py -q
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # kuberay_schema: shared helper (importlib mode)
from kuberay_schema import crds_available, schema_errors  # noqa: E402

from potstill.cluster.kuberay_manifests import template  # noqa: E402
from potstill.cluster.kuberay_rules import check_manifest, credential_problems, runtime_env_problems  # noqa: E402


def _good(kind: str) -> dict[str, Any]:
    name = {"RayJob": "potstill-generate", "RayCluster": "potstill"}[kind]
    return copy.deepcopy(next(d for d in template("gpu") if d["kind"] == kind and d["metadata"]["name"] == name))


def _cluster(doc):
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def _group(doc, name):
    return next(g for g in _cluster(doc)["workerGroupSpecs"] if g["groupName"] == name)


def _container(group):
    return group["template"]["spec"]["containers"][0]


def _env(doc, env):
    doc["spec"]["runtimeEnvYAML"] = yaml.safe_dump({"env_vars": env})


# (rule, kind of the good manifest, how to break it, words the problem must contain)
BREAKS: list[tuple[str, str, Callable[[dict], Any], str]] = [
    ("minReplicas <= maxReplicas", "RayCluster", lambda d: _group(d, "gpu-spot").update(minReplicas=9, maxReplicas=8), "minReplicas 9 greater than maxReplicas 8"),
    ("minReplicas >= 0", "RayCluster", lambda d: _group(d, "cpu").update(minReplicas=-1), "negative minReplicas"),
    ("min/max set without autoscaling", "RayCluster", lambda d: (d["spec"].update(enableInTreeAutoscaling=False), d["spec"].pop("autoscalerOptions"), [g.pop("priority", None) for g in d["spec"]["workerGroupSpecs"]], _group(d, "cpu").pop("maxReplicas")), "must set both minReplicas and maxReplicas"),
    ("GPU group has a GPU limit", "RayCluster", lambda d: [_container(_group(d, "gpu-ondemand"))["resources"][s].pop("nvidia.com/gpu") for s in ("limits", "requests")], "GPU group but has no nvidia.com/gpu limit"),
    ("GPU group by Ray params has a GPU limit", "RayCluster", lambda d: _group(d, "cpu")["rayStartParams"].update({"num-gpus": "1"}), "no nvidia.com/gpu limit"),
    ("GPU request equals limit", "RayCluster", lambda d: _container(_group(d, "gpu-spot"))["resources"]["requests"].update({"nvidia.com/gpu": "2"}), "differs from its limit"),
    ("num-gpus within the limit", "RayCluster", lambda d: _group(d, "gpu-spot")["rayStartParams"].update({"num-gpus": "4"}), "more than the pod's nvidia.com/gpu limit"),
    ("num-cpus not in both rayStartParams and resources", "RayCluster", lambda d: d["spec"]["headGroupSpec"].update(resources={"CPU": "0"}), "both in rayStartParams (num-cpus)"),
    ("num-gpus not in both rayStartParams and resources", "RayCluster", lambda d: _group(d, "gpu-spot").update(rayStartParams={"num-gpus": "1"}, resources={"GPU": "1"}), "both in rayStartParams (num-gpus)"),
    ("no rayStartParams labels", "RayCluster", lambda d: _group(d, "cpu")["rayStartParams"].update(labels="a=b"), "rayStartParams.labels: not supported"),
    ("unique group names", "RayCluster", lambda d: d["spec"]["workerGroupSpecs"].append(copy.deepcopy(_group(d, "cpu"))), "'cpu' is used by two worker groups"),
    ("workers restartPolicy Never with autoscaler v2", "RayCluster", lambda d: _group(d, "cpu")["template"]["spec"].update(restartPolicy="Always"), "must be Never or unset with autoscaler v2"),
    ("head restartPolicy Never with autoscaler v2", "RayCluster", lambda d: d["spec"]["headGroupSpec"]["template"]["spec"].update(restartPolicy="OnFailure"), "must be Never or unset with autoscaler v2"),
    ("priority needs Ray 2.56", "RayCluster", lambda d: d["spec"].update(rayVersion="2.55.0"), "priority needs rayVersion 2.56.0"),
    ("priority needs autoscaler v2", "RayCluster", lambda d: d["spec"]["autoscalerOptions"].update(version="v1"), "only autoscaler v2 honours"),
    ("idleTimeoutSeconds needs autoscaler v2", "RayCluster", lambda d: (d["spec"]["autoscalerOptions"].update(version="v1"), _group(d, "cpu").update(idleTimeoutSeconds=60)), "idleTimeoutSeconds: needs autoscaler v2"),
    ("no suspended group with autoscaling", "RayCluster", lambda d: _group(d, "cpu").update(suspend=True), "cannot be suspended with the autoscaler"),
    ("token auth needs Ray 2.52", "RayCluster", lambda d: (d["spec"].update(rayVersion="2.50.0"), [g.pop("priority", None) for g in d["spec"]["workerGroupSpecs"]]), "minimum Ray version is 2.52.0"),
    ("k8s token auth needs mode token", "RayCluster", lambda d: d["spec"]["authOptions"].update(mode="disabled", enableK8sTokenAuth=True), "needs authOptions.mode: token"),
    ("no clear-text credential in a container env", "RayCluster", lambda d: _container(_group(d, "cpu"))["env"].append({"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}), "a credential in clear text"),
    ("no key-looking value in a container env", "RayCluster", lambda d: _container(d["spec"]["headGroupSpec"])["env"].append({"name": "KEY_ID", "value": "AKIAIOSFODNN7EXAMPLE"}), "a credential in clear text"),
    ("RayCluster name fits", "RayCluster", lambda d: d["metadata"].update(name="x" * 54), "longer than 53"),
    ("deletionRules not with shutdownAfterJobFinishes", "RayJob", lambda d: d["spec"].update(shutdownAfterJobFinishes=True), "cannot be combined with the older shutdownAfterJobFinishes"),
    ("deletionRules not with ttlSecondsAfterFinished", "RayJob", lambda d: d["spec"].update(shutdownAfterJobFinishes=True, ttlSecondsAfterFinished=60), "cannot be combined"),
    ("TTL needs shutdownAfterJobFinishes", "RayJob", lambda d: (d["spec"].pop("deletionStrategy"), d["spec"].update(ttlSecondsAfterFinished=60)), "set without shutdownAfterJobFinishes"),
    ("deletionRules not with onSuccess/onFailure", "RayJob", lambda d: d["spec"]["deletionStrategy"].update(onSuccess={"policy": "DeleteCluster"}, onFailure={"policy": "DeleteCluster"}), "keep only deletionRules"),
    ("no DeleteWorkers with autoscaling", "RayJob", lambda d: d["spec"]["deletionStrategy"]["deletionRules"][0].update(policy="DeleteWorkers"), "DeleteWorkers is not supported with autoscaling"),
    ("deletion TTLs ordered", "RayJob", lambda d: d["spec"]["deletionStrategy"]["deletionRules"].append({"condition": {"jobStatus": "SUCCEEDED", "ttlSeconds": 10}, "policy": "DeleteSelf"}), "DeleteSelf TTL (10) must be >= DeleteCluster TTL (60)"),
    ("deletion rules unique", "RayJob", lambda d: d["spec"]["deletionStrategy"]["deletionRules"].append(copy.deepcopy(d["spec"]["deletionStrategy"]["deletionRules"][0])), "duplicate rule for policy DeleteCluster"),
    ("one condition per rule", "RayJob", lambda d: d["spec"]["deletionStrategy"]["deletionRules"][0]["condition"].update(jobDeploymentStatus="Failed"), "exactly one of jobStatus and jobDeploymentStatus"),
    ("no AWS_ in runtimeEnvYAML", "RayJob", lambda d: _env(d, {"AWS_SECRET_ACCESS_KEY": "abc"}), "AWS settings do not belong"),
    ("no AWS region either", "RayJob", lambda d: _env(d, {"AWS_REGION": "us-east-1"}), "AWS settings do not belong"),
    ("no token in runtimeEnvYAML", "RayJob", lambda d: _env(d, {"RAY_AUTH_TOKEN": "abc"}), "looks like a credential"),
    ("no API key in runtimeEnvYAML", "RayJob", lambda d: _env(d, {"OPENAI_API_KEY": "sk-x"}), "looks like a credential"),
    ("no token value in runtimeEnvYAML", "RayJob", lambda d: _env(d, {"HEADER": "Bearer abc.def"}), "value looks like a credential"),
    ("no password in runtime env URIs", "RayJob", lambda d: d["spec"].update(runtimeEnvYAML="working_dir: https://me:pw@example.com/x.zip\n"), "carries a password"),
    ("runtimeEnvYAML is YAML", "RayJob", lambda d: d["spec"].update(runtimeEnvYAML="env_vars: [unclosed\n"), "not valid YAML"),
    ("activeDeadlineSeconds > 0", "RayJob", lambda d: d["spec"].update(activeDeadlineSeconds=0), "activeDeadlineSeconds: must be a positive integer"),
    ("preRunningDeadlineSeconds > 0", "RayJob", lambda d: d["spec"].update(preRunningDeadlineSeconds=-5), "preRunningDeadlineSeconds: must be a positive integer"),
    ("backoffLimit >= 0", "RayJob", lambda d: d["spec"].update(backoffLimit=-1), "backoffLimit: must be zero or positive"),
    ("no backoffLimit with clusterSelector", "RayJob", lambda d: (d["spec"].pop("rayClusterSpec"), d["spec"].pop("deletionStrategy"), d["spec"].update(submissionMode="K8sJobMode", clusterSelector={"ray.io/cluster": "potstill"})), "incompatible with clusterSelector"),
    ("a cluster to run on", "RayJob", lambda d: d["spec"].pop("rayClusterSpec"), "set one of rayClusterSpec or clusterSelector"),
    ("SidecarMode has no submitter template", "RayJob", lambda d: d["spec"].update(submitterPodTemplate={"spec": {"containers": []}}), "not supported in SidecarMode"),
    ("no K8s token auth on a RayJob", "RayJob", lambda d: d["spec"]["rayClusterSpec"]["authOptions"].update(enableK8sTokenAuth=True, secretName=None), "not supported for RayJob"),
    ("cluster rules inside a RayJob", "RayJob", lambda d: _group(d, "gpu-spot").update(minReplicas=3, maxReplicas=1), "spec.rayClusterSpec.workerGroupSpecs[1]: worker group gpu-spot has minReplicas 3"),
    ("RayJob name is DNS-1035", "RayJob", lambda d: d["metadata"].update(name="Potstill_Generate"), "must be a DNS-1035 label"),
    ("RayJob name fits", "RayJob", lambda d: d["metadata"].update(name="p" * 48), "longer than 47"),
]


@pytest.mark.parametrize("kind", ["RayCluster", "RayJob"])
def test_the_shipped_manifests_pass(kind):
    assert check_manifest(_good(kind)) == []


@pytest.mark.parametrize("rule,kind,breaks,words", BREAKS, ids=[b[0] for b in BREAKS])
def test_each_rule_rejects_a_manifest_that_breaks_it(rule, kind, breaks, words):
    doc = _good(kind)
    breaks(doc)
    problems = check_manifest(doc)
    assert any(words in p for p in problems), f"{rule}: expected {words!r} in {problems}"


def test_settings_that_only_look_like_secrets_pass():
    assert credential_problems({"TOKENIZERS_PARALLELISM": "false", "RAY_DATA_LOG_LEVEL": "WARNING",
                                "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}, "env") == []
    assert runtime_env_problems("env_vars:\n  TOKENIZERS_PARALLELISM: 'false'\nworking_dir: https://example.com/x.zip\n") == []


SCHEMA_BREAKS: list[tuple[str, str, Callable[[dict], Any], str]] = [
    ("unknown spec field", "RayJob", lambda d: d["spec"].update(backofLimit=3), "'backofLimit' was unexpected"),
    ("unknown container field", "RayCluster", lambda d: _container(_group(d, "cpu")).update(imagePulPolicy="Always"), "'imagePulPolicy' was unexpected"),
    ("unknown group field", "RayCluster", lambda d: _group(d, "gpu-spot").update(maxReplica=3), "'maxReplica' was unexpected"),
    ("wrong type", "RayJob", lambda d: d["spec"].update(backoffLimit="2"), "'2' is not of type 'integer'"),
    ("int32 range", "RayCluster", lambda d: _group(d, "cpu").update(maxReplicas=2**31), "is greater than the maximum"),
    ("resource quantity", "RayCluster", lambda d: _container(_group(d, "cpu"))["resources"]["limits"].update(cpu="2 cores"), "does not match"),
    ("deletion policy enum", "RayJob", lambda d: d["spec"]["deletionStrategy"]["deletionRules"][0].update(policy="DeleteEverything"), "is not one of"),
    ("job status enum", "RayJob", lambda d: d["spec"]["deletionStrategy"]["deletionRules"][0]["condition"].update(jobStatus="DONE"), "is not one of"),
    ("auth mode enum", "RayCluster", lambda d: d["spec"]["authOptions"].update(mode="password"), "is not one of"),
    ("required container name", "RayCluster", lambda d: _container(_group(d, "cpu")).pop("name"), "'name' is a required property"),
    ("unique container names (list-map keys)", "RayCluster", lambda d: _group(d, "cpu")["template"]["spec"]["containers"].append(copy.deepcopy(_container(_group(d, "cpu")))), "list-map keys must be unique"),
    ("unique env names (list-map keys)", "RayCluster", lambda d: _container(_group(d, "cpu"))["env"].append({"name": "RAY_DATA_LOG_LEVEL", "value": "INFO"}), "list-map keys must be unique"),
    ("unknown metadata field", "RayJob", lambda d: d["metadata"].update(lables={"a": "b"}), "'lables' was unexpected"),
    ("label value syntax", "RayCluster", lambda d: d["metadata"]["labels"].update(team="a b"), "does not match"),
    ("apiVersion", "RayJob", lambda d: d.update(apiVersion="ray.io/v2"), "unknown kind"),
]


@pytest.mark.skipif(not crds_available(), reason="needs the KubeRay CRDs in ../shared/kuberay-crds or $POTSTILL_KUBERAY_CRDS")
@pytest.mark.parametrize("what,kind,breaks,words", SCHEMA_BREAKS, ids=[b[0] for b in SCHEMA_BREAKS])
def test_crd_schema_rejects_what_kubectl_would(what, kind, breaks, words):
    doc = _good(kind)
    assert schema_errors(doc) == []
    breaks(doc)
    errors = schema_errors(doc)
    assert any(words in e for e in errors), f"{what}: expected {words!r} in {errors}"
