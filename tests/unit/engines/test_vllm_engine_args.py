"""How a teacher config maps onto vLLM's engine arguments and request priorities (no engine is started)."""

from __future__ import annotations

from vllm import SamplingParams

from potstill.pipelines.engines.vllm_engine import VllmEngine
from potstill.schemas.generation import GenerationConfig, SamplingConfig, TeacherConfig


def test_longest_first_is_the_default_and_starts_the_largest_budget_first():
    engine = VllmEngine(TeacherConfig(), SamplingConfig())
    assert engine.engine_args()["scheduling_policy"] == "priority"
    # vLLM starts the lowest priority value first.
    assert engine._priority(SamplingParams(max_tokens=512)) < engine._priority(SamplingParams(max_tokens=16))


def test_fcfs_keeps_vllms_arrival_order():
    engine = VllmEngine(TeacherConfig(schedule="fcfs"), SamplingConfig())
    assert engine.engine_args()["scheduling_policy"] == "fcfs"
    assert engine._priority(SamplingParams(max_tokens=512)) == engine._priority(SamplingParams(max_tokens=16)) == 0


def test_kv_cache_gib_sizes_the_cache_in_bytes_and_is_left_to_vllm_when_unset():
    assert VllmEngine(TeacherConfig(kv_cache_gib=1.5), SamplingConfig()).engine_args()["kv_cache_memory_bytes"] == 3 * 2**29
    assert "kv_cache_memory_bytes" not in VllmEngine(TeacherConfig(), SamplingConfig()).engine_args()


def test_engine_kwargs_override_what_the_config_derives():
    engine = VllmEngine(TeacherConfig(engine_kwargs={"scheduling_policy": "fcfs", "enforce_eager": True}), SamplingConfig())
    assert engine.engine_args()["scheduling_policy"] == "fcfs"
    assert engine.engine_args()["enforce_eager"] is True


def test_the_schedule_does_not_change_a_runs_fingerprint():
    # A run resumed with another schedule produces the same kind of traces, so its committed shards stay valid.
    base = {"prompts": {"arithmetic": {"count": 8}}, "output": {"uri": "/tmp/unused"}}
    longest = GenerationConfig.model_validate(base | {"teacher": {"schedule": "longest_first"}})
    fcfs = GenerationConfig.model_validate(base | {"teacher": {"schedule": "fcfs"}})
    assert longest.fingerprint() == fcfs.fingerprint()


def test_top_k_logprobs_above_vllms_default_limit_raise_the_engines_max_logprobs() -> None:
    assert "max_logprobs" not in VllmEngine(TeacherConfig(), SamplingConfig(logprobs=20)).engine_args()
    assert VllmEngine(TeacherConfig(), SamplingConfig(logprobs=64)).engine_args()["max_logprobs"] == 64
