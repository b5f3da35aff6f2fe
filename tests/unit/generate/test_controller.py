"""The generation controller's real logic on a simulated replica pool: no Ray, no vLLM, no real time.

Every run writes and commits real shards to a local folder; each test checks
the output against a clean run: every planned (prompt, sample) exactly once,
and the engine asked about each prompt exactly as often as the scenario says.
"""

from __future__ import annotations

import re

import pytest

from potstill.pipelines.arithmetic.problems import fresh_problems
from potstill.pipelines.generate.controller import GenerationController
from potstill.pipelines.generate.simulated_pool import CallEvent, SimulatedPool
from potstill.pipelines.output.commit import read_commits, read_manifest
from potstill.pipelines.output.storage import Storage
from potstill.schemas.generation import GenerationConfig
from potstill.schemas.results import GenerationStatus, GenerationSummary

COUNT, PER_SHARD, N, SEED = 40, 5, 2, 99
SHARDS = COUNT // PER_SHARD
QUESTION = re.compile(r"What is (\d+) \+ (\d+)\?")


def config(out: str, **replicas) -> GenerationConfig:
    return GenerationConfig.model_validate({
        "run_id": "sim",
        "prompts": {"arithmetic": {"count": COUNT, "digits": 2, "seed": SEED}},
        "teacher": {"model": "scripted-teacher", "revision": "test"},
        "replicas": {"unit_timeout_s": 60, "start_timeout_s": 120, "max_attempts": 2, **replicas},
        "sampling": {"n": N},
        "verify": {"method": "exact"},
        "output": {"uri": out, "prompts_per_shard": PER_SHARD},
    })


def correct_sum(prompt: str, k: int) -> str:
    a, b = map(int, QUESTION.search(prompt).groups())
    return f"<think>{a}+{b}</think>{a + b}"


def question(i: int) -> str:
    return fresh_problems(COUNT, 2, SEED)[i][0]


def setup(tmp_path, fault=None, prompt_s: float = 0.01, nodes=None, speed=None, **replicas):
    cfg = config(str(tmp_path / "out"), **replicas)
    pool = SimulatedPool(cfg, cfg.output.uri, script=correct_sum, fault=fault, prompt_s=prompt_s, nodes=nodes,
                         speed=speed)
    return GenerationController(cfg, cfg.output.uri), pool, cfg


def run(tmp_path, fault=None, prompt_s: float = 0.01, **replicas) -> tuple[GenerationSummary, SimulatedPool, GenerationConfig]:
    controller, pool, cfg = setup(tmp_path, fault, prompt_s, **replicas)
    return controller.run(pool), pool, cfg


def rows_of(cfg: GenerationConfig) -> list[tuple[str, int]]:
    """(prompt_id, sample_index) of every committed row, read through the manifest."""
    import pyarrow.parquet as pq

    manifest = read_manifest(cfg.output.uri)
    keys = []
    for shard in manifest.shards:
        table = pq.read_table(f"{cfg.output.uri}/{shard.data_path}", columns=["prompt_id", "sample_index"])
        keys += list(zip(table.column("prompt_id").to_pylist(), table.column("sample_index").to_pylist()))
    return keys


def assert_exactly_once(cfg: GenerationConfig, failed: int = 0) -> None:
    keys = rows_of(cfg)
    assert len(keys) == len(set(keys)), "a row was committed twice"
    assert len(keys) == (COUNT - failed) * N, f"expected {(COUNT - failed) * N} rows, found {len(keys)}"
    assert len(read_commits(Storage(cfg.output.uri))) == SHARDS


def units_by_replica(log: list[CallEvent]) -> dict[int, int]:
    out: dict[int, int] = {}
    for event in log:
        if event.method in ("process", "generate"):
            out[event.replica] = out.get(event.replica, 0) + 1
    return out


def recording(log: list[CallEvent], fault=None):
    def record(event: CallEvent):
        log.append(event)
        return fault(event) if fault else None
    return record


# -- supervision ----------------------------------------------------------------------------------------

def test_a_clean_run_commits_every_shard_and_asks_each_prompt_once(tmp_path):
    summary, pool, cfg = run(tmp_path, min_replicas=2, max_replicas=2)
    assert summary.shards == SHARDS and summary.totals.verified == COUNT * N
    assert summary.engine_requests == COUNT  # one request of n samples per prompt
    assert summary.replicas_replaced == 0 and pool.created == 2
    assert summary.peak_replicas == 2 and summary.replica_history[-1].ready == 0
    manifest = read_manifest(cfg.output.uri)
    assert [s.ready for s in manifest.scaling[0].samples].count(2) >= 1  # the pool over time is in the manifest
    assert_exactly_once(cfg)


