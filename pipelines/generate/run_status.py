"""What the controller reports: its counters, and the live status and final summary built from them.

    status = status_of(controller)                        # GenerationStatus: potstill status RUN_ID
    summary = summary_of(controller, manifest, report)    # GenerationSummary: potstill generate --json

A read-only view over `GenerationController`'s bookkeeping (called under
its lock); the models themselves live in `schemas/results.py`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from potstill.pipelines.generate.replicas import Replica
from potstill.schemas.manifest import RunManifest, ShardStats
from potstill.schemas.results import GenerationStatus, GenerationSummary, ReplicaInfo

if TYPE_CHECKING:
    from potstill.pipelines.generate.controller import GenerationController
    from potstill.pipelines.ingest.report import IngestReport


@dataclass
class Progress:
    """The controller's counters."""

    run_id: str = ""
    phase: str = "planning"
    error: str | None = None
    prompts_total: int = 0
    prompts_done: int = 0
    shards_total: int = 0
    shards_done: int = 0
    shards_skipped: int = 0
    replicas_replaced: int = 0
    replaced_for: dict[str, int] = field(default_factory=dict)  # actor_died / node_lost / engine_failure / hung / start_failed
    replicas_drained: int = 0
    replicas_preempted: int = 0
    units_retried: int = 0
    units_requeued: int = 0
    units_split: int = 0
    engine_requests: int = 0
    spent_usd: float = 0.0
    totals: ShardStats = field(default_factory=ShardStats)
    started_at: float = field(default_factory=time.time)


def replica_info(r: Replica, now: float, retired: str | None = None) -> ReplicaInfo:
    """`r` as status and the summary show it (`retired`: why it left)."""
    return ReplicaInfo(
        name=r.name, state="retired" if retired else r.state, node_id=r.node_id,
        waiting_for=r.waiting_for if r.placed_at is None and not retired else None, draining_because=r.draining,
        retired_because=retired, units_in_flight=len(r.inflight), units_done=r.units_done,
        completion_tokens=r.completion_tokens, tokens_per_s=r.tokens_per_s(now), age_s=now - r.created_at)


def tokens_per_prompt(c: "GenerationController") -> float | None:
    """Completion tokens per prompt of this run's commits (None before the first)."""
    t = c.progress.totals
    return t.completion_tokens / t.prompts if t.prompts and t.completion_tokens else None


def tokens_per_s_per_replica(c: "GenerationController", now: float) -> float | None:
    """Committed completion tokens over the seconds replicas' engines were up (retired replicas included)."""
    up_s = c._ready_s_retired + sum(now - r.ready_at for r in c._replicas if r.ready_at is not None)
    tokens = c._tokens_retired + sum(r.completion_tokens for r in c._replicas)
    return tokens / up_s if tokens and up_s > 0 else None


def status_of(c: "GenerationController") -> GenerationStatus:
    p = c.progress
    now = c.pool.now() if c.pool is not None else 0.0
    per_prompt = tokens_per_prompt(c)
    generation_s = (now - c._first_ready) if c._first_ready is not None and p.phase == "generating" else c._generation_s
    rate = p.totals.completion_tokens / generation_s if generation_s > 0 else 0.0
    backlog_tokens = c._prompts_left * per_prompt if per_prompt is not None else None
    eta = backlog_tokens / rate if backlog_tokens is not None and rate > 0 else None
    backoff = None
    if c._backoff_until is not None and now < c._backoff_until:
        backoff = f"{c._backoff_reason}; next start in {c._backoff_until - now:.0f} s"
    return GenerationStatus(
        run_id=c.run_id, out=c.out_uri, phase=p.phase, error=p.error, prompts_total=p.prompts_total,
        prompts_done=p.prompts_done, shards_total=p.shards_total, shards_done=p.shards_done,
        shards_skipped=p.shards_skipped, backlog_prompts=max(c._prompts_left, 0), backlog_tokens=backlog_tokens,
        tokens_per_prompt=per_prompt, tokens_per_s=rate, tokens_per_s_per_replica=tokens_per_s_per_replica(c, now),
        eta_s=eta, bounds=c.bounds, target_replicas=c.target_replicas, scale_reason=c.scale_reason,
        replicas=[replica_info(r, now) for r in c._replicas], start_backoff=backoff,
        replica_history=list(c.history.samples) if c.history else [],
        replicas_replaced=p.replicas_replaced, replaced_for=dict(p.replaced_for),
        replicas_drained=p.replicas_drained, replicas_preempted=p.replicas_preempted,
        units_retried=p.units_retried, units_requeued=p.units_requeued, units_split=p.units_split,
        engine_requests=p.engine_requests, totals=p.totals, elapsed_s=time.time() - p.started_at,
        generation_s=generation_s, spent_usd=p.spent_usd,
    )


def summary_of(c: "GenerationController", manifest: RunManifest | None, report: "IngestReport",
               peak_rss_mb: float) -> GenerationSummary:
    p = c.progress
    return GenerationSummary(
        run_id=c.run_id, out=c.out_uri, shards=len(manifest.shards) if manifest else p.shards_done,
        shards_skipped=p.shards_skipped, totals=manifest.totals if manifest else p.totals, this_run=p.totals,
        failed_prompts=len(manifest.failed) if manifest else p.totals.failed_prompts, ingest=report.counts(),
        engine_requests=p.engine_requests, replicas_replaced=p.replicas_replaced, replaced_for=dict(p.replaced_for),
        replicas_drained=p.replicas_drained, replicas_preempted=p.replicas_preempted,
        peak_replicas=c.history.peak_ready if c.history else 0, units_retried=p.units_retried,
        units_requeued=p.units_requeued, units_split=p.units_split,
        replica_history=list(c.history.samples) if c.history else [], replicas=list(c._retired),
        elapsed_s=time.time() - p.started_at, generation_s=c._generation_s, controller_peak_rss_mb=peak_rss_mb,
    )
