"""Commit and manifest records: what makes a shard (and a run) exist for readers.

A shard's data object is invisible until `commits/<shard_id>.json` names it; a
run is complete when `manifest.json` then `_SUCCESS` exist. Readers read only
what these records list (DESIGN.md, commit protocol).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from potstill.schemas.base import SCHEMA_VERSION, StrictModel


class ShardStats(StrictModel):
    """Counts over one shard (or, summed, over a run)."""

    prompts: int = Field(default=0, description="Prompts planned into the shard.")
    traces: int = Field(default=0, description="Rows written (kept samples).")
    verified: int = Field(default=0, description="Rows whose verifier said True.")
    rejected: int = Field(default=0, description="Rows whose verifier said False.")
    failed_prompts: int = Field(default=0, description="Prompts recorded as failed (no samples).")
    samples_drawn: int = Field(default=0, description="All samples generated, including those rejection sampling discarded.")
    prompt_tokens: int = Field(default=0, description="Sum of prompt tokens over requests sent.")
    completion_tokens: int = Field(default=0, description="Sum of completion tokens over all samples drawn.")
    # The split the run report charges costs by (pipelines/generate/cost.py). Rejected = drawn - accepted - truncated.
    accepted_samples: int = Field(default=0, description="Samples drawn that the verifier accepted (or that no verifier judged), whether or not they were kept.")
    accepted_tokens: int = Field(default=0, description="Completion tokens of accepted_samples.")
    truncated_samples: int = Field(default=0, description="Samples drawn that hit the token budget (finish_reason length) and were not accepted.")
    truncated_tokens: int = Field(default=0, description="Completion tokens of truncated_samples.")
    resampled_samples: int = Field(default=0, description="Samples drawn by rejection sampling's re-asks (every request of a prompt after its first).")
    resampled_accepted: int = Field(default=0, description="Accepted samples among resampled_samples.")
    resampled_prompt_tokens: int = Field(default=0, description="Prompt tokens of the re-ask requests.")
    resampled_completion_tokens: int = Field(default=0, description="Completion tokens of resampled_samples.")

    def __add__(self, other: "ShardStats") -> "ShardStats":
        return ShardStats(**{k: getattr(self, k) + getattr(other, k) for k in ShardStats.model_fields})


class FailedPrompt(StrictModel):
    """A prompt that produced no sample after its bounded attempts."""

    prompt_id: str = Field(description="sha256 of the prompt messages.")
    reason: str = Field(description="Why it failed (last error), credentials scrubbed.")
    attempts: int = Field(description="How many times it was tried.")


class ShardCommit(StrictModel):
    """`commits/<shard_id>.json`: the record that makes one shard's data visible."""

    schema_version: int = Field(default=SCHEMA_VERSION, description="Layout version of this record.")
    run_id: str = Field(description="Run the shard belongs to.")
    shard_id: str = Field(description="Deterministic shard id (from the work unit).")
    attempt_id: str = Field(description="UUID of the write attempt that won the commit.")
    data_path: str = Field(description="Data object path relative to the run output root.")
    row_count: int = Field(description="Rows in the data object (checked against the Parquet footer).")
    size_bytes: int = Field(description="Size of the data object in bytes.")
    sha256: str = Field(description="sha256 of the data object's bytes, checked after writing.")
    schema_hash: str = Field(description="Hash of the trace layout the object was written with.")
    prompt_ids: list[str] = Field(description="Every prompt id of the unit, in plan order.")
    failed: list[FailedPrompt] = Field(default_factory=list, description="Prompts of this unit recorded as failed.")
    stats: ShardStats = Field(description="Counts over the shard.")
    committed_at: datetime = Field(description="UTC time of the commit.")
    plan_hash: str | None = Field(default=None, description="Hash of the run's planned prompts (run.json `plan.hash`) the unit came from; None in commits of older potstill versions.")
    teacher_revision: str | None = Field(default=None, description="Teacher revision that generated the rows (run.json `teacher.revision`).")


