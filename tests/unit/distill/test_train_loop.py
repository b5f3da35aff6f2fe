"""The framework-light loop: token-weighted gradient accumulation, checkpoint cadence, and a resume
that continues the step counter and skips exactly what the epoch already trained on."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from potstill.pipelines.distill.packing import pack
from potstill.pipelines.distill.schedule import build_scheduler
from potstill.pipelines.distill.tokenize import IGNORE_INDEX, TokenizedTrace
from potstill.pipelines.distill.train_loop import LoopPlan, LoopState, per_worker_skip, run_loop, to_device, train_step
from potstill.schemas.training import LossConfig, OptimConfig


def _model():
    from transformers import LlamaConfig, LlamaForCausalLM

    from potstill.pipelines.distill.loss_model import StudentWithLoss

    torch.manual_seed(0)
    return StudentWithLoss(LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                        num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=32)))


def _rows(seed: int, n_docs: int, k: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        n = int(rng.integers(4, 12))
        labels = rng.integers(0, 32, n).astype(np.int32)
        labels[: int(rng.integers(1, 3))] = IGNORE_INDEX
        topk = np.where(labels[:, None] >= 0, rng.integers(0, 32, (n, k)), -1).astype(np.int32)
        docs.append(TokenizedTrace(rng.integers(0, 32, n).astype(np.int32), labels, topk, np.full((n, k), -0.7, np.float16)))
    return pack(docs, max_tokens=16, pad_id=0, topk_width=k)


def _step(model, batches: list[dict], loss_cfg: LossConfig) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = build_scheduler(opt, OptimConfig(warmup_steps=0, schedule="constant"), 10)
    train_step(model, opt, sched, [to_device(b, torch.device("cpu")) for b in batches], loss_cfg, grad_clip=None)


@pytest.mark.parametrize("loss_cfg", [LossConfig(), LossConfig(sft_weight=0.3, kd_weight=1.0),
                                      LossConfig(sft_weight=0.3, kd_weight=1.0, kd_temperature=2.0, chunk_tokens=5)])
def test_accumulated_micro_batches_equal_one_big_batch(loss_cfg: LossConfig) -> None:
    a, b = _rows(0, 6), _rows(1, 3)  # different token counts: per-micro-batch means would differ
    assert a["num_tokens"].sum() != b["num_tokens"].sum()
    accumulated, whole = _model(), _model()
    _step(accumulated, [a, b], loss_cfg)
    _step(whole, [{k: np.concatenate([a[k], b[k]]) for k in a}], loss_cfg)
    for p, q in zip(accumulated.parameters(), whole.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)


def _run(state: LoopState, plan: LoopPlan, model=None):
    """Run the loop over 5 tagged micro-batches per epoch; returns (reports, tags trained on, model)."""
    model = model or _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = build_scheduler(opt, OptimConfig(warmup_steps=1), plan.total_steps)
    seen, reports = [], []

    def batches(epoch: int):
        for i in range(5):
            seen.append((epoch, i))
            yield _rows(10 * epoch + i, 2)

    epoch_batches = per_worker_skip(batches)

    def report(st: LoopState, metrics: dict, final: bool) -> None:
        reports.append((st.step, st.epoch, st.micro_in_epoch, final, "loss" in metrics))
        if "loss" in metrics:  # packed rows of 16 positions: the efficiency is document tokens / positions
            assert 0 < metrics["packing_efficiency"] <= 1 and metrics["step_s_median"] > 0

    run_loop(model, opt, sched, epoch_batches, plan, state, LossConfig(), 1.0, torch.device("cpu"), report)
    return reports, seen


def test_loop_reports_every_n_steps_at_epoch_end_and_at_the_end() -> None:
    plan = LoopPlan(epochs=2, total_steps=6, grad_accum=2, every_steps=2)  # 5 micro-batches -> 3 steps per epoch
    reports, seen = _run(LoopState(), plan)
    assert reports == [(2, 0, 4, False, True), (3, 1, 0, False, True), (4, 1, 2, False, True), (6, 1, 5, True, True)]
    assert len(seen) == 10


def test_resume_continues_the_counter_and_skips_what_the_epoch_trained_on() -> None:
    plan = LoopPlan(epochs=2, total_steps=6, grad_accum=2, every_steps=2)
    state = LoopState(step=4, epoch=1, micro_in_epoch=2, tokens=123)
    reports, seen = _run(replace(state), plan)
    assert reports == [(6, 1, 5, True, True)]
    assert seen == [(1, i) for i in range(5)]  # epoch 1 only; the first 2 were read and skipped
    done, _ = _run(LoopState(step=6, epoch=1, micro_in_epoch=5), plan)
    assert done == [(6, 1, 5, True, False)]  # already finished: one final report, no training


def test_max_steps_stops_mid_epoch() -> None:
    reports, seen = _run(LoopState(), LoopPlan(epochs=3, total_steps=2, grad_accum=1, every_steps=100))
    assert reports == [(2, 0, 2, True, True)] and seen == [(0, 0), (0, 1)]
