"""Replica deadlines: engine start is timed separately from units, and a unit's clock starts at engine start."""

from __future__ import annotations

from potstill.pipelines.replica_pool import Replica, missed_deadline
from potstill.schemas import ReplicasConfig

RCFG = ReplicasConfig(unit_timeout_s=20, start_timeout_s=300)


def test_a_slow_engine_start_is_not_a_hang_until_the_start_timeout():
    rep = Replica("replica-1", handle=None, created_at=0.0, inflight={"unit": 0.0})
    assert missed_deadline(rep, 299, RCFG) is None  # units queued during a long start are not overdue
    assert "replicas.start_timeout_s" in missed_deadline(rep, 301, RCFG)


def test_a_unit_is_overdue_unit_timeout_s_after_it_could_start():
    rep = Replica("replica-1", handle=None, created_at=0.0, ready_at=100.0, inflight={"a": 50.0, "b": 110.0})
    assert missed_deadline(rep, 119, RCFG) is None  # "a" was queued before the engine was ready: counts from 100
    reason = missed_deadline(rep, 121, RCFG)
    assert reason.startswith("hung: a unit made no progress for 21 s") and "replicas.unit_timeout_s=20" in reason
    assert missed_deadline(Replica("idle", handle=None, ready_at=0.0), 10_000, RCFG) is None
