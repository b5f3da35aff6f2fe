"""The seam between the generation controller and the cluster: a pool of teacher replicas it can call.

    pool = RayReplicaPool(cfg, out_uri)          # potstill.cluster.ray_pool, in the controller actor
    pool = SimulatedPool(cfg, out_uri, ...)      # potstill.pipelines.generate.simulated_pool, in unit tests
    GenerationController(cfg, out_uri).run(pool)

The controller never imports Ray: it creates replicas, sends them calls
(`start`, `process`, `generate`, `load`), waits on the calls, reads their
results and kills replicas, all through this protocol. It also asks the
pool where a replica stands (`placement`: placed on a node, or pending and
what it waits for), which nodes are draining (spot preemption notices) and,
on an autoscaling cluster, for room for more replicas (`request_capacity`).
A call's result either is the value or raises one of three errors, which is
all the supervision logic needs to know about a failure:

- `ReplicaLost`: the replica's process is gone (actor death; `node_lost`
  when its whole node died or was preempted, which is never a prompt's fault);
- `EngineFailure` (from the engines package): the replica is alive but its
  engine is dead or broken;
- `UnitFailed`: the unit's own task raised; the replica is fine.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from potstill.pipelines.engines.protocol import EngineFailure
from potstill.pipelines.generate.replicas import Replica

__all__ = ["Call", "EngineFailure", "Placement", "ReplicaLost", "ReplicaPool", "UnitFailed", "reason_of"]

Call = Hashable
"""An opaque handle of one call in flight (a Ray ObjectRef on Ray)."""


class ReplicaLost(RuntimeError):
    """The replica process is gone: its calls in flight will never return.

    `node_lost`: its node died or was preempted with it, so no unit on it is to blame.
    """

    def __init__(self, message: str = "", *, node_lost: bool = False):
        super().__init__(message)
        self.node_lost = node_lost


@dataclass(frozen=True)
class Placement:
    """Where a replica stands: on `node_id`, or pending (`waiting_for` says for what and why)."""

    node_id: str | None = None
    waiting_for: str | None = None

    @property
    def placed(self) -> bool:
        return self.node_id is not None


class UnitFailed(RuntimeError):
    """A call raised inside a healthy replica (the unit's own failure)."""


def reason_of(exc: BaseException) -> str:
    """`Type: first line` of a call's error, for logs and failure records.

    Pools build `ReplicaLost` and `UnitFailed` texts in that form from the
    error behind them (a Ray task error's cause, never its traceback).
    """
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, (ReplicaLost, UnitFailed)):
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}"


class ReplicaPool(Protocol):
    """What the controller needs from wherever its replicas run."""

    def create(self) -> Replica:
        """Start a new replica (its engine is not loading yet: send `start`)."""

    def call(self, rep: Replica, method: str, *args: Any) -> Call:
        """Send `rep.method(*args)` without waiting (`start`, `process`, `generate`, `load`, `stats`)."""

    def wait(self, calls: Iterable[Call], timeout_s: float) -> list[Call]:
        """The calls that are done, returning once at least one is or after `timeout_s` (0: poll)."""

    def result(self, call: Call, timeout_s: float | None = None) -> Any:
        """A done call's value; raises `ReplicaLost`, `EngineFailure` or `UnitFailed`."""

    def kill(self, rep: Replica) -> None:
        """Stop `rep` now and free what it holds; its calls in flight then fail with `ReplicaLost`."""

    def retire(self, rep: Replica) -> None:
        """Let a healthy, idle `rep` go at the end of a run: its engine shuts down in order, then it is gone as
        after `kill` (which ends it if that takes too long)."""

    def now(self) -> float:
        """The pool's monotonic clock (seconds) that deadlines are measured on."""

    def placement(self, rep: Replica) -> Placement:
        """Whether `rep` is placed on a node yet, and if not, what it waits for."""

    def draining_nodes(self) -> dict[str, float | None]:
        """Nodes being drained (e.g. a spot preemption notice): node id -> deadline on the pool clock (None: none)."""

    def request_capacity(self, replicas: int) -> None:
        """Ask an autoscaling cluster for room for `replicas` replicas in all (0 withdraws the request)."""

    def location(self) -> str:
        """Where the replicas run, for messages (e.g. the Ray cluster's address)."""
