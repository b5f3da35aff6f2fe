"""Plan a generation job: teacher replicas that fit, KV cache per replica, tokens/s at a stated per-GPU rate.

    plan = plan_generation(cfg, shape, GenAssumptions(gpu="H200-141GB", gpus=16, tokens_per_s_per_gpu=1500))
    plan.replicas, plan.kv_cache_tokens, plan.tokens_per_s, plan.problems

A replica holds `teacher.tensor_parallel_size` GPUs (or
`replicas.gpus_per_replica`). On each, vLLM may use `gpu_memory_utilization`
of the memory: the weights' share (parameters x bytes per parameter / tensor
parallel size), a reserve for activations and CUDA graphs
(`VLLM_RESERVE_BYTES`), and the rest is KV cache. Dense models split their KV
heads over the GPUs of a replica (a head is never split: with fewer KV heads
than GPUs each GPU holds one); DeepSeek's latent attention keeps the whole
compressed KV on every GPU. A replica must hold at least one sequence of the
longest length it serves (`teacher.max_model_len`, else prompt + max_tokens).
Expected tokens/s is replicas x GPUs per replica x the stated per-GPU rate;
completions are assumed to use `mean_completion_tokens` on average.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from potstill.pipelines.planning.hardware import GiB, gpu
from potstill.pipelines.planning.shapes import ModelShape

if TYPE_CHECKING:
    from potstill.schemas.generation import GenerationConfig

VLLM_RESERVE_BYTES = 4 * GiB
"""Per GPU: activations of a full scheduler step, CUDA graphs, NCCL buffers."""
PROMPT_TOKENS = 512
"""Prompt length a plan assumes when it sizes a sequence and the config has no max_model_len."""
DTYPE_BYTES = {"bfloat16": 2.0, "float16": 2.0, "float32": 4.0}


ACCELERATORS = {"H100": "H100-80GB", "H200": "H200-141GB", "A100": "A100-80GB", "A100-80G": "A100-80GB",
                "A100-40G": "A100-40GB", "L40S": "L40S-48GB", "B200": "B200-180GB"}
"""Ray accelerator types (replicas.accelerator_type) and the GPU a plan assumes for them."""


def gpu_of_accelerator(accelerator: str | None) -> str:
    """The planning GPU of a Ray accelerator type (default H100-80GB)."""
    return ACCELERATORS.get(accelerator or "H100", accelerator or "H100-80GB")


@dataclass(frozen=True)
class GenAssumptions:
    """What a generation plan assumes (stated in its output)."""

    gpu: str | None = None
    """Default: replicas.accelerator_type's GPU, else H100-80GB."""
    gpus: int | None = None
    """GPUs the cluster can give the teacher; default max_replicas x GPUs per replica."""
    tokens_per_s_per_gpu: float = 1000.0
    mean_completion_tokens: int | None = None
    """Default: half of sampling.max_tokens."""
    prompts: int | None = None
    """Prompts in the run, when the config's prompt source cannot be counted from here."""
    usd_per_gpu_hour: float = 2.5


@dataclass
class GenPlan:
    """The plan of one generation job."""

    teacher: str
    engine: str
    gpu: str
    gpus_per_replica: int
    replicas: int
    gpus: int
    weights_per_gpu: int
    kv_cache_per_replica: int
    kv_cache_tokens: int
    max_sequence_tokens: int
    sequences_at_full_length: int
    tokens_per_s: float
    prompts: int | None
    samples: tuple[int, int] | None
    completion_tokens: int | None
    hours: float | None
    usd: float | None
    assumptions: GenAssumptions
    problems: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        a = self.assumptions
        return {
            "kind": "generation", "teacher": self.teacher, "engine": self.engine, "gpu": self.gpu,
            "gpus_per_replica": self.gpus_per_replica, "replicas": self.replicas, "gpus": self.gpus,
            "weights_gib_per_gpu": round(self.weights_per_gpu / GiB, 2),
            "kv_cache_gib_per_replica": round(self.kv_cache_per_replica / GiB, 2), "kv_cache_tokens": self.kv_cache_tokens,
            "max_sequence_tokens": self.max_sequence_tokens, "sequences_at_full_length": self.sequences_at_full_length,
            "tokens_per_s": self.tokens_per_s, "tokens_per_s_per_gpu": a.tokens_per_s_per_gpu,
            "prompts": self.prompts, "samples": list(self.samples) if self.samples else None,
            "completion_tokens": self.completion_tokens,
            "hours": round(self.hours, 2) if self.hours is not None else None,
            "usd": round(self.usd, 2) if self.usd is not None else None,
            "usd_per_gpu_hour": a.usd_per_gpu_hour, "fits": self.fits, "problems": self.problems,
        }


