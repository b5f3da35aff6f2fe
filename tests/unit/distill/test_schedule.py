"""Learning-rate schedule: linear warm-up to the peak, then cosine / linear decay to 0, or constant."""

from __future__ import annotations

import pytest

from potstill.pipelines.distill.schedule import build_scheduler, lr_multiplier
from potstill.schemas.training import OptimConfig


def test_warmup_rises_linearly_to_the_peak() -> None:
    cfg = OptimConfig(warmup_steps=4, schedule="cosine")
    assert [lr_multiplier(s, cfg, 100) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


@pytest.mark.parametrize("schedule, halfway, end", [("cosine", 0.5, 0.0), ("linear", 0.5, 0.0), ("constant", 1.0, 1.0)])
def test_decay_after_warmup(schedule: str, halfway: float, end: float) -> None:
    cfg = OptimConfig(warmup_steps=10, schedule=schedule)
    assert lr_multiplier(10, cfg, 110) == 1.0
    assert lr_multiplier(60, cfg, 110) == pytest.approx(halfway)
    assert lr_multiplier(110, cfg, 110) == pytest.approx(end)
    assert lr_multiplier(500, cfg, 110) == pytest.approx(end)  # past the end it stays there


def test_no_warmup_starts_at_the_peak() -> None:
    assert lr_multiplier(0, OptimConfig(warmup_steps=0, schedule="linear"), 10) == 1.0


def test_torch_scheduler_follows_the_multiplier() -> None:
    import torch
    cfg = OptimConfig(lr=0.1, warmup_steps=3, schedule="cosine")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = build_scheduler(opt, cfg, total_steps=20)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.1 * lr_multiplier(s, cfg, 20) for s in range(20)])
    with pytest.raises(ValueError, match="total_steps=0"):
        build_scheduler(opt, cfg, total_steps=0)
