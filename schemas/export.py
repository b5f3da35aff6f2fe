"""Configs and results of `potstill export` and `potstill decontaminate`.

    cfg = ExportConfig(runs=["runs/r1"], out="exports/r1-trl", format="trl")
    summary = export_runs(cfg)               # -> ExportSummary, also written into the dataset card

An export turns the committed traces of one or more runs into a Hugging Face
style dataset (shards plus a `README.md` card) in one of the chat formats
downstream trainers read; `DecontaminationConfig` drops rows whose prompt or
trace shares an n-gram with a benchmark the user names.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from potstill.schemas.base import StrictModel
from potstill.schemas.generation import StorageConfig
from potstill.schemas.trace import FinishReason

ExportFormat = Literal["trl", "prompt-completion", "sharegpt", "openai"]
ReasoningMode = Literal["think", "field", "drop"]
RankKey = Literal["verified", "shortest", "longest", "first"]

BENCHMARK_FIELD_GUESSES = ("problem", "question", "Question", "prompt", "input", "instruction", "messages")
"""Columns tried, in order, when a benchmark source names no field (MATH/AIME `problem`, GSM8K/GPQA `question`)."""


class BenchmarkSource(StrictModel):
    """One benchmark to decontaminate against: a JSONL or Parquet file (or folder), local or s3://."""

    path: str = Field(min_length=1, description="JSONL/Parquet file or folder, a local path or an s3:// URI.")
    fields: list[str] = Field(default_factory=list, description=f"Columns holding the benchmark text (a string, or a chat `messages` list); empty: the first of {', '.join(BENCHMARK_FIELD_GUESSES)} the file has.")
    name: str | None = Field(default=None, description="Name in reports and the card; default the file name without its extension.")

    @classmethod
    def parse(cls, spec: str) -> "BenchmarkSource":
        """`PATH` or `PATH:FIELD[,FIELD...]` (the part after the last `:` is a field list unless it holds a `/`)."""
        head, sep, tail = spec.rpartition(":")
        if sep and head and tail and "/" not in tail:
            return cls(path=head, fields=[f.strip() for f in tail.split(",") if f.strip()])
        return cls(path=spec)

    def display_name(self) -> str:
        if self.name:
            return self.name
        stem = self.path.rstrip("/").rsplit("/", 1)[-1]
        for suffix in (".gz", ".bz2", ".xz", ".zst", ".jsonl", ".ndjson", ".json", ".parquet", ".pq", ".parq"):
            stem = stem.removesuffix(suffix)
        return stem or self.path


class DecontaminationConfig(StrictModel):
    """N-gram overlap against benchmark sets (open-r1 and s1 use word 8-grams)."""

    benchmarks: list[BenchmarkSource] = Field(min_length=1, description="Benchmarks whose text must not appear in the exported prompts or traces.")
    ngram: int = Field(default=8, ge=1, le=64, description="Words per n-gram. Text is compared after Unicode NFKC, case folding, punctuation removal and whitespace collapsing.")
    scope: Literal["prompts", "traces", "both"] = Field(default="both", description="What is checked: the prompt messages (a match drops every sample of the prompt), the traces (a match drops that sample) or both.")
    min_words: int = Field(default=4, ge=1, description="Benchmark texts shorter than `ngram` words are matched whole (as one contiguous word sequence); texts shorter than this are ignored (too short to mean anything).")

    @model_validator(mode="after")
    def _min_words_fit(self) -> "DecontaminationConfig":
        if self.min_words > self.ngram:
            raise ValueError(f"min_words ({self.min_words}) is above ngram ({self.ngram}); lower min_words")
        return self


class ExportFilters(StrictModel):
    """Which committed rows an export keeps."""

    verified_only: bool = Field(default=True, description="Keep only rows whose verifier said True.")
    finish_reasons: list[FinishReason] | None = Field(default=None, description="Keep only rows that stopped for one of these reasons (e.g. [stop]); None keeps any.")
    min_completion_tokens: int | None = Field(default=None, ge=0, description="Drop rows with fewer completion tokens (teacher tokens).")
    max_completion_tokens: int | None = Field(default=None, gt=0, description="Drop rows with more completion tokens.")
    max_prompt_tokens: int | None = Field(default=None, gt=0, description="Drop rows whose prompt has more tokens.")
    max_total_tokens: int | None = Field(default=None, gt=0, description="Drop rows whose prompt + completion has more tokens.")
    per_prompt: int | None = Field(default=None, ge=1, description="Keep at most this many samples per prompt (best first, by `best_by`); None keeps all.")
    best_by: list[RankKey] = Field(default_factory=lambda: ["verified", "shortest"], description="How `per_prompt` ranks a prompt's samples: `verified` (accepted first, then unjudged, then rejected), `shortest`/`longest` completion, `first` sample; ties fall back to the sample index.")

    @model_validator(mode="after")
    def _bounds(self) -> "ExportFilters":
        lo, hi = self.min_completion_tokens, self.max_completion_tokens
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"min_completion_tokens ({lo}) is above max_completion_tokens ({hi}); no row could pass")
        if len(set(self.best_by)) != len(self.best_by) or {"shortest", "longest"} <= set(self.best_by):
            raise ValueError(f"best_by {self.best_by} repeats a key or asks for both shortest and longest; name each key once")
        return self


