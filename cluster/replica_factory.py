"""Create teacher replica actors on Ray with the resource plan (placement groups for tensor parallelism).

    factory = ReplicaFactory(cfg, out_uri)
    rep = factory.create()          # actor named potstill-<run_id>-<token>-replica-<n>
"""

from __future__ import annotations

import uuid

from potstill.pipelines.generate.replicas import Replica
from potstill.schemas.generation import GenerationConfig


class ReplicaFactory:
    """Creates replica actors with the resource plan; a seam for tests that hand the controller their own."""

    def __init__(self, cfg: GenerationConfig, out_uri: str):
        import ray

        from potstill.actors.replica_actor import TeacherReplica
        from potstill.cluster.resources import engine_kwargs_for, replica_plan

        self.cfg, self.out_uri = cfg, out_uri
        gpus = ray.cluster_resources().get("GPU", 0)
        self.plan = replica_plan(cfg.teacher, cfg.replicas, gpus)
        self.engine_kwargs = engine_kwargs_for(cfg.teacher, self.plan)
        self.actor_cls = ray.remote(TeacherReplica)
        self.config_json = cfg.model_dump_json()
        self.count = 0
        # Named so operators (and the chaos tests) can find a run's replicas; the token keeps a re-run's
        # names clear of a previous controller's replicas that are still being torn down.
        self.name_prefix = f"potstill-{cfg.resolved_run_id()}-{uuid.uuid4().hex[:6]}-"

    def create(self) -> Replica:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.count += 1
        name = f"replica-{self.count}"
        options = dict(self.plan.actor_options, name=self.name_prefix + name)
        if self.plan.uses_placement_group:
            pg = ray.util.placement_group(self.plan.bundles, strategy=self.plan.strategy)
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement_group=pg, placement_group_capture_child_tasks=True)
        handle = self.actor_cls.options(**options).remote(self.config_json, self.out_uri, name, self.engine_kwargs)
        return Replica(name, handle, gpus=self.plan.gpus, cpus=self.plan.cpus)
