"""Configs of the generation job (`potstill generate CONFIG.yaml`).

`GenerationConfig` is composed of one small config per component — prompts,
teacher, replicas, sampling, verification, output — each owned by the stage
that reads it, so no stage sees a god config.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import AwareDatetime, Field, model_validator

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


class ApiPriceConfig(StrictModel):
    """What an API teacher charges, from the provider's price list."""

    input_usd_per_million: float = Field(default=0.0, ge=0, description="US dollars per million input (prompt) tokens.")
    output_usd_per_million: float = Field(default=0.0, ge=0, description="US dollars per million output (completion) tokens, reasoning tokens included.")


class ApiConfig(StrictModel):
    """An OpenAI-compatible chat-completions endpoint (teacher.engine: openai): a `vllm serve` fleet, DeepSeek,
    Gemini's OpenAI-compatible API, OpenAI itself.

    The budgets below are the endpoint's (your API key's) totals: with several
    replicas each gets an equal share (total / replicas.max_replicas), so
    together they never pass them. One replica drives many concurrent requests.
    """

    base_url: str = Field(description="Endpoint root up to and including the API version, e.g. `https://api.deepseek.com/v1` or `http://127.0.0.1:8000/v1`; `/chat/completions` is appended.")
    api_key_env: str | None = Field(default=None, description="Name of the environment variable holding the API key (read in each replica's process; on a cluster set it in the pods' environment). The key itself never goes into a config, log or record.")
    api_key_file: str | None = Field(default=None, description="File holding the API key (e.g. a mounted Kubernetes secret), read in each replica's process; use instead of api_key_env.")
    max_concurrency: int = Field(default=64, ge=1, description="Requests in flight at once, all replicas together.")
    requests_per_minute: float | None = Field(default=None, gt=0, description="Requests-per-minute budget, all replicas together (retries count: providers count them too). Requests are spaced evenly, so no 60 s window holds more. None: unlimited.")
    tokens_per_minute: float | None = Field(default=None, gt=0, description="Tokens-per-minute budget (input + output), all replicas together; a request reserves its expected tokens and settles with the usage the server reports. None: unlimited.")
    supports_n: bool = Field(default=True, description="The server returns `n` choices per request; False sends n separate requests instead (some providers ignore or refuse `n`).")
    timeout_s: float = Field(default=600.0, gt=0, description="Seconds one HTTP request may take before it counts as failed and is retried.")
    max_retries: int = Field(default=8, ge=0, description="Retries of one request on 429, 5xx, timeouts and dropped connections (exponential backoff, honouring Retry-After); after them the replica counts as broken and is replaced.")
    return_token_ids: bool = Field(default=False, description="Ask the server for the completion's token ids and logprob tokens as ids (vLLM's `return_token_ids` / `return_tokens_as_token_ids`), so traces carry `completion_token_ids` and top-k ids for KD. vLLM servers only.")
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = Field(default="max_tokens", description="Request field that carries sampling.max_tokens (OpenAI's reasoning models accept only `max_completion_tokens`).")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="Extra request fields passed through verbatim (e.g. `reasoning_effort`, `chat_template_kwargs`).")
    price: ApiPriceConfig = Field(default_factory=ApiPriceConfig, description="The provider's token prices, for the run report, dry-run estimates and budget.max_usd.")

    @model_validator(mode="after")
    def _key_and_url(self) -> "ApiConfig":
        if self.api_key_env and self.api_key_file:
            raise ValueError("set one of api_key_env or api_key_file, not both")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url {self.base_url!r} is not an http(s) URL; use e.g. https://api.deepseek.com/v1")
        if self.base_url.rstrip("/").endswith("/chat/completions"):
            raise ValueError(f"base_url {self.base_url!r} names the route; give the root (without /chat/completions)")
        return self

    def fingerprint_dict(self) -> dict[str, Any]:
        """What of the endpoint changes the traces (not where it is, how fast, or what it costs)."""
        return {"return_token_ids": self.return_token_ids, "extra_body": self.extra_body}


VLLM_ONLY_TEACHER_FIELDS = ("tokenizer", "chat_template", "dtype", "max_model_len", "tensor_parallel_size",
                            "gpu_memory_utilization", "max_num_seqs", "kv_cache_gib", "schedule", "seed", "engine_kwargs")
"""TeacherConfig fields that build a local vLLM engine; an API teacher's server decides them itself."""


