"""How many teacher replicas a run wants: the pure autoscaling policy (no Ray, no clock of its own).

    policy = Autoscaler(cfg.replicas.autoscale)
    decision = policy.decide(view, bounds)      # None: keep the target; else Decision(target, reason)

The controller describes the pool and the backlog in a `PoolView` every loop;
the policy answers with a new target, inside the bounds in force:

- fixed (`potstill scale RUN --replicas N`): exactly N;
- backlog: the remaining work (prompts not yet committed x completion tokens
  per prompt, learned from this run's commits) in replica-seconds at the
  measured tokens/s of one replica, divided by `backlog_s_per_replica` -- or,
  with `finish_by`, by the time left -- rounded up; never more replicas than
  units left to run. Before the first commit nothing is measured and the
  target stays where it is;
- idle: when no prompt waits, ready replicas with nothing in flight for
  `idle_s` are let go (the target drops to the busy ones, not below min);
- cooldowns: at most one scale-up per `scale_up_cooldown_s`, one scale-down
  per `scale_down_cooldown_s` (counted from any change).

Which replicas leave on a scale-down is `drain_order`: those not yet placed,
then those still starting, then ready ones with the fewest units in flight.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from potstill.pipelines.generate.replicas import Replica
from potstill.schemas.generation import AutoscaleConfig
from potstill.schemas.results import ScaleBounds

__all__ = ["Autoscaler", "Decision", "PoolView", "clamp", "drain_order"]


@dataclass(frozen=True)
class PoolView:
    """The pool and its backlog at one moment, as the policy needs them."""

    now: float
    target: int  # replicas wanted now
    ready: int  # working replicas (not draining)
    idle: int  # of those, with nothing in flight
    idle_for_s: float  # how long the longest-idle one has been idle (0 if none)
    queued_prompts: int  # prompts not dispatched yet
    inflight_prompts: int  # prompts in units on replicas
    units_left: int  # units queued or in flight
    tokens_per_prompt: float | None = None  # learned from this run's commits
    tokens_per_s_per_replica: float | None = None  # measured on this run's replicas
    time_left_s: float | None = None  # until finish_by


@dataclass(frozen=True)
class Decision:
    """A new target and why."""

    target: int
    reason: str


def clamp(n: int, bounds: ScaleBounds) -> int:
    """`n` within the bounds (the fixed count when one is set)."""
    if bounds.fixed is not None:
        return bounds.fixed
    return max(bounds.min_replicas, min(bounds.max_replicas, n))


class Autoscaler:
    """The backlog/idle policy with its cooldown state (see the module docstring)."""

    def __init__(self, cfg: AutoscaleConfig):
        self.cfg = cfg
        self.last_up: float | None = None
        self.last_change: float | None = None

    def decide(self, view: PoolView, bounds: ScaleBounds) -> Decision | None:
        """A new target, or None to keep `view.target`."""
        if bounds.fixed is not None:
            if view.target != bounds.fixed:
                return self._changed(view, bounds.fixed, f"fixed at {bounds.fixed} (potstill scale --replicas)")
            return None
        bounded = clamp(view.target, bounds)
        if bounded != view.target:
            return self._changed(view, bounded, f"bounds {bounds.min_replicas}..{bounds.max_replicas}")
        want = self._wanted(view, bounds)
        if want is None or want[0] == view.target:
            return None
        target, reason = want
        if target > view.target and not self._cooled(self.last_up, self.cfg.scale_up_cooldown_s, view.now):
            return None
        if target < view.target and not self._cooled(self.last_change, self.cfg.scale_down_cooldown_s, view.now):
            return None
        return self._changed(view, target, reason)

    def _wanted(self, view: PoolView, bounds: ScaleBounds) -> tuple[int, str] | None:
        if view.queued_prompts == 0:
            if view.idle and view.idle_for_s >= self.cfg.idle_s:
                busy = view.ready - view.idle
                return clamp(busy, bounds), f"idle: {view.idle} replica(s) with nothing left to run"
            return None
        if not view.tokens_per_prompt or not view.tokens_per_s_per_replica:
            return None  # nothing measured yet: keep the target
        work_s = (view.queued_prompts + view.inflight_prompts) * view.tokens_per_prompt / view.tokens_per_s_per_replica
        if view.time_left_s is not None:
            horizon = max(view.time_left_s, 1e-9)
            why = f"finish_by: {work_s:,.0f} replica-seconds of work in {max(view.time_left_s, 0):,.0f} s"
        else:
            horizon = self.cfg.backlog_s_per_replica
            why = f"backlog: {work_s:,.0f} replica-seconds of work, {horizon:g} s per replica"
        needed = min(math.ceil(work_s / horizon), max(view.units_left, 1))
        if needed <= view.target:
            return None  # a backlog never shrinks the pool: idle replicas leave when the queue is empty
        return clamp(needed, bounds), why

    @staticmethod
    def _cooled(since: float | None, cooldown_s: float, now: float) -> bool:
        return since is None or now - since >= cooldown_s

    def _changed(self, view: PoolView, target: int, reason: str) -> Decision:
        if target > view.target:
            self.last_up = view.now
        self.last_change = view.now
        return Decision(target, reason)


def drain_order(replicas: Iterable[Replica]) -> list[Replica]:
    """Replicas in the order a scale-down lets them go: pending, starting, then ready by fewest units in
    flight (newest first among equals); replicas already draining are not listed."""
    rank = {"pending": 0, "starting": 1, "ready": 2}
    live = [r for r in replicas if r.draining is None]
    return sorted(live, key=lambda r: (rank[r.state], len(r.inflight), -r.created_at))
