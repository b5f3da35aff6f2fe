"""`potstill generate CONFIG --dry-run`: what a run will produce, take and cost, before it starts. Nothing is written.

    estimate = dry_run(cfg, sample_prompts=16)          # a sample of the prompts through the real teacher
    estimate = dry_run(cfg, output_tokens=800)          # or a given completion length, no teacher at all

Reads and validates every prompt (dedup included) and plans the shards as the
run would; then runs `sample_prompts` prompts, spread evenly over the run,
through the configured teacher in this process (a vLLM engine, or requests to
the API at its price) with the run's own verification and rejection sampling,
and scales what they took to the whole run (`generate.estimate`). It reads
the output root only to count committed shards and earlier spend.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from potstill.pipelines.generate.estimate import SampleMeasure, estimate_run
from potstill.pipelines.generate.plan import WorkUnit, plan_run
from potstill.pipelines.ingest.prompts import IngestReport, iter_prompts
from potstill.schemas.generation import GenerationConfig
from potstill.schemas.prompt import PromptRecord
from potstill.schemas.report import DryRunEstimate

log = logging.getLogger("potstill.dry_run")


def _counting(prompts: Iterator[PromptRecord], chars: list[int]) -> Iterator[PromptRecord]:
    for p in prompts:
        chars[0] += sum(len(m.content) for m in p.messages)
        yield p


def pick_sample(cfg: GenerationConfig, total: int, size: int) -> list[PromptRecord]:
    """`size` prompts spread evenly over the run's `total` (first, last and between), in order."""
    size = min(size, total)
    wanted = {round(i * (total - 1) / (size - 1)) for i in range(size)} if size > 1 else {0}
    return [p for i, p in enumerate(iter_prompts(cfg.prompts, cfg.output.storage, IngestReport())) if i in wanted]


class _Timed:
    """Times each engine request of the wrapped engine (mean latency for the API concurrency bound)."""

    def __init__(self, inner: Any):
        self.inner, self.model_name, self.revision = inner, inner.model_name, inner.revision
        self.batch_capacity, self.seconds, self.requests = inner.batch_capacity, 0.0, 0

    async def start(self) -> None:
        await self.inner.start()

    def encode_chats(self, conversations):
        return self.inner.encode_chats(conversations)

    async def generate(self, prompt, n, request_id, max_tokens=None):
        started = time.perf_counter()
        try:
            return await self.inner.generate(prompt, n, request_id, max_tokens)
        finally:
            self.seconds += time.perf_counter() - started
            self.requests += 1

    async def shutdown(self) -> None:
        await self.inner.shutdown()


async def measure_sample(cfg: GenerationConfig, prompts: list[PromptRecord]) -> SampleMeasure:
    """Run `prompts` through the configured teacher (verification and rejection sampling included)."""
    from potstill.pipelines.engines import build_engine
    from potstill.pipelines.generate.cost import Prices
    from potstill.pipelines.generate.unit_runner import UnitRunner
    from potstill.pipelines.verify import build_judge

    engine = _Timed(build_engine(cfg.teacher, cfg.sampling, replicas_sharing=cfg.replicas.max_replicas))
    started = time.perf_counter()
    await engine.start()
    start_s = time.perf_counter() - started
    try:
        runner = UnitRunner(engine, build_judge(cfg.verify), cfg.sampling, cfg.verify)
        began = time.perf_counter()
        result = await runner.run(WorkUnit(cfg.resolved_run_id(), "dry-run", 0, prompts))
        generation_s = time.perf_counter() - began
    finally:
        await engine.shutdown()
    s = result.stats
    if s.failed_prompts:
        log.warning("dry run: %d of %d sampled prompts failed (first: %s)", s.failed_prompts, len(prompts),
                    result.failed[0].reason)
    return SampleMeasure(prompts=len(prompts), samples=s.samples_drawn, accepted=s.accepted_samples,
                         prompt_tokens=s.prompt_tokens, completion_tokens=s.completion_tokens, requests=runner.requests,
                         generation_s=generation_s, start_s=start_s,
                         request_latency_s=engine.seconds / engine.requests if engine.requests else 0.0,
                         usd=Prices.of(cfg).tokens_usd(s.prompt_tokens, s.completion_tokens))


def _gpus_per_replica(cfg: GenerationConfig) -> float:
    """GPUs a replica would hold: configured, else the tensor-parallel size when this machine has GPUs."""
    from potstill.cluster.resources import replica_plan

    gpus = 0
    if cfg.teacher.engine == "vllm" and cfg.replicas.gpus_per_replica is None:
        try:
            import torch

            gpus = torch.cuda.device_count()
        except Exception:  # noqa: BLE001 - no torch or no CUDA: a CPU machine
            gpus = 0
    return replica_plan(cfg.teacher, cfg.replicas, gpus).gpus


def _already(cfg: GenerationConfig, out_uri: str, planned: list[str]) -> tuple[int, float]:
    """(planned shards already committed, dollars earlier invocations spent) in the output root, read-only."""
    from potstill.pipelines.generate.accounting import read_invocations
    from potstill.pipelines.output.commit import committed_shard_ids
    from potstill.pipelines.output.storage import Storage

    try:
        storage = Storage(out_uri, cfg.output.storage)
        committed = committed_shard_ids(storage)
        spent = sum(r.cost.usd_total for r in read_invocations(storage))
    except Exception as exc:  # noqa: BLE001 - an unreadable output root does not stop an estimate
        log.warning("dry run: could not read %s (%s); assuming nothing is committed", out_uri, exc)
        return 0, 0.0
    return sum(s in committed for s in planned), spent


def dry_run(cfg: GenerationConfig, out_uri: str, *, sample_prompts: int = 16, output_tokens: int | None = None,
            on_status: Callable[[str], None] | None = None) -> DryRunEstimate:
    """Validate and plan the run, measure a sample (unless `output_tokens` is given), and estimate it."""
    say = on_status or (lambda _msg: None)
    run_id = cfg.resolved_run_id()
    report, chars = IngestReport(), [0]
    say("reading and validating prompts")
    plan = plan_run(_counting(iter_prompts(cfg.prompts, cfg.output.storage, report), chars), run_id,
                    cfg.output.prompts_per_shard)
    if not plan.shard_ids:
        raise ValueError(f"prompts: no valid prompt in the source ({report.summary()})")
    counts = report.counts()
    sample = None
    if output_tokens is None and sample_prompts > 0:
        prompts = pick_sample(cfg, plan.total_prompts, sample_prompts)
        say(f"running {len(prompts)} sampled prompts through the teacher ({cfg.teacher.engine}: {cfg.teacher.model})")
        sample = asyncio.run(measure_sample(cfg, prompts))
    committed, spent = _already(cfg, out_uri, plan.shard_ids)
    return estimate_run(cfg, run_id=run_id, prompts=plan.total_prompts, shards=len(plan.shard_ids),
                        invalid=counts["invalid"], duplicates=counts["duplicates"], sample=sample,
                        output_tokens=output_tokens, prompt_chars=chars[0], gpus_per_replica=_gpus_per_replica(cfg),
                        shards_committed=committed, spent_before=spent)