class ExportConfig(StrictModel):
    """One export: committed runs -> a chat-format dataset with a card."""

    runs: list[str] = Field(min_length=1, description="Generation run output roots (local folders or s3:// URIs); read as one dataset, each row once.")
    out: str = Field(min_length=1, description="Export folder or s3:// prefix (gets data/train-*.{parquet,jsonl} and README.md).")
    format: ExportFormat = Field(description="`trl`: a `messages` conversation (TRL conversational); `prompt-completion`: TRL's conversational `prompt`/`completion` (completion-only loss); `sharegpt`: `conversations` of {from, value}; `openai`: chat fine-tuning JSONL `{messages}`.")
    reasoning: ReasoningMode = Field(default="think", description="Where the teacher's reasoning goes: `think` keeps the teacher's completion with its `<think>...</think>` block as the assistant content; `field` puts it in the assistant message's `reasoning_content` and the content is the final answer; `drop` keeps only the answer.")
    file_format: Literal["auto", "parquet", "jsonl"] = Field(default="auto", description="Shard file type; `auto`: JSONL for `openai`, Parquet otherwise.")
    shard_bytes: int = Field(default=256 * 2**20, gt=0, description="Target size of one shard, measured on the exported text before compression (as `datasets` sizes shards).")
    metadata: bool | None = Field(default=None, description="Add provenance columns (run_id, prompt_id, sample_index, reference, verified, finish_reason, token counts); None: yes except for `openai`, whose API accepts only `messages`.")
    filters: ExportFilters = Field(default_factory=ExportFilters, description="Row filters and per-prompt selection.")
    decontamination: DecontaminationConfig | None = Field(default=None, description="Drop rows overlapping these benchmarks; the result is recorded in the card.")
    allow_live: bool = Field(default=False, description="Also export runs that have not finished (their committed shards so far); the card marks them unfinished.")
    license: str = Field(default="other", min_length=1, description="License id for the card's `license` field (a Hub license id such as apache-2.0); set it to what the teacher's and the prompts' licenses allow.")
    pretty_name: str | None = Field(default=None, description="Human-readable dataset name for the card.")
    overwrite: bool = Field(default=False, description="Replace an existing (or half-written) export at `out`.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Object-store settings for s3:// runs, benchmarks and `out`.")

    @model_validator(mode="after")
    def _format_rules(self) -> "ExportConfig":
        if self.format == "sharegpt" and self.reasoning == "field":
            raise ValueError("format sharegpt has no reasoning field (a turn is only {from, value}); use reasoning "
                             "think (the <think> block stays in the reply) or drop")
        return self

    def resolved_file_format(self) -> str:
        if self.file_format != "auto":
            return self.file_format
        return "jsonl" if self.format == "openai" else "parquet"

    def resolved_metadata(self) -> bool:
        return self.metadata if self.metadata is not None else self.format != "openai"


# ---- results ----------------------------------------------------------------

class TokenStats(StrictModel):
    """Distribution of a token count over the exported rows (teacher tokens)."""

    total: int = Field(default=0, description="Sum over rows.")
    mean: float | None = Field(default=None, description="Mean per row.")
    p50: float | None = Field(default=None, description="Median.")
    p90: float | None = Field(default=None, description="90th percentile.")
    p99: float | None = Field(default=None, description="99th percentile.")
    max: int | None = Field(default=None, description="Largest.")


class ContaminationExample(StrictModel):
    """One overlap found: where, which benchmark row, and the shared words."""

    prompt_id: str = Field(description="Prompt of the matching row.")
    where: Literal["prompt", "trace"] = Field(description="Whether the prompt or the trace matched.")
    benchmark: str = Field(description="Benchmark name.")
    benchmark_row: int = Field(description="0-based row of the benchmark text that matched.")
    ngram: str = Field(description="The shared words (normalized).")


