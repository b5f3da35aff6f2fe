"""KubeRay's operator-side checks of RayCluster and RayJob manifests, in Python, plus potstill's own.

    problems = check_manifest(doc)      # [] when the KubeRay v1.7 operator would accept `doc`

`potstill submit --render-k8s` refuses to print a manifest with problems, and
the tests run every manifest under k8s/ through it. The CRD schema (types,
unknown fields) is checked separately, against the CRDs themselves; these are
the rules a schema cannot express. Ported from KubeRay v1.7
`ray-operator/controllers/ray/utils/validation.go` (ValidateRayClusterSpec,
ValidateRayJobSpec, validateDeletionRules, ...) and the CEL rules of the
RayJob CRD. Each problem names the field, what is wrong and the fix.

potstill adds: a GPU group must carry an `nvidia.com/gpu` limit (else the
pod lands on a node without a GPU, or Ray sees none), and no credential may
sit in a manifest in clear text: not in `runtimeEnvYAML` (the dashboard shows
it and Ray stores it with the job), not as a literal container env value.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

MAX_RAYCLUSTER_NAME = 53
MAX_RAYJOB_NAME = MAX_RAYCLUSTER_NAME - 6
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
GPU_RESOURCE = "nvidia.com/gpu"
_RAY_START_RESOURCE_KEYS = ("num-cpus", "num-gpus", "memory", "resources")
# Whole name parts: RAY_AUTH_TOKEN, HF_TOKEN, OPENAI_API_KEY match; TOKENIZERS_PARALLELISM does not.
_SECRET_NAME = re.compile(r"(^|_)(TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY)(_|$)", re.I)
_SECRET_VALUE = re.compile(r"^(AKIA|ASIA)[A-Z0-9]{16}$|^Bearer\s|://[^/@\s]+:[^/@\s]+@")
_DELETION_ORDER = ("DeleteWorkers", "DeleteCluster", "DeleteSelf")


def credential_reason(name: str, value: Any) -> str | None:
    """Why an environment variable must not travel in a job's runtime env, or None when it may."""
    text = "" if value is None else str(value)
    if str(name).upper().startswith("AWS_"):
        return ("AWS settings do not belong in a job's runtime env (the dashboard shows it); give the pods S3 access "
                "through the ServiceAccount (IRSA / Workload Identity) or the potstill-s3 Secret (envFrom), and the "
                "region through output.storage.region")
    if _SECRET_NAME.search(str(name)):
        return ("looks like a credential; a runtime env is not secret (the dashboard shows it): put it in a Kubernetes "
                "Secret and load it in the pod template (env valueFrom / envFrom)")
    if _SECRET_VALUE.search(text):
        return "the value looks like a credential (an access key, a bearer token or a URL with a password); move it to a Kubernetes Secret"
    return None


def credential_problems(env: dict[str, Any], where: str) -> list[str]:
    """One problem per variable of `env` that carries a credential (see credential_reason).

    Used for a RayJob's runtimeEnvYAML and for the runtime env `potstill submit` sends: both are
    visible in the Ray dashboard and stored with the job.
    """
    return [f"{where}.{name}: {reason}" for name, value in env.items()
            if (reason := credential_reason(name, value)) is not None]


def runtime_env_problems(text: str | None, where: str = "spec.runtimeEnvYAML") -> list[str]:
    """KubeRay parses runtimeEnvYAML as YAML; potstill also keeps credentials out of it."""
    if not text:
        return []
    try:
        env = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [f"{where}: not valid YAML ({exc}); fix the syntax"]
    if env is None:
        return []
    if not isinstance(env, dict):
        return [f"{where}: must be a YAML mapping (runtime env fields such as env_vars), got {type(env).__name__}"]
    problems = credential_problems(env.get("env_vars") or {}, f"{where} env_vars")
    for key in ("working_dir", "py_modules", "pip", "uv", "conda"):
        for item in env.get(key) if isinstance(env.get(key), list) else [env.get(key)]:
            if isinstance(item, str) and _SECRET_VALUE.search(item):
                problems.append(f"{where} {key}: {key} URL carries a password; Ray logs runtime env URIs, so use a "
                                "credential the pods get from a Secret instead")
    return problems