class ReplicaCountSample(StrictModel):
    """The teacher replica pool at one moment (one entry per change)."""

    t_s: float = Field(description="Seconds since the controller started.")
    target: int = Field(description="Replicas the controller wants.")
    ready: int = Field(description="Replicas working.")
    starting: int = Field(description="Replicas placed whose engine is loading.")
    pending: int = Field(description="Replicas waiting for resources.")
    draining: int = Field(description="Replicas finishing their units before removal.")
    reason: str = Field(default="", description="What changed (scale command, autoscale decision, node drain, failure).")


class ScalingAttempt(StrictModel):
    """The replica count over time of one controller that worked on the run (a resumed run has several)."""

    started_at: datetime = Field(description="UTC time the controller started.")
    samples: list[ReplicaCountSample] = Field(default_factory=list, description="The pool after each change.")


class ManifestShard(StrictModel):
    """One shard as listed in the run manifest."""

    shard_id: str = Field(description="Deterministic shard id.")
    data_path: str = Field(description="Data object path relative to the run output root.")
    row_count: int = Field(description="Rows in the data object.")
    size_bytes: int = Field(description="Size of the data object in bytes.")
    sha256: str = Field(description="sha256 of the data object's bytes.")


class RunManifest(StrictModel):
    """`manifest.json`: the ordered, complete list of a finished run's shards."""

    schema_version: int = Field(default=SCHEMA_VERSION, description="Layout version of this record.")
    run_id: str = Field(description="The run.")
    config_fingerprint: str = Field(description="Hash of what determines the traces (teacher, template, sampling, n, verifier).")
    schema_hash: str = Field(description="Hash of the trace layout every shard uses.")
    teacher_model: str = Field(description="Teacher model name or path.")
    teacher_revision: str | None = Field(default=None, description="Teacher revision.")
    plan_hash: str | None = Field(default=None, description="Hash of the planned prompts every shard was generated from.")
    shards: list[ManifestShard] = Field(description="Committed shards in plan order.")
    totals: ShardStats = Field(description="Counts summed over all shards.")
    failed: list[FailedPrompt] = Field(default_factory=list, description="All prompts recorded as failed.")
    finished_at: datetime = Field(description="The latest commit time (deterministic: re-finalizing writes the same bytes).")
    scaling: list[ScalingAttempt] = Field(default_factory=list, description="Teacher replicas over time, per controller attempt (what the first finalize saw; finalizing again keeps it).")


class PlanRecord(StrictModel):
    """What a run was planned to produce, as recorded when it started."""

    hash: str = Field(description="sha256 over every planned prompt (id, reference, max_tokens) and the shard partition.")
    prompts: int = Field(description="Prompts planned.")
    shard_ids: list[str] = Field(description="Planned shard ids in order (so a changed plan can be named shard by shard).")


class TeacherRecord(StrictModel):
    """The teacher a run generates with, pinned when it started."""

    model: str = Field(description="Teacher model name or path, as configured.")
    revision: str | None = Field(default=None, description="The configured revision, else a content hash of the local model folder; None when neither is known.")
    files: list[tuple[str, int, int]] | None = Field(default=None, description="(relative path, size, mtime_ns) of every file of a local model folder: replicas check their folder against it by stat, without re-hashing the weights.")


class RunRecord(StrictModel):
    """`run.json`: binds an output root to one run, config, plan and teacher (created once, conditionally)."""

    format: str = Field(default="potstill.run/1", description="Marks the folder as a potstill run output root.")
    run_id: str = Field(description="The run.")
    config_fingerprint: str = Field(description="Fingerprint of the generation config (GenerationConfig.fingerprint()).")
    config: dict = Field(default_factory=dict, description="The generation config, secrets redacted.")
    plan: PlanRecord | None = Field(default=None, description="The planned prompts; None in records of older potstill versions.")
    teacher: TeacherRecord | None = Field(default=None, description="The pinned teacher; None in records of older potstill versions.")
    created_at: datetime | None = Field(default=None, description="UTC time the run claimed the output root.")

    @property
    def plan_hash(self) -> str | None:
        return self.plan.hash if self.plan else None

    @property
    def teacher_revision(self) -> str | None:
        return self.teacher.revision if self.teacher else None
