"""The openai teacher's config: what it needs, what it refuses (vLLM-only fields and vice versa), and its fingerprint."""

from __future__ import annotations

import pytest

from potstill.schemas import ConfigError, GenerationConfig, validate_config

API = {"engine": "openai", "model": "deepseek-reasoner", "api": {"base_url": "https://api.deepseek.com/v1",
                                                                 "api_key_env": "DEEPSEEK_API_KEY"}}


def _problems(data) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config({"prompts": {"arithmetic": {}}, **data}, GenerationConfig, "cfg.yaml")
    return str(info.value)


def test_the_suggested_shape_loads_and_survives_the_round_trip_to_a_replica():
    cfg = GenerationConfig.model_validate({"prompts": {"arithmetic": {}}, "teacher": {**API, "api": {
        **API["api"], "max_concurrency": 32, "requests_per_minute": 500, "tokens_per_minute": 2_000_000,
        "supports_n": False, "timeout_s": 900, "price": {"input_usd_per_million": 0.55, "output_usd_per_million": 2.19}}},
        "budget": {"max_usd": 25}})
    again = GenerationConfig.model_validate_json(cfg.model_dump_json())  # what each replica does
    assert again == cfg and again.teacher.api.requests_per_minute == 500


def test_vllm_only_fields_are_refused_for_an_api_teacher_by_name():
    text = _problems({"teacher": {**API, "dtype": "float32", "kv_cache_gib": 1, "tensor_parallel_size": 2}})
    assert "dtype, tensor_parallel_size, kv_cache_gib configure a local vLLM engine" in text
    assert "remove them (or set `engine: vllm`)" in text
    assert "gpus_per_replica" in _problems({"teacher": API, "replicas": {"gpus_per_replica": 1}})
    assert "usd_per_gpu_hour" in _problems({"teacher": API, "replicas": {"price": {"usd_per_gpu_hour": 2}}})
    assert "return_token_ids" in _problems({"teacher": API, "sampling": {"logprobs": 4}})


def test_api_settings_are_refused_for_a_vllm_teacher_and_required_for_an_api_one():
    assert "set `engine: openai` or remove `api`" in _problems({"teacher": {"api": API["api"]}})
    assert "engine openai needs `api`" in _problems({"teacher": {"engine": "openai", "model": "m"}})
    assert "not both" in _problems({"teacher": {**API, "api": {**API["api"], "api_key_file": "/k"}}})
    assert "not an http(s) URL" in _problems({"teacher": {**API, "api": {"base_url": "api.deepseek.com"}}})
    assert "without /chat/completions" in _problems({"teacher": {**API, "api": {"base_url": "http://h/v1/chat/completions"}}})


def test_a_budget_needs_a_price():
    assert "budget.max_usd (5) needs a price" in _problems({"budget": {"max_usd": 5}})
    GenerationConfig.model_validate({"prompts": {"arithmetic": {}}, "budget": {"max_usd": 5},
                                     "replicas": {"price": {"usd_per_cpu_hour": 0.1}}})


def test_prices_budgets_rate_limits_and_the_endpoint_leave_the_run_id_alone():
    base = {"prompts": {"arithmetic": {}}, "teacher": API}
    run_id = GenerationConfig.model_validate(base).resolved_run_id()
    moved = {**API, "api": {**API["api"], "base_url": "http://127.0.0.1:8000/v1", "requests_per_minute": 60,
                             "price": {"output_usd_per_million": 9}}}
    assert GenerationConfig.model_validate({**base, "teacher": moved, "budget": {"max_usd": 3}}).resolved_run_id() == run_id
    changed = {**API, "api": {**API["api"], "extra_body": {"reasoning_effort": "high"}}}
    assert GenerationConfig.model_validate({**base, "teacher": changed}).resolved_run_id() != run_id
