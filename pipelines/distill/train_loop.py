"""The per-worker training loop of the distillation job (Ray Train), over a framework-light step.

    TorchTrainer(train_func, train_loop_config=worker_config(...), datasets={"train": ds}, ...)

`train_step` and `run_loop` use only torch and torch.distributed, so a
benchmark can drive the same step under plain `torchrun` without Ray.
`train_func` adds the Ray parts: the dataset shard, `prepare_model` (DDP on
gloo/NCCL), `ray.train.report` with a checkpoint every
`checkpoint.every_steps` optimizer steps and at each epoch end, resume from
`ray.train.get_checkpoint()` (model, optimizer, scheduler, step, epoch and
position in the epoch), and the final Hugging Face folder in the last checkpoint
under `hf/`.

Losses are normalized by the token count of the whole optimizer step (all
micro-batches on all workers, one all-reduce), so gradient accumulation and
the worker count do not change what a token weighs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from potstill.pipelines.distill import losses
from potstill.pipelines.distill.tokenize import IGNORE_INDEX

if TYPE_CHECKING:
    import torch

    from potstill.schemas.training import LossConfig, TrainingConfig

STATE_FILE = "train_state.pt"
HF_SUBDIR = "hf"
_INT_KEYS = ("input_ids", "labels", "position_ids")


@dataclass
class LoopState:
    """Where training stands; saved in every checkpoint."""

    step: int = 0
    """Optimizer steps done."""
    epoch: int = 0
    """Current epoch (0-based)."""
    micro_in_epoch: int = 0
    """Micro-batches of the current epoch already consumed (skipped on resume)."""
    tokens: int = 0
    """Labelled tokens trained on, all workers."""


@dataclass(frozen=True)
class LoopPlan:
    """How long to train and when to checkpoint."""

    epochs: int
    total_steps: int
    grad_accum: int
    every_steps: int


def to_device(batch: dict[str, Any], device: "torch.device") -> dict[str, "torch.Tensor"]:
    """Model inputs as int64 and top-k as int32/float16 tensors on `device`; other columns dropped."""
    import torch

    # torch.tensor copies: Ray hands out read-only numpy views.
    out = {k: torch.tensor(batch[k], dtype=torch.long, device=device) for k in _INT_KEYS}
    if "topk_ids" in batch:
        out["topk_ids"] = torch.tensor(batch["topk_ids"], device=device)
        out["topk_logprobs"] = torch.tensor(batch["topk_logprobs"], device=device)
    return out


def train_step(
    model: Any, optimizer: Any, scheduler: Any, micro_batches: list[dict[str, "torch.Tensor"]], loss_cfg: "LossConfig",
    grad_clip: float | None, autocast_dtype: "torch.dtype | None" = None,
) -> dict[str, float]:
    """One optimizer step over `micro_batches` (gradient accumulation); returns global metrics.

    Works single-process or under torch.distributed (DDP: gradients sync on the
    last micro-batch only); every worker must pass the same number of micro-batches.
    """
    import torch
    import torch.distributed as dist

    device = micro_batches[0]["labels"].device
    distributed = dist.is_available() and dist.is_initialized()
    world = dist.get_world_size() if distributed else 1
    counts = torch.zeros(2, dtype=torch.float64, device=device)
    for mb in micro_batches:
        counts[0] += (mb["labels"] != IGNORE_INDEX).sum()
        counts[1] += losses.kd_positions(mb["labels"], mb.get("topk_ids"))
    if distributed:
        dist.all_reduce(counts)
    n_sft, n_kd = counts[0].item(), counts[1].item()
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    for i, mb in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        sync = nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            amp = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
            with amp:
                # position_ids with attention_mask=None and no cache: per-document attention (see packing.py)
                logits = model(input_ids=mb["input_ids"], position_ids=mb["position_ids"], use_cache=False).logits
            sft_sum, kd_sum = losses.loss_sums(logits, mb, loss_cfg)
            # DDP averages gradients over workers; `world` turns that average back into the global token mean.
            (losses.mix(sft_sum, kd_sum, n_sft, n_kd, loss_cfg) * world).backward()
        sums += torch.stack([sft_sum.detach(), kd_sum.detach()]).double()
    params = [p for p in model.parameters() if p.grad is not None]
    max_norm = grad_clip if grad_clip is not None else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if distributed:
        dist.all_reduce(sums)
    sft = sums[0].item() / n_sft if n_sft else 0.0
    kd = sums[1].item() / n_kd if n_kd else 0.0
    return {
        "loss": loss_cfg.sft_weight * sft + loss_cfg.kd_weight * kd,
        "sft_loss": sft, "kd_loss": kd, "grad_norm": float(grad_norm), "lr": lr, "tokens": n_sft,
    }


def _groups(batches: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    while True:
        group = [b for _, b in zip(range(size), batches)]
        if not group:
            return
        yield group


def run_loop(
    model: Any, optimizer: Any, scheduler: Any, epoch_batches: Callable[[int], Iterable[dict[str, Any]]],
    plan: LoopPlan, state: LoopState, loss_cfg: "LossConfig", grad_clip: float | None,
    device: "torch.device", report: Callable[[LoopState, dict[str, float], bool], None],
    autocast_dtype: "torch.dtype | None" = None,
) -> LoopState:
    """Train from `state` to the end of the plan; `report(state, metrics, final)` runs every
    `every_steps` steps, at each epoch end and once at the end (all workers call it the same
    number of times). Metrics are means over the steps since the last report, plus step, epoch
    and completion (labelled) tokens seen and per second, all workers together."""
    window: list[dict[str, float]] = []
    started = time.perf_counter()

    def flush(final: bool = False) -> None:
        nonlocal window, started
        elapsed = max(time.perf_counter() - started, 1e-9)
        metrics = {k: sum(m[k] for m in window) / len(window) for k in window[0]} if window else {}
        metrics.update(step=state.step, epoch=state.epoch, completion_tokens_seen=state.tokens,
                       completion_tokens_per_s=sum(m["tokens"] for m in window) / elapsed)
        metrics.pop("tokens", None)
        report(state, metrics, final)
        window, started = [], time.perf_counter()

    for epoch in range(state.epoch, plan.epochs):
        if state.step >= plan.total_steps:
            break
        batches = iter(epoch_batches(epoch))
        for _ in zip(range(state.micro_in_epoch), batches):  # resume: skip what this epoch already trained on
            pass
        for group in _groups(batches, plan.grad_accum):
            metrics = train_step(model, optimizer, scheduler, [to_device(b, device) for b in group], loss_cfg, grad_clip, autocast_dtype)
            state.step += 1
            state.micro_in_epoch += len(group)
            state.tokens += int(metrics["tokens"])
            window.append(metrics)
            if state.step >= plan.total_steps:
                break
            if state.step % plan.every_steps == 0:
                flush()
        if state.step >= plan.total_steps:
            break
        state.epoch, state.micro_in_epoch = epoch + 1, 0
        if window:  # empty when the epoch's last step was just reported, or a resume skipped the whole epoch
            flush()
    flush(final=True)
    return state


def save_state(out_dir: str | Path, model: Any, optimizer: Any, scheduler: Any, state: LoopState) -> None:
    """Write model, optimizer and scheduler state and the loop counters to `out_dir/train_state.pt`."""
    import torch

    from potstill.pipelines.distill.student import unwrap

    torch.save({"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "loop": asdict(state)}, Path(out_dir) / STATE_FILE)


def load_state(in_dir: str | Path) -> dict[str, Any]:
    """What `save_state` wrote: `model`, `optimizer`, `scheduler` state dicts and `loop` counters."""
    import torch

    return torch.load(Path(in_dir) / STATE_FILE, map_location="cpu", weights_only=True)


def worker_config(cfg: "TrainingConfig", tokenizer_path: str, total_steps: int) -> dict[str, Any]:
    """The `train_loop_config` of the TorchTrainer: plain JSON-able values."""
    return {"cfg": cfg.model_dump(mode="json"), "tokenizer_path": tokenizer_path, "total_steps": total_steps}


def train_func(config: dict[str, Any]) -> None:
    """Ray Train worker entry point (see module docstring)."""
    import tempfile

    import ray.train
    import ray.train.torch
    import torch

    from potstill.pipelines.distill.schedule import build_scheduler
    from potstill.pipelines.distill.student import load_student, load_tokenizer, save_hf
    from potstill.schemas.training import TrainingConfig

    cfg = TrainingConfig.model_validate(config["cfg"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()
    tokenizer = load_tokenizer(config["tokenizer_path"])
    model = load_student(cfg.student, tokenizer, max_positions=cfg.packing.max_tokens, seed=cfg.run.seed)
    checkpoint = ray.train.get_checkpoint()
    saved = None
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            saved = load_state(d)
        model.load_state_dict(saved["model"])  # before DDP wraps it
    model = ray.train.torch.prepare_model(model, parallel_strategy="ddp")
    o = cfg.optim
    optimizer = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    scheduler = build_scheduler(optimizer, o, config["total_steps"])
    state = LoopState()
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = LoopState(**saved["loop"])
        if rank == 0:
            print(f"[potstill train] resumed at step {state.step}, epoch {state.epoch}", flush=True)

    shard = ray.train.get_dataset_shard("train")

    def epoch_batches(epoch: int) -> Iterable[dict[str, Any]]:
        return shard.iter_batches(batch_size=cfg.run.micro_batch_size, batch_format="numpy", prefetch_batches=2)

    def report(st: LoopState, metrics: dict[str, float], final: bool) -> None:
        if rank == 0:
            shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            print(f"[potstill train] {shown}", flush=True)
        with tempfile.TemporaryDirectory() as d:
            ckpt = None
            if rank == 0:
                save_state(d, model, optimizer, scheduler, st)
                if final:
                    save_hf(model, tokenizer, Path(d) / HF_SUBDIR)
                (Path(d) / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
                ckpt = ray.train.Checkpoint.from_directory(d)
            ray.train.report({**metrics, "final": final}, checkpoint=ckpt)

    precision = cfg.strategy.precision
    autocast = torch.bfloat16 if precision == "bf16" or (precision == "auto" and device.type == "cuda") else None
    plan = LoopPlan(cfg.run.epochs, config["total_steps"], cfg.run.grad_accum_steps, cfg.checkpoint.every_steps)
    run_loop(model, optimizer, scheduler, epoch_batches, plan, state, cfg.loss, o.grad_clip, device, report, autocast)
