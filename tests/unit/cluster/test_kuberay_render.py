"""`potstill submit CONFIG --render-k8s`: the RayJob and ConfigMap for a config pass the KubeRay CRD schemas
and operator rules, run exactly that config (run id pinned), size the worker groups from it, carry no
credential, and configs that cannot run on Kubernetes are refused with the key and the fix.

    .venv/bin/pytest tests/unit/cluster/test_kuberay_render.py -q
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))  # kuberay_schema: shared helper (importlib mode)
from kuberay_schema import REPO, crds_available, schema_errors  # noqa: E402

from potstill.cli import app  # noqa: E402
from potstill.cluster.job_config import load_job_config  # noqa: E402
from potstill.cluster.kuberay_manifests import job_name, render_job, template  # noqa: E402
from potstill.cluster.kuberay_rules import MAX_RAYJOB_NAME, DNS1035, check_manifest  # noqa: E402
from potstill.schemas import GenerationConfig, TrainingConfig, validate_config  # noqa: E402

runner = CliRunner()
needs_crds = pytest.mark.skipif(not crds_available(), reason="needs the KubeRay CRDs in ../shared/kuberay-crds")
GSM8K_GPU = """
prompts:
  path: s3://my-bucket/prompts/gsm8k.jsonl
  fields: {prompt: question, reference: answer}