def test_a_dead_replica_is_replaced_and_its_units_requeued(tmp_path):
    def fault(event: CallEvent):
        return "replica_dies" if event.replica == 1 and event.method == "process" and event.unit.index == 2 else None

    summary, pool, cfg = run(tmp_path, fault)
    assert summary.replaced_for == {"actor_died": 1}
    assert pool.created == 2
    assert_exactly_once(cfg)


def test_a_broken_engine_is_replaced(tmp_path):
    def fault(event: CallEvent):
        return "engine_fails" if event.replica == 1 and event.method == "process" and event.unit.index == 3 else None

    summary, _, cfg = run(tmp_path, fault)
    assert summary.replaced_for == {"engine_failure": 1}
    assert summary.failed_prompts == 0
    assert_exactly_once(cfg)


def test_a_hung_unit_marks_its_replica_hung_after_the_deadline(tmp_path):
    def fault(event: CallEvent):
        return "hangs" if event.replica == 1 and event.method == "process" and event.unit.index == 1 else None

    summary, pool, cfg = run(tmp_path, fault)
    assert summary.replaced_for == {"hung": 1}
    assert "replica-1" in pool.killed
    assert pool.now() >= 60  # noticed only once replicas.unit_timeout_s had passed (virtual time)
    assert_exactly_once(cfg)


def test_a_poison_prompt_is_isolated_by_bisection_and_recorded_as_failed(tmp_path):
    poison = question(7)  # in shard 1

    def fault(event: CallEvent):
        hit = event.unit is not None and any(m.content == poison for p in event.unit.prompts for m in p.messages)
        return "engine_fails" if hit else None

    summary, _, cfg = run(tmp_path, fault)
    manifest = read_manifest(cfg.output.uri)
    assert [f.prompt_id for f in manifest.failed] == [p for p in _prompt_ids(cfg) if _text(cfg, p) == poison]
    assert manifest.failed[0].attempts == 2
    assert summary.units_split >= 1
    assert_exactly_once(cfg, failed=1)


def test_a_unit_whose_task_raises_is_blamed_split_and_given_up_alone(tmp_path):
    bad = question(12)  # in shard 2

    def fault(event: CallEvent):
        hit = event.unit is not None and any(m.content == bad for p in event.unit.prompts for m in p.messages)
        return "unit_error" if hit else None

    summary, _, cfg = run(tmp_path, fault)
    assert summary.replicas_replaced == 0  # a task error is the unit's, not the replica's
    assert summary.failed_prompts == 1
    assert_exactly_once(cfg, failed=1)


def test_a_rerun_resumes_from_the_committed_shards(tmp_path):
    def fault(event: CallEvent):  # every replica after the first fails to start: the run stops part-way
        if event.replica == 1 and event.method == "process" and event.unit.index >= 3:
            return "replica_dies"
        return "engine_fails" if event.replica > 1 and event.method == "start" else None

    with pytest.raises(RuntimeError, match="replicas in a row failed to start"):
        run(tmp_path, fault)
    done = len(read_commits(Storage(str(tmp_path / "out"))))
    assert 0 < done < SHARDS
    summary, _, cfg = run(tmp_path)
    assert summary.shards_skipped == done
    assert summary.engine_requests == COUNT - done * PER_SHARD  # committed shards are never asked again
    assert_exactly_once(cfg)


# -- the pool: placement, start deadlines, start failures ------------------------------------------------

def test_units_are_never_queued_on_a_replica_whose_engine_is_still_starting(tmp_path):
    log: list[CallEvent] = []
    # Replica 2 takes 100 s to start (replica 1: 5 s); a unit takes 5 s.
    controller, pool, cfg = setup(tmp_path, recording(log), prompt_s=1.0, speed=lambda i: 1.0 if i == 1 else 0.05,
                                  min_replicas=2, max_replicas=2)
    summary = controller.run(pool)
    ready_2 = next(e.time for e in log if e.replica == 2 and e.method == "start") + 100
    early = [e.unit.index for e in log if e.replica == 2 and e.method == "process" and e.time < ready_2]
    assert early == [], f"units {early} were queued on replica 2 before its engine started at t={ready_2:g}"
    assert units_by_replica(log)[1] >= SHARDS - 1  # replica 1 worked meanwhile
    assert summary.engine_requests == COUNT
    assert_exactly_once(cfg)


def test_a_replica_that_cannot_be_placed_stops_the_run_at_the_start_deadline_naming_what_it_waits_for(tmp_path):
    controller, pool, _ = setup(tmp_path, nodes={"node-a": 0})  # a node without room for a replica
    with pytest.raises(RuntimeError, match=r"could not be placed within 120 s \(replicas.start_timeout_s\): it waits "
                                           r"for 1 replica slot: 1 node\(s\), 0 with a free slot"):
        controller.run(pool)
    assert 120 <= pool.now() < 130