def _version(text: str | None) -> tuple[int, ...] | None:
    match = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return tuple(int(g or 0) for g in match.groups()) if match else None


def _containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    return ((template or {}).get("spec") or {}).get("containers") or []


def _quantity(value: Any) -> float:
    try:
        return float(str(value))
    except ValueError:
        return 0.0


def _is_gpu_group(group: dict[str, Any]) -> bool:
    """A group meant for GPUs: it asks Kubernetes or Ray for GPUs, tolerates GPU nodes or selects them."""
    spec = (group.get("template") or {}).get("spec") or {}
    params = group.get("rayStartParams") or {}
    resources = group.get("resources") or {}
    for c in _containers(group.get("template")):
        res = c.get("resources") or {}
        if GPU_RESOURCE in (res.get("requests") or {}) or GPU_RESOURCE in (res.get("limits") or {}):
            return True
    return (_quantity(params.get("num-gpus", 0)) > 0 or _quantity(resources.get("GPU", 0)) > 0
            or any(t.get("key") == GPU_RESOURCE for t in spec.get("tolerations") or [])
            or any("accelerator" in k or "gpu" in k.lower() for k in (spec.get("nodeSelector") or {})))


def _group_problems(group: dict[str, Any], where: str) -> list[str]:
    name = group.get("groupName", "head")
    problems = []
    params = group.get("rayStartParams") or {}
    if any(params.get(k) for k in _RAY_START_RESOURCE_KEYS) and group.get("resources"):
        problems.append(f"{where}: resource fields are set both in rayStartParams ({', '.join(k for k in _RAY_START_RESOURCE_KEYS if params.get(k))}) "
                        f"and in `resources` for the {name} group; KubeRay accepts only one: keep one of them")
    if "labels" in params:
        problems.append(f"{where}.rayStartParams.labels: not supported for the {name} group; use the group's top-level `labels` field")
    containers = _containers(group.get("template"))
    if not containers:
        problems.append(f"{where}.template.spec.containers: the {name} group needs at least one container")
    for i, c in enumerate(containers):
        for env in c.get("env") or []:
            if "value" in env and (_SECRET_NAME.search(env.get("name", "")) or _SECRET_VALUE.search(str(env["value"]))):
                problems.append(f"{where}.template.spec.containers[{i}].env.{env.get('name')}: a credential in clear text in "
                                "the manifest; load it from a Secret (valueFrom.secretKeyRef or envFrom)")
    if _is_gpu_group(group):
        limits = ((containers[0].get("resources") or {}).get("limits") or {}) if containers else {}
        requests = ((containers[0].get("resources") or {}).get("requests") or {}) if containers else {}
        gpus = _quantity(limits.get(GPU_RESOURCE, 0))
        if gpus <= 0:
            problems.append(f"{where}.template.spec.containers[0].resources.limits: the {name} group is a GPU group but has "
                            f"no {GPU_RESOURCE} limit; add `{GPU_RESOURCE}: \"1\"` (GPUs per pod) so its pods land on GPU "
                            "nodes and Ray sees the GPUs")
        elif GPU_RESOURCE in requests and _quantity(requests[GPU_RESOURCE]) != gpus:
            problems.append(f"{where}.template.spec.containers[0].resources: {GPU_RESOURCE} request ({requests[GPU_RESOURCE]}) "
                            f"differs from its limit ({limits[GPU_RESOURCE]}); Kubernetes requires them equal")
        if gpus > 0 and _quantity(params.get("num-gpus", 0)) > gpus:
            problems.append(f"{where}.rayStartParams.num-gpus: {params['num-gpus']} is more than the pod's {GPU_RESOURCE} "
                            f"limit ({limits[GPU_RESOURCE]}); remove num-gpus (KubeRay derives it from the limit)")
    return problems


