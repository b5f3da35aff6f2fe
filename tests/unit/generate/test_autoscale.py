"""The autoscaling policy, pure: targets from the backlog, deadlines, idleness, bounds, cooldowns, drain order."""

from __future__ import annotations

from dataclasses import replace

from potstill.pipelines.generate.autoscale import Autoscaler, PoolView, drain_order
from potstill.pipelines.generate.replicas import Replica
from potstill.schemas.generation import AutoscaleConfig
from potstill.schemas.results import ScaleBounds

BOUNDS = ScaleBounds(min_replicas=1, max_replicas=8)
# 1,000 prompts left at 500 tokens each, one replica does 1,000 tokens/s: 500 replica-seconds of work.
VIEW = PoolView(now=100.0, target=1, ready=1, idle=0, idle_for_s=0.0, queued_prompts=900, inflight_prompts=100,
                units_left=40, tokens_per_prompt=500.0, tokens_per_s_per_replica=1000.0)


def policy(**cfg) -> Autoscaler:
    return Autoscaler(AutoscaleConfig(**cfg))


def test_the_backlog_in_replica_seconds_over_the_per_replica_budget_sets_the_target():
    decision = policy(backlog_s_per_replica=100).decide(VIEW, BOUNDS)
    assert decision.target == 5 and "500 replica-seconds" in decision.reason
    assert policy(backlog_s_per_replica=600).decide(VIEW, BOUNDS) is None  # one replica is enough


def test_the_target_stays_within_max_and_within_the_units_left():
    assert policy(backlog_s_per_replica=10).decide(VIEW, BOUNDS).target == 8  # 50 wanted, max 8
    few_units = replace(VIEW, units_left=3)
    assert policy(backlog_s_per_replica=10).decide(few_units, BOUNDS).target == 3  # a replica needs a unit


def test_nothing_measured_yet_keeps_the_target():
    assert policy(backlog_s_per_replica=1).decide(replace(VIEW, tokens_per_prompt=None), BOUNDS) is None
    assert policy(backlog_s_per_replica=1).decide(replace(VIEW, tokens_per_s_per_replica=None), BOUNDS) is None


def test_a_deadline_asks_for_enough_replicas_to_finish_in_time():
    with_deadline = replace(VIEW, time_left_s=120.0)  # 500 replica-seconds in 120 s: 5 replicas
    decision = policy(backlog_s_per_replica=10_000).decide(with_deadline, BOUNDS)
    assert decision.target == 5 and decision.reason.startswith("finish_by")
    assert policy().decide(replace(VIEW, time_left_s=-5.0), BOUNDS).target == 8  # late: everything


def test_idle_replicas_leave_after_idle_s_when_no_prompt_waits():
    idle = replace(VIEW, target=4, ready=4, idle=3, idle_for_s=10.0, queued_prompts=0, inflight_prompts=20, units_left=1)
    assert policy(idle_s=30).decide(idle, BOUNDS) is None  # not idle long enough
    decision = policy(idle_s=5, scale_down_cooldown_s=0).decide(idle, BOUNDS)
    assert decision.target == 1 and decision.reason.startswith("idle")
    floor = ScaleBounds(min_replicas=2, max_replicas=8)
    assert policy(idle_s=5, scale_down_cooldown_s=0).decide(idle, floor).target == 2


def test_a_backlog_never_shrinks_the_pool():
    big_pool = replace(VIEW, target=6, ready=6)
    assert policy(backlog_s_per_replica=100).decide(big_pool, BOUNDS) is None


def test_cooldowns_space_out_changes_and_count_from_the_last_one():
    p = policy(backlog_s_per_replica=100, scale_up_cooldown_s=30, scale_down_cooldown_s=60, idle_s=0)
    assert p.decide(replace(VIEW, target=2), BOUNDS).target == 5
    assert p.decide(replace(VIEW, now=120.0, target=5, units_left=40, queued_prompts=2000), BOUNDS) is None  # cooling
    assert p.decide(replace(VIEW, now=131.0, target=5, queued_prompts=2000), BOUNDS).target == 8
    idle = replace(VIEW, now=150.0, target=8, ready=8, idle=8, idle_for_s=1.0, queued_prompts=0, inflight_prompts=0)
    assert p.decide(idle, BOUNDS) is None  # 19 s after the last change, scale-down cooldown 60 s
    assert p.decide(replace(idle, now=192.0), BOUNDS).target == 1


def test_a_fixed_count_overrides_the_policy_and_new_bounds_pull_the_target_in():
    fixed = ScaleBounds(min_replicas=1, max_replicas=8, fixed=3)
    assert policy().decide(VIEW, fixed).target == 3
    assert policy().decide(replace(VIEW, target=3), fixed) is None
    narrowed = ScaleBounds(min_replicas=2, max_replicas=4)
    assert policy().decide(replace(VIEW, target=6), narrowed).target == 4
    assert policy().decide(replace(VIEW, target=1), narrowed).target == 2


def test_drain_order_takes_unplaced_then_starting_then_the_least_busy_ready_replica():
    def rep(name, placed=True, ready=True, inflight=0, created=0.0, draining=None):
        r = Replica(name, None, created_at=created, placed_at=0.0 if placed else None, ready_at=1.0 if ready else None,
                    draining=draining)
        r.inflight = {i: 0.0 for i in range(inflight)}
        return r

    busy, light, new_light = rep("busy", inflight=2), rep("light", inflight=1), rep("new", inflight=1, created=5.0)
    starting, pending = rep("starting", ready=False), rep("pending", placed=False, ready=False)
    gone = rep("gone", draining="scale-down")
    order = [r.name for r in drain_order([busy, light, new_light, starting, pending, gone])]
    assert order == ["pending", "starting", "new", "light", "busy"]
