"""The controller's bookkeeping of each teacher replica, and the pure checks on it (deadlines, admission).

    reason = missed_deadline(rep, time.monotonic(), cfg.replicas)   # None, or why it counts as hung

A replica is pending (not placed yet: it waits for resources, which is not
a failure), then starting (placed, engine loading), then ready (it gets
units), and may be draining (no new unit; removed once its units commit).

Replicas are created by the controller's pool (`pool.py`; on Ray, `potstill.cluster.ray_pool`);
this module never talks to Ray.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from potstill.schemas.generation import ReplicasConfig


@dataclass(eq=False)  # identity: the controller keys sets and dicts by replica
class Replica:
    """One replica actor as the controller tracks it."""

    name: str
    handle: Any  # what the pool addresses it by (a Ray actor handle on Ray)
    placement: Any = None  # resources the pool reserved for it (a Ray placement group), freed when it is killed
    inflight: dict = field(default_factory=dict)  # ObjectRef -> monotonic time it was dispatched
    exclusive: bool = False  # running a unit that must be alone
    created_at: float = field(default_factory=time.monotonic)
    placed_at: float | None = None  # when the pool placed it on a node (the start deadline counts from here)
    node_id: str | None = None
    waiting_for: str | None = None  # while pending: the resources it waits for, and why
    ready_at: float | None = None  # when its engine finished starting (unit deadlines count from here)
    draining: str | None = None  # why it gets no new unit (scale-down, idle, node draining); removed when empty
    drain_deadline: float | None = None  # node drains: units still running then are requeued elsewhere
    units_done: int = 0
    completion_tokens: int = 0  # of the units it finished
    idle_since: float | None = None  # ready with nothing in flight since
    hung_reason: str | None = None  # set when the controller killed it for a missed deadline
    requests_seen: int = 0  # engine requests already added to the run's count
    load_ref: Any = None  # an outstanding `load()` long poll
    load_units: int = 0  # units_sent when it was asked (a report is stale once another unit was sent)
    units_sent: int = 0  # units dispatched to it so far (its load report counts only after all have started)
    sequences_pending: int | None = None  # its last `load()` report; None once acted on
    min_sequences: int | None = None  # admit another unit below this many engine sequences (None: never)
    gpus: float = 0.0  # what it holds, hence what it is charged for (cost.py)
    cpus: float = 0.0

    @property
    def state(self) -> str:
        """pending, starting, ready or draining (see the module docstring)."""
        if self.draining is not None:
            return "draining"
        if self.ready_at is not None:
            return "ready"
        return "starting" if self.placed_at is not None else "pending"

    def tokens_per_s(self, now: float) -> float | None:
        """Completion tokens per second of the units it finished, since its engine started."""
        if self.ready_at is None or now <= self.ready_at or not self.units_done:
            return None
        return self.completion_tokens / (now - self.ready_at)


def missed_deadline(rep: Replica, now: float, rcfg: ReplicasConfig, *, stalled_since: float | None = None) -> str | None:
    """Why `rep` counts as hung at `now` (engine start too slow, or a unit unfinished too long), or None.

    The start deadline counts from placement: waiting for resources is not a
    failure while other replicas work. When none is ready (`stalled_since`:
    since when), a replica that cannot be placed within the deadline means the
    run cannot start, and the reason names what it waits for.
    """
    if rep.ready_at is None:
        if rep.placed_at is not None:
            if now - rep.placed_at > rcfg.start_timeout_s:
                return f"engine did not start within {rcfg.start_timeout_s:g} s (replicas.start_timeout_s)"
            return None
        if stalled_since is not None and now - max(rep.created_at, stalled_since) > rcfg.start_timeout_s:
            return (f"could not be placed within {rcfg.start_timeout_s:g} s (replicas.start_timeout_s): it waits for "
                    f"{rep.waiting_for or 'resources the cluster does not have free'}")
        return None
    oldest = min((max(t, rep.ready_at) for t in rep.inflight.values()), default=None)
    if oldest is not None and now - oldest > rcfg.unit_timeout_s:
        return f"hung: a unit made no progress for {now - oldest:.0f} s (replicas.unit_timeout_s={rcfg.unit_timeout_s:g})"
    return None


def min_sequences_for(rcfg: ReplicasConfig, batch_capacity: int | None) -> int | None:
    """The engine-load threshold below which a replica gets another unit.

    `auto`: twice the engine's batch capacity, so a full batch runs and about
    as many sequences wait in the engine's own queue. When a batch of similar
    prompts finishes together, the waiting ones start at the next step instead
    of after a round trip through the controller (as when every prompt is
    submitted to vLLM at once).
    """
    if rcfg.min_sequences_in_flight == "auto":
        return None if batch_capacity is None else 2 * batch_capacity
    return rcfg.min_sequences_in_flight


def unit_limit(rep: Replica, rcfg: ReplicasConfig) -> int:
    """Units `rep` may hold now: `units_in_flight`, or one more (up to `max_units_in_flight`) when its last
    load report says its engine runs fewer than `rep.min_sequences` sequences."""
    low = (rep.min_sequences is not None and rep.sequences_pending is not None
           and rep.sequences_pending < rep.min_sequences)
    return min(rcfg.max_units_in_flight, len(rep.inflight) + 1) if low else rcfg.units_in_flight
