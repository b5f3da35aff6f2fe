"""Configs of the generation job (`potstill generate CONFIG.yaml`).

`GenerationConfig` is composed of one small config per component — prompts,
teacher, replicas, sampling, verification, output — each owned by the stage
that reads it, so no stage sees a god config.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field, model_validator

from potstill.schemas.base import StrictModel

SHIPPED_TEACHER = "potstill:arithmetic-teacher"
"""Model name that resolves to the small arithmetic teacher shipped in the package."""


class FieldMapping(StrictModel):
    """Which source columns hold the prompt and the reference answer."""

    prompt: str | None = Field(default="prompt", description="Column with the user prompt text (e.g. GSM8K `question`, MATH `problem`). Ignored when `messages` is set.")
    messages: str | None = Field(default=None, description="Column with a chat conversation (list of {role, content}); use instead of `prompt`.")
    reference: str | None = Field(default=None, description="Column with the reference answer for verifiers (e.g. `answer`).")
    max_tokens: str | None = Field(default=None, description="Column with a per-prompt completion budget overriding sampling.max_tokens.")
    keep: list[str] = Field(default_factory=list, description="Extra columns copied into the prompt's metadata.")


class ArithmeticPromptsConfig(StrictModel):
    """Fresh addition problems for the shipped arithmetic teacher (held out from its training)."""

    count: int = Field(default=200, gt=0, description="How many problems to generate.")
    digits: int = Field(default=3, ge=1, le=6, description="Digits per operand.")
    seed: int = Field(default=1234, description="Seed of the problem generator.")


class PromptsConfig(StrictModel):
    """Where prompts come from and how each row becomes a conversation."""

    path: str | None = Field(default=None, description="JSONL or Parquet file (or folder of Parquet files), a local path or an s3:// URI.")
    arithmetic: ArithmeticPromptsConfig | None = Field(default=None, description="Generate addition problems instead of reading a file.")
    format: Literal["auto", "jsonl", "parquet"] = Field(default="auto", description="File format; `auto` goes by the extension.")
    fields: FieldMapping = Field(default_factory=FieldMapping, description="Column mapping of the source.")
    system_prompt: str | None = Field(default=None, description="System message prepended to every conversation.")
    prompt_template: str | None = Field(default=None, description="Python format string applied to the prompt text, e.g. '{prompt}\\nPut the final answer in \\\\boxed{{}}.'; may use any source column by name.")
    max_prompt_chars: int = Field(default=32_000, gt=0, description="Rows whose conversation is longer than this many characters are rejected.")
    limit: int | None = Field(default=None, gt=0, description="Read at most this many rows (for smoke runs).")

    @model_validator(mode="after")
    def _one_source(self) -> "PromptsConfig":
        if (self.path is None) == (self.arithmetic is None):
            raise ValueError("set exactly one of `path` (a prompt file) or `arithmetic` (generated problems)")
        return self


class TeacherConfig(StrictModel):
    """The teacher model and how each replica's engine is built."""

    engine: Literal["vllm"] = Field(default="vllm", description="Engine behind the TeacherEngine protocol.")
    model: str = Field(default=SHIPPED_TEACHER, description=f"Model path or name; `{SHIPPED_TEACHER}` is the tiny teacher shipped with potstill.")
    revision: str | None = Field(default=None, description="Model revision; defaults to a content hash of the local model folder.")
    tokenizer: str | None = Field(default=None, description="Tokenizer path if not the model's.")
    chat_template: str | None = Field(default=None, description="Jinja chat template overriding the tokenizer's (inline text).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(default="auto", description="Weights and activations dtype.")
    max_model_len: int | None = Field(default=None, gt=0, description="Context length cap (prompt + completion).")
    tensor_parallel_size: int = Field(default=1, ge=1, description="GPUs per replica for tensor parallelism (one placement group bundle each).")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, description="Fraction of GPU memory vLLM may use.")
    max_num_seqs: int | None = Field(default=None, gt=0, description="Engine batch size cap (vLLM max_num_seqs).")
    kv_cache_gib: float | None = Field(default=None, gt=0, description="KV cache size in GiB (vLLM kv_cache_memory_bytes). None: vLLM sizes it from gpu_memory_utilization, which on CPU claims that fraction of the machine's memory and refuses to start when less is free (checked before the engine starts, with the numbers); set it for CPU runs and small models.")
    schedule: Literal["longest_first", "fcfs"] = Field(default="longest_first", description="Order in which the engine starts waiting requests. `longest_first`: the largest max_tokens first (vLLM priority scheduling), so the long generations run beside the short ones instead of trailing alone at the end (more output tokens/s on skewed budgets: docs/PERFORMANCE.md); equal budgets keep arrival order. `fcfs`: arrival order (vLLM's default).")
    seed: int = Field(default=0, description="Engine seed (per-request seeds are not supported on CPU).")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra vLLM engine arguments passed through verbatim.")


