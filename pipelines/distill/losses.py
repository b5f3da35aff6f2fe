"""Distillation losses: completion-only cross-entropy and sparse top-k KD from stored teacher logprobs.

    loss, parts = distill_loss(logits, batch, LossConfig(sft_weight=1, kd_weight=0.5))

Labels are pre-shifted (`labels[t]` follows position `t`, -100 = no loss), so
nothing here shifts. KD is the forward KL(teacher || student) over the
teacher's stored top-k support: the teacher's top-k probabilities are
renormalized to sum to 1, the student's log-softmax (of logits / kd_temperature,
over the whole vocabulary) is gathered at the same ids, and the KL is averaged
over completion tokens that have teacher top-k. Because the student's
probabilities are not renormalized, the KD term also pushes the student's mass
onto the teacher's support; it is 0 exactly when the student puts the
renormalized teacher probabilities on the support (hence nothing elsewhere).

The `*_sum` functions return sums and token counts so the training step can
normalize by the token count of the whole global batch (all micro-batches, all
workers) instead of averaging per-micro-batch means.
All torch imports are inside functions (importing potstill.pipelines stays light).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from potstill.pipelines.distill.tokenize import IGNORE_INDEX

if TYPE_CHECKING:
    import torch

    from potstill.schemas.training import LossConfig


def sft_loss_sum(logits: "torch.Tensor", labels: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """(sum of token cross-entropies over labelled positions, number of those positions)."""
    import torch.nn.functional as F

    keep = labels != IGNORE_INDEX
    picked = logits[keep].float()
    return F.cross_entropy(picked, labels[keep].long(), reduction="sum"), keep.sum()


def kd_loss_sum(
    logits: "torch.Tensor", labels: "torch.Tensor", topk_ids: "torch.Tensor", topk_logprobs: "torch.Tensor", temperature: float = 1.0,
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(sum over KD positions of KL(teacher top-k || student), number of KD positions).

    `topk_ids` [.., k] uses -1 for missing entries; a position counts when it
    is labelled and has at least one teacher id.
    """
    import torch

    valid = topk_ids >= 0
    keep = (labels != IGNORE_INDEX) & valid.any(-1)
    z = logits[keep].float() / temperature
    ids, ok = topk_ids[keep].long().clamp_min(0), valid[keep]
    teacher = topk_logprobs[keep].float().masked_fill(~ok, float("-inf"))
    log_p = teacher - torch.logsumexp(teacher, dim=-1, keepdim=True)
    log_p = torch.where(ok, log_p, torch.zeros_like(log_p))  # finite everywhere: no inf * 0 in forward or backward
    p = torch.where(ok, log_p.exp(), torch.zeros_like(log_p))
    log_q = z.gather(-1, ids) - torch.logsumexp(z, dim=-1, keepdim=True)
    return (p * (log_p - log_q)).sum(), keep.sum()


def kd_positions(labels: "torch.Tensor", topk_ids: "torch.Tensor | None") -> "torch.Tensor":
    """Number of positions `kd_loss_sum` averages over (0 without top-k)."""
    import torch

    if topk_ids is None:
        return torch.zeros((), dtype=torch.long, device=labels.device)
    return ((labels != IGNORE_INDEX) & (topk_ids >= 0).any(-1)).sum()


def mix(
    sft_sum: "torch.Tensor", kd_sum: "torch.Tensor", sft_tokens: Any, kd_tokens: Any, cfg: "LossConfig",
) -> "torch.Tensor":
    """`sft_weight * sft_sum / sft_tokens + kd_weight * kd_sum / kd_tokens` (a term with no tokens counts 0)."""
    loss = sft_sum * 0.0
    if cfg.sft_weight and float(sft_tokens) > 0:
        loss = loss + cfg.sft_weight * sft_sum / sft_tokens
    if cfg.kd_weight and float(kd_tokens) > 0:
        loss = loss + cfg.kd_weight * kd_sum / kd_tokens
    return loss


def loss_sums(logits: "torch.Tensor", batch: dict[str, "torch.Tensor"], cfg: "LossConfig") -> tuple["torch.Tensor", "torch.Tensor"]:
    """(sft_sum, kd_sum) of one micro-batch; a term with weight 0 (or no top-k in the batch) is a zero tensor."""
    labels = batch["labels"]
    zero = logits.float().sum() * 0.0  # stays in the graph, so backward works even when a term is absent
    sft = sft_loss_sum(logits, labels)[0] if cfg.sft_weight else zero
    kd = zero
    if cfg.kd_weight and batch.get("topk_ids") is not None:
        kd = kd_loss_sum(logits, labels, batch["topk_ids"], batch["topk_logprobs"], cfg.kd_temperature)[0]
    return sft, kd


def distill_loss(logits: "torch.Tensor", batch: dict[str, "torch.Tensor"], cfg: "LossConfig") -> tuple["torch.Tensor", dict[str, float]]:
    """The mixed loss of one batch on its own (single process), and its parts as floats."""
    sft_sum, kd_sum = loss_sums(logits, batch, cfg)
    n_sft = (batch["labels"] != IGNORE_INDEX).sum()
    n_kd = kd_positions(batch["labels"], batch.get("topk_ids"))
    loss = mix(sft_sum, kd_sum, n_sft, n_kd, cfg)
    parts = {
        "loss": float(loss.detach()),
        "sft": float(sft_sum.detach()) / max(int(n_sft), 1),
        "kd": float(kd_sum.detach()) / max(int(n_kd), 1),
    }
    return loss, parts
