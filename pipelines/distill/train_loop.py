"""The framework-light training step and loop of the distillation job (torch and torch.distributed only).

    state = run_loop(model, optimizer, scheduler, epoch_batches, plan, LoopState(), loss_cfg, grad_clip, device, report)

`model` is a (wrapped) `loss_model.StudentWithLoss`: its forward returns the
loss of a micro-batch, computed chunk by chunk. `train_step` and `run_loop`
know nothing about Ray, so `benchmarks/training_speed.py` drives the very same
step under plain torch.distributed to measure what Ray Train costs;
`jobs/train_worker.py` wraps them for Ray Train workers (data, checkpoints,
resume, fault hook, progress).

Losses are normalized by the token count of the whole optimizer step (all
micro-batches on all workers, one all-reduce before the forward passes), so
gradient accumulation and the worker count do not change what a token weighs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from potstill.pipelines.distill import losses
from potstill.pipelines.distill.chunked_loss import LossScales
from potstill.pipelines.distill.parallel import clip_grad_norm, grad_sync
from potstill.pipelines.distill.tokenize import IGNORE_INDEX

if TYPE_CHECKING:
    import torch

    from potstill.schemas.training import LossConfig

_INT_KEYS = ("input_ids", "labels", "position_ids")


@dataclass
class LoopState:
    """Where training stands; saved in every checkpoint."""

    step: int = 0
    """Optimizer steps done."""
    epoch: int = 0
    """Current epoch (0-based)."""
    micro_in_epoch: int = 0
    """Micro-batches of the current epoch this worker already consumed (skipped on resume by per-worker sources)."""
    rows_in_epoch: int = 0
    """Packed rows of the current epoch trained on, all workers together (skipped on resume by the global-order
    source, whatever the worker count)."""
    tokens: int = 0
    """Labelled tokens trained on, all workers."""
    data: dict[str, Any] = field(default_factory=dict)
    """Where the data source stands (follow mode: the rounds of shards trained on); JSON-able."""


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
    if "num_tokens" in batch:  # document tokens per packed row (packing efficiency)
        out["num_tokens"] = torch.tensor(batch["num_tokens"], dtype=torch.long, device=device)
    if "topk_ids" in batch:
        out["topk_ids"] = torch.tensor(batch["topk_ids"], device=device)
        out["topk_logprobs"] = torch.tensor(batch["topk_logprobs"], device=device)
    return out


def loss_scales(loss_cfg: "LossConfig", n_sft: float, n_kd: float, world: int) -> LossScales:
    """What one token's CE and KL weigh: weight / global token count, times `world` (data-parallel gradients are
    averaged over workers, which `world` turns back into the global token mean). A term without tokens weighs 0."""
    return LossScales(sft=loss_cfg.sft_weight * world / n_sft if n_sft else 0.0,
                      kd=loss_cfg.kd_weight * world / n_kd if n_kd else 0.0)


def train_step(
    model: Any, optimizer: Any, scheduler: Any, micro_batches: list[dict[str, "torch.Tensor"]], loss_cfg: "LossConfig",
    grad_clip: float | None, autocast_dtype: "torch.dtype | None" = None,
) -> dict[str, float]:
    """One optimizer step over `micro_batches` (gradient accumulation); returns global metrics.

    Works single-process or under torch.distributed (DDP or FSDP: gradients sync
    on the last micro-batch only); every worker must pass the same number of
    micro-batches. Metrics are over all workers: mean losses per token, the
    gradient norm, labelled `tokens`, `doc_tokens`/`positions` of the packed
    rows (their ratio is the packing efficiency) and the packed `rows` trained on.
    """
    import torch
    import torch.distributed as dist

    device = micro_batches[0]["labels"].device
    distributed = dist.is_available() and dist.is_initialized()
    world = dist.get_world_size() if distributed else 1
    counts = torch.zeros(5, dtype=torch.float64, device=device)
    for mb in micro_batches:
        counts[0] += (mb["labels"] != IGNORE_INDEX).sum()
        counts[1] += losses.kd_positions(mb["labels"], mb.get("topk_ids"))
        counts[2] += mb["num_tokens"].sum() if "num_tokens" in mb else 0
        counts[3] += mb["input_ids"].numel()
        counts[4] += (mb["num_tokens"] > 0).sum() if "num_tokens" in mb else len(mb["input_ids"])
    if distributed:
        dist.all_reduce(counts)
    n_sft, n_kd, doc_tokens, positions, rows = (c.item() for c in counts)
    scales = loss_scales(loss_cfg, n_sft, n_kd, world)
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    for i, mb in enumerate(micro_batches):
        with grad_sync(model, enabled=i == len(micro_batches) - 1):
            amp = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
            with amp:
                loss, sft_sum, kd_sum = model(mb["input_ids"], mb["position_ids"], mb["labels"], mb.get("topk_ids"),
                                              mb.get("topk_logprobs"), scales=scales, temperature=loss_cfg.kd_temperature,
                                              chunk_tokens=loss_cfg.chunk_tokens)
            loss.backward()
        sums += torch.stack([sft_sum.detach(), kd_sum.detach()]).double()
    grad_norm = clip_grad_norm(model, grad_clip)
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
        "sft_loss": sft, "kd_loss": kd, "grad_norm": grad_norm, "lr": lr, "tokens": n_sft,
        "doc_tokens": doc_tokens, "positions": positions, "rows": rows,
    }


def _groups(batches: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    while True:
        group = [b for _, b in zip(range(size), batches)]
        if not group:
            return
        yield group


def skip_consumed(batches: Iterable[Any], n: int) -> Iterator[Any]:
    """`batches` without its first `n` items (read and dropped: what a resumed epoch already trained on)."""
    it = iter(batches)
    for _ in zip(range(n), it):
        pass
    return it


def _summarize(window: list[dict[str, float]], elapsed: float) -> dict[str, float]:
    """Means over the steps of a report window, plus packing efficiency, median step time, throughput and the loss of
    every step of the window (`step_losses`)."""
    if not window:
        return {}
    out = {k: sum(m[k] for m in window) / len(window) for k in ("loss", "sft_loss", "kd_loss", "grad_norm", "lr")}
    positions = sum(m["positions"] for m in window)
    out["packing_efficiency"] = sum(m["doc_tokens"] for m in window) / positions if positions else 0.0
    out["step_s_median"] = statistics.median(m["step_s"] for m in window)
    out["step_losses"] = [m["loss"] for m in window]
    out["completion_tokens_per_s"] = sum(m["tokens"] for m in window) / elapsed
    return out


EpochBatches = Callable[[int, LoopState], Iterable[dict[str, Any]]]
"""`epoch_batches(epoch, state)`: this worker's micro-batches of `epoch`, without what `state` says the epoch
already trained on (`state.micro_in_epoch` of this worker, or `state.rows_in_epoch` of all)."""


def per_worker_skip(batches_of_epoch: Callable[[int], Iterable[dict[str, Any]]]) -> EpochBatches:
    """An `EpochBatches` over a per-worker stream: skips the `state.micro_in_epoch` micro-batches already consumed."""
    return lambda epoch, state: skip_consumed(batches_of_epoch(epoch), state.micro_in_epoch)


def run_loop(
    model: Any, optimizer: Any, scheduler: Any, epoch_batches: EpochBatches,
    plan: LoopPlan, state: LoopState, loss_cfg: "LossConfig", grad_clip: float | None,
    device: "torch.device", report: Callable[[LoopState, dict[str, float], bool], None],
    autocast_dtype: "torch.dtype | None" = None,
    after_step: Callable[[LoopState, dict[str, float]], None] | None = None,
) -> LoopState:
    """Train from `state` to the end of the plan.

    `epoch_batches(epoch, state)` yields the epoch's micro-batches without what
    a resumed epoch already trained on (`per_worker_skip` wraps a plain
    per-worker stream). `report(state, metrics, final)` runs every
    `every_steps` steps, at each epoch end and once at the end (all workers call
    it the same number of times); `after_step(state, step_metrics)` after every
    step. Report metrics are means over the steps since the last report, plus
    packing efficiency, median step time, step, epoch and completion (labelled)
    tokens seen and per second, all workers together.
    """
    window: list[dict[str, float]] = []
    started = time.perf_counter()

    def flush(final: bool = False) -> None:
        nonlocal window, started
        metrics = _summarize(window, max(time.perf_counter() - started, 1e-9))
        metrics.update(step=state.step, epoch=state.epoch, completion_tokens_seen=state.tokens)
        report(state, metrics, final)
        window, started = [], time.perf_counter()

    for epoch in range(state.epoch, plan.epochs):
        if state.step >= plan.total_steps:
            break
        for group in _groups(iter(epoch_batches(epoch, state)), plan.grad_accum):
            t0 = time.perf_counter()
            metrics = train_step(model, optimizer, scheduler, [to_device(b, device) for b in group], loss_cfg, grad_clip, autocast_dtype)
            metrics["step_s"] = time.perf_counter() - t0
            state.step += 1
            state.micro_in_epoch += len(group)
            state.rows_in_epoch += int(metrics["rows"])
            state.tokens += int(metrics["tokens"])
            window.append(metrics)
            if after_step is not None:
                after_step(state, metrics)
            if state.step >= plan.total_steps:
                break
            if state.step % plan.every_steps == 0:
                flush()
        if state.step >= plan.total_steps:
            break
        state.epoch, state.micro_in_epoch, state.rows_in_epoch = epoch + 1, 0, 0
        if window:  # empty when the epoch's last step was just reported, or a resume skipped the whole epoch
            flush()
    flush(final=True)
    return state
