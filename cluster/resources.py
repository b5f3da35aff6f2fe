"""Resource wiring for teacher replicas, computed by pure functions.

    plan = replica_plan(teacher, replicas, cluster_gpus=8)     # ReplicaResources: bundles, strategy, actor options
    plan.describe()                                             # "4 bundles of {CPU: 1, GPU: 1} packed on one node"

Every replica that asks for resources reserves a placement group, so what
it holds is freed the moment the controller removes the group, the
controller can ask whether it is placed yet and what it waits for, and an
autoscaler gets the exact bundles to provide:

- one GPU (tensor_parallel_size = pipeline_parallel_size = 1) or a CPU-only
  cluster: one bundle with the actor's CPUs (and GPUs), the actor inside it;
- tensor parallelism N: N bundles of {GPU: 1, CPU: 1} packed on one node
  (STRICT_PACK), the actor's own CPUs riding in bundle 0 with the actor; vLLM
  places one worker per bundle (`distributed_executor_backend: ray`);
- pipeline parallelism P: N x P bundles, PACK (stages may span nodes).

An API teacher's replicas (engine openai, HTTP clients) never take a GPU.
A replica that asks for nothing (cpus_per_replica 0 on a CPU cluster) needs
no group. Nothing here talks to Ray, so CPU tests assert the wiring for GPU
clusters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from potstill.schemas.generation import ReplicasConfig, TeacherConfig

ACCELERATOR_PREFIX = "accelerator_type:"  # Ray's resource for an accelerator_type constraint (ray_constants)
ACCELERATOR_AMOUNT = 0.001  # what Ray itself asks of that resource per actor


@dataclass(frozen=True)
class ReplicaResources:
    """What each teacher replica asks Ray for."""

    actor_options: dict[str, Any]
    bundles: list[dict[str, float]] = field(default_factory=list)
    strategy: str = "STRICT_PACK"

    @property
    def uses_placement_group(self) -> bool:
        return bool(self.bundles)

    def describe(self) -> str:
        """The bundles in words, for `potstill status` and placement errors."""
        if not self.bundles:
            return "no reserved resources"
        shapes: dict[str, int] = {}
        for b in self.bundles:
            shape = "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(b.items())) + "}"
            shapes[shape] = shapes.get(shape, 0) + 1
        parts = [f"{n} bundle{'s' if n > 1 else ''} of {shape}" for shape, n in shapes.items()]
        where = {"STRICT_PACK": "packed on one node", "PACK": "packed where possible"}.get(self.strategy, self.strategy)
        return " + ".join(parts) + f" {where}"

    @property
    def gpus(self) -> float:
        """GPUs one replica holds (its actor's, or its placement group's)."""
        return sum(b.get("GPU", 0.0) for b in self.bundles) if self.bundles else float(self.actor_options.get("num_gpus", 0))

    @property
    def cpus(self) -> float:
        """CPUs one replica reserves (its actor's, or its placement group's)."""
        return sum(b.get("CPU", 0.0) for b in self.bundles) if self.bundles else float(self.actor_options.get("num_cpus", 0))


def replica_plan(teacher: TeacherConfig, replicas: ReplicasConfig, cluster_gpus: float) -> ReplicaResources:
    """Actor options and placement group bundles of one replica."""
    workers = teacher.tensor_parallel_size * teacher.pipeline_parallel_size
    gpus = replicas.gpus_per_replica
    if teacher.engine == "openai":
        gpus = 0.0
    elif gpus is None:
        gpus = float(workers) if cluster_gpus > 0 else 0.0
    if gpus and cluster_gpus and gpus > cluster_gpus:
        raise ValueError(
            f"replicas.gpus_per_replica: a replica needs {gpus:g} GPUs but the cluster has {cluster_gpus:g}; "
            "lower teacher.tensor_parallel_size / pipeline_parallel_size or add GPU nodes")
    options: dict[str, Any] = {
        "num_cpus": replicas.cpus_per_replica,
        # An async actor: many generate() calls must be awaited concurrently for continuous batching.
        "max_concurrency": 10_000,
        # The controller replaces dead replicas itself and requeues their work.
        "max_restarts": 0,
    }
    accelerator = {f"{ACCELERATOR_PREFIX}{replicas.accelerator_type}": ACCELERATOR_AMOUNT} if replicas.accelerator_type else {}
    if accelerator:
        options["accelerator_type"] = replicas.accelerator_type
    if gpus and workers > 1:
        # The actor itself holds no GPU; vLLM's workers take one bundle's GPU each.
        bundles = [{"GPU": 1.0, "CPU": 1.0, **accelerator} for _ in range(workers)]
        bundles[0]["CPU"] += replicas.cpus_per_replica
        options["num_gpus"] = 0
        return ReplicaResources(options, bundles, "STRICT_PACK" if teacher.pipeline_parallel_size == 1 else "PACK")
    options["num_gpus"] = gpus
    bundle = {k: v for k, v in (("CPU", float(replicas.cpus_per_replica)), ("GPU", float(gpus))) if v}
    if bundle and accelerator:
        bundle.update(accelerator)
    return ReplicaResources(options, [bundle] if bundle else [])


def engine_kwargs_for(teacher: TeacherConfig, resources: ReplicaResources) -> dict[str, Any]:
    """Extra vLLM engine arguments implied by the resource plan."""
    kwargs: dict[str, Any] = {}
    if teacher.tensor_parallel_size * teacher.pipeline_parallel_size > 1 and resources.uses_placement_group:
        kwargs["distributed_executor_backend"] = "ray"
    if teacher.pipeline_parallel_size > 1:
        kwargs["pipeline_parallel_size"] = teacher.pipeline_parallel_size
    return kwargs