teacher: {model: deepseek-ai/DeepSeek-R1-Distill-Qwen-32B, dtype: bfloat16, tensor_parallel_size: 2}
replicas: {min_replicas: 1, max_replicas: 6, cpus_per_replica: 4, gpus_per_replica: 2}
sampling: {n: 4, max_tokens: 8192}
output: {uri: "s3://my-bucket/potstill/{run_id}"}
"""


def _render(*args: str, env: dict | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, ["submit", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def _cases(tmp: Path) -> list[tuple[str, list[str]]]:
    gsm8k = tmp / "gsm8k-gpu.yaml"
    gsm8k.write_text(GSM8K_GPU)
    cases = [(f"{ov}/{kind}", [str(REPO / "k8s" / "overlays" / ov / "configs" / f"{kind}.yaml"), "--flavor", ov])
             for ov in ("cpu", "gpu") for kind in ("generate", "train")]
    cases.append(("examples/arithmetic --out s3", [str(REPO / "examples" / "arithmetic.yaml"), "--flavor", "cpu",
                                                  "--out", "s3://b/runs/{run_id}"]))
    cases.append(("gsm8k TP=2 on gpu", [str(gsm8k), "--flavor", "gpu", "--image", "registry.example/potstill-gpu:0.1.0",
                                       "--namespace", "team-a"]))
    return cases


@needs_crds
def test_every_render_passes_the_crd_schemas_and_operator_rules_and_runs_its_config(tmp_path):
    for label, args in _cases(tmp_path):
        code, out, err = _render(*args, "--render-k8s")
        assert code == 0, f"{label}: {err}"
        docs = list(yaml.safe_load_all(out))
        assert [d["kind"] for d in docs] == ["ConfigMap", "RayJob"], label
        code, out_json, err = _render(*args, "--render-k8s", "--json")
        assert code == 0 and json.loads(out_json)["manifests"] == docs, f"{label}: --json carries the same manifests"
        cm, job = docs
        for doc in docs:
            assert schema_errors(doc) == [], f"{label}: {doc['kind']}"
            assert check_manifest(doc) == [], f"{label}: {doc['kind']}"
        kind = "generate" if "potstill generate" in job["spec"]["entrypoint"] else "train"
        assert job["spec"]["entrypoint"] == f"potstill {kind} /config/{kind}.yaml", label
        head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
        assert {"name": "configs", "configMap": {"name": cm["metadata"]["name"]}} in head["volumes"], label
        assert list(cm["data"]) == [f"{kind}.yaml"] and cm["metadata"]["namespace"] == job["metadata"]["namespace"]
        shipped = load_job_config(args[0], out=args[args.index("--out") + 1] if "--out" in args else None)
        model = GenerationConfig if kind == "generate" else TrainingConfig
        ran = validate_config(yaml.safe_load(cm["data"][f"{kind}.yaml"]), model)
        assert ran == shipped.config.model_copy(update={"run_id": shipped.run_id} if kind == "generate" else {}), \
            f"{label}: the ConfigMap holds exactly the config, run id pinned"
        assert job["metadata"]["annotations"]["potstill.dev/run-id"] == shipped.run_id
        assert job["metadata"]["name"] == job_name(kind, shipped.run_id)
        assert job["spec"]["jobId"] == f"potstill-{kind}-{shipped.run_id}-1", f"{label}: `potstill logs RUN_ID` finds it"
        assert job["spec"]["metadata"] == {"potstill_run_id": shipped.run_id, "potstill_kind": kind, "potstill_attempt": "1"}


def test_worker_groups_are_sized_from_the_config(tmp_path):
    gsm8k = tmp_path / "gsm8k.yaml"
    gsm8k.write_text(GSM8K_GPU)
    cm, job = render_job(load_job_config(gsm8k), "gpu", image="registry.example/potstill-gpu:0.1.0", namespace="team-a")
    groups = {g["groupName"]: g for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]}
    for name in ("gpu-spot", "gpu-ondemand"):
        res = groups[name]["template"]["spec"]["containers"][0]["resources"]
        assert res["limits"]["nvidia.com/gpu"] == res["requests"]["nvidia.com/gpu"] == "2", "TP=2: a replica's GPUs share a pod"
        assert groups[name]["maxReplicas"] == 6, "6 replicas x 2 GPUs on 2-GPU pods"
    template_cpu = next(g for g in next(d for d in template("gpu") if d["kind"] == "RayCluster")["spec"]["workerGroupSpecs"]
                        if g["groupName"] == "cpu")
    assert groups["cpu"] == {**template_cpu, "template": {**template_cpu["template"], "spec": {
        **template_cpu["template"]["spec"], "containers": [{**template_cpu["template"]["spec"]["containers"][0],
                                                             "image": "registry.example/potstill-gpu:0.1.0"}]}}}
    assert job["metadata"]["namespace"] == cm["metadata"]["namespace"] == "team-a"
    pods = [job["spec"]["rayClusterSpec"]["headGroupSpec"], *groups.values()]
    assert {p["template"]["spec"]["containers"][0]["image"] for p in pods} == {"registry.example/potstill-gpu:0.1.0"}

    train = render_job(load_job_config(REPO / "k8s/overlays/gpu/configs/train.yaml"), "gpu")[1]
    groups = {g["groupName"]: g for g in train["spec"]["rayClusterSpec"]["workerGroupSpecs"]}
    assert groups["gpu-spot"]["maxReplicas"] == groups["gpu-ondemand"]["maxReplicas"] == 2, "2 Ray Train workers, 1 GPU each"

    cpu = render_job(load_job_config(REPO / "k8s/overlays/cpu/configs/generate.yaml"), "cpu")[1]
    (group,) = cpu["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert group["maxReplicas"] == 2, "2 replicas x 1 CPU fill one 2-CPU pod, plus one pod of headroom"


@pytest.mark.parametrize("args,words", [
    (["examples/arithmetic.yaml", "--flavor", "cpu"], ["output.uri: 'runs/{run_id}' is a local path", "--out s3://"]),
    (["examples/gsm8k.yaml", "--flavor", "gpu", "--out", "s3://b/x"], ["prompts.path: 'data/gsm8k/train.jsonl' is a local path"]),
    (["examples/distill_arithmetic.yaml"], ["data.runs[0]: 'runs/arithmetic-demo' is a local path",
                                            "checkpoint.storage_path: 'runs/train' is a local path"]),
    (["examples/arithmetic.yaml", "--flavor", "gpu", "--out", "s3://b/x"], ["replicas.gpus_per_replica: None on the gpu flavour",
                                                                             "set replicas.gpus_per_replica: 1"]),
    (["k8s/overlays/cpu/configs/train.yaml", "--flavor", "gpu"], ["scaling.use_gpu: False on the gpu flavour"]),
    (["k8s/overlays/gpu/configs/generate.yaml", "--flavor", "cpu"], ["the cpu flavour has no GPU worker group"]),
    (["examples/arithmetic.yaml", "--flavor", "tpu", "--out", "s3://b/x"], ["--flavor: 'tpu' is not a flavour"]),
    (["examples/arithmetic.yaml", "--address", "http://h:8265"], ["--render-k8s prints manifests and contacts no cluster"]),
    (["k8s/overlays/cpu/configs/train.yaml", "--out", "s3://b/x"], ["--out: a training job writes to checkpoint.storage_path"]),
    (["k8s/overlays/cpu/configs/train.yaml", "--kind", "evaluate"], ["--kind: 'evaluate' is not a job kind"]),
])
def test_configs_that_cannot_run_on_kubernetes_are_refused_with_the_key_and_fix(args, words, monkeypatch):
    monkeypatch.chdir(REPO)
    code, out, err = _render(*args, "--render-k8s")
    assert code == 2 and out == "", err
    text = " ".join(err.split())
    for w in words:
        assert w in text, f"{w!r} not in {text!r}"


def test_rendering_carries_no_credential_from_the_environment(monkeypatch):
    monkeypatch.chdir(REPO)
    env = {"AWS_SECRET_ACCESS_KEY": "canary-secret-1", "AWS_ACCESS_KEY_ID": "AKIACANARY0000000001",
           "RAY_AUTH_TOKEN": "canary-token-2", "AWS_SESSION_TOKEN": "canary-session-3"}
    code, out, err = _render("k8s/overlays/gpu/configs/generate.yaml", "--render-k8s", env=env)
    assert code == 0, err
    for value in env.values():
        assert value not in out + err


def test_job_names_are_dns_labels_unique_per_run_id():
    ids = ["arithmetic-k8s", "My_Run.v2", "my-run-v2", "run-" + "x" * 120, "run-" + "x" * 119, "---"]
    names = [job_name("generate", i) for i in ids] + [job_name("train", i) for i in ids]
    assert names[0] == "potstill-gen-arithmetic-k8s", "a run id that is already a label is kept as is"
    assert len(set(names)) == len(names)
    assert all(DNS1035.match(n) and len(n) <= MAX_RAYJOB_NAME for n in names), names
