"""The controller's replica pool on Ray: teacher replica actors placed with the resource plan.

    pool = RayReplicaPool(cfg, out_uri)                  # in the controller actor
    GenerationController(cfg, out_uri).run(pool)

Each replica is a `TeacherReplica` actor named
`potstill-<run_id>-<token>-replica-<n>` in the `potstill` namespace (operators
and the chaos tests find a run's replicas by name), inside its own placement
group (`resources.replica_plan`: one bundle, or the GPU bundles of a tensor-
or pipeline-parallel replica). Killing a replica also removes its placement
group, so what it held is free for the replacement at once. At the end of a run a
replica is retired instead: its vLLM engine is shut down in order first (no
engine process, shared-memory segment or interpreter-shutdown traceback left
behind), then it is killed. A group that is
not created yet is a pending replica; `placement` says what it waits for
from the group's scheduling state (NO_RESOURCES: the cluster is full now;
INFEASIBLE: no node could ever hold it). Draining nodes come from the GCS
(`drain.py`); with `autoscale.request_resources` the pool asks the autoscaler
for room for the replicas the controller wants (`autoscaler.py`).

Ray's errors are translated into the pool protocol's
(`pipelines/generate/pool.py`): an actor that died is `ReplicaLost` (with
`node_lost` when its node died or was preempted), an `EngineFailure` raised
in the actor is re-raised as itself, anything else the task raised is
`UnitFailed`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

from potstill.pipelines.engines.protocol import EngineFailure
from potstill.pipelines.generate.pool import Call, Placement, ReplicaLost, UnitFailed
from potstill.pipelines.generate.replicas import Replica
from potstill.schemas.generation import GenerationConfig

NAMESPACE = "potstill"
"""The Ray namespace of every potstill actor: a run's controller is found there by name from any process."""

RETIRE_S = 30.0
"""How long a retiring replica gets to shut its engine down before it is killed."""

_NODE_DIED = "its node has died"  # Ray's wording when an actor died with its node


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _lost(exc: BaseException) -> ReplicaLost:
    text = str(exc)
    node_lost = bool(getattr(exc, "preempted", False)) or _NODE_DIED in text
    first = next((line.strip() for line in text.splitlines() if _NODE_DIED in line), None) if node_lost else None
    return ReplicaLost(first or _first_line(exc), node_lost=node_lost)


class RayReplicaPool:
    """`ReplicaPool` over Ray actors (see the module docstring)."""

    def __init__(self, cfg: GenerationConfig, out_uri: str):
        import ray

        from potstill.actors.replica_actor import TeacherReplica
        from potstill.cluster.autoscaler import CapacityRequests
        from potstill.cluster.resources import engine_kwargs_for, replica_plan

        self.cfg, self.out_uri = cfg, out_uri
        gpus = ray.cluster_resources().get("GPU", 0)
        self.plan = replica_plan(cfg.teacher, cfg.replicas, gpus)
        self.engine_kwargs = engine_kwargs_for(cfg.teacher, self.plan)
        self.actor_cls = ray.remote(TeacherReplica)
        self.config_json = cfg.model_dump_json()
        self.count = 0
        self.requests = CapacityRequests()
        # The token keeps a re-run's names clear of a previous controller's replicas still being torn down.
        self.name_prefix = f"potstill-{cfg.resolved_run_id()}-{uuid.uuid4().hex[:6]}-"
        self.address = ray.get_runtime_context().gcs_address
        self._table: dict = {}  # every placement group's state, read at most once a second (one GCS call)
        self._table_at = 0.0

    def create(self) -> Replica:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.count += 1
        name = f"replica-{self.count}"
        options = dict(self.plan.actor_options, name=self.name_prefix + name, namespace=NAMESPACE)
        pg = None
        if self.plan.uses_placement_group:
            pg = ray.util.placement_group(self.plan.bundles, strategy=self.plan.strategy,
                                          name=self.name_prefix + name + "-pg")
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement_group=pg, placement_group_bundle_index=0, placement_group_capture_child_tasks=True)
        handle = self.actor_cls.options(**options).remote(self.config_json, self.out_uri, name, self.engine_kwargs)
        return Replica(name, handle, placement=pg, gpus=self.plan.gpus, cpus=self.plan.cpus)

    def call(self, rep: Replica, method: str, *args: Any) -> Call:
        return getattr(rep.handle, method).remote(*args)

    def wait(self, calls: Iterable[Call], timeout_s: float) -> list[Call]:
        import ray

        calls = list(calls)
        if not calls:
            if timeout_s:
                time.sleep(min(timeout_s, 0.2))  # nothing to wait on (replicas pending): do not spin
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
            raise _lost(exc) from None
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

    def retire(self, rep: Replica) -> None:
        import ray

        try:  # the engine stops in order (its processes, shared memory) while the actor's interpreter is whole
            ray.get(rep.handle.shutdown.remote(), timeout=RETIRE_S)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
            pass  # gone already, or stuck: the kill ends it either way
        self.kill(rep)

    def now(self) -> float:
        return time.monotonic()

    def placement(self, rep: Replica) -> Placement:
        from ray.util.placement_group import placement_group_table

        if rep.placement is None:  # asks for nothing: placed wherever Ray starts it (its start() names the node)
            return Placement(node_id=rep.node_id or "unreserved")
        if time.monotonic() - self._table_at > 1.0:  # a thousand pending replicas cost one call, not a thousand
            self._table, self._table_at = placement_group_table(), time.monotonic()
        table = self._table.get(rep.placement.id.hex()) or placement_group_table(rep.placement)
        if table.get("state") == "CREATED":
            nodes = table.get("bundles_to_node_id") or {}
            return Placement(node_id=nodes.get(0) or next(iter(nodes.values()), "unknown"))
        why = (table.get("stats") or {}).get("scheduling_state", "PENDING")
        meaning = {"NO_RESOURCES": "no node has them free now",
                   "INFEASIBLE": "no node of the cluster could ever hold them"}.get(why, "being scheduled")
        return Placement(waiting_for=f"{self.plan.describe()}: {meaning} ({why})")

    def draining_nodes(self) -> dict[str, float | None]:
        from potstill.cluster.drain import draining_nodes

        try:
            found = draining_nodes()
        except Exception:  # noqa: BLE001 - a GCS hiccup: nothing is known to drain this time
            return {}
        now, wall = time.monotonic(), time.time()
        return {node: (None if deadline is None else now + (deadline - wall)) for node, deadline in found.items()}

    def request_capacity(self, replicas: int) -> None:
        self.requests.ask(self.plan.bundles * replicas if self.plan.uses_placement_group else [])

    def location(self) -> str:
        return f"Ray cluster {self.address}"