class TeacherConfig(StrictModel):
    """The teacher model and how each replica's engine is built."""

    engine: Literal["vllm", "openai"] = Field(default="vllm", description="Engine behind the TeacherEngine protocol: `vllm` (a local vLLM engine in each replica) or `openai` (an OpenAI-compatible endpoint, configured in `api`).")
    model: str = Field(default=SHIPPED_TEACHER, description=f"Model path or name; `{SHIPPED_TEACHER}` is the tiny teacher shipped with potstill. For engine openai: the name the endpoint serves (e.g. `deepseek-reasoner`).")
    revision: str | None = Field(default=None, description="Model revision; defaults to a content hash of the local model folder (an API model: recorded as given, e.g. a dated model version).")
    tokenizer: str | None = Field(default=None, description="Tokenizer path if not the model's.")
    chat_template: str | None = Field(default=None, description="Jinja chat template overriding the tokenizer's (inline text).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(default="auto", description="Weights and activations dtype.")
    max_model_len: int | None = Field(default=None, gt=0, description="Context length cap (prompt + completion).")
    tensor_parallel_size: int = Field(default=1, ge=1, description="GPUs per pipeline stage of a replica for tensor parallelism (one placement group bundle each, packed on one node).")
    pipeline_parallel_size: int = Field(default=1, ge=1, description="Pipeline stages per replica (vLLM pipeline_parallel_size); a replica then takes tensor_parallel_size x pipeline_parallel_size GPU bundles, which may span nodes.")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, description="Fraction of GPU memory vLLM may use.")
    max_num_seqs: int | None = Field(default=None, gt=0, description="Engine batch size cap (vLLM max_num_seqs).")
    kv_cache_gib: float | None = Field(default=None, gt=0, description="KV cache size in GiB (vLLM kv_cache_memory_bytes). None: vLLM sizes it from gpu_memory_utilization, which on CPU claims that fraction of the machine's memory and refuses to start when less is free (checked before the engine starts, with the numbers); set it for CPU runs and small models.")
    schedule: Literal["longest_first", "fcfs"] = Field(default="longest_first", description="Order in which the engine starts waiting requests. `longest_first`: the largest max_tokens first (vLLM priority scheduling), so the long generations run beside the short ones instead of trailing alone at the end (more output tokens/s on skewed budgets: docs/PERFORMANCE.md); equal budgets keep arrival order. `fcfs`: arrival order (vLLM's default).")
    seed: int = Field(default=0, description="Engine seed (per-request seeds are not supported on CPU).")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra vLLM engine arguments passed through verbatim.")
    api: ApiConfig | None = Field(default=None, description="The endpoint of an `openai` teacher (required for it; refused for vllm).")

    @model_validator(mode="after")
    def _engine_fields(self) -> "TeacherConfig":
        if self.engine == "vllm":
            if self.api is not None:
                raise ValueError("`api` configures an openai teacher, but engine is vllm; set `engine: openai` or remove `api`")
            return self
        if self.api is None:
            raise ValueError("engine openai needs `api` with at least `base_url` (e.g. api: {base_url: http://127.0.0.1:8000/v1})")
        changed = [name for name in VLLM_ONLY_TEACHER_FIELDS if _differs_from_default(self, name)]
        if changed:
            raise ValueError(f"{', '.join(changed)} configure a local vLLM engine; an openai teacher's server decides "
                             "them itself: remove them (or set `engine: vllm`)")
        return self


def _differs_from_default(model: StrictModel, name: str) -> bool:
    info = type(model).model_fields[name]
    default = info.default_factory() if info.default_factory is not None else info.default
    return getattr(model, name) != default


class ReplicaPriceConfig(StrictModel):
    """What a self-hosted replica costs while it lives, for the run report and budget.max_usd."""

    usd_per_gpu_hour: float = Field(default=0.0, ge=0, description="US dollars per GPU-hour (your cloud's on-demand or reserved price). A replica is charged from its creation to its end for every GPU it holds.")
    usd_per_cpu_hour: float = Field(default=0.0, ge=0, description="US dollars per CPU-hour of the CPUs each replica reserves (replicas.cpus_per_replica); for CPU-only teachers, or to add a node's CPU share.")