class ReplicasConfig(StrictModel):
    """The teacher replica pool the controller owns."""

    min_replicas: int = Field(default=1, ge=1, description="Replicas started at the beginning and kept at least.")
    max_replicas: int = Field(default=1, ge=1, description="Upper bound for scale-up on backlog.")
    cpus_per_replica: float = Field(default=1, ge=0, description="CPUs reserved by each replica actor.")
    gpus_per_replica: float | None = Field(default=None, ge=0, description="GPUs per replica; default: tensor_parallel_size when the cluster has GPUs, else 0.")
    accelerator_type: str | None = Field(default=None, description="Ray accelerator type to pin replicas to (e.g. H100).")
    units_in_flight: int = Field(default=2, ge=1, description="Work units queued on each replica at once (backpressure; >1 keeps the engine busy across unit boundaries).")
    max_units_in_flight: int = Field(default=8, ge=1, description="Ceiling on units queued on one replica when `min_sequences_in_flight` admits units beyond `units_in_flight`.")
    min_sequences_in_flight: int | Literal["auto"] | None = Field(default="auto", description="When a replica's unfinished engine sequences fall below this (its units are down to their long-tail prompts), one more unit is dispatched to it, up to max_units_in_flight, so the engine's batch stays full. `auto`: twice the engine's batch capacity (vLLM max_num_seqs, as the replica reports it), so a full batch runs and as many wait in the engine's queue; null: exactly units_in_flight units.")

    @model_validator(mode="after")
    def _positive_min_sequences(self) -> "ReplicasConfig":
        if isinstance(self.min_sequences_in_flight, int) and self.min_sequences_in_flight < 1:
            raise ValueError(f"min_sequences_in_flight ({self.min_sequences_in_flight}) must be at least 1, `auto` or null")
        return self
    unit_timeout_s: float = Field(default=1800, gt=0, description="A unit unfinished this long after its replica's engine started working on it marks the replica hung: it is killed and replaced, its units requeued. Set it above your slowest unit's time.")
    start_timeout_s: float = Field(default=1800, gt=0, description="A replica whose engine has not started after this long is killed and replaced (engine start is not counted in unit_timeout_s).")
    max_attempts: int = Field(default=3, ge=1, description="Failures blamed on a prompt (its unit failed while running alone, or raised) before it is recorded as failed; a unit of several prompts is split instead (see split_into).")
    split_into: int = Field(default=2, ge=2, description="A unit that failed alone re-runs as this many sub-units (recursively: bisection) so one poison prompt cannot fail its neighbours; larger isolates it in fewer replica restarts, smaller in fewer alone-runs.")

    @model_validator(mode="after")
    def _bounds(self) -> "ReplicasConfig":
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas}); raise max_replicas")
        if self.max_units_in_flight < self.units_in_flight:
            raise ValueError(f"max_units_in_flight ({self.max_units_in_flight}) is below units_in_flight ({self.units_in_flight}); "
                             "raise max_units_in_flight")
        return self


