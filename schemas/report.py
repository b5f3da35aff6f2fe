"""The run report (`<out>/report.json`, beside the manifest) and the dry-run estimate.

What a generation run cost and produced: tokens per second overall and per
replica, GPU-hours, dollars split over accepted, rejected, truncated and
failed samples, dollars per accepted trace and per million accepted tokens,
and the marginal cost of rejection sampling. Each invocation of a run (a
first attempt, a resume) writes its own `reports/<invocation_id>.json` as it
goes; `report.json` adds them all up at the end of each invocation.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from potstill.schemas.base import StrictModel


class CostSplit(StrictModel):
    """Dollars charged to each kind of sample."""

    accepted: float = Field(default=0.0, description="Samples the verifier accepted (or that no verifier judged).")
    rejected: float = Field(default=0.0, description="Samples the verifier rejected (that ended on their own).")
    truncated: float = Field(default=0.0, description="Samples cut at the token budget and not accepted.")
    failed: float = Field(default=0.0, description="Work that produced no committed sample: units lost with their replica, failed prompts, replicas that never produced a token.")

    def __add__(self, other: "CostSplit") -> "CostSplit":
        return CostSplit(**{k: getattr(self, k) + getattr(other, k) for k in CostSplit.model_fields})

    @property
    def total(self) -> float:
        return self.accepted + self.rejected + self.truncated + self.failed


class ReplicaReport(StrictModel):
    """One replica's life, output and cost."""

    name: str = Field(description="Replica name within the run.")
    gpus: float = Field(description="GPUs it held.")
    cpus: float = Field(description="CPUs it reserved.")
    lifetime_s: float = Field(description="Seconds from its creation to its end (what it is charged for).")
    working_s: float = Field(description="Seconds from its engine's start to its end.")
    completion_tokens: int = Field(description="Completion tokens of the samples it produced that reached a result.")
    engine_completion_tokens: int = Field(description="Completion tokens its engine returned, work lost with it included (as last reported).")
    tokens_per_s: float = Field(description="completion_tokens / working_s.")
    usd: float = Field(description="What it cost: its lifetime at the replica price plus its API tokens.")


class CostReport(StrictModel):
    """Cost and throughput of one invocation, or (summed) of a whole run."""

    elapsed_s: float = Field(default=0.0, description="Wall seconds of the invocation(s).")
    generation_s: float = Field(default=0.0, description="Seconds from the first replica's engine start to the last result.")
    prompts_done: int = Field(default=0, description="Prompts whose shard was committed.")
    samples_drawn: int = Field(default=0, description="Samples generated, rejection sampling's discarded draws included.")
    accepted_traces: int = Field(default=0, description="Accepted samples (see CostSplit.accepted).")
    accepted_tokens: int = Field(default=0, description="Completion tokens of the accepted samples.")
    prompt_tokens: int = Field(default=0, description="Prompt tokens processed (billed, for an API).")
    completion_tokens: int = Field(default=0, description="Completion tokens of every sample drawn.")
    tokens_per_s: float = Field(default=0.0, description="completion_tokens / generation_s.")
    gpu_hours: float = Field(default=0.0, description="Sum over replicas of lifetime x GPUs.")
    cpu_hours: float = Field(default=0.0, description="Sum over replicas of lifetime x reserved CPUs.")
    usd_total: float = Field(default=0.0, description="Everything this run was charged (replica time and API tokens).")
    usd_by_kind: CostSplit = Field(default_factory=CostSplit, description="usd_total split over the kinds of samples.")
    usd_per_accepted_trace: float | None = Field(default=None, description="usd_total / accepted_traces.")
    usd_per_million_accepted_tokens: float | None = Field(default=None, description="usd_total / accepted_tokens x 1e6.")
    resampled_samples: int = Field(default=0, description="Samples drawn by rejection sampling's re-asks.")
    resampled_accepted: int = Field(default=0, description="Accepted samples among them.")
    resampling_usd: float = Field(default=0.0, description="What the re-asks cost.")
    marginal_usd_per_resampled_trace: float | None = Field(default=None, description="resampling_usd / resampled_accepted: what each trace rejection sampling added cost (compare with first_round_usd_per_trace).")
    first_round_usd_per_trace: float | None = Field(default=None, description="What an accepted trace from a prompt's first request cost.")
    replicas: list[ReplicaReport] = Field(default_factory=list, description="Per replica (one invocation; empty in run totals).")