def test_a_first_replica_whose_engine_never_starts_fails_the_run_at_the_start_deadline(tmp_path):
    def fault(event: CallEvent):
        return "hangs" if event.method == "start" else None

    with pytest.raises(RuntimeError, match=r"did not start within 120 s \(replicas.start_timeout_s\)"):
        run(tmp_path, fault)


def test_start_failures_on_a_bad_node_pause_new_starts_but_never_stop_a_healthy_run(tmp_path):
    log: list[CallEvent] = []

    def fault(event: CallEvent):
        return "engine_fails" if event.method == "start" and event.node == "bad" else None

    controller, pool, cfg = setup(tmp_path, recording(log, fault), prompt_s=2.0, nodes={"good": 1, "bad": 1},
                                  min_replicas=2, max_replicas=2, start_backoff_s=30)
    summary = controller.run(pool)
    starts_on_bad = [e.time for e in log if e.method == "start" and e.node == "bad"]
    assert len(starts_on_bad) >= 3  # today: the run stopped at the 2nd (max_attempts) failure in a row
    assert set(summary.replaced_for) == {"start_failed"} and summary.replaced_for["start_failed"] >= 3
    assert starts_on_bad[2] - starts_on_bad[1] >= 30  # after max_attempts failures in a row, a pause
    assert summary.engine_requests == COUNT
    assert_exactly_once(cfg)


def test_a_killed_replica_frees_its_slot_and_the_replacement_is_placed_at_once(tmp_path):
    def fault(event: CallEvent):
        return "replica_dies" if event.replica == 1 and event.method == "process" and event.unit.index == 1 else None

    log: list[CallEvent] = []
    controller, pool, cfg = setup(tmp_path, recording(log, fault), nodes={"only": 1})
    summary = controller.run(pool)
    assert summary.replaced_for == {"actor_died": 1}
    died = next(e.time for e in log if e.replica == 1 and e.method == "process" and e.unit.index == 1)
    assert next(e.time for e in log if e.replica == 2 and e.method == "start") - died < 2
    assert_exactly_once(cfg)


# -- blame: what is never a prompt's fault ---------------------------------------------------------------

def test_a_lone_unit_on_a_node_that_dies_is_requeued_without_blame(tmp_path):
    controller, pool, cfg = setup(tmp_path, prompt_s=2.0, nodes={"node-a": 1, "node-b": 1}, units_in_flight=1,
                                  max_units_in_flight=1, max_attempts=1)
    pool.at(20.0, lambda: pool.remove_node(pool.node_of(controller._replicas[0])))
    summary = controller.run(pool)
    assert summary.replaced_for == {"node_lost": 1}
    assert summary.units_retried == 0 and summary.units_split == 0 and summary.units_requeued == 1
    assert summary.failed_prompts == 0
    assert_exactly_once(cfg)


def test_a_false_hung_verdict_on_a_lone_unit_requeues_it_isolated_without_blame(tmp_path):
    fired = []

    def fault(event: CallEvent):  # unit 2 stalls once (e.g. a frozen process), then runs normally
        if event.method == "process" and event.unit.index == 2 and not fired:
            fired.append(event)
            return "hangs"
        return None

    summary, _, cfg = run(tmp_path, fault, units_in_flight=1, max_units_in_flight=1, max_attempts=1)
    assert summary.replaced_for == {"hung": 1}
    assert summary.units_retried == 0 and summary.units_split == 0 and summary.failed_prompts == 0
    assert_exactly_once(cfg)


# -- scaling ---------------------------------------------------------------------------------------------

def test_scaled_1_to_2_to_1_mid_run_drains_and_no_unit_is_generated_twice(tmp_path):
    log: list[CallEvent] = []
    statuses: list[GenerationStatus] = []
    controller, pool, cfg = setup(tmp_path, recording(log), prompt_s=2.0, nodes={"node-a": 1, "node-b": 1})
    pool.at(8.0, lambda: controller.scale(replicas=2))
    pool.at(16.0, lambda: statuses.append(controller.status()))
    pool.at(22.0, lambda: controller.scale(replicas=1))
    pool.at(22.5, lambda: statuses.append(controller.status()))
    summary = controller.run(pool)
    assert summary.engine_requests == COUNT  # nothing redone: the drained replica's units committed
    assert summary.replicas_drained == 1 and summary.replicas_replaced == 0
    assert set(units_by_replica(log)) == {1, 2}
    two, draining = statuses
    assert sorted((r.state, r.node_id) for r in two.replicas) == [("ready", "node-a"), ("ready", "node-b")]
    assert two.bounds.fixed == 2 and two.target_replicas == 2
    assert [r.state for r in draining.replicas].count("draining") == 1
    assert any(r.units_in_flight for r in draining.replicas if r.state == "draining")  # it drains, not dies
    assert max(s.ready for s in summary.replica_history) == 2 and summary.peak_replicas == 2
    assert_exactly_once(cfg)


