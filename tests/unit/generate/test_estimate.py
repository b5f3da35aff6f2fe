"""The dry run's scaling: a measured sample to the whole run, bounded by throughput or by the API's budgets."""

from __future__ import annotations

import pytest

from potstill.pipelines.generate.estimate import SampleMeasure, estimate_run
from potstill.schemas import GenerationConfig


def _api_cfg(**api) -> GenerationConfig:
    return GenerationConfig.model_validate({
        "prompts": {"arithmetic": {}}, "sampling": {"n": 4, "max_tokens": 200},
        "teacher": {"engine": "openai", "model": "m", "api": {
            "base_url": "http://h/v1", "price": {"input_usd_per_million": 1.0, "output_usd_per_million": 10.0}, **api}},
        "budget": {"max_usd": 1.0}})


SAMPLE = SampleMeasure(prompts=10, samples=40, accepted=36, prompt_tokens=200, completion_tokens=4000, requests=10,
                       generation_s=20.0, start_s=5.0, request_latency_s=4.0, usd=0.04)


def test_tokens_and_dollars_scale_with_the_prompts():
    e = estimate_run(_api_cfg(), run_id="r", prompts=1000, shards=4, invalid=2, duplicates=1, sample=SAMPLE)
    assert e.output_tokens == 400_000 and e.prompt_tokens == 20_000
    assert e.usd == pytest.approx(20_000 / 1e6 + 400_000 * 10 / 1e6)
    assert e.usd_per_accepted_trace == pytest.approx(e.usd / 3600)
    assert e.samples_per_prompt == 4 and e.accepted_per_prompt == pytest.approx(3.6)
    assert e.fits_budget is False and e.sample_usd == 0.04


def test_an_api_run_takes_as_long_as_its_tightest_budget():
    e = estimate_run(_api_cfg(requests_per_minute=60, max_concurrency=64), run_id="r", prompts=1000, shards=4,
                     invalid=0, duplicates=0, sample=SAMPLE)
    assert e.limited_by == "requests_per_minute" and e.hours == pytest.approx(1000 / 60 / 60)
    e = estimate_run(_api_cfg(max_concurrency=2), run_id="r", prompts=1000, shards=4, invalid=0, duplicates=0,
                     sample=SAMPLE)
    assert e.limited_by == "max_concurrency" and e.hours == pytest.approx(1000 * 4.0 / 2 / 3600)
    e = estimate_run(_api_cfg(supports_n=False, tokens_per_minute=42_000), run_id="r", prompts=1000, shards=4,
                     invalid=0, duplicates=0, sample=SAMPLE)
    assert e.limited_by == "tokens_per_minute" and e.hours == pytest.approx(420_000 / 42_000 / 60)


def test_a_self_hosted_run_uses_the_measured_throughput_replicas_and_engine_start():
    cfg = GenerationConfig.model_validate({"prompts": {"arithmetic": {}}, "sampling": {"n": 4},
                                           "replicas": {"min_replicas": 1, "max_replicas": 2, "cpus_per_replica": 1,
                                                        "price": {"usd_per_gpu_hour": 3.0}}})
    e = estimate_run(cfg, run_id="r", prompts=1000, shards=4, invalid=0, duplicates=0, sample=SAMPLE, gpus_per_replica=1)
    assert e.tokens_per_s_per_replica == pytest.approx(200)
    hours = (5.0 + 400_000 / (200 * 2)) / 3600
    assert e.hours == pytest.approx(hours) and e.usd == pytest.approx(3.0 * hours * 2)


def test_a_given_length_needs_no_teacher():
    e = estimate_run(_api_cfg(), run_id="r", prompts=100, shards=1, invalid=0, duplicates=0, sample=None,
                     output_tokens=150, prompt_chars=4000)
    assert e.output_tokens == 100 * 4 * 150 and e.prompt_tokens == 1000 and e.sampled_prompts == 0
    assert any("150 completion tokens per sample (given)" in n for n in e.notes)