def cluster_spec_problems(spec: dict[str, Any], where: str = "spec") -> list[str]:
    """ValidateRayClusterSpec for the fields potstill uses, plus the GPU and credential rules."""
    problems: list[str] = []
    head = spec.get("headGroupSpec") or {}
    problems += _group_problems(head, f"{where}.headGroupSpec")
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    v2 = (spec.get("autoscalerOptions") or {}).get("version") == "v2"
    ray_version = _version(spec.get("rayVersion"))
    head_env = {e.get("name"): e.get("value") for c in _containers(head.get("template"))[:1] for e in c.get("env") or []}
    v2_env = str(head_env.get("RAY_enable_autoscaler_v2", "")).lower() in ("1", "true")
    if autoscaling and v2:
        policy = ((head.get("template") or {}).get("spec") or {}).get("restartPolicy")
        if policy not in (None, "", "Never"):
            problems.append(f"{where}.headGroupSpec.template.spec.restartPolicy: must be Never or unset with autoscaler v2 (got {policy})")
        if "RAY_enable_autoscaler_v2" in head_env:
            problems.append(f"{where}.autoscalerOptions.version and the head env RAY_enable_autoscaler_v2 are both set; keep only autoscalerOptions.version")
    if not autoscaling and v2_env:
        problems.append(f"{where}: RAY_enable_autoscaler_v2 is on but enableInTreeAutoscaling is false; set enableInTreeAutoscaling: true")
    idle = (spec.get("autoscalerOptions") or {}).get("idleTimeoutSeconds")
    if idle is not None and idle < 0:
        problems.append(f"{where}.autoscalerOptions.idleTimeoutSeconds: must be non-negative, got {idle}")
    names = set()
    for i, group in enumerate(spec.get("workerGroupSpecs") or []):
        at = f"{where}.workerGroupSpecs[{i}]"
        name = group.get("groupName")
        if name in names:
            problems.append(f"{at}.groupName: {name!r} is used by two worker groups; give each a unique name")
        names.add(name)
        problems += _group_problems(group, at)
        low, high = group.get("minReplicas"), group.get("maxReplicas")
        if not autoscaling and (low is None or high is None):
            problems.append(f"{at}: worker group {name} must set both minReplicas and maxReplicas when autoscaling is disabled")
        if low is not None and low < 0:
            problems.append(f"{at}.minReplicas: worker group {name} has negative minReplicas {low}")
        if high is not None and high < 0:
            problems.append(f"{at}.maxReplicas: worker group {name} has negative maxReplicas {high}")
        if low is not None and high is not None and low > high:
            problems.append(f"{at}: worker group {name} has minReplicas {low} greater than maxReplicas {high}; raise maxReplicas or lower minReplicas")
        if autoscaling and group.get("suspend"):
            problems.append(f"{at}.suspend: worker group {name} cannot be suspended with the autoscaler enabled")
        if autoscaling and v2:
            policy = ((group.get("template") or {}).get("spec") or {}).get("restartPolicy")
            if policy not in (None, "", "Never"):
                problems.append(f"{at}.template.spec.restartPolicy: must be Never or unset with autoscaler v2 (worker group {name}, got {policy})")
        timeout = group.get("idleTimeoutSeconds")
        if timeout is not None and (timeout < 0 or not (v2 or v2_env)):
            problems.append(f"{at}.idleTimeoutSeconds: needs autoscaler v2 (autoscalerOptions.version: v2) and a non-negative value (worker group {name})")
        priority = group.get("priority")
        if priority:
            if ray_version is None or ray_version < (2, 56, 0):
                problems.append(f"{at}.priority: worker group priority needs rayVersion 2.56.0 or later (got {spec.get('rayVersion')!r})")
            elif not (v2 or v2_env):
                problems.append(f"{at}.priority: worker group {name} sets priority {priority}, which only autoscaler v2 honours; "
                                "set autoscalerOptions.version: v2")
    auth = spec.get("authOptions") or {}
    if auth.get("mode") == "token":
        if ray_version is None:
            problems.append(f"{where}.rayVersion: authOptions.mode is 'token' but rayVersion is missing or invalid "
                            f"({spec.get('rayVersion')!r}); Ray 2.52.0 or later is required")
        elif ray_version < (2, 52, 0):
            problems.append(f"{where}.rayVersion: authOptions.mode is 'token' but the minimum Ray version is 2.52.0, got {spec.get('rayVersion')}")
        if auth.get("enableK8sTokenAuth") and auth.get("secretName"):
            problems.append(f"{where}.authOptions: enableK8sTokenAuth and secretName are both set; use one")
    elif auth.get("enableK8sTokenAuth"):
        problems.append(f"{where}.authOptions.enableK8sTokenAuth: needs authOptions.mode: token")
    return problems


