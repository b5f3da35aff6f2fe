"""Configs of the distillation job (`potstill train CONFIG.yaml`).

`TrainingConfig` composes per-component configs: which traces to read, the
student, packing, the loss mix (SFT and sparse top-k KD), the optimizer and
schedule, the parallel strategy, checkpoints and the Ray Train scaling.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from potstill.schemas.base import StrictModel
from potstill.schemas.generation import StorageConfig


class TraceDataConfig(StrictModel):
    """Which committed traces to train on."""

    runs: list[str] = Field(min_length=1, description="Generation run output roots (local folders or s3:// URIs); only committed shards are read.")
    follow: bool = Field(default=False, description="Train on a live run: pick up shards as they commit, stop when `_SUCCESS` appears.")
    follow_poll_s: float = Field(default=2.0, gt=0, description="With follow: seconds between polls of the runs' commits.")
    follow_idle_timeout_s: float = Field(default=1800, gt=0, description="With follow: a run without `_SUCCESS` that has committed nothing for this long (by the store's clock, so a restarted job does not wait again) is taken for dead and training stops with the fix: re-run its generation with the same run id, then this job; checkpoints are kept. Set it above your slowest shard's generation time.")
    verified_only: bool = Field(default=True, description="Keep only rows whose verifier said True.")
    require_stop: bool = Field(default=True, description="Keep only rows with finish_reason == stop.")
    max_completion_tokens: int | None = Field(default=None, gt=0, description="Drop rows with longer completions.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Object-store settings for s3:// runs.")


class StudentConfig(StrictModel):
    """The student model: a pretrained Hugging Face folder (local or s3://), or a fresh Llama of the given size."""

    model: str | None = Field(default=None, description="Pretrained Hugging Face folder to start from (local path or s3:// URI; any causal LM transformers loads, e.g. Llama, Qwen2, Qwen3, Mistral), with its own tokenizer and chat template; None builds a fresh model from the fields below.")
    tokenizer: str | None = Field(default=None, description="Tokenizer folder (local or s3://); default the model's, or the teacher's for a fresh student.")
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3"] = Field(default="auto", description="Attention kernel (transformers attn_implementation). `auto`: flash_attention_2 on GPU when the flash_attn package is installed, else sdpa. Packed documents never attend to each other with any of them (per-document position_ids).")
    hidden_size: int = Field(default=128, gt=0, description="Fresh student: hidden size.")
    num_layers: int = Field(default=1, gt=0, description="Fresh student: decoder layers.")
    num_heads: int = Field(default=2, gt=0, description="Fresh student: attention heads (head_dim = hidden/heads must be >= 64 for vLLM CPU).")
    intermediate_size: int = Field(default=512, gt=0, description="Fresh student: MLP width.")


class PackingConfig(StrictModel):
    """How traces are packed into fixed-size training sequences."""

    max_tokens: int = Field(default=1024, gt=0, description="Tokens per packed sequence.")
    enabled: bool = Field(default=True, description="Pack several traces per sequence (with per-document attention); False pads each trace.")


class LossConfig(StrictModel):
    """The training objective: completion-only SFT mixed with sparse top-k KD."""

    sft_weight: float = Field(default=1.0, ge=0, description="Weight of the completion-only cross-entropy.")
    kd_weight: float = Field(default=0.0, ge=0, description="Weight of the top-k KD loss (needs traces with logprobs and a shared tokenizer).")
    kd_temperature: float = Field(default=1.0, gt=0, description="Softmax temperature of the student in the KD term.")
    chunk_tokens: int | None = Field(default=None, gt=0, description="Positions whose logits exist at once while the loss is computed (the output projection, CE and KD run chunk by chunk; a [tokens x vocab] float32 tensor is never built). None: as many as fit 256 MiB of [chunk x vocab] float32 buffers.")

    @model_validator(mode="after")
    def _some_loss(self) -> "LossConfig":
        if self.sft_weight == 0 and self.kd_weight == 0:
            raise ValueError("sft_weight and kd_weight are both 0; set at least one above 0")
        return self


class OptimConfig(StrictModel):
    """AdamW and the learning-rate schedule."""

    lr: float = Field(default=3e-3, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field(default=(0.9, 0.95), description="AdamW betas.")
    warmup_steps: int = Field(default=20, ge=0, description="Linear warm-up steps.")
    schedule: Literal["cosine", "constant", "linear"] = Field(default="cosine", description="Decay after warm-up.")
    grad_clip: float | None = Field(default=1.0, gt=0, description="Global gradient-norm clip; None disables.")


class RunLengthConfig(StrictModel):
    """How long to train and how big each step is."""

    epochs: int = Field(default=1, ge=1, description="Passes over the data.")
    max_steps: int | None = Field(default=None, gt=0, description="Stop after this many optimizer steps.")
    micro_batch_size: int = Field(default=8, gt=0, description="Packed sequences per worker per forward pass.")
    grad_accum_steps: int = Field(default=1, ge=1, description="Micro-batches per optimizer step (leave at 1 when global_batch_size is set).")
    global_batch_size: int | None = Field(default=None, gt=0, description="Packed sequences per optimizer step, all workers together; gradient accumulation becomes global_batch_size / (micro_batch_size x scaling.num_workers), so the same config trains the same steps on any worker count (and a checkpoint resumes on another worker count with the same batches).")
    seed: int = Field(default=0, description="Seed of model init and data order: without run.max_steps or data.follow, the same seed and data train the same student.")

    @model_validator(mode="after")
    def _one_batch_definition(self) -> "RunLengthConfig":
        if self.global_batch_size is not None and self.grad_accum_steps != 1:
            raise ValueError(f"global_batch_size ({self.global_batch_size}) and grad_accum_steps ({self.grad_accum_steps}) "
                             "both set the step size; set one (gradient accumulation follows from global_batch_size)")
        return self


class StrategyConfig(StrictModel):
    """Data-parallel strategy, precision and memory savers."""

    kind: Literal["ddp", "fsdp"] = Field(default="ddp", description="DDP replicates the model; FSDP (torch FSDP2, `fully_shard` per decoder layer) shards parameters, gradients and optimizer state, and builds a pretrained student on the meta device and loads it shard by shard, so no worker ever holds the whole model (large students).")
    precision: Literal["auto", "fp32", "bf16"] = Field(default="auto", description="`auto`: bf16 on GPU, fp32 on CPU. bf16 under FSDP: bf16 parameters for compute with fp32 sharded master weights and fp32 gradient reduction (FSDP2 MixedPrecisionPolicy); under DDP: bf16 autocast over fp32 weights.")
    activation_checkpointing: bool = Field(default=False, description="Recompute each decoder layer's activations in the backward pass instead of keeping them (keeps only the layer inputs: long sequences, large students).")
    cpu_offload: bool = Field(default=False, description="FSDP only: keep sharded parameters, gradients and optimizer state in host memory (FSDP2 CPUOffloadPolicy); the optimizer step runs on CPU. For students whose state does not fit the GPUs.")

    @model_validator(mode="after")
    def _offload_needs_fsdp(self) -> "StrategyConfig":
        if self.cpu_offload and self.kind != "fsdp":
            raise ValueError("cpu_offload: true needs kind: fsdp (DDP keeps a full copy per worker); set kind: fsdp or cpu_offload: false")
        return self


class TrainScalingConfig(StrictModel):
    """Ray Train workers."""

    num_workers: int = Field(default=2, ge=1, description="Training workers (one per GPU on a GPU cluster).")
    use_gpu: bool | None = Field(default=None, description="None: use GPUs when the cluster has them.")
    cpus_per_worker: float = Field(default=1, gt=0, description="CPUs per worker.")
    bind_cpu_cores: bool = Field(default=True, description="CPU training (no GPU): bind each worker on a node to cores of its own (local rank x cpus_per_worker), when the node has that many. Turn off when other CPU-heavy work, e.g. a CPU teacher, shares the node.")


class CheckpointConfig(StrictModel):
    """Where checkpoints go and how many are kept."""

    storage_path: str = Field(default="runs/train", description="Checkpoint root, local folder or s3:// URI (Ray Train RunConfig.storage_path).")
    every_steps: int = Field(default=100, gt=0, description="Checkpoint every this many optimizer steps (and at the end of each epoch).")
    keep: int = Field(default=2, ge=1, description="Checkpoints kept (Ray Train CheckpointConfig.num_to_keep).")
    max_failures: int = Field(default=2, ge=0, description="Worker-group restarts from the last checkpoint before the job fails.")
    resume_from: str | None = Field(default=None, description="A checkpoint folder (local or s3://, e.g. another job's `<storage_path>/<name>/checkpoint_000000100`) to start from when this job has no checkpoint of its own yet: model, optimizer, schedule position and data position, on any worker count.")
    async_save: bool = Field(default=True, description="Write checkpoints in the background (torch.distributed.checkpoint.async_save): training goes on once the state is copied to host memory; a checkpoint is registered (resumable) once written. The final checkpoint is always written synchronously.")
    export_dtype: Literal["auto", "float32", "bfloat16"] = Field(default="auto", description="dtype of the exported Hugging Face student; `auto`: bfloat16 when training in bf16, else float32.")


class EvalConfig(StrictModel):
    """Scoring of the final student after training (`potstill train`), in vLLM with the verifiers, as `potstill eval` does."""

    prompts: str | None = Field(default=None, description="Held-out prompts: `arithmetic:N` (N fresh additions) or a JSONL/Parquet file, local or s3://; prompts whose question is in data.runs are left out. None: no evaluation.")
    prompt_field: str = Field(default="prompt", min_length=1, description="Column of a prompts file with the prompt text.")
    reference_field: str = Field(default="answer", min_length=1, description="Column of a prompts file with the reference answer.")
    count: int | None = Field(default=None, gt=0, description="Score at most this many prompts; None: all of the file (or N).")
    method: Literal["math", "exact"] = Field(default="math", description="Verifier used to score answers.")
    max_tokens: int = Field(default=256, gt=0, description="Completion budget per prompt.")


class TrainFaultConfig(StrictModel):
    """Test hook, default off: one training worker fails right after an optimizer step, once per job name
    (tests/integration/test_distill_job.py). Never set in production jobs; a resume may drop or change it."""

    step: int = Field(gt=0, description="Optimizer step after which the worker fails (before any checkpoint of that step).")
    rank: int = Field(default=0, ge=0, description="Rank of the worker that fails; must be below scaling.num_workers.")
    action: Literal["raise", "kill"] = Field(default="raise", description="`raise`: the training function raises (Ray Train restarts the group from the last checkpoint); `kill`: the worker process is SIGKILLed (a crash with no Python cleanup, what a lost node looks like).")


GPU_TYPES = ("H100-80GB", "H200-141GB", "A100-80GB", "A100-40GB", "L40S-48GB", "B200-180GB")


class TrainPlanConfig(StrictModel):
    """What `potstill plan` assumes for this job (hardware, speed, price, data size); training ignores it."""

    gpu: Literal[GPU_TYPES] = Field(default="H100-80GB", description="GPU type of the workers (one GPU per worker): memory and bf16 dense peak FLOP/s.")  # type: ignore[valid-type]
    mfu: float = Field(default=0.35, gt=0, le=1, description="Model FLOPs utilization the time estimate assumes (achieved / peak bf16 dense FLOP/s).")
    usd_per_gpu_hour: float = Field(default=2.5, ge=0, description="Price of one GPU-hour for the cost estimate.")
    traces: int | None = Field(default=None, gt=0, description="Traces expected after filtering, when data.runs cannot be read yet (a run's manifest gives the real count).")
    mean_trace_tokens: int | None = Field(default=None, gt=0, description="Mean tokens of a trace (prompt + completion) with the student's tokenizer, when data.runs cannot be read yet.")
    architecture: str | None = Field(default=None, description="Published model name whose shape to plan with (e.g. Qwen/Qwen2.5-32B-Instruct) when student.model's config.json is not readable from where `potstill plan` runs; default: matched from student.model's folder name.")


class TrainingConfig(StrictModel):
    """The whole distillation job: committed traces -> Ray Train -> student checkpoint and HF folder."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", description="Run name; re-running the same name resumes from its latest checkpoint.")
    data: TraceDataConfig = Field(description="Traces to train on.")
    student: StudentConfig = Field(default_factory=StudentConfig, description="Student model.")
    packing: PackingConfig = Field(default_factory=PackingConfig, description="Sequence packing.")
    loss: LossConfig = Field(default_factory=LossConfig, description="Loss mix.")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimizer and schedule.")
    run: RunLengthConfig = Field(default_factory=RunLengthConfig, description="Run length and batch sizes.")
    strategy: StrategyConfig = Field(default_factory=StrategyConfig, description="Parallel strategy and precision.")
    scaling: TrainScalingConfig = Field(default_factory=TrainScalingConfig, description="Ray Train workers.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="Checkpoints and fault tolerance.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Scoring of the final student after training (off unless eval.prompts is set).")
    plan: TrainPlanConfig = Field(default_factory=TrainPlanConfig, description="Assumptions of `potstill plan` (ignored by training).")
    faults: TrainFaultConfig | None = Field(default=None, description="Test hook: a worker that fails at a chosen step (fault-tolerance tests only).")

    @model_validator(mode="after")
    def _global_batch_divides(self) -> "TrainingConfig":
        g, m, w = self.run.global_batch_size, self.run.micro_batch_size, self.scaling.num_workers
        if g is not None and g % (m * w):
            raise ValueError(f"run.global_batch_size ({g}) is not a multiple of run.micro_batch_size ({m}) x "
                             f"scaling.num_workers ({w}) = {m * w}; change one of them so each worker accumulates a whole "
                             "number of micro-batches")
        return self

    @model_validator(mode="after")
    def _fault_rank_is_a_worker(self) -> "TrainingConfig":
        w = self.scaling.num_workers
        if self.faults is not None and self.faults.rank >= w:
            raise ValueError(f"faults.rank ({self.faults.rank}) is not a worker of scaling.num_workers ({w}); "
                             f"choose a rank below {w}")
        return self

    def grad_accum(self, num_workers: int | None = None) -> int:
        """Micro-batches per optimizer step on `num_workers` workers (default scaling.num_workers)."""
        w = num_workers or self.scaling.num_workers
        g = self.run.global_batch_size
        if g is None:
            return self.run.grad_accum_steps
        if g % (self.run.micro_batch_size * w):
            raise ValueError(f"run.global_batch_size ({g}) is not a multiple of run.micro_batch_size "
                             f"({self.run.micro_batch_size}) x {w} workers; change run.global_batch_size or the worker count")
        return g // (self.run.micro_batch_size * w)

    def global_batch(self, num_workers: int | None = None) -> int:
        """Packed sequences per optimizer step, all workers together."""
        w = num_workers or self.scaling.num_workers
        return self.run.global_batch_size or self.run.micro_batch_size * self.run.grad_accum_steps * w