class InvocationReport(StrictModel):
    """`reports/<invocation_id>.json`: one `potstill generate` of a run, rewritten as it goes."""

    run_id: str = Field(description="The run.")
    invocation_id: str = Field(description="This invocation (a UTC timestamp and a random suffix).")
    started_at: datetime = Field(description="UTC start.")
    updated_at: datetime = Field(description="UTC time of this version of the report.")
    status: Literal["running", "complete", "budget_exhausted", "failed"] = Field(description="`running` while it works (or if it died); how it ended otherwise.")
    cost: CostReport = Field(description="Cost and throughput of this invocation.")


class RunReport(StrictModel):
    """`report.json`: every invocation of a run, added up (written at the end of each invocation)."""

    run_id: str = Field(description="The run.")
    status: Literal["complete", "budget_exhausted", "failed", "running"] = Field(description="How the latest invocation ended.")
    budget_usd: float | None = Field(default=None, description="budget.max_usd of the latest invocation.")
    spent_usd: float = Field(description="All invocations' spend together (what budget.max_usd is checked against).")
    total: CostReport = Field(description="All invocations added up (per-replica detail is in each invocation).")
    invocations: list[InvocationReport] = Field(description="Each invocation, oldest first.")


class DryRunEstimate(StrictModel):
    """What `potstill generate CONFIG --dry-run` prints: the run's size, time and cost before it starts."""

    run_id: str = Field(description="The run id the config resolves to.")
    prompts: int = Field(description="Valid prompts after validation and dedup.")
    invalid_rows: int = Field(description="Rows rejected by validation.")
    duplicates: int = Field(description="Duplicate rows collapsed.")
    shards: int = Field(description="Work units (shards) planned.")
    shards_committed: int = Field(default=0, description="Of them, already committed in the output (a resume skips them).")
    sampled_prompts: int = Field(description="Prompts run through the teacher for the estimate (0: a given length was used).")
    samples_per_prompt: float = Field(description="Samples drawn per prompt (rejection sampling's re-asks included), measured on the sample or assumed.")
    accepted_per_prompt: float | None = Field(default=None, description="Accepted samples per prompt on the sample (None without a sample).")
    prompt_tokens: int = Field(description="Estimated prompt tokens processed (billed) over the run.")
    output_tokens: int = Field(description="Estimated completion tokens over the run.")
    replicas: int = Field(description="Replicas planned (replicas.max_replicas; the pool starts at min_replicas).")
    gpus_per_replica: float = Field(description="GPUs each replica holds.")
    tokens_per_s_per_replica: float | None = Field(default=None, description="Throughput measured on the sample (one replica), or derived from the API budgets.")
    hours: float | None = Field(default=None, description="Estimated wall hours (None when nothing bounds the rate).")
    usd: float = Field(description="Estimated dollars (API tokens, or replica time x price).")
    usd_per_accepted_trace: float | None = Field(default=None, description="Estimated dollars per accepted trace.")
    limited_by: str | None = Field(default=None, description="What bounds the time: measured throughput, requests_per_minute, tokens_per_minute or max_concurrency.")
    budget_usd: float | None = Field(default=None, description="budget.max_usd, when set.")
    fits_budget: bool | None = Field(default=None, description="Whether the estimate fits the budget.")
    sample_usd: float = Field(default=0.0, description="What the sample itself cost (an API teacher's tokens).")
    notes: list[str] = Field(default_factory=list, description="Assumptions behind the estimate.")