def test_more_replicas_than_the_cluster_holds_are_pending_requested_and_the_run_finishes(tmp_path):
    statuses: list[GenerationStatus] = []
    controller, pool, cfg = setup(tmp_path, prompt_s=1.0, nodes={"node-a": 1, "node-b": 1}, max_replicas=4)
    pool.at(1.0, lambda: controller.scale(replicas=4))
    pool.at(12.0, lambda: statuses.append(controller.status()))
    summary = controller.run(pool)
    (mid,) = statuses
    assert sorted(r.state for r in mid.replicas) == ["pending", "pending", "ready", "ready"]
    assert all("replica slot" in r.waiting_for and r.node_id is None for r in mid.pending)
    assert pool.capacity_requests[0] == 4 and pool.capacity_requests[-1] == 0  # asked while pending, withdrawn after
    assert summary.replicas_replaced == 0 and summary.engine_requests == COUNT
    assert_exactly_once(cfg)


def test_a_node_added_mid_run_is_used_after_a_scale_up(tmp_path):
    log: list[CallEvent] = []
    controller, pool, cfg = setup(tmp_path, recording(log), prompt_s=1.0, nodes={"node-a": 1})
    pool.at(6.0, lambda: controller.scale(replicas=2))  # pending: node-a is full
    pool.at(10.0, lambda: pool.add_node("node-b"))
    controller.run(pool)
    on_b = [e for e in log if e.node == "node-b" and e.method == "process"]
    assert on_b and min(e.time for e in on_b) >= 10
    assert_exactly_once(cfg)


def test_a_draining_node_gets_no_new_units_and_what_runs_past_its_deadline_moves_unblamed(tmp_path):
    log: list[CallEvent] = []
    controller, pool, cfg = setup(tmp_path, recording(log), prompt_s=4.0, nodes={"node-a": 1, "node-b": 1},
                                  min_replicas=2, max_replicas=2, max_attempts=1, drain_margin_s=5)
    drained_at = 12.0
    pool.at(drained_at, lambda: pool.drain_node("node-a", deadline_s=15))  # preempted at t=27, units move at t=22
    pool.at(30.0, lambda: pool.add_node("node-c"))
    summary = controller.run(pool)
    late = [e for e in log if e.node == "node-a" and e.method == "process" and e.time > drained_at + 2]
    assert late == []  # noticed within replicas.node_poll_s
    assert summary.replicas_preempted == 1 and summary.replicas_replaced == 0
    assert summary.units_requeued >= 1 and summary.units_retried == 0 and summary.failed_prompts == 0
    assert any(e.node == "node-c" and e.method == "process" for e in log)  # the replacement started elsewhere
    assert_exactly_once(cfg)


def test_backlog_autoscaling_scales_up_after_measuring_and_drains_idle_replicas(tmp_path):
    summary, pool, cfg = run(tmp_path, prompt_s=1.0, min_replicas=1, max_replicas=3,
                             autoscale={"backlog_s_per_replica": 5, "scale_up_cooldown_s": 0, "idle_s": 0,
                                        "scale_down_cooldown_s": 0})
    assert pool.created == 3
    assert summary.replicas_drained >= 1  # idle ones left once the queue was empty
    assert any("backlog" in s.reason for s in summary.replica_history)
    assert_exactly_once(cfg)


def test_scale_rejects_impossible_bounds_and_fixed_counts_override_autoscaling(tmp_path):
    controller, _, _ = setup(tmp_path)
    with pytest.raises(ValueError, match="need 1 <= min <= max"):
        controller.scale(min_replicas=3, max_replicas=2)
    with pytest.raises(ValueError, match="not both"):
        controller.scale(replicas=2, max_replicas=4)
    result = controller.scale(replicas=5)
    assert result.target == 5 and result.bounds.fixed == 5 and result.bounds.max_replicas == 5
    result = controller.scale(min_replicas=1, max_replicas=2)
    assert result.bounds.fixed is None and result.target == 2


def _prompt_ids(cfg: GenerationConfig) -> list[str]:
    return [pid for c in read_commits(Storage(cfg.output.uri)).values() for pid in c.prompt_ids]


def _text(cfg: GenerationConfig, prompt_id: str) -> str:
    from potstill.pipelines.ingest.prompts import IngestReport, iter_prompts

    for record in iter_prompts(cfg.prompts, cfg.output.storage, IngestReport()):
        if record.prompt_id == prompt_id:
            return record.messages[-1].content
    raise KeyError(prompt_id)
