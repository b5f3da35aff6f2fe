"""The dry run's arithmetic (pure): a measured sample (or a given length) scaled to the whole run.

    estimate = estimate_run(cfg, prompts=5000, shards=20, sample=SampleMeasure(...), gpus_per_replica=1)

Tokens scale with the prompt count: per-prompt means of the sample (prompt
tokens processed, completion tokens, samples drawn with rejection sampling's
re-asks) times the prompts. Time: a self-hosted teacher's throughput on the
sample (one replica, the sample's prompts all in flight at once, which is a
smaller batch than a real run keeps, so it errs long) over the planned
replicas, plus an engine start per replica; an API teacher's time is the
longest of what its budgets allow (requests per minute, tokens per minute)
and what its concurrency allows at the sample's request latency. Dollars: API
tokens at their prices; replica time at the replica price.
"""

from __future__ import annotations

from dataclasses import dataclass

from potstill.pipelines.generate.cost import Prices
from potstill.schemas.generation import GenerationConfig
from potstill.schemas.report import DryRunEstimate


@dataclass
class SampleMeasure:
    """What the teacher did on the sample of prompts."""

    prompts: int
    samples: int
    accepted: int
    prompt_tokens: int  # processed (billed) over all requests
    completion_tokens: int
    requests: int  # engine requests (one per prompt and rejection-sampling round)
    generation_s: float  # wall seconds the sample took once the engine was up
    start_s: float  # engine start
    request_latency_s: float = 0.0  # mean seconds of one engine request
    usd: float = 0.0  # what the sample cost (API tokens)


def samples_per_prompt_assumed(cfg: GenerationConfig) -> float:
    """Samples per prompt without a measurement: `n`, or with rejection sampling its first round (a lower bound)."""
    v = cfg.verify
    return float(min(v.max_samples_per_prompt, max(cfg.sampling.n, v.accept_per_prompt)) if v.accept_per_prompt
                 else cfg.sampling.n)


def estimate_run(cfg: GenerationConfig, *, run_id: str, prompts: int, shards: int, invalid: int, duplicates: int,
                 sample: SampleMeasure | None, output_tokens: int | None = None, prompt_chars: int = 0,
                 gpus_per_replica: float = 0.0, shards_committed: int = 0, spent_before: float = 0.0) -> DryRunEstimate:
    """The whole run's estimate from `sample` or, without one, from `output_tokens` per sample."""
    prices, api, notes = Prices.of(cfg), cfg.teacher.api, []
    replicas = cfg.replicas.max_replicas
    if sample is not None and sample.prompts:
        per_prompt_samples = sample.samples / sample.prompts
        completion = sample.completion_tokens / sample.prompts * prompts
        prompt_tokens = sample.prompt_tokens / sample.prompts * prompts
        requests = sample.requests / sample.prompts * prompts
        accepted_per_prompt: float | None = sample.accepted / sample.prompts
        latency_s: float | None = sample.request_latency_s
    else:
        per_prompt_samples = samples_per_prompt_assumed(cfg)
        completion = float(output_tokens or cfg.sampling.max_tokens) * per_prompt_samples * prompts
        prompt_tokens = prompt_chars / 4.0 * (per_prompt_samples if api and not api.supports_n else 1.0)
        requests = float(prompts)
        accepted_per_prompt, latency_s = None, None
        notes.append(f"{output_tokens or cfg.sampling.max_tokens} completion tokens per sample "
                     f"({'given' if output_tokens else 'sampling.max_tokens, an upper bound'}); "
                     f"{per_prompt_samples:g} samples per prompt; prompt tokens ~ characters / 4")
        if cfg.verify.accept_per_prompt:
            notes.append("rejection sampling re-asks are not counted without a sample (--sample N measures them)")
    if api is not None and not api.supports_n:
        requests *= cfg.sampling.n
    hours, tps, limited_by = None, None, None
    if api is None:
        if sample is not None and sample.generation_s > 0:
            tps = sample.completion_tokens / sample.generation_s
            hours = (sample.start_s + completion / (tps * replicas)) / 3600.0
            limited_by = "throughput measured on the sample (one replica)"
            notes.append(f"{sample.prompts} sampled prompts ran at once on one replica: a fuller batch runs faster")
    else:
        bounds = {}
        if api.requests_per_minute:
            bounds["requests_per_minute"] = requests / api.requests_per_minute / 60.0
        if api.tokens_per_minute:
            bounds["tokens_per_minute"] = (prompt_tokens + completion) / api.tokens_per_minute / 60.0
        if latency_s:
            bounds["max_concurrency"] = requests * latency_s / api.max_concurrency / 3600.0
        if bounds:
            limited_by = max(bounds, key=bounds.get)
            hours = bounds[limited_by]
            tps = completion / (hours * 3600.0) / replicas if hours > 0 else None
    usd = prices.tokens_usd(prompt_tokens, completion)
    hourly = prices.hourly_usd(gpus_per_replica, cfg.replicas.cpus_per_replica)
    if hourly:
        if hours is None:
            notes.append("replica time is not estimated without a sample: the replica price is left out")
        else:
            usd += hourly * hours * replicas
    accepted = accepted_per_prompt * prompts if accepted_per_prompt is not None else None
    budget = cfg.budget.max_usd
    return DryRunEstimate(
        run_id=run_id, prompts=prompts, invalid_rows=invalid, duplicates=duplicates, shards=shards,
        shards_committed=shards_committed, sampled_prompts=sample.prompts if sample else 0,
        samples_per_prompt=per_prompt_samples, accepted_per_prompt=accepted_per_prompt,
        prompt_tokens=round(prompt_tokens), output_tokens=round(completion), replicas=replicas,
        gpus_per_replica=gpus_per_replica, tokens_per_s_per_replica=tps, hours=hours, usd=usd,
        usd_per_accepted_trace=usd / accepted if accepted else None, limited_by=limited_by, budget_usd=budget,
        fits_budget=(spent_before + usd <= budget) if budget is not None else None,
        sample_usd=sample.usd if sample else 0.0, notes=notes)
