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
    shards: list[ManifestShard] = Field(description="Committed shards in plan order.")
    totals: ShardStats = Field(description="Counts summed over all shards.")
    failed: list[FailedPrompt] = Field(default_factory=list, description="All prompts recorded as failed.")
    finished_at: datetime = Field(description="The latest commit time (deterministic: re-finalizing writes the same bytes).")
