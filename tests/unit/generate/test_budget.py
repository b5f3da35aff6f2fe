"""budget.max_usd: dispatch while spend + in flight + next unit fits; refuse for good after the first no."""

from __future__ import annotations

import pytest

from potstill.pipelines.generate.budget import BudgetGuard, UnitCostEstimate
from potstill.schemas import GenerationConfig


def _cfg(**over) -> GenerationConfig:
    data = {"prompts": {"arithmetic": {}}, "sampling": {"n": 4, "max_tokens": 100},
            "teacher": {"engine": "openai", "model": "m", "api": {
                "base_url": "http://h/v1", "price": {"input_usd_per_million": 1e6, "output_usd_per_million": 1e6}}}}
    data.update(over)
    return GenerationConfig.model_validate(data)


def test_the_guard_admits_units_while_the_projection_fits_and_a_stop_is_final():
    guard = BudgetGuard(max_usd=10.0, spent_before=2.0)
    assert guard.allows(spent=3.0, inflight_usd=2.0, next_usd=3.0)  # 2 + 3 + 2 + 3 = 10 fits
    assert not guard.allows(spent=3.0, inflight_usd=2.0, next_usd=3.5) and not guard.stopped
    assert guard.allows(spent=4.0, inflight_usd=0.0, next_usd=3.5)  # the units in flight cost less than feared
    assert not guard.allows(spent=5.0, inflight_usd=0.0, next_usd=3.5)
    guard.stop()
    assert guard.stopped and "budget.max_usd ($10.0000) reached" in guard.reason
    assert "$2.0000 by earlier invocations" in guard.reason and "larger budget.max_usd to resume" in guard.reason
    assert not guard.allows(spent=0.0, inflight_usd=0.0, next_usd=0.0)  # stays stopped
    assert BudgetGuard(None).allows(1e9, 1e9, 1e9)


def test_before_any_result_a_unit_costs_its_prompt_characters_and_n_samples_of_max_tokens():
    estimate = UnitCostEstimate(_cfg())
    # 2 prompts, 400 characters ~ 100 prompt tokens read once (n in one request), 2 x 4 x 100 completion tokens.
    assert estimate.usd(2, 400) == pytest.approx(100 + 800)
    no_n = UnitCostEstimate(_cfg(teacher={"engine": "openai", "model": "m", "api": {
        "base_url": "http://h/v1", "supports_n": False, "price": {"input_usd_per_million": 1e6}}}))
    assert no_n.usd(2, 400) == pytest.approx(400)  # the prompt is read once per sample
    resampling = UnitCostEstimate(_cfg(verify={"accept_per_prompt": 8, "max_samples_per_prompt": 16}))
    assert resampling.usd(1, 0) == pytest.approx(8 * 100)


def test_once_results_arrive_the_measured_cost_per_prompt_is_used():
    estimate = UnitCostEstimate(_cfg())
    estimate.update(prompts=50, usd=5.0)
    assert estimate.usd(25, 10_000) == pytest.approx(2.5)


def test_a_self_hosted_teacher_has_no_prior_so_the_first_units_go():
    cfg = GenerationConfig.model_validate({"prompts": {"arithmetic": {}}, "replicas": {"price": {"usd_per_gpu_hour": 2}}})
    assert UnitCostEstimate(cfg).usd(100, 10_000) == 0.0
