"""Cost charged to samples: replica time by completion tokens, API tokens by their own counts, lost work as failed."""

from __future__ import annotations

import pytest

from potstill.pipelines.generate.cost import CostLedger, Prices, combine
from potstill.schemas import GenerationConfig
from potstill.schemas.manifest import ShardStats


def _stats(**kw) -> ShardStats:
    base = dict(prompts=10, traces=40, samples_drawn=40, prompt_tokens=1000, completion_tokens=4000,
                accepted_samples=30, accepted_tokens=2400, truncated_samples=4, truncated_tokens=800)
    return ShardStats(**{**base, **kw})


def test_replica_time_is_charged_for_its_whole_life_and_split_by_completion_tokens():
    ledger = CostLedger(Prices(usd_per_gpu_hour=2.0))
    ledger.replica_added("r1", gpus=4, cpus=8, now=0)
    ledger.replica_ready("r1", now=600)  # ten minutes of engine start are charged too
    ledger.credit("r1", _stats())
    ledger.engine_usage("r1", prompt_tokens=1000, completion_tokens=5000)  # 1000 tokens of a lost unit
    ledger.replica_ended("r1", now=3600)
    report = ledger.report(3600, generation_s=3000, elapsed_s=3600, prompts_done=10)
    assert report.gpu_hours == 4 and report.usd_total == pytest.approx(8.0)
    split = report.usd_by_kind
    assert split.accepted == pytest.approx(8 * 2400 / 5000)
    assert split.truncated == pytest.approx(8 * 800 / 5000)
    assert split.rejected == pytest.approx(8 * 800 / 5000)
    assert split.failed == pytest.approx(8 * 1000 / 5000)
    assert report.usd_per_accepted_trace == pytest.approx(8 / 30)
    assert report.usd_per_million_accepted_tokens == pytest.approx(8 / 2400 * 1e6)
    (replica,) = report.replicas
    assert replica.working_s == 3000 and replica.tokens_per_s == pytest.approx(4000 / 3000)
    assert report.completion_tokens == 5000 and report.tokens_per_s == pytest.approx(5000 / 3000)


def test_api_tokens_are_charged_to_the_samples_that_used_them():
    prices = Prices(input_usd_per_million=1.0, output_usd_per_million=10.0)
    ledger = CostLedger(prices)
    ledger.replica_added("r1", gpus=0, cpus=1, now=0)
    ledger.credit("r1", _stats(resampled_samples=8, resampled_accepted=2, resampled_prompt_tokens=200,
                               resampled_completion_tokens=800))
    report = ledger.report(100, generation_s=90, elapsed_s=100, prompts_done=10)
    assert report.usd_total == pytest.approx(prices.tokens_usd(1000, 4000))
    assert report.usd_by_kind.accepted == pytest.approx(prices.tokens_usd(1000 * 30 / 40, 2400))
    assert report.usd_by_kind.failed == 0
    assert report.resampling_usd == pytest.approx(prices.tokens_usd(200, 800))
    assert report.marginal_usd_per_resampled_trace == pytest.approx(prices.tokens_usd(200, 800) / 2)
    assert report.first_round_usd_per_trace == pytest.approx((report.usd_total - report.resampling_usd) / 28)
    assert ledger.spent_usd(100) == pytest.approx(report.usd_total)


def test_a_replica_that_produced_nothing_is_all_failed_and_spend_counts_lost_tokens():
    ledger = CostLedger(Prices(usd_per_cpu_hour=3.6, output_usd_per_million=1e6))
    ledger.replica_added("dead", gpus=0, cpus=1, now=0)
    ledger.engine_usage("dead", prompt_tokens=0, completion_tokens=2)  # $2 of tokens it returned before dying
    ledger.replica_ended("dead", now=10)
    report = ledger.report(20, generation_s=0, elapsed_s=20, prompts_done=0)
    assert report.usd_by_kind.failed == pytest.approx(0.01 + 2.0) and report.usd_total == pytest.approx(2.01)
    assert report.usd_per_accepted_trace is None and report.marginal_usd_per_resampled_trace is None
    assert ledger.spent_usd(20) == pytest.approx(2.01)


def test_invocations_add_up_with_their_ratios_recomputed():
    ledger = CostLedger(Prices(output_usd_per_million=1e6))
    ledger.replica_added("r", 0, 1, 0)
    ledger.credit("r", ShardStats(samples_drawn=2, completion_tokens=2, accepted_samples=1, accepted_tokens=1))
    one = ledger.report(10, generation_s=5, elapsed_s=10, prompts_done=1)
    both = combine([one, one])
    assert both.usd_total == 4 and both.accepted_traces == 2 and both.usd_per_accepted_trace == 2
    assert both.tokens_per_s == pytest.approx(4 / 10) and both.replicas == []


def test_prices_come_from_the_config():
    cfg = GenerationConfig.model_validate({
        "prompts": {"arithmetic": {}}, "teacher": {"engine": "openai", "model": "m", "api": {
            "base_url": "http://h/v1", "price": {"input_usd_per_million": 0.55, "output_usd_per_million": 2.19}}},
        "replicas": {"price": {"usd_per_cpu_hour": 0.05}}})
    assert Prices.of(cfg) == Prices(0.0, 0.05, 0.55, 2.19) and Prices.of(cfg).priced
    assert not Prices.of(GenerationConfig.model_validate({"prompts": {"arithmetic": {}}})).priced


def test_spent_so_far_kept_as_running_sums_equals_a_walk_over_every_replica():
    """`spent_usd` is read on every pass of the controller's loop: it keeps running sums; they must equal charging
    every replica's time and tokens afresh, at any moment of a run with replicas starting, working and ending."""
    import random

    rng = random.Random(3)
    prices = Prices(usd_per_gpu_hour=2.5, usd_per_cpu_hour=0.04, input_usd_per_million=0.3, output_usd_per_million=1.2)
    ledger = CostLedger(prices)

    def walked(now: float) -> float:
        total = 0.0
        for a in ledger.replicas.values():
            total += prices.hourly_usd(a.gpus, a.cpus) * a.lifetime_s(now) / 3600.0
            total += prices.tokens_usd(max(a.engine_prompt_tokens, a.credited.prompt_tokens),
                                       max(a.engine_completion_tokens, a.credited.completion_tokens))
        return total

    now, live = 1.7e9, []
    for step in range(2000):
        now += rng.uniform(0, 5)
        action = rng.random()
        if action < 0.1 or not live:
            name = f"replica-{step}"
            ledger.replica_added(name, gpus=rng.choice([0, 1, 8]), cpus=rng.choice([1, 4]), now=now)
            live.append(name)
        elif action < 0.15:
            ended = live.pop(rng.randrange(len(live)))
            ledger.replica_ended(ended, now)
        elif action < 0.55:
            ledger.credit(rng.choice(live), _stats(prompt_tokens=rng.randint(0, 900), completion_tokens=rng.randint(0, 4000)))
        else:
            name = rng.choice(live)
            a = ledger.replicas[name]
            ledger.engine_usage(name, a.engine_prompt_tokens + rng.randint(0, 2000),
                                a.engine_completion_tokens + rng.randint(-10, 9000))
        assert ledger.spent_usd(now) == pytest.approx(walked(now), rel=1e-9, abs=1e-9), step
