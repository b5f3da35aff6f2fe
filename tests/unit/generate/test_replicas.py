"""Replica deadlines: engine start is timed separately from units, and a unit's clock starts at engine start."""

from __future__ import annotations

from potstill.pipelines.generate.replicas import Replica, min_sequences_for, missed_deadline, unit_limit
from potstill.schemas import ReplicasConfig

RCFG = ReplicasConfig(unit_timeout_s=20, start_timeout_s=300)


def test_a_slow_engine_start_is_not_a_hang_until_the_start_timeout_after_placement():
    rep = Replica("replica-1", handle=None, created_at=0.0, placed_at=50.0, inflight={"unit": 50.0})
    assert missed_deadline(rep, 349, RCFG) is None  # waiting for resources did not count; a unit queued meanwhile neither
    assert "engine did not start within 300 s (replicas.start_timeout_s)" in missed_deadline(rep, 351, RCFG)


def test_a_pending_replica_is_overdue_only_when_nothing_else_works():
    rep = Replica("replica-2", handle=None, created_at=0.0, waiting_for="{'GPU': 8.0} (INFEASIBLE)")
    assert missed_deadline(rep, 10_000, RCFG) is None  # others work: pending is not a failure
    reason = missed_deadline(rep, 10_000, RCFG, stalled_since=9_600)
    assert reason.startswith("could not be placed within 300 s (replicas.start_timeout_s): it waits for {'GPU': 8.0}")
    assert missed_deadline(rep, 10_000, RCFG, stalled_since=9_800) is None  # stalled only 200 s


def test_replica_states_follow_its_lifecycle():
    rep = Replica("r", handle=None)
    assert rep.state == "pending"
    rep.placed_at = 1.0
    assert rep.state == "starting"
    rep.ready_at = 2.0
    assert rep.state == "ready" and rep.tokens_per_s(12.0) is None  # nothing finished yet
    rep.units_done, rep.completion_tokens = 1, 500
    assert rep.tokens_per_s(12.0) == 50.0
    rep.draining = "scale-down"
    assert rep.state == "draining"


def test_a_unit_is_overdue_unit_timeout_s_after_it_could_start():
    rep = Replica("replica-1", handle=None, created_at=0.0, ready_at=100.0, inflight={"a": 50.0, "b": 110.0})
    assert missed_deadline(rep, 119, RCFG) is None  # "a" was queued before the engine was ready: counts from 100
    reason = missed_deadline(rep, 121, RCFG)
    assert reason.startswith("hung: a unit made no progress for 21 s") and "replicas.unit_timeout_s=20" in reason
    assert missed_deadline(Replica("idle", handle=None, ready_at=0.0), 10_000, RCFG) is None


def test_a_replica_low_on_sequences_gets_one_more_unit_up_to_the_ceiling():
    rcfg = ReplicasConfig(units_in_flight=2, max_units_in_flight=3, min_sequences_in_flight=100)
    rep = Replica("replica-1", handle=None, inflight={"a": 0.0, "b": 0.0}, min_sequences=min_sequences_for(rcfg, 256))
    assert rep.min_sequences == 100  # an explicit threshold wins over the engine's capacity
    assert unit_limit(rep, rcfg) == 2  # no load report yet: the base
    rep.sequences_pending = 500
    assert unit_limit(rep, rcfg) == 2  # the engine is busy enough
    rep.sequences_pending = 12  # two units down to their long-tail prompts
    assert unit_limit(rep, rcfg) == 3
    rep.inflight["c"] = 0.0
    assert unit_limit(rep, rcfg) == 3  # the ceiling
    off = ReplicasConfig(units_in_flight=2, min_sequences_in_flight=None)
    assert min_sequences_for(off, 256) is None
    assert unit_limit(Replica("r", handle=None, sequences_pending=0, min_sequences=None), off) == 2


def test_auto_admission_threshold_is_the_engines_batch_capacity():
    auto = ReplicasConfig()
    assert auto.min_sequences_in_flight == "auto"
    assert min_sequences_for(auto, 1024) == 2048  # e.g. vLLM's max_num_seqs on an H100: a batch running, one queued
    assert min_sequences_for(auto, None) is None  # an engine without a fixed batch: exactly units_in_flight


def test_max_units_below_units_in_flight_is_refused_with_the_fix():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="raise max_units_in_flight"):
        ReplicasConfig(units_in_flight=4, max_units_in_flight=2)


def test_min_sequences_below_one_is_refused():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="min_sequences_in_flight"):
        ReplicasConfig(min_sequences_in_flight=0)
