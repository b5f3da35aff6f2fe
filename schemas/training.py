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
    verified_only: bool = Field(default=True, description="Keep only rows whose verifier said True.")
    require_stop: bool = Field(default=True, description="Keep only rows with finish_reason == stop.")
    max_completion_tokens: int | None = Field(default=None, gt=0, description="Drop rows with longer completions.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Object-store settings for s3:// runs.")


class StudentConfig(StrictModel):
    """The student model: a local Hugging Face folder, or a fresh Llama of the given size."""

    model: str | None = Field(default=None, description="Hugging Face folder to start from; None builds a fresh model from the fields below.")
    tokenizer: str | None = Field(default=None, description="Tokenizer folder; default the model's, or the teacher's for a fresh student.")
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
    grad_accum_steps: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    seed: int = Field(default=0, description="Seed of model init and data order: without run.max_steps or data.follow, the same seed and data train the same student.")


class StrategyConfig(StrictModel):
    """Data-parallel strategy and precision."""

    kind: Literal["ddp", "fsdp"] = Field(default="ddp", description="DDP replicates the model; FSDP shards it (large students).")
    precision: Literal["auto", "fp32", "bf16"] = Field(default="auto", description="`auto`: bf16 on GPU, fp32 on CPU.")


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


class EvalConfig(StrictModel):
    """Scoring of the final student after training (`potstill train`), in vLLM with the verifiers, as `potstill eval` does."""

    prompts: str | None = Field(default=None, description="Held-out prompts: `arithmetic:N` (N fresh additions) or a JSONL/Parquet file, local or s3://; prompts whose question is in data.runs are left out. None: no evaluation.")
    prompt_field: str = Field(default="prompt", min_length=1, description="Column of a prompts file with the prompt text.")
    reference_field: str = Field(default="answer", min_length=1, description="Column of a prompts file with the reference answer.")
    count: int | None = Field(default=None, gt=0, description="Score at most this many prompts; None: all of the file (or N).")
    method: Literal["math", "exact"] = Field(default="math", description="Verifier used to score answers.")
    max_tokens: int = Field(default=256, gt=0, description="Completion budget per prompt.")


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