class SamplingConfig(StrictModel):
    """Sampling parameters of every teacher request."""

    n: int = Field(default=1, ge=1, description="Samples per prompt.")
    temperature: float = Field(default=0.6, ge=0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling mass.")
    top_k: int = Field(default=-1, description="Top-k sampling cut; -1 disables.")
    min_p: float = Field(default=0.0, ge=0, le=1, description="Minimum token probability relative to the top token.")
    max_tokens: int = Field(default=1024, gt=0, description="Completion length cap in tokens.")
    stop: list[str] = Field(default_factory=list, description="Extra stop strings.")
    logprobs: int = Field(default=0, ge=0, le=64, description="Keep the teacher's top-k logprobs per token (0 keeps none); needed for KD.")
    ignore_eos: bool = Field(default=False, description="Keep generating past EOS until max_tokens (benchmarks, budget forcing).")


class VerifyConfig(StrictModel):
    """How samples are judged and which are kept."""

    method: Literal["none", "math", "exact", "callable"] = Field(default="math", description="`math`: answer equivalence (math-verify); `exact`: normalized string match; `callable`: `function`; `none`: no verdict.")
    function: str | None = Field(default=None, description="For method=callable: `package.module:function(completion, reference) -> bool`.")
    max_completion_tokens: int | None = Field(default=None, gt=0, description="Reject samples longer than this.")
    require_stop: bool = Field(default=True, description="Reject samples that did not end naturally (finish_reason != stop).")
    require_reasoning: bool = Field(default=False, description="Reject samples without a <think>...</think> block.")
    accept_per_prompt: int | None = Field(default=None, ge=1, description="Rejection sampling: keep sampling a prompt until this many samples pass (None: keep the first `n`).")
    max_samples_per_prompt: int = Field(default=16, ge=1, description="Rejection sampling budget: samples drawn per prompt at most.")
    keep_rejected: bool = Field(default=True, description="Write rejected samples too (verified=False) so training can filter; False drops them.")

    @model_validator(mode="after")
    def _callable_needs_function(self) -> "VerifyConfig":
        if self.method == "callable" and not self.function:
            raise ValueError("method=callable needs `function: package.module:name`")
        return self


class StorageConfig(StrictModel):
    """Object-store connection settings. Credentials come from the environment, never from here."""

    endpoint_url: str | None = Field(default=None, description="S3 endpoint (e.g. a MinIO or moto server); None means AWS.")
    region: str | None = Field(default=None, description="S3 region.")
    anonymous: bool = Field(default=False, description="Access the bucket without credentials.")
    max_retries: int = Field(default=8, ge=0, description="Retries on 5xx, SlowDown, throttling and timeouts (exponential backoff).")


class OutputConfig(StrictModel):
    """Where and how shards are written."""

    uri: str = Field(default="runs/{run_id}", description="Output root, a local folder or s3://bucket/prefix; `{run_id}` is substituted.")
    prompts_per_shard: int = Field(default=256, gt=0, description="Prompts per work unit, hence per shard; size shards for readers (128-512 MB in production).")
    compression: Literal["zstd", "snappy", "none"] = Field(default="zstd", description="Parquet compression codec.")
    compression_level: int | None = Field(default=3, description="Codec level (zstd: 1-22).")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Object-store settings.")


class FaultRule(StrictModel):
    """One injected failure: what happens to a request (or shard) whose prompt contains `marker`."""

    action: Literal["engine_dead", "engine_failure", "hang", "exit", "exit_before_commit"] = Field(description="`engine_dead`: kill the engine's own processes so the engine reports itself dead (vLLM: EngineDeadError); `engine_failure`: raise EngineFailure; `hang`: the request never returns; `exit`: the replica process exits at once (os._exit); `exit_before_commit`: the replica writes the shard's data object, then exits before committing it.")
    marker: str = Field(min_length=1, description="Fires for prompts whose text (any message) contains this string.")
    times: int | None = Field(default=None, ge=1, description="Fire only on the first `times` matching requests of the run, counted across replicas in `faults.state_dir`; None fires every time.")


class FaultsConfig(StrictModel):
    """Test hook, default off: configured fault injection for the chaos tests (tests/integration/test_chaos_*.py).

    Never set in production runs. It is not part of the config fingerprint, so a
    faulted run and its clean re-run share a run id and output root.
    """

    rules: list[FaultRule] = Field(default_factory=list, description="Injected failures; each prompt request is checked against every rule in order.")
    state_dir: str | None = Field(default=None, description="Local folder, shared by the replicas (one machine), that counts firings of rules with `times`.")

    @model_validator(mode="after")
    def _times_need_state(self) -> "FaultsConfig":
        counted = [i for i, r in enumerate(self.rules) if r.times is not None]
        if counted and not self.state_dir:
            raise ValueError(f"rules {counted} set `times` but `state_dir` is empty; set faults.state_dir to a local "
                             "folder the replicas share, or drop `times` to fire every time")
        return self


class GenerationConfig(StrictModel):
    """The whole generation job: prompts -> teacher replicas -> verified traces -> committed shards."""

    run_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", description="Run id; default is derived from the config fingerprint, so re-running a config resumes it.")
    prompts: PromptsConfig = Field(description="Prompt source.")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="Teacher model and engine.")
    replicas: ReplicasConfig = Field(default_factory=ReplicasConfig, description="Teacher replica pool.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Sampling parameters.")
    verify: VerifyConfig = Field(default_factory=VerifyConfig, description="Verification and rejection sampling.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Shard output.")
    faults: FaultsConfig | None = Field(default=None, description="Test hook (default off): injected replica and engine failures for the chaos tests; see docs/RELIABILITY.md. Not part of the fingerprint.")

    def fingerprint(self) -> str:
        """Hash of everything that determines the traces (not where they go, not the pool size)."""
        parts = {
            "prompts": self.prompts.model_dump(),
            "teacher": self.teacher.model_dump(exclude={"gpu_memory_utilization", "max_num_seqs", "kv_cache_gib", "schedule"}),
            "sampling": self.sampling.model_dump(),
            "verify": self.verify.model_dump(),
            "prompts_per_shard": self.output.prompts_per_shard,
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def resolved_run_id(self) -> str:
        """The run id: the configured one, or `run-<fingerprint prefix>`."""
        return self.run_id or f"run-{self.fingerprint()[:12]}"
