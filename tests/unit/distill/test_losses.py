"""Completion-only CE and sparse top-k KD: zero at the teacher, positive elsewhere, finite gradients,
masked positions and padded top-k entries contribute nothing."""

from __future__ import annotations

import pytest
import torch

from potstill.pipelines.distill.losses import distill_loss, kd_loss_sum, sft_loss_sum
from potstill.pipelines.distill.tokenize import IGNORE_INDEX
from potstill.schemas.training import LossConfig

V, K = 11, 4


def _batch(seed: int = 0, b: int = 2, t: int = 6):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, V, (b, t), generator=g)
    labels[:, :2] = IGNORE_INDEX  # prompt
    topk_ids = torch.stack([torch.randperm(V, generator=g)[:K] for _ in range(b * t)]).view(b, t, K)
    topk_ids[labels == IGNORE_INDEX] = -1
    teacher_logits = torch.randn(b, t, V, generator=g) * 2
    topk_lps = torch.log_softmax(teacher_logits, -1).gather(-1, topk_ids.clamp_min(0)).half()
    return labels, topk_ids, topk_lps, teacher_logits


def test_sft_is_mean_cross_entropy_over_labelled_positions_only() -> None:
    labels, *_ = _batch()
    logits = torch.randn(2, 6, V, requires_grad=True)
    total, n = sft_loss_sum(logits, labels)
    want = torch.nn.functional.cross_entropy(logits.view(-1, V), labels.view(-1), ignore_index=IGNORE_INDEX)
    assert int(n) == 8 and torch.allclose(total / n, want)
    total.backward()
    assert (logits.grad[:, :2] == 0).all() and (logits.grad[:, 2:] != 0).any()


def test_kd_is_zero_when_the_student_matches_the_renormalized_teacher_on_the_support() -> None:
    labels, topk_ids, topk_lps, _ = _batch()
    renorm = topk_lps.float() - torch.logsumexp(topk_lps.float(), -1, keepdim=True)
    student = torch.full((2, 6, V), -1e4)  # no mass off the support
    student.scatter_(-1, topk_ids.clamp_min(0), renorm)
    total, n = kd_loss_sum(student, labels, topk_ids, topk_lps)
    assert int(n) == 8 and abs(float(total)) < 1e-5


def test_kd_with_the_full_vocabulary_as_support_is_zero_at_the_teacher_and_the_exact_kl_elsewhere() -> None:
    labels, _, _, teacher_logits = _batch()
    all_ids = torch.arange(V).expand(2, 6, V).clone()
    lps = torch.log_softmax(teacher_logits, -1)
    assert abs(float(kd_loss_sum(teacher_logits, labels, all_ids, lps)[0])) < 1e-4
    student = torch.randn(2, 6, V)
    total, n = kd_loss_sum(student, labels, all_ids, lps)
    keep = labels != IGNORE_INDEX
    exact = torch.nn.functional.kl_div(torch.log_softmax(student, -1)[keep], lps[keep], log_target=True, reduction="sum")
    assert torch.allclose(total, exact, atol=1e-4)


def test_kd_is_positive_with_finite_gradients_and_ignores_masked_positions() -> None:
    labels, topk_ids, topk_lps, _ = _batch()
    logits = torch.randn(2, 6, V, requires_grad=True)
    total, _ = kd_loss_sum(logits, labels, topk_ids, topk_lps, temperature=2.0)
    assert float(total.detach()) > 0
    total.backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[:, :2] == 0).all()


def test_padded_topk_entries_change_nothing() -> None:
    labels, topk_ids, topk_lps, _ = _batch()
    logits = torch.randn(2, 6, V)
    short = kd_loss_sum(logits, labels, topk_ids[..., :2], topk_lps[..., :2])[0]
    padded_ids = topk_ids.clone()
    padded_ids[..., 2:] = -1
    padded = kd_loss_sum(logits, labels, padded_ids, topk_lps)[0]
    assert torch.allclose(short, padded)


def test_mix_weights_the_two_terms() -> None:
    labels, topk_ids, topk_lps, _ = _batch()
    logits = torch.randn(2, 6, V)
    batch = {"labels": labels, "topk_ids": topk_ids, "topk_logprobs": topk_lps}
    _, sft = distill_loss(logits, batch, LossConfig(sft_weight=1.0, kd_weight=0.0))
    _, kd = distill_loss(logits, batch, LossConfig(sft_weight=0.0, kd_weight=1.0))
    loss, parts = distill_loss(logits, batch, LossConfig(sft_weight=0.5, kd_weight=2.0))
    assert parts["loss"] == pytest.approx(0.5 * sft["sft"] + 2.0 * kd["kd"], rel=1e-5)
    # KD weight on a batch without top-k: the KD term is absent, the loss stays differentiable
    logits.requires_grad_(True)
    loss, _ = distill_loss(logits, {"labels": labels}, LossConfig(sft_weight=0.0, kd_weight=1.0))
    loss.backward()
    assert float(loss.detach()) == 0.0 and (logits.grad == 0).all()
