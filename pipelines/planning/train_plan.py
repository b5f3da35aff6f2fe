"""Plan a training job: per-GPU memory, tokens, steps, time at a stated MFU and cost, or why it cannot fit.

    plan = plan_training(cfg, shape, DataSize(traces=1000, mean_trace_tokens=4500, source="plan hints"))
    plan.fits, plan.memory, plan.hours, plan.problems          # problems name the config field to change

Memory per GPU follows the strategy the job would run (`parallel.py`):
- states: FSDP shards float32 master weights (4 B/param), float32 gradients
  (4 B) and AdamW's two moments (8 B) over the workers (`cpu_offload` moves
  them to host memory); DDP keeps all 16 B/param on every GPU;
- transient: under FSDP, the two largest decoder layers gathered at once
  (bf16 or fp32 copies, the next one prefetched), one layer's unsharded
  gradient (in compute dtype and float32 for the reduction), and the root's
  output projection and final norm, gathered for the whole step;
- the loss: the output projection's float32 weight gradient, the selected
  hidden states and their gradient, and 256 MiB of [chunk x vocab] buffers
  (`chunked_loss.py`; no logits tensor);
- activations of one micro-batch (`run.micro_batch_size` x `packing.max_tokens`
  tokens): with activation checkpointing the input of every decoder layer plus
  one layer's full activations (recomputed in backward); without, every layer's;
- a fixed runtime reserve (`hardware.RUNTIME_RESERVE_BYTES`).
Time is model FLOPs (6 x parameters per token plus causal attention within
documents; activation recomputation is not counted, it lowers the MFU a run
achieves) over GPUs x peak bf16 FLOP/s x `plan.mfu`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from potstill.pipelines.planning.hardware import GiB, RUNTIME_RESERVE_BYTES, gpu
from potstill.pipelines.planning.shapes import ModelShape

if TYPE_CHECKING:
    from potstill.schemas.training import TrainingConfig

PACKING_EFFICIENCY = 0.95
"""Document tokens per packed position assumed when the data is not packed yet (the demo packs at ~0.98)."""
LOSS_BUFFER_BYTES = 256 * 2**20


@dataclass(frozen=True)
class DataSize:
    """How much data the job trains on, and where the numbers came from."""

    traces: int
    mean_trace_tokens: float
    source: str


@dataclass
class TrainPlan:
    """The plan of one training job (bytes per GPU, counts, seconds, dollars)."""

    model: str
    params: int
    gpu: str
    gpus: int
    strategy: str
    precision: str
    activation_checkpointing: bool
    memory: dict[str, int]
    """Bytes per GPU by part (`total` included)."""
    memory_without_checkpointing: int
    memory_with_checkpointing: int
    host_memory: int
    """Bytes of host memory the offloaded states take, all workers together (0 without cpu_offload)."""
    gpu_memory: int
    tokens: int
    """Positions computed over the whole run (packed rows, padding included)."""
    steps: int
    global_batch: int
    flops: float
    mfu: float
    hours: float
    usd: float
    data: DataSize
    problems: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        gib = {k: round(v / GiB, 2) for k, v in self.memory.items()}
        return {
            "kind": "training", "model": self.model, "params": self.params, "gpu": self.gpu, "gpus": self.gpus,
            "strategy": self.strategy, "precision": self.precision,
            "activation_checkpointing": self.activation_checkpointing,
            "memory_gib_per_gpu": gib, "gpu_memory_gib": round(self.gpu_memory / GiB, 2),
            "memory_gib_per_gpu_with_checkpointing": round(self.memory_with_checkpointing / GiB, 2),
            "memory_gib_per_gpu_without_checkpointing": round(self.memory_without_checkpointing / GiB, 2),
            "host_memory_gib": round(self.host_memory / GiB, 1),
            "traces": self.data.traces, "mean_trace_tokens": self.data.mean_trace_tokens, "data_source": self.data.source,
            "tokens": self.tokens, "steps": self.steps, "global_batch": self.global_batch, "flops": self.flops,
            "mfu": self.mfu, "minutes": round(self.hours * 60, 1), "gpu_hours": round(self.hours * self.gpus, 2),
            "usd": round(self.usd, 2), "fits": self.fits, "problems": self.problems,
        }


def _memory(shape: ModelShape, cfg: "TrainingConfig", workers: int, bf16: bool, checkpointing: bool) -> dict[str, int]:
    s = cfg.strategy
    fsdp = s.kind == "fsdp"
    compute = 2 if bf16 else 4
    share = shape.params / (workers if fsdp else 1)
    out: dict[str, int] = {}
    out["parameters"] = 0 if s.cpu_offload else int(4 * share)  # float32 master weights
    out["gradients"] = 0 if s.cpu_offload else int(4 * share)
    out["optimizer"] = 0 if s.cpu_offload else int(8 * share)  # AdamW's two float32 moments
    head = shape.vocab * shape.hidden
    if fsdp:
        layer = shape.max_layer_params()
        out["gathered_layers"] = int(2 * layer * compute + layer * (compute + 4))
        out["gathered_head"] = int((head + shape.hidden) * compute)
    tokens = cfg.run.micro_batch_size * cfg.packing.max_tokens
    out["loss"] = int(head * 4 + 2 * tokens * shape.hidden * compute + LOSS_BUFFER_BYTES)
    per_layer = shape.activation_elements_per_token() * compute * tokens
    if checkpointing:
        out["activations"] = int(shape.layers * tokens * shape.hidden * compute + per_layer)
    else:
        out["activations"] = int(shape.layers * per_layer)
    out["runtime_reserve"] = RUNTIME_RESERVE_BYTES
    out["total"] = sum(out.values())
    return out


def plan_training(cfg: "TrainingConfig", shape: ModelShape, data: DataSize, *, workers: int | None = None) -> TrainPlan:
    """The plan of `cfg` on `workers` GPUs (default `scaling.num_workers`); `problems` say what does not fit."""
    w = workers or cfg.scaling.num_workers
    hw = gpu(cfg.plan.gpu)
    s = cfg.strategy
    bf16 = s.precision in ("bf16", "auto")  # `auto` is bf16 on GPUs
    memory = _memory(shape, cfg, w, bf16, s.activation_checkpointing)
    with_ac = _memory(shape, cfg, w, bf16, True)["total"]
    without_ac = _memory(shape, cfg, w, bf16, False)["total"]
    max_tokens = cfg.packing.max_tokens
    doc_tokens = data.traces * data.mean_trace_tokens
    rows = math.ceil(doc_tokens / (max_tokens * PACKING_EFFICIENCY)) if data.traces else 0
    global_batch = cfg.run.global_batch_size or cfg.run.micro_batch_size * cfg.run.grad_accum_steps * w
    steps = cfg.run.epochs * math.ceil(rows / global_batch) if rows else 0
    if cfg.run.max_steps is not None:
        steps = min(steps, cfg.run.max_steps) if steps else cfg.run.max_steps
    tokens = steps * global_batch * max_tokens
    context = min(data.mean_trace_tokens, max_tokens) / 2  # causal attention within a document, on average
    trained = min(tokens, cfg.run.epochs * doc_tokens / PACKING_EFFICIENCY) if doc_tokens else tokens
    flops = trained * shape.train_flops_per_token(context)
    seconds = flops / (w * hw.bf16_flops * cfg.plan.mfu)
    hours = seconds / 3600
    plan = TrainPlan(
        model=shape.name, params=shape.params, gpu=hw.name, gpus=w, strategy=s.kind, precision="bf16" if bf16 else "fp32",
        activation_checkpointing=s.activation_checkpointing, memory=memory, memory_without_checkpointing=without_ac,
        memory_with_checkpointing=with_ac, host_memory=int(16 * shape.params) if s.cpu_offload else 0,
        gpu_memory=hw.memory_bytes, tokens=int(tokens), steps=steps, global_batch=global_batch, flops=flops,
        mfu=cfg.plan.mfu, hours=hours, usd=hours * w * cfg.plan.usd_per_gpu_hour, data=data,
    )
    plan.problems = fit_problems(cfg, shape, plan, bf16)
    return plan


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


def fit_problems(cfg: "TrainingConfig", shape: ModelShape, plan: TrainPlan, bf16: bool) -> list[str]:
    """Why the plan does not fit one GPU, each naming the config fields to change (empty: it fits)."""
    m, cap, s = plan.memory, plan.gpu_memory, cfg.strategy
    if m["total"] <= cap:
        return []
    fixes = []
    states = m["parameters"] + m["gradients"] + m["optimizer"]
    rest = m["total"] - states
    if s.kind == "ddp":
        fixes.append("strategy.kind: fsdp (shards parameters, gradients and optimizer state over the workers)")
    elif states and rest < cap:
        need = math.ceil(16 * shape.params / (cap - rest))
        fixes.append(f"scaling.num_workers: {need} or more (the float32 weights, gradients and AdamW state are "
                     f"{_gib(16 * shape.params)} in all; {_gib(states)} of them on each of {plan.gpus} GPUs)")
    if states and s.kind == "fsdp" and not s.cpu_offload and rest < cap:
        fixes.append(f"strategy.cpu_offload: true (keeps those {_gib(16 * shape.params)} in host memory across the "
                     "nodes; the optimizer step runs on CPU, slower)")
    if not s.activation_checkpointing and plan.memory_with_checkpointing < plan.memory_without_checkpointing:
        fixes.append(f"strategy.activation_checkpointing: true (activations {_gib(m['activations'])} -> "
                     f"{_gib(_memory(shape, cfg, plan.gpus, bf16, True)['activations'])} per GPU)")
    if rest >= cap or not fixes:
        fixes.append(f"run.micro_batch_size or packing.max_tokens (now {cfg.run.micro_batch_size} x "
                     f"{cfg.packing.max_tokens} tokens a micro-batch: activations {_gib(m['activations'])} per GPU)")
    return [f"needs {_gib(m['total'])} per GPU but a {plan.gpu} has {_gib(cap)}; change " + "; or ".join(fixes)]