def _deletion_problems(spec: dict[str, Any]) -> list[str]:
    """validateDeletionConfiguration + validateDeletionRules, and the RayJob CRD's CEL rules on deletionStrategy."""
    problems = []
    shutdown = bool(spec.get("shutdownAfterJobFinishes"))
    ttl = spec.get("ttlSecondsAfterFinished") or 0
    if ttl < 0:
        problems.append("spec.ttlSecondsAfterFinished: must be a non-negative integer")
    if not shutdown and ttl > 0:
        problems.append("spec.ttlSecondsAfterFinished: set without shutdownAfterJobFinishes: true, which it needs; "
                        "better, replace both with deletionStrategy.deletionRules")
    strategy = spec.get("deletionStrategy")
    if strategy is None:
        return problems
    rules = strategy.get("deletionRules") or []
    legacy = "onSuccess" in strategy or "onFailure" in strategy
    if rules and (shutdown or ttl > 0):
        problems.append("spec.deletionStrategy.deletionRules: cannot be combined with the older shutdownAfterJobFinishes / "
                        "ttlSecondsAfterFinished; remove those two and express their TTL as a DeleteCluster rule")
    if rules and legacy:
        problems.append("spec.deletionStrategy: uses both onSuccess/onFailure and deletionRules; keep only deletionRules")
    if not rules:
        if not legacy:
            problems.append("spec.deletionStrategy: needs deletionRules (or both onSuccess and onFailure)")
        elif "onSuccess" not in strategy or "onFailure" not in strategy:
            problems.append("spec.deletionStrategy: the legacy fields need both onSuccess and onFailure; prefer deletionRules")
        return problems
    selector_mode = bool(spec.get("clusterSelector"))
    autoscaling = bool((spec.get("rayClusterSpec") or {}).get("enableInTreeAutoscaling"))
    seen: dict[tuple[str, str], dict[str, int]] = {}
    for i, rule in enumerate(rules):
        at = f"spec.deletionStrategy.deletionRules[{i}]"
        cond = rule.get("condition") or {}
        has_job, has_deploy = "jobStatus" in cond, "jobDeploymentStatus" in cond
        if has_job == has_deploy:
            problems.append(f"{at}.condition: set exactly one of jobStatus and jobDeploymentStatus")
            continue
        if cond.get("ttlSeconds", 0) < 0:
            problems.append(f"{at}.condition.ttlSeconds: must be non-negative")
            continue
        policy = rule.get("policy")
        if selector_mode and policy in ("DeleteCluster", "DeleteWorkers"):
            problems.append(f"{at}.policy: {policy} is not supported with clusterSelector (the cluster is not the job's)")
            continue
        if autoscaling and policy == "DeleteWorkers":
            problems.append(f"{at}.policy: DeleteWorkers is not supported with autoscaling enabled; use DeleteCluster "
                            "(the autoscaler already removes idle workers)")
            continue
        key = ("jobStatus", cond["jobStatus"]) if has_job else ("jobDeploymentStatus", cond["jobDeploymentStatus"])
        ttls = seen.setdefault(key, {})
        if policy in ttls:
            problems.append(f"{at}: duplicate rule for policy {policy} and {key[0]} {key[1]}")
            continue
        ttls[policy] = cond.get("ttlSeconds", 0)
    for (kind, status), ttls in seen.items():
        previous = None
        for policy in _DELETION_ORDER:
            if policy not in ttls:
                continue
            if previous is not None and ttls[policy] < ttls[previous]:
                problems.append(f"spec.deletionStrategy.deletionRules: for {kind} {status}, {policy} TTL ({ttls[policy]}) "
                                f"must be >= {previous} TTL ({ttls[previous]})")
            previous = policy
    return problems


