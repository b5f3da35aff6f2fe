"""The RayJob (and its ConfigMap) that runs one potstill config on KubeRay.

    potstill submit examples/gsm8k.yaml --render-k8s --flavor gpu | kubectl apply -f -
    docs = render_job(job, flavor="gpu")        # [ConfigMap, RayJob] as plain dicts

The cluster shape is not written here: it is k8s/overlays/<flavor> rendered by
kustomize and shipped in the package as `k8s_templates/<flavor>.yaml`
(`bash k8s/sync-templates.sh`; a test fails while the copy is stale). This
module takes that overlay's RayJob for the job's kind and changes only what
the config decides: the name, the ConfigMap holding the config, the
entrypoint, the Jobs API id and metadata (those `potstill submit` gives
attempt 1, so `potstill logs/stop RUN_ID` work on it), and the worker groups' maxReplicas (and GPUs per pod for tensor
parallelism) so the autoscaler can reach the replicas or workers the config
asks for. The result must pass `kuberay_rules.check_manifest`, else it is
refused: an invalid manifest is never printed.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
from importlib import resources
from typing import Any, Literal

import yaml

from potstill.cluster.job_config import JobConfig, job_metadata, kubernetes_problems, submission_id
from potstill.cluster.kuberay_rules import GPU_RESOURCE, MAX_RAYJOB_NAME, check_manifest
from potstill.schemas import ConfigError, GenerationConfig

Flavor = Literal["cpu", "gpu"]
FLAVORS: tuple[Flavor, ...] = ("cpu", "gpu")
CONFIG_MOUNT = "/config"
CONFIG_VOLUME = "configs"
_JOB_PREFIX = {"generate": "potstill-gen", "train": "potstill-train"}
_TEMPLATE_JOB = {"generate": "potstill-generate", "train": "potstill-train"}


def template(flavor: Flavor) -> list[dict[str, Any]]:
    """The documents of k8s/overlays/<flavor> as kustomize renders them (shipped with the package)."""
    if flavor not in FLAVORS:
        raise ValueError(f"--flavor: unknown flavour {flavor!r}; use one of {', '.join(FLAVORS)}")
    text = resources.files("potstill.cluster").joinpath("k8s_templates", f"{flavor}.yaml").read_text(encoding="utf-8")
    return [d for d in yaml.safe_load_all(text) if d]


def job_name(kind: str, run_id: str) -> str:
    """A RayJob name for a run: a DNS-1035 label of at most 47 characters, stable for the run id.

    A run id that had to be shortened or changed to fit gets a hash of the
    original, so two run ids never share a name.
    """
    prefix = _JOB_PREFIX[kind]
    slug = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")
    name = f"{prefix}-{slug}" if slug else prefix
    if name == f"{prefix}-{run_id}" and len(name) <= MAX_RAYJOB_NAME:
        return name
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    return f"{name[:MAX_RAYJOB_NAME - 9].rstrip('-')}-{digest}"


def _gpus_per_pod(group: dict[str, Any]) -> int:
    limits = group["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
    return int(float(str(limits.get(GPU_RESOURCE, 0))))


def _cpus_per_pod(group: dict[str, Any]) -> float:
    limits = group["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
    cpu = str(limits.get("cpu", "1"))
    return float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)


def _set_gpus_per_pod(group: dict[str, Any], gpus: int) -> None:
    res = group["template"]["spec"]["containers"][0].setdefault("resources", {})
    for side in ("limits", "requests"):
        res.setdefault(side, {})[GPU_RESOURCE] = str(gpus)


def gpu_demand(job: JobConfig) -> tuple[int, int]:
    """(GPUs one Ray task/actor needs in a single pod, GPUs in total) at the config's largest scale."""
    c = job.config
    if isinstance(c, GenerationConfig):
        per = int(math.ceil(c.replicas.gpus_per_replica or 0))
        per = max(per, c.teacher.tensor_parallel_size) if per else 0
        return per, per * c.replicas.max_replicas
    return (1, c.scaling.num_workers) if c.scaling.use_gpu else (0, 0)


def cpu_demand(job: JobConfig) -> float:
    """CPUs the job's replicas or training workers take at the config's largest scale."""
    c = job.config
    if isinstance(c, GenerationConfig):
        return c.replicas.cpus_per_replica * c.replicas.max_replicas
    return c.scaling.cpus_per_worker * c.scaling.num_workers