class BenchmarkReport(StrictModel):
    """What one benchmark contributed and matched."""

    name: str = Field(description="Benchmark name.")
    source: str = Field(description="Where it was read from (credentials scrubbed).")
    fields: list[str] = Field(description="Columns read.")
    texts: int = Field(description="Benchmark texts indexed.")
    skipped_short: int = Field(description="Texts ignored for having fewer than min_words words.")
    prompts_matched: int = Field(default=0, description="Distinct prompts whose text overlaps this benchmark.")
    traces_matched: int = Field(default=0, description="Rows whose trace overlaps this benchmark.")


class DecontaminationReport(StrictModel):
    """The overlap found in the runs and what it removed."""

    ngram: int = Field(description="Words per n-gram.")
    scope: str = Field(description="prompts, traces or both.")
    benchmarks: list[BenchmarkReport] = Field(description="Per benchmark.")
    rows_checked: int = Field(default=0, description="Committed rows checked (all of them, before the other filters).")
    prompts_matched: int = Field(default=0, description="Distinct prompts with an overlap.")
    rows_matched: int = Field(default=0, description="Rows with an overlap (every sample of a matched prompt, plus rows whose trace matched).")
    rows_removed: int = Field(default=0, description="Of those, rows the export would otherwise have kept (0 in `potstill decontaminate`).")
    examples: list[ContaminationExample] = Field(default_factory=list, description="The first overlaps found.")


class FilterCounts(StrictModel):
    """Rows at each step of an export; each removed row is counted at the first step that removed it."""

    rows_read: int = Field(default=0, description="Committed rows read.")
    unverified: int = Field(default=0, description="Removed: the verifier did not say True.")
    finish_reason: int = Field(default=0, description="Removed: finish_reason not allowed.")
    token_length: int = Field(default=0, description="Removed: outside the token-length bounds.")
    decontaminated: int = Field(default=0, description="Removed: overlaps a benchmark.")
    per_prompt: int = Field(default=0, description="Removed: beyond the per-prompt sample count.")
    exported: int = Field(default=0, description="Rows written.")


class RunSummary(StrictModel):
    """One source run as the card describes it."""

    run_id: str = Field(description="Run id.")
    uri: str = Field(description="Run output root (credentials scrubbed).")
    finished: bool = Field(description="Whether the run had its manifest and _SUCCESS when read.")
    config_fingerprint: str | None = Field(default=None, description="Config fingerprint of the run.")
    teacher_model: str | None = Field(default=None, description="Teacher model.")
    teacher_revision: str | None = Field(default=None, description="Teacher revision.")
    sampling: dict | None = Field(default=None, description="Sampling parameters.")
    verifier: str | None = Field(default=None, description="Verifier that judged the rows.")
    shards: int = Field(description="Committed shards read.")
    traces: int = Field(description="Committed rows.")
    verified: int = Field(description="Rows the verifier accepted.")
    rejected: int = Field(description="Rows the verifier rejected.")
    accepted_fraction: float | None = Field(default=None, description="verified / (verified + rejected).")


class ExportSummary(StrictModel):
    """What `potstill export` wrote; the card's `potstill` metadata block is this object."""

    out: str = Field(description="Export location (credentials scrubbed).")
    format: str = Field(description="Export format.")
    reasoning: str = Field(description="Reasoning placement.")
    file_format: str = Field(description="parquet or jsonl.")
    files: list[str] = Field(description="Shard paths relative to `out`.")
    rows: int = Field(description="Rows exported.")
    prompts: int = Field(description="Distinct prompts exported.")
    bytes: int = Field(description="Bytes of the shard files.")
    text_bytes: int = Field(description="Bytes of exported text before compression (what shards are sized by).")
    counts: FilterCounts = Field(description="Rows at each filter step.")
    filters: ExportFilters = Field(description="The filters applied.")
    runs: list[RunSummary] = Field(description="Source runs.")
    duplicate_shards_skipped: int = Field(default=0, description="Shards named by more than one source (same data object) read once.")
    accepted_fraction: float | None = Field(default=None, description="Verifier acceptance over the source runs: verified / judged.")
    prompt_tokens: TokenStats = Field(description="Prompt tokens of the exported rows.")
    completion_tokens: TokenStats = Field(description="Completion tokens of the exported rows.")
    decontamination: DecontaminationReport | None = Field(default=None, description="Decontamination result, when asked.")
    license: str = Field(description="Card license field.")
    elapsed_s: float = Field(default=0.0, description="Wall time of the export.")
