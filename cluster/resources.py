"""Resource wiring for teacher replicas, computed by pure functions.

    replica_plan(teacher, replicas, cluster_gpus=8) -> ReplicaResources

A replica with tensor_parallel_size = N on GPUs reserves one placement group
of N bundles of {GPU: 1, CPU: c} packed on one node (STRICT_PACK), and vLLM
places its N workers in it. On a CPU-only cluster replicas take no GPU, and
an API teacher's replicas (engine openai, HTTP clients) never do.
Nothing here talks to Ray, so CPU tests assert the wiring for GPU clusters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from potstill.schemas.generation import ReplicasConfig, TeacherConfig


@dataclass(frozen=True)
class ReplicaResources:
    """What each teacher replica asks Ray for."""

    actor_options: dict[str, Any]
    bundles: list[dict[str, float]] = field(default_factory=list)
    strategy: str = "STRICT_PACK"

    @property
    def uses_placement_group(self) -> bool:
        return bool(self.bundles)

    @property
    def gpus(self) -> float:
        """GPUs one replica holds (its actor's, or its placement group's)."""
        return sum(b.get("GPU", 0.0) for b in self.bundles) if self.bundles else float(self.actor_options.get("num_gpus", 0))

    @property
    def cpus(self) -> float:
        """CPUs one replica reserves (its actor's, or its placement group's)."""
        return sum(b.get("CPU", 0.0) for b in self.bundles) if self.bundles else float(self.actor_options.get("num_cpus", 0))


def replica_plan(teacher: TeacherConfig, replicas: ReplicasConfig, cluster_gpus: float) -> ReplicaResources:
    """Actor options (and placement group bundles for tensor parallelism) of one replica."""
    gpus = replicas.gpus_per_replica
    if teacher.engine == "openai":
        gpus = 0.0
    elif gpus is None:
        gpus = float(teacher.tensor_parallel_size) if cluster_gpus > 0 else 0.0
    if gpus and cluster_gpus and gpus > cluster_gpus:
        raise ValueError(
            f"replicas.gpus_per_replica: a replica needs {gpus:g} GPUs but the cluster has {cluster_gpus:g}; "
            "lower teacher.tensor_parallel_size or add GPU nodes")
    options: dict[str, Any] = {
        "num_cpus": replicas.cpus_per_replica,
        # An async actor: many generate() calls must be awaited concurrently for continuous batching.
        "max_concurrency": 10_000,
        # The controller replaces dead replicas itself and requeues their work.
        "max_restarts": 0,
    }
    if replicas.accelerator_type:
        options["accelerator_type"] = replicas.accelerator_type
    if gpus and teacher.tensor_parallel_size > 1:
        # The actor itself holds no GPU; vLLM's TP workers take the bundles' GPUs.
        bundles = [{"GPU": 1.0, "CPU": 1.0} for _ in range(teacher.tensor_parallel_size)]
        bundles[0]["CPU"] += replicas.cpus_per_replica
        options["num_gpus"] = 0
        return ReplicaResources(options, bundles)
    options["num_gpus"] = gpus
    return ReplicaResources(options)


def engine_kwargs_for(teacher: TeacherConfig, resources: ReplicaResources) -> dict[str, Any]:
    """Extra vLLM engine arguments implied by the resource plan."""
    if resources.uses_placement_group:
        return {"distributed_executor_backend": "ray"}
    return {}