def rayjob_spec_problems(spec: dict[str, Any]) -> list[str]:
    """ValidateRayJobSpec (and the cluster spec inside it)."""
    problems = []
    shutdown = bool(spec.get("shutdownAfterJobFinishes"))
    mode = spec.get("submissionMode", "K8sJobMode")
    selector_mode = bool(spec.get("clusterSelector"))
    if spec.get("suspend") and not shutdown:
        problems.append("spec.suspend: a RayJob with shutdownAfterJobFinishes false cannot be suspended")
    problems += _deletion_problems(spec)
    if spec.get("suspend") and selector_mode:
        problems.append("spec.suspend: the clusterSelector mode does not support suspend")
    cluster = spec.get("rayClusterSpec")
    if not cluster and not selector_mode:
        problems.append("spec: set one of rayClusterSpec or clusterSelector")
    backoff = spec.get("backoffLimit")
    if selector_mode:
        if not spec["clusterSelector"].get("ray.io/cluster"):
            problems.append("spec.clusterSelector: the ray.io/cluster name must not be empty")
        if mode == "SidecarMode":
            problems.append("spec.clusterSelector: not supported in SidecarMode")
        if backoff:
            problems.append("spec.backoffLimit: incompatible with clusterSelector (a retry needs a cluster of its own)")
    if mode == "InteractiveMode" and backoff:
        problems.append("spec.backoffLimit: incompatible with InteractiveMode")
    if mode == "SidecarMode":
        if spec.get("submitterPodTemplate"):
            problems.append("spec.submitterPodTemplate: not supported in SidecarMode")
        if spec.get("submitterConfig"):
            problems.append("spec.submitterConfig: not supported in SidecarMode")
        policy = (((cluster or {}).get("headGroupSpec") or {}).get("template") or {}).get("spec", {}).get("restartPolicy")
        if policy not in (None, "", "Never"):
            problems.append(f"spec.rayClusterSpec.headGroupSpec.template.spec.restartPolicy: must be Never or unset in SidecarMode (got {policy})")
    if cluster:
        if (cluster.get("authOptions") or {}).get("enableK8sTokenAuth"):
            problems.append("spec.rayClusterSpec.authOptions.enableK8sTokenAuth: not supported for RayJob; use mode: token")
        problems += cluster_spec_problems(cluster, "spec.rayClusterSpec")
    problems += runtime_env_problems(spec.get("runtimeEnvYAML"))
    for key in ("activeDeadlineSeconds", "preRunningDeadlineSeconds"):
        if spec.get(key) is not None and spec[key] <= 0:
            problems.append(f"spec.{key}: must be a positive integer, got {spec[key]}")
    if backoff is not None and backoff < 0:
        problems.append(f"spec.backoffLimit: must be zero or positive, got {backoff}")
    return problems


def _name_problems(meta: dict[str, Any], kind: str, limit: int) -> list[str]:
    name = (meta or {}).get("name") or ""
    if len(name) > limit:
        return [f"metadata.name: {kind} name {name!r} is longer than {limit} characters; shorten it"]
    if not DNS1035.match(name):
        return [f"metadata.name: {kind} name {name!r} must be a DNS-1035 label (lower-case letters, digits and '-', "
                "starting with a letter, ending with a letter or digit)"]
    return []


def check_manifest(doc: dict[str, Any]) -> list[str]:
    """The problems KubeRay's operator (and potstill) would find in one RayCluster or RayJob; [] for other kinds."""
    kind = doc.get("kind")
    if kind == "RayCluster":
        return _name_problems(doc.get("metadata"), kind, MAX_RAYCLUSTER_NAME) + cluster_spec_problems(doc.get("spec") or {})
    if kind == "RayJob":
        return _name_problems(doc.get("metadata"), kind, MAX_RAYJOB_NAME) + rayjob_spec_problems(doc.get("spec") or {})
    return []
