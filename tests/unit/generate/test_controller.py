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


def run(tmp_path, fault=None, prompt_s: float = 0.01, **replicas) -> tuple[dict, SimulatedPool, GenerationConfig]:
    cfg = config(str(tmp_path / "out"), **replicas)
    pool = SimulatedPool(cfg, cfg.output.uri, script=correct_sum, fault=fault, prompt_s=prompt_s)
    summary = GenerationController(cfg, cfg.output.uri).run(pool)
    return summary, pool, cfg


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


def test_a_clean_run_commits_every_shard_and_asks_each_prompt_once(tmp_path):
    summary, pool, cfg = run(tmp_path, min_replicas=2, max_replicas=2)
    assert summary["shards"] == SHARDS and summary["totals"]["verified"] == COUNT * N
    assert summary["engine_requests"] == COUNT  # one request of n samples per prompt
    assert summary["replicas_replaced"] == 0 and pool.created == 2
    assert_exactly_once(cfg)


def test_a_dead_replica_is_replaced_and_its_units_requeued(tmp_path):
    def fault(event: CallEvent):
        return "replica_dies" if event.replica == 1 and event.method == "process" and event.unit.index == 2 else None

    summary, pool, cfg = run(tmp_path, fault)
    assert summary["replaced_for"] == {"actor_died": 1}
    assert pool.created == 2
    assert_exactly_once(cfg)


def test_a_broken_engine_is_replaced(tmp_path):
    def fault(event: CallEvent):
        return "engine_fails" if event.replica == 1 and event.method == "process" and event.unit.index == 3 else None

    summary, _, cfg = run(tmp_path, fault)
    assert summary["replaced_for"] == {"engine_failure": 1}
    assert summary["failed_prompts"] == 0
    assert_exactly_once(cfg)


def test_a_hung_unit_marks_its_replica_hung_after_the_deadline(tmp_path):
    def fault(event: CallEvent):
        return "hangs" if event.replica == 1 and event.method == "process" and event.unit.index == 1 else None

    summary, pool, cfg = run(tmp_path, fault)
    assert summary["replaced_for"] == {"hung": 1}
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
    assert summary["units_split"] >= 1
    assert_exactly_once(cfg, failed=1)


def test_a_unit_whose_task_raises_is_blamed_split_and_given_up_alone(tmp_path):
    bad = question(12)  # in shard 2

    def fault(event: CallEvent):
        hit = event.unit is not None and any(m.content == bad for p in event.unit.prompts for m in p.messages)
        return "unit_error" if hit else None

    summary, _, cfg = run(tmp_path, fault)
    assert summary["replicas_replaced"] == 0  # a task error is the unit's, not the replica's
    assert summary["failed_prompts"] == 1
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
    assert summary["shards_skipped"] == done
    assert summary["engine_requests"] == COUNT - done * PER_SHARD  # committed shards are never asked again
    assert_exactly_once(cfg)


def test_backlog_with_every_replica_full_scales_up_to_max_replicas(tmp_path):
    # Units of 5 s: the controller sees every replica full for a whole poll interval while prompts wait.
    summary, pool, cfg = run(tmp_path, prompt_s=1.0, min_replicas=1, max_replicas=3)
    assert pool.created == 3
    assert_exactly_once(cfg)


def test_a_first_replica_that_never_starts_fails_the_run_at_the_start_deadline(tmp_path):
    def fault(event: CallEvent):
        return "hangs" if event.method == "start" else None

    with pytest.raises(RuntimeError, match=r"did not start within 120 s \(replicas.start_timeout_s\)"):
        run(tmp_path, fault)


def _prompt_ids(cfg: GenerationConfig) -> list[str]:
    return [pid for c in read_commits(Storage(cfg.output.uri)).values() for pid in c.prompt_ids]


def _text(cfg: GenerationConfig, prompt_id: str) -> str:
    from potstill.pipelines.ingest.prompts import IngestReport, iter_prompts

    for record in iter_prompts(cfg.prompts, cfg.output.storage, IngestReport()):
        if record.prompt_id == prompt_id:
            return record.messages[-1].content
    raise KeyError(prompt_id)
