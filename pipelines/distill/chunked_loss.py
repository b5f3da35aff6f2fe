"""Memory-lean distillation losses: the output projection, completion-only CE and sparse top-k KD, chunk by chunk.

    loss, sft_sum, kd_sum = linear_loss(hidden, lm_head.weight, labels, topk_ids, topk_logprobs,
                                        LossScales(sft=0.5 / n_sft, kd=0.25 / n_kd), temperature=1.0)

`hidden` holds the decoder's final hidden states of the labelled positions only
([n, hidden]); the logits of at most `chunk_tokens` positions exist at a time, in
float32, and their gradient is computed right there (softmax minus the target,
for CE; the student's softmax minus the renormalized teacher top-k, over
`temperature`, for KD), folded into the gradients of `hidden` and of the weight,
and freed. So a [tokens x vocab] float32 tensor is never built: the memory of
the loss is a few [chunk x vocab] buffers plus the two gradients, whatever the
sequence length (Liger's fused linear cross-entropy works the same way).

The returned `loss` is `scales.sft * sft_sum + scales.kd * kd_sum`, the scalar
the training step backpropagates; `sft_sum` and `kd_sum` (no gradient) are the
summed per-token CE and KL for the metrics. The math is the one of
`losses.sft_loss_sum` / `losses.kd_loss_sum`, which stay as the reference the
tests compare against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

LOSS_MEMORY_BYTES = 256 * 2**20
"""Default budget for the [chunk x vocab] float32 buffers of one chunk (four of them at most)."""
CHUNK_BUFFERS = 4
"""[chunk x vocab] float32 buffers alive at once: logits, their tempered copy (KD, temperature != 1), the
gradient, and a softmax."""


@dataclass(frozen=True)
class LossScales:
    """What one token's CE and KL weigh in the backpropagated loss (weight / global token count, times the
    worker count when data-parallel gradients are averaged)."""

    sft: float
    kd: float


def chunk_tokens_for(vocab: int, budget_bytes: int = LOSS_MEMORY_BYTES) -> int:
    """Positions per chunk so that `CHUNK_BUFFERS` [chunk x vocab] float32 buffers fit in `budget_bytes`."""
    return max(16, budget_bytes // (CHUNK_BUFFERS * 4 * max(vocab, 1)))


def _chunk(
    h: "torch.Tensor", weight: "torch.Tensor", labels: "torch.Tensor", topk_ids: "torch.Tensor | None",
    topk_lps: "torch.Tensor | None", scales: LossScales, temperature: float, need_grad: bool,
) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor | None"]:
    """(CE sum, KL sum, d loss / d logits as float32 or None) of one chunk of positions."""
    import torch

    z = (h @ weight.t()).float()
    grad = None
    zero = z.new_zeros(())
    sft_sum, kd_sum = zero, zero
    if scales.sft or not need_grad:
        lse = torch.logsumexp(z, dim=-1)
        sft_sum = (lse - z.gather(1, labels[:, None]).squeeze(1)).sum()
        if need_grad and scales.sft:
            grad = (z - lse[:, None]).exp_().mul_(scales.sft)
            grad.scatter_add_(1, labels[:, None], z.new_full((len(labels), 1), -scales.sft))
    if topk_ids is not None and (scales.kd or not need_grad):
        valid = topk_ids >= 0
        ids = topk_ids.long().clamp_min(0)
        teacher = topk_lps.float().masked_fill(~valid, float("-inf"))
        has = valid.any(-1, keepdim=True)
        log_p = teacher - torch.logsumexp(teacher.masked_fill(~has, 0.0), dim=-1, keepdim=True)
        log_p = torch.where(valid, log_p, torch.zeros_like(log_p))
        p = torch.where(valid, log_p.exp(), torch.zeros_like(log_p))
        zt = z / temperature if temperature != 1.0 else z
        lse_t = torch.logsumexp(zt, dim=-1, keepdim=True)
        log_q = zt.gather(1, ids) - lse_t
        kd_sum = (p * (log_p - log_q)).sum()
        if need_grad and scales.kd:
            # d KL / d z = (softmax(z / T) * sum(p) - p scattered onto the vocabulary) / T; rows without top-k: 0
            coeff = scales.kd / temperature
            g = (zt - lse_t).exp_().mul_(p.sum(-1, keepdim=True) * coeff)
            g.scatter_add_(1, ids, -p * coeff)
            grad = g if grad is None else grad.add_(g)
            del g
    return sft_sum, kd_sum, grad


def _linear_loss_function() -> Any:
    import torch

    class LinearLoss(torch.autograd.Function):
        """Forward computes the loss and, chunk by chunk, its gradients; backward only scales them."""

        @staticmethod
        def forward(ctx, hidden, weight, labels, topk_ids, topk_lps, scales, temperature, chunk, need_grad):  # noqa: ANN001
            grad_h = torch.empty_like(hidden) if need_grad else None
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_grad else None
            sft_sum = hidden.new_zeros((), dtype=torch.float32)
            kd_sum = hidden.new_zeros((), dtype=torch.float32)
            for s in range(0, hidden.shape[0], chunk):
                h = hidden[s:s + chunk]
                ids = topk_ids[s:s + chunk] if topk_ids is not None else None
                lps = topk_lps[s:s + chunk] if topk_lps is not None else None
                sft, kd, g = _chunk(h, weight, labels[s:s + chunk], ids, lps, scales, temperature, need_grad)
                sft_sum += sft
                kd_sum += kd
                if g is not None:
                    g = g.to(weight.dtype)
                    grad_h[s:s + chunk] = g @ weight
                    grad_w += (g.t() @ h).float()
                elif need_grad:
                    grad_h[s:s + chunk] = 0
            ctx.save_for_backward(grad_h, grad_w)
            ctx.weight_dtype = weight.dtype
            ctx.mark_non_differentiable(sft_sum, kd_sum)
            loss = scales.sft * sft_sum + scales.kd * kd_sum
            return loss, sft_sum, kd_sum

        @staticmethod
        def backward(ctx, grad_loss, _sft, _kd):  # noqa: ANN001
            grad_h, grad_w = ctx.saved_tensors
            if grad_h is None:
                raise RuntimeError("linear_loss was computed without gradients (under torch.no_grad) and cannot be backpropagated")
            return (grad_h * grad_loss.to(grad_h.dtype), (grad_w * grad_loss).to(ctx.weight_dtype),
                    None, None, None, None, None, None, None)

    return LinearLoss


_FUNCTION = None


def linear_loss(
    hidden: "torch.Tensor", weight: "torch.Tensor", labels: "torch.Tensor", topk_ids: "torch.Tensor | None",
    topk_logprobs: "torch.Tensor | None", scales: LossScales, temperature: float = 1.0, chunk_tokens: int | None = None,
) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """(loss to backpropagate, summed CE, summed KL) over the positions in `hidden` (see module docstring).

    `labels` [n] are the target ids of those positions; `topk_ids` [n, k] (-1 = no entry) and
    `topk_logprobs` [n, k] the teacher's top-k (None: no KD in this batch).
    """
    import torch

    global _FUNCTION
    if _FUNCTION is None:
        _FUNCTION = _linear_loss_function()
    chunk = chunk_tokens or chunk_tokens_for(weight.shape[0])
    need_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    loss, sft_sum, kd_sum = _FUNCTION.apply(hidden, weight, labels.long(), topk_ids, topk_logprobs, scales,
                                            float(temperature), int(chunk), need_grad)
    if loss.dtype != torch.float32:
        loss = loss.float()
    return loss, sft_sum, kd_sum
