"""The controller's failure policy: suspects vs blame, bisection of a poison unit, bounded attempts, merged shards."""

from __future__ import annotations

import pytest

from potstill.pipelines.generate.plan import iter_units
from potstill.pipelines.generate.supervision import Entry, FailurePolicy, merge_results, split_unit
from potstill.pipelines.generate.unit_runner import UnitResult
from potstill.schemas import Message, PromptRecord, ShardStats
from potstill.schemas.generation import FaultsConfig


def _unit(n: int):
    prompts = [PromptRecord.from_messages([Message(role="user", content=f"q{i}")], source_row=i) for i in range(n)]
    return next(iter_units(prompts, "run", n))


def _rows_of(unit, samples: int = 2) -> UnitResult:
    rows = [{"prompt_id": p.prompt_id, "sample_index": k, "shard_id": unit.shard_id}
            for p in unit.prompts for k in range(samples)]
    return UnitResult(rows=rows, stats=ShardStats(prompts=len(unit.prompts), traces=len(rows)))


def test_a_suspect_reruns_alone_without_being_blamed():
    entry = Entry(_unit(4))
    verdict = FailurePolicy(3, 2).on_failure(entry, "RayActorError: died", broken=True, alone=False)
    assert [e.exclusive for e in verdict.requeue] == [True] and verdict.requeue[0].attempts == 0
    assert not verdict.blamed and verdict.gave_up is None


def test_a_unit_that_broke_its_engine_alone_is_retried_then_split():
    policy, unit = FailurePolicy(2, 2), _unit(5)
    again = policy.on_failure(Entry(unit, exclusive=True), "EngineFailure", broken=True, alone=True)
    assert not again.split and again.requeue[0].attempts == 1 and again.requeue[0].exclusive  # maybe transient
    verdict = policy.on_failure(again.requeue[0], "EngineFailure", broken=True, alone=True)
    assert verdict.split and [len(e.unit.prompts) for e in verdict.requeue] == [2, 3]
    assert all(e.exclusive and e.unit.shard_id == unit.shard_id and e.attempts == 0 for e in verdict.requeue)
    assert verdict.requeue[0].split is verdict.requeue[1].split and verdict.requeue[0].split.pending == 2
    # A part of a unit known to hold the poison is split at its first failure alone.
    deeper = policy.on_failure(verdict.requeue[1], "EngineFailure", broken=True, alone=True)
    assert deeper.split and [len(e.unit.prompts) for e in deeper.requeue] == [1, 2]
    assert verdict.requeue[0].split.pending == 3


def test_a_task_error_is_retried_then_split_then_given_up():
    policy = FailurePolicy(2, 2)
    entry = Entry(_unit(2))
    first = policy.on_failure(entry, "OSError: x", broken=False, alone=True)
    assert first.requeue[0].attempts == 1 and not first.requeue[0].exclusive and not first.split
    second = policy.on_failure(first.requeue[0], "OSError: x", broken=False, alone=True)
    assert second.split and len(second.requeue) == 2
    single = second.requeue[0]
    once = policy.on_failure(single, "OSError: x", broken=False, alone=True)
    gave_up = policy.on_failure(once.requeue[0], "OSError: x", broken=False, alone=True).gave_up
    assert [(f.prompt_id, f.attempts, f.reason) for f in gave_up.failed] == [(single.unit.prompt_ids[0], 2, "OSError: x")]
    assert gave_up.stats.prompts == 1 and gave_up.stats.failed_prompts == 1


@pytest.mark.parametrize("n, split_into, poison", [(10, 2, 7), (10, 10, 0), (7, 3, 6), (1, 2, 0)])
def test_bisection_isolates_the_poison_and_every_other_prompt_completes(n, split_into, poison):
    """Replay the controller's loop: every entry runs alone; one containing the poison kills its engine."""
    max_attempts = 2
    policy = FailurePolicy(max_attempts, split_into)
    unit = _unit(n)
    bad = unit.prompt_ids[poison]
    queue, restarts, shard = [Entry(unit, exclusive=True)], 0, None
    while queue:
        entry = queue.pop(0)
        if bad in entry.unit.prompt_ids:
            restarts += 1
            verdict = policy.on_failure(entry, "EngineFailure: engine died", broken=True, alone=True)
            queue.extend(verdict.requeue)
            outcome = verdict.gave_up
        else:
            outcome = _rows_of(entry.unit)
        if outcome is not None:
            shard = entry.split.add(outcome) if entry.split else outcome
    assert shard is not None
    assert [f.prompt_id for f in shard.failed] == [bad] and shard.failed[0].attempts == max_attempts
    assert [(r["prompt_id"], r["sample_index"]) for r in shard.rows] == \
        [(p, k) for p in unit.prompt_ids if p != bad for k in range(2)]
    assert shard.stats.prompts == n and shard.stats.traces == 2 * (n - 1)
    levels = 0
    size = n
    while size > 1:
        size = -(-size // split_into)
        levels += 1
    # Bounded: the whole unit's attempts, one failure per deeper level, then the prompt's own attempts.
    assert restarts <= max_attempts + max(levels - 1, 0) + (max_attempts if n > 1 else 0)


def test_split_unit_keeps_shard_identity_and_order():
    unit = _unit(7)
    parts = split_unit(unit, 3)
    assert [len(p.prompts) for p in parts] == [2, 2, 3]
    assert [pid for p in parts for pid in p.prompt_ids] == unit.prompt_ids
    assert {(p.shard_id, p.index, p.run_id) for p in parts} == {(unit.shard_id, unit.index, unit.run_id)}
    assert len(split_unit(_unit(2), 5)) == 2


def test_merge_orders_rows_as_the_whole_unit_would_and_checks_coverage():
    unit = _unit(4)
    a, b = split_unit(unit, 2)
    merged = merge_results(unit, [_rows_of(b), _rows_of(a)])
    assert [r["prompt_id"] for r in merged.rows] == [p for p in unit.prompt_ids for _ in range(2)]
    with pytest.raises(ValueError, match="sub-units cover 2 prompts, the unit has 4"):
        merge_results(unit, [_rows_of(a)])


def test_faults_with_times_need_a_state_dir():
    with pytest.raises(ValueError, match="faults.state_dir"):
        FaultsConfig.model_validate({"rules": [{"action": "hang", "marker": "x", "times": 1}]})
    assert FaultsConfig.model_validate({"rules": [{"action": "exit", "marker": "x"}]}).rules[0].times is None