class AutoscaleConfig(StrictModel):
    """How the controller sizes the replica pool between `replicas.min_replicas` and `max_replicas`.

    The target is the backlog (prompts not yet done x completion tokens per
    prompt, learned from this run's committed shards) divided by the measured
    tokens/s of one replica and by `backlog_s_per_replica` (or by the time left
    until `finish_by`). Replicas with nothing left to do are drained after
    `idle_s`. `potstill scale RUN --replicas N` fixes the count instead;
    `--min/--max` return to autoscaling within new bounds.
    """

    backlog_s_per_replica: float = Field(default=600, gt=0, description="Seconds of queued work one replica may hold before another is started (at the measured tokens/s). Lower scales out sooner; each new replica pays an engine start.")
    finish_by: AwareDatetime | None = Field(default=None, description="Optional deadline (ISO 8601 with a time zone, e.g. 2026-12-01T18:00:00Z): enough replicas (up to max_replicas) to finish the backlog by then at the measured speed.")
    scale_up_cooldown_s: float = Field(default=30, ge=0, description="Least time between two scale-ups (a new replica needs time to start before its effect shows).")
    scale_down_cooldown_s: float = Field(default=60, ge=0, description="Least time between two scale-downs, and after a scale-up before a scale-down.")
    idle_s: float = Field(default=30, ge=0, description="A replica with nothing in flight while no prompt waits is drained after this long (down to min_replicas).")
    request_resources: bool = Field(default=True, description="Ask the Ray autoscaler (KubeRay) for the bundles of replicas that cannot be placed yet (ray.autoscaler.sdk.request_resources); released when none is pending and when the run ends. Harmless on a cluster without an autoscaler.")


class ReplicasConfig(StrictModel):
    """The teacher replica pool the controller owns."""

    min_replicas: int = Field(default=1, ge=1, description="Replicas started at the beginning and kept at least.")
    max_replicas: int = Field(default=1, ge=1, description="Upper bound for scale-up on backlog (replicas beyond what the cluster can place wait as pending, not failures).")
    autoscale: AutoscaleConfig = Field(default_factory=AutoscaleConfig, description="Backlog autoscaling between min_replicas and max_replicas.")
    cpus_per_replica: float = Field(default=1, ge=0, description="CPUs reserved by each replica actor; a CPU-only engine computes with this many threads (Ray sets the actor's OMP_NUM_THREADS from it).")
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
    drain_margin_s: float = Field(default=10, ge=0, description="When a node drains (spot preemption), units still running on its replicas this long before the node's deadline are requeued elsewhere, unblamed.")
    node_poll_s: float = Field(default=2, gt=0, description="How often the controller asks the cluster which nodes drain and where pending replicas stand.")
    start_backoff_s: float = Field(default=60, gt=0, description="After max_attempts replica starts fail in a row while other replicas work, the next start waits this long (doubling, up to 10x): a bad node slows the pool's growth instead of stopping a healthy run.")
    split_into: int = Field(default=2, ge=2, description="A unit that failed alone re-runs as this many sub-units (recursively: bisection) so one poison prompt cannot fail its neighbours; larger isolates it in fewer replica restarts, smaller in fewer alone-runs.")
    price: ReplicaPriceConfig = Field(default_factory=ReplicaPriceConfig, description="What each replica costs per hour (self-hosted teachers; an API teacher's tokens are priced in teacher.api.price).")

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
    timeout_s: float = Field(default=1.0, gt=0, description="CPU seconds a `math` or `callable` verdict may use (or 20x that in wall time); one still running then (an answer sympy cannot finish, e.g. \\boxed{9^{9^{9^{9}}}}) is judged False and its worker process replaced. Verdicts run in their own process, so a slow one never holds the replica's event loop, and CPU time does not grow when the machine is busy.")

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

    action: Literal["engine_dead", "engine_failure", "hang", "hold", "exit", "exit_before_commit"] = Field(description="`engine_dead`: kill the engine's own processes so the engine reports itself dead (vLLM: EngineDeadError); `engine_failure`: raise EngineFailure; `hang`: the request never returns; `hold`: the request waits until `release_file` exists, then runs normally (a gate a test opens once it has seen what it waits for); `exit`: the replica process exits at once (os._exit); `exit_before_commit`: the replica writes the shard's data object, then exits before committing it.")
    marker: str = Field(min_length=1, description="Fires for prompts whose text (any message) contains this string.")
    times: int | None = Field(default=None, ge=1, description="Fire only on the first `times` matching requests of the run, counted across replicas in `faults.state_dir`; None fires every time.")
    release_file: str | None = Field(default=None, description="For `hold`: the file (relative to faults.state_dir) whose creation releases held requests.")

    @model_validator(mode="after")
    def _hold_needs_release(self) -> "FaultRule":
        if (self.action == "hold") != (self.release_file is not None):
            raise ValueError("action `hold` needs `release_file` (and only `hold` takes one): the file whose creation "
                             "releases the held requests")
        return self