def _samples(cfg: "GenerationConfig", prompts: int | None) -> tuple[int, int] | None:
    """(fewest, most) samples the run draws: `n` per prompt, or with rejection sampling from accept_per_prompt
    up to max_samples_per_prompt."""
    if prompts is None:
        return None
    v = cfg.verify
    if v.accept_per_prompt:
        return prompts * v.accept_per_prompt, prompts * max(v.max_samples_per_prompt, cfg.sampling.n)
    return prompts * cfg.sampling.n, prompts * cfg.sampling.n


def plan_generation(cfg: "GenerationConfig", shape: ModelShape | None, a: GenAssumptions) -> GenPlan:
    """The plan of `cfg` under `a`; `problems` name the config fields to change when a replica cannot fit."""
    t = cfg.teacher
    engine = getattr(t, "engine", "vllm")
    prompts = a.prompts
    samples = _samples(cfg, prompts)
    mean = a.mean_completion_tokens or cfg.sampling.max_tokens // 2
    completion = samples[1] * mean if samples else None
    if engine != "vllm" or shape is None:  # an API teacher: no GPUs here, paced by its rate limits
        rpm = getattr(getattr(t, "api", None), "requests_per_minute", None)
        hours = samples[1] / rpm / 60 if samples and rpm else None
        return GenPlan(t.model, engine, a.gpu or "-", 0, 0, 0, 0, 0, 0, 0, 0, 0.0, prompts, samples, completion, hours, None, a)
    hw = gpu(a.gpu or gpu_of_accelerator(cfg.replicas.accelerator_type))
    tp = t.tensor_parallel_size
    per_replica = int(cfg.replicas.gpus_per_replica or tp)
    gpus = a.gpus or cfg.replicas.max_replicas * per_replica
    weight_bytes = DTYPE_BYTES.get(t.dtype, shape.weight_bytes)
    weights = shape.params * weight_bytes / tp
    budget = t.gpu_memory_utilization * hw.memory_bytes - weights - VLLM_RESERVE_BYTES
    if shape.mla:
        kv_token = shape.kv_bytes_per_token()  # the compressed latent: whole on every GPU of the replica
    else:
        kv_token = shape.kv_bytes_per_token() * max(1, math.ceil(shape.kv_heads / tp)) / shape.kv_heads
    kv_tokens = max(0, int(budget // kv_token))
    seq = t.max_model_len or PROMPT_TOKENS + cfg.sampling.max_tokens
    replicas = min(cfg.replicas.max_replicas, gpus // per_replica)
    problems = []
    if budget <= 0:
        room = t.gpu_memory_utilization * hw.memory_bytes - VLLM_RESERVE_BYTES - seq * shape.kv_bytes_per_token()
        need = 2 ** math.ceil(math.log2(shape.params * weight_bytes / room)) if room > 0 else None  # TP divides the heads
        problems.append(f"the teacher's weights take {weights / GiB:.1f} GiB per GPU at tensor_parallel_size {tp}, more "
                        f"than {t.gpu_memory_utilization:.0%} of a {hw.name} leaves for a KV cache; "
                        + (f"set teacher.tensor_parallel_size: {need} (and replicas.gpus_per_replica), or " if need else "")
                        + "a GPU with more memory (replicas.accelerator_type)")
    elif kv_tokens < seq:
        problems.append(f"a replica's KV cache holds {kv_tokens} tokens, less than one sequence of {seq}; lower "
                        "teacher.max_model_len (or sampling.max_tokens), or raise teacher.tensor_parallel_size or "
                        "teacher.gpu_memory_utilization")
    if replicas < 1:
        problems.append(f"a replica needs {per_replica} GPUs but {gpus} are available; lower "
                        "teacher.tensor_parallel_size (replicas.gpus_per_replica) or plan with more GPUs")
    rate = replicas * per_replica * a.tokens_per_s_per_gpu
    hours = completion / rate / 3600 if completion and rate else None
    usd = hours * replicas * per_replica * a.usd_per_gpu_hour if hours is not None else None
    return GenPlan(t.model, engine, hw.name, per_replica, max(replicas, 0), max(replicas, 0) * per_replica,
                   int(weights), int(max(budget, 0) * per_replica), kv_tokens, seq, kv_tokens // seq if seq else 0,
                   rate, prompts, samples, completion, hours, usd, a, problems)