def flavor_problems(job: JobConfig, flavor: Flavor) -> list[str]:
    """Settings that must be explicit on an autoscaling cluster, where GPU pods start at zero.

    "Use GPUs when the cluster has them" sees no GPU when the job starts, so a
    teacher would be built for CPU on a GPU image, or training would run on CPU.
    """
    c = job.config
    if flavor == "gpu" and isinstance(c, GenerationConfig) and not c.replicas.gpus_per_replica:
        return [f"replicas.gpus_per_replica: {c.replicas.gpus_per_replica} on the gpu flavour: its GPU worker pods start at 0, "
                f"so the default (GPUs only when the cluster has some) would give replicas none; set "
                f"replicas.gpus_per_replica: {c.teacher.tensor_parallel_size} (or render with --flavor cpu)"]
    if flavor == "gpu" and not isinstance(c, GenerationConfig) and c.scaling.use_gpu is not True:
        return [f"scaling.use_gpu: {c.scaling.use_gpu} on the gpu flavour: its GPU worker pods start at 0, so the default "
                "(GPUs only when the cluster has some) would train on CPU; set scaling.use_gpu: true (or --flavor cpu)"]
    if flavor == "cpu" and gpu_demand(job)[1] > 0:
        what = "replicas.gpus_per_replica" if isinstance(c, GenerationConfig) else "scaling.use_gpu"
        return [f"{what}: the config asks for GPUs but the cpu flavour has no GPU worker group; render with --flavor gpu"]
    return []


def _size_worker_groups(cluster: dict[str, Any], job: JobConfig) -> None:
    """maxReplicas (and GPUs per pod) of each group, so the autoscaler can reach the config's largest scale."""
    per_task, total_gpus = gpu_demand(job)
    for group in cluster.get("workerGroupSpecs", []):
        gpus = _gpus_per_pod(group)
        if gpus:
            if not total_gpus:
                continue  # a CPU-only job leaves the GPU groups as they are: nothing will ask for them
            if per_task > gpus:
                _set_gpus_per_pod(group, per_task)  # tensor parallelism: a replica's GPUs share one pod
                gpus = per_task
            tasks_per_pod = gpus // per_task
            group["maxReplicas"] = max(1, math.ceil(total_gpus / per_task / tasks_per_pod))
        elif not total_gpus:
            # A cap, not a target (the autoscaler adds pods on demand): one pod beyond the replicas' or
            # workers' CPUs leaves room for Ray Data's tasks beside them.
            group["maxReplicas"] = max(group.get("minReplicas", 0), math.ceil(cpu_demand(job) / _cpus_per_pod(group)) + 1)


def render_job(job: JobConfig, flavor: Flavor = "gpu", *, image: str | None = None,
               namespace: str | None = None) -> list[dict[str, Any]]:
    """[ConfigMap, RayJob] running `job` on a cluster built like k8s/overlays/<flavor>.

    Raises ConfigError naming the config key when the config cannot run there
    (local paths, GPU settings left implicit), ValueError for a bad flavour.
    """
    problems = kubernetes_problems(job) + flavor_problems(job, flavor)
    if problems:
        raise ConfigError(job.source, problems)
    docs = template(flavor)
    base = next(d for d in docs if d["kind"] == "RayJob" and d["metadata"]["name"] == _TEMPLATE_JOB[job.kind])
    config_map = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "potstill-configs")
    name = job_name(job.kind, job.run_id)
    ns = namespace or base["metadata"].get("namespace")
    annotations = {"potstill.dev/run-id": job.run_id, "potstill.dev/config-source": job.source}

    cm = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": f"{name}-config", **({"namespace": ns} if ns else {}),
                     "labels": {**config_map["metadata"].get("labels", {}), "app.kubernetes.io/instance": name},
                     "annotations": annotations},
        "data": {job.file_name: job.yaml()},
    }
    rayjob = copy.deepcopy(base)
    rayjob["metadata"] = {"name": name, **({"namespace": ns} if ns else {}),
                          "labels": {**base["metadata"].get("labels", {}), "app.kubernetes.io/instance": name},
                          "annotations": annotations}
    spec = rayjob["spec"]
    spec["entrypoint"] = f"potstill {job.kind} {CONFIG_MOUNT}/{job.file_name}"
    # The id and metadata `potstill submit` would give attempt 1, so `potstill logs/stop RUN_ID` find this job.
    spec["jobId"] = submission_id(job.kind, job.run_id, 1)
    spec["metadata"] = job_metadata(job, 1)
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    volume = next(v for v in head["volumes"] if v["name"] == CONFIG_VOLUME)
    volume["configMap"] = {"name": cm["metadata"]["name"]}
    _size_worker_groups(cluster, job)
    if image:
        for pod in [cluster["headGroupSpec"]] + cluster.get("workerGroupSpecs", []):
            for container in pod["template"]["spec"]["containers"]:
                container["image"] = image
    problems = check_manifest(rayjob)
    if problems:  # the template or the sizing above broke a KubeRay rule: never print such a manifest
        raise ValueError("the rendered RayJob breaks KubeRay's rules:\n" + "\n".join(f"  - {p}" for p in problems))
    return [cm, rayjob]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the config inside the ConfigMap) as readable `|` blocks."""


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text and not any(line != line.rstrip() for line in text.splitlines()) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(docs: list[dict[str, Any]]) -> str:
    """Documents as one multi-document YAML stream (for `kubectl apply -f -`)."""
    return "---\n".join(yaml.dump(d, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
                         for d in docs)