class FaultsConfig(StrictModel):
    """Test hook, default off: configured fault injection for the chaos tests (tests/integration/test_chaos_*.py).

    Never set in production runs. It is not part of the config fingerprint, so a
    faulted run and its clean re-run share a run id and output root.
    """

    rules: list[FaultRule] = Field(default_factory=list, description="Injected failures; each prompt request is checked against every rule in order.")
    state_dir: str | None = Field(default=None, description="Local folder, shared by the replicas (one machine), that counts firings of rules with `times`.")

    @model_validator(mode="after")
    def _times_need_state(self) -> "FaultsConfig":
        counted = [i for i, r in enumerate(self.rules) if r.times is not None or r.action == "hold"]
        if counted and not self.state_dir:
            raise ValueError(f"rules {counted} set `times` or `hold` but `state_dir` is empty; set faults.state_dir to a "
                             "local folder the replicas share, or drop `times` to fire every time")
        return self


class BudgetConfig(StrictModel):
    """A spending cap for the whole run (all invocations of the same run id together)."""

    max_usd: float | None = Field(default=None, gt=0, description="Stop dispatching work once the spend so far plus the work in flight and the next unit would pass this many US dollars; what is done is committed and the run can resume with a larger budget. Needs a price (teacher.api.price or replicas.price). None: no cap.")


class GenerationConfig(StrictModel):
    """The whole generation job: prompts -> teacher replicas -> verified traces -> committed shards."""

    run_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", description="Run id; default is derived from the config fingerprint, so re-running a config resumes it.")
    prompts: PromptsConfig = Field(description="Prompt source.")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="Teacher model and engine.")
    replicas: ReplicasConfig = Field(default_factory=ReplicasConfig, description="Teacher replica pool.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Sampling parameters.")
    verify: VerifyConfig = Field(default_factory=VerifyConfig, description="Verification and rejection sampling.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Shard output.")
    budget: BudgetConfig = Field(default_factory=BudgetConfig, description="Spending cap (not part of the fingerprint: a re-run with a larger budget resumes the run).")
    faults: FaultsConfig | None = Field(default=None, description="Test hook (default off): injected replica and engine failures for the chaos tests; see docs/RELIABILITY.md. Not part of the fingerprint.")

    @model_validator(mode="after")
    def _engine_resources_and_prices(self) -> "GenerationConfig":
        api = self.teacher.api
        if api is not None:  # engine openai (TeacherConfig checked the pairing)
            if self.replicas.gpus_per_replica:
                raise ValueError(f"replicas.gpus_per_replica ({self.replicas.gpus_per_replica:g}): an openai teacher's "
                                 "replicas are HTTP clients and hold no GPU; remove it")
            if self.replicas.accelerator_type:
                raise ValueError("replicas.accelerator_type: an openai teacher's replicas hold no accelerator; remove it")
            if self.replicas.price.usd_per_gpu_hour:
                raise ValueError("replicas.price.usd_per_gpu_hour: an openai teacher's replicas hold no GPU; price its "
                                 "tokens in teacher.api.price instead")
            if self.sampling.logprobs and not api.return_token_ids:
                raise ValueError(f"sampling.logprobs ({self.sampling.logprobs}) keeps top-k token ids, but an API names "
                                 "tokens by text; set teacher.api.return_token_ids: true (vLLM servers return ids) or "
                                 "sampling.logprobs: 0")
        priced = (self.replicas.price.usd_per_gpu_hour or self.replicas.price.usd_per_cpu_hour
                  or (api is not None and (api.price.input_usd_per_million or api.price.output_usd_per_million)))
        if self.budget.max_usd is not None and not priced:
            raise ValueError(f"budget.max_usd ({self.budget.max_usd:g}) needs a price to count spend against: set "
                             "teacher.api.price (an openai teacher) or replicas.price (self-hosted)")
        return self

    def fingerprint(self) -> str:
        """Hash of everything that determines the traces (not where they go, the pool size, prices or the budget)."""
        parts = {
            "prompts": self.prompts.model_dump(),
            "teacher": self.teacher.model_dump(exclude={"gpu_memory_utilization", "max_num_seqs", "kv_cache_gib", "schedule",
                                                        "pipeline_parallel_size", "api"}),
            "sampling": self.sampling.model_dump(),
            "verify": self.verify.model_dump(),
            "prompts_per_shard": self.output.prompts_per_shard,
        }
        if self.teacher.api is not None:  # absent for vllm teachers, so their fingerprints (and run ids) are unchanged
            parts["teacher_api"] = self.teacher.api.fingerprint_dict()
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def resolved_run_id(self) -> str:
        """The run id: the configured one, or `run-<fingerprint prefix>`."""
        return self.run_id or f"run-{self.fingerprint()[:12]}"
