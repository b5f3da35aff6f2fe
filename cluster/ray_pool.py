"""The controller's replica pool on Ray: teacher replica actors placed with the resource plan.

    pool = RayReplicaPool(cfg, out_uri)                  # in the controller actor
    GenerationController(cfg, out_uri).run(pool)

Each replica is a `TeacherReplica` actor named
`potstill-<run_id>-<token>-replica-<n>` (operators and the chaos tests find a
run's replicas by name); a tensor-parallel replica first reserves a placement
group of its GPU bundles (`resources.replica_plan`). Killing a replica also
removes its placement group, so its GPUs are free for the replacement at
once. Ray's errors are translated into the pool protocol's
(`pipelines/generate/pool.py`): an actor that died is `ReplicaLost`, an
`EngineFailure` raised in the actor is re-raised as itself, anything else the
task raised is `UnitFailed`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

from potstill.pipelines.engines.protocol import EngineFailure
from potstill.pipelines.generate.pool import Call, ReplicaLost, UnitFailed
from potstill.pipelines.generate.replicas import Replica
from potstill.schemas.generation import GenerationConfig


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


class RayReplicaPool:
    """`ReplicaPool` over Ray actors (see the module docstring)."""

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
        # The token keeps a re-run's names clear of a previous controller's replicas still being torn down.
        self.name_prefix = f"potstill-{cfg.resolved_run_id()}-{uuid.uuid4().hex[:6]}-"

    def create(self) -> Replica:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.count += 1
        name = f"replica-{self.count}"
        options = dict(self.plan.actor_options, name=self.name_prefix + name)
        pg = None
        if self.plan.uses_placement_group:
            pg = ray.util.placement_group(self.plan.bundles, strategy=self.plan.strategy)
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement_group=pg, placement_group_capture_child_tasks=True)
        handle = self.actor_cls.options(**options).remote(self.config_json, self.out_uri, name, self.engine_kwargs)
        return Replica(name, handle, placement=pg, gpus=self.plan.gpus, cpus=self.plan.cpus)

    def call(self, rep: Replica, method: str, *args: Any) -> Call:
        return getattr(rep.handle, method).remote(*args)

    def wait(self, calls: Iterable[Call], timeout_s: float) -> list[Call]:
        import ray

        calls = list(calls)
        if not calls:
            return []
        if timeout_s == 0:
            done, _ = ray.wait(calls, num_returns=len(calls), timeout=0)
            return done
        done, _ = ray.wait(calls, num_returns=1, timeout=timeout_s)
        if done:  # also collect whatever else finished meanwhile, without waiting again
            done, _ = ray.wait(calls, num_returns=len(calls), timeout=0)
        return done

    def result(self, call: Call, timeout_s: float | None = None) -> Any:
        import ray

        try:
            return ray.get(call, timeout=timeout_s)
        except ray.exceptions.RayActorError as exc:
            raise ReplicaLost(_first_line(exc)) from None
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if exc.cause is not None else exc
            if isinstance(cause, EngineFailure):
                raise EngineFailure(str(cause)) from None
            raise UnitFailed(_first_line(cause)) from None
        except ray.exceptions.GetTimeoutError as exc:
            raise UnitFailed(_first_line(exc)) from None

    def kill(self, rep: Replica) -> None:
        import ray

        ray.kill(rep.handle)
        if rep.placement is not None:
            ray.util.remove_placement_group(rep.placement)
            rep.placement = None

    def now(self) -> float:
        return time.monotonic()
