"""Learning-rate schedule: linear warm-up, then cosine, linear or constant (OptimConfig).

    lr_multiplier(step, OptimConfig(warmup_steps=20, schedule="cosine"), total_steps=1000)  # -> [0, 1]
    scheduler = build_scheduler(optimizer, optim_cfg, total_steps)                           # torch LambdaLR

`step` counts optimizer steps from 0. Warm-up rises linearly to the peak at
the last warm-up step ((step + 1) / warmup_steps, so the first step already
trains); the decay then runs from the peak to 0 at `total_steps`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from potstill.schemas.training import OptimConfig


def lr_multiplier(step: int, optim: "OptimConfig", total_steps: int) -> float:
    """The factor applied to `optim.lr` at optimizer step `step` (0-based)."""
    warmup = optim.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if optim.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if optim.schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: Any, optim: "OptimConfig", total_steps: int) -> Any:
    """A torch `LambdaLR` following `lr_multiplier`; step it once per optimizer step."""
    from torch.optim.lr_scheduler import LambdaLR

    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps}; the run has no optimizer steps, add data or set run.max_steps")
    return LambdaLR(optimizer, lambda step: lr_multiplier(step, optim, total_steps))
