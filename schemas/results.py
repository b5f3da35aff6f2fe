"""What generation commands return: live status, replica state, the run summary (typed, JSON-ready).

    summary = run_generation(cfg)                 # GenerationSummary (potstill generate --json prints it)
    status = potstill.status("run-abc")           # GenerationStatus (potstill status RUN_ID --json prints it)
    potstill.scale("run-abc", replicas=4)         # ScaleResult

The controller builds these from its bookkeeping; the CLI, the jobs and
users' tools read the fields, never dict keys.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from potstill.schemas.base import StrictModel
from potstill.schemas.manifest import ReplicaCountSample, ShardStats

__all__ = ["GenerationStatus", "GenerationSummary", "ReplicaCountSample", "ReplicaInfo", "ReplicaState", "ScaleBounds",
           "ScaleResult"]

ReplicaState = Literal["pending", "starting", "ready", "draining", "retired"]
"""pending: not placed yet (waits for resources); starting: placed, engine loading; ready: working;
draining: gets no new unit, its in-flight units finish, then it is removed; retired: gone (summary only)."""


class ReplicaInfo(StrictModel):
    """One teacher replica as the controller sees it."""

    name: str = Field(description="Replica name (the Ray actor is potstill-<run_id>-<token>-<name>).")
    state: ReplicaState = Field(description="pending / starting / ready / draining.")
    node_id: str | None = Field(default=None, description="Node it runs on (None while pending).")
    waiting_for: str | None = Field(default=None, description="Pending: the resources it waits for and why they are not free.")
    draining_because: str | None = Field(default=None, description="Draining: scale-down, idle, or the node draining (with its deadline).")
    retired_because: str | None = Field(default=None, description="Retired: drained, preempted, run finished, or the failure it was replaced for.")
    units_in_flight: int = Field(default=0, description="Units queued on it now.")
    units_done: int = Field(default=0, description="Units it finished in this run.")
    completion_tokens: int = Field(default=0, description="Completion tokens of the units it finished.")
    tokens_per_s: float | None = Field(default=None, description="Its completion tokens per second since its engine started.")
    age_s: float = Field(default=0.0, description="Seconds since the controller created it.")


class ScaleBounds(StrictModel):
    """The pool size rules in force."""

    min_replicas: int = Field(description="Autoscaling lower bound.")
    max_replicas: int = Field(description="Autoscaling upper bound.")
    fixed: int | None = Field(default=None, description="A count set with `potstill scale --replicas N` (autoscaling off until --min/--max).")


class ScaleResult(StrictModel):
    """What `potstill scale` / `potstill.scale` changed."""

    run_id: str = Field(description="The run.")
    bounds: ScaleBounds = Field(description="The rules now in force.")
    target: int = Field(description="Replicas the controller now wants.")
    replicas: int = Field(description="Replicas alive now (any state); draining ones leave as their units commit.")


class GenerationStatus(StrictModel):
    """A live run's state (`potstill status RUN_ID`), also the progress the CLI's bar shows."""

    run_id: str = Field(description="The run.")
    out: str = Field(default="", description="Output root.")
    phase: Literal["planning", "generating", "finalizing", "done", "stopped", "failed"] = Field(default="planning", description="Where the run is.")
    error: str | None = Field(default=None, description="Why the run failed (phase failed).")
    prompts_total: int = Field(default=0, description="Prompts planned.")
    prompts_done: int = Field(default=0, description="Prompts in committed shards.")
    shards_total: int = Field(default=0, description="Shards planned.")
    shards_done: int = Field(default=0, description="Shards committed by this controller.")
    shards_skipped: int = Field(default=0, description="Shards already committed when it started (resume).")
    backlog_prompts: int = Field(default=0, description="Prompts not yet committed (queued or in flight).")
    backlog_tokens: float | None = Field(default=None, description="Their completion tokens, estimated from this run's committed shards.")
    tokens_per_prompt: float | None = Field(default=None, description="Completion tokens per prompt learned from this run's commits.")
    tokens_per_s: float = Field(default=0.0, description="Completion tokens per second of this run since the first engine started.")
    tokens_per_s_per_replica: float | None = Field(default=None, description="Measured completion tokens/s of one ready replica.")
    eta_s: float | None = Field(default=None, description="Seconds to finish the backlog at the current rate.")
    bounds: ScaleBounds | None = Field(default=None, description="Pool size rules in force.")
    target_replicas: int = Field(default=0, description="Replicas the controller wants.")
    scale_reason: str = Field(default="", description="Why the target is what it is.")
    replicas: list[ReplicaInfo] = Field(default_factory=list, description="Every replica alive now.")
    start_backoff: str | None = Field(default=None, description="Set while replica starts are paused after failing in a row.")
    replica_history: list[ReplicaCountSample] = Field(default_factory=list, description="The pool over time.")
    replicas_replaced: int = Field(default=0, description="Replicas replaced after a failure.")
    replaced_for: dict[str, int] = Field(default_factory=dict, description="Replacements by kind: actor_died, node_lost, engine_failure, hung, start_failed.")
    replicas_drained: int = Field(default=0, description="Replicas removed by a scale-down or idle drain after their units committed.")
    replicas_preempted: int = Field(default=0, description="Replicas removed because their node drained (spot preemption).")
    units_retried: int = Field(default=0, description="Units requeued after a blamed failure.")
    units_requeued: int = Field(default=0, description="Units requeued without blame (node drained or lost, suspect of a hang).")
    units_split: int = Field(default=0, description="Units split to isolate a poison prompt.")
    spent_usd: float = Field(default=0.0, description="Dollars spent so far by this invocation (replica time and API tokens at the configured prices).")
    engine_requests: int = Field(default=0, description="Engine requests of retired replicas so far (complete in the summary).")
    totals: ShardStats = Field(default_factory=ShardStats, description="Counts over the shards committed by this controller.")
    elapsed_s: float = Field(default=0.0, description="Seconds since the controller started.")
    generation_s: float = Field(default=0.0, description="Seconds since the first engine started.")

    @property
    def pending(self) -> list[ReplicaInfo]:
        """Replicas that cannot be placed yet."""
        return [r for r in self.replicas if r.state == "pending"]

    @property
    def accepted_traces(self) -> int:
        """Traces the verifier accepted (committed by this controller)."""
        return self.totals.verified


class GenerationSummary(StrictModel):
    """What a finished generation run reports (`potstill generate --json`)."""

    run_id: str = Field(description="The run.")
    out: str = Field(description="Output root.")
    shards: int = Field(description="Shards in the manifest.")
    shards_skipped: int = Field(default=0, description="Shards already committed when this controller started.")
    totals: ShardStats = Field(description="Counts over the whole run (manifest).")
    this_run: ShardStats = Field(default_factory=ShardStats, description="Counts over the shards this controller committed.")
    failed_prompts: int = Field(default=0, description="Prompts recorded as failed.")
    ingest: dict[str, int] = Field(default_factory=dict, description="Input rows: rows_read, valid, invalid, duplicates.")
    engine_requests: int = Field(default=0, description="Requests sent to teacher engines by this controller.")
    replicas_replaced: int = Field(default=0, description="Replicas replaced after a failure.")
    replaced_for: dict[str, int] = Field(default_factory=dict, description="Replacements by kind.")
    replicas_drained: int = Field(default=0, description="Replicas removed by scale-down/idle drains.")
    replicas_preempted: int = Field(default=0, description="Replicas removed because their node drained.")
    peak_replicas: int = Field(default=0, description="Most replicas ready at once.")
    units_retried: int = Field(default=0, description="Units requeued after a blamed failure.")
    units_requeued: int = Field(default=0, description="Units requeued without blame.")
    units_split: int = Field(default=0, description="Units split to isolate a poison prompt.")
    replica_history: list[ReplicaCountSample] = Field(default_factory=list, description="The pool over time (this controller).")
    replicas: list[ReplicaInfo] = Field(default_factory=list, description="Every replica this controller ran, as it ended (node, units, tokens/s, why it left).")
    elapsed_s: float = Field(default=0.0, description="Seconds the controller ran.")
    generation_s: float = Field(default=0.0, description="First engine ready to last shard committed.")
    controller_peak_rss_mb: float = Field(default=0.0, description="Peak resident memory of the controller process.")
    driver_peak_rss_mb: float | None = Field(default=None, description="Peak resident memory of the driver (set by the driver).")
    attached: bool = Field(default=False, description="This driver attached to a controller another driver started.")
    status: str = Field(default="complete", description="complete, or budget_exhausted (stopped at budget.max_usd; committed shards stay, unfinalized).")
    cost: dict[str, Any] | None = Field(default=None, description="The run report's cost headline (report.json: this invocation and the whole run).")
    report: str | None = Field(default=None, description="Where the run report (report.json) is.")

    @property
    def tokens_per_s(self) -> float:
        """Completion tokens of this run per second after the first engine started."""
        return self.this_run.completion_tokens / self.generation_s if self.generation_s > 0 else 0.0
