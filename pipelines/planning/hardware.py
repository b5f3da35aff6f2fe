"""GPUs a plan can assume: usable memory and dense bf16 peak FLOP/s (vendor datasheets).

    gpu = GPUS["H100-80GB"]       # GPU(name="H100-80GB", memory_bytes=..., bf16_flops=989e12)
"""

from __future__ import annotations

from dataclasses import dataclass

GiB = 2**30


@dataclass(frozen=True)
class GPU:
    """One GPU type."""

    name: str
    memory_bytes: int
    """What torch sees as total memory (slightly below the marketing number)."""
    bf16_flops: float
    """Dense (no sparsity) bf16 tensor-core peak, FLOP/s."""


GPUS = {g.name: g for g in (
    GPU("H100-80GB", int(79.2 * GiB), 989e12),    # SXM5
    GPU("H200-141GB", int(139.8 * GiB), 989e12),
    GPU("A100-80GB", int(79.2 * GiB), 312e12),
    GPU("A100-40GB", int(39.4 * GiB), 312e12),
    GPU("L40S-48GB", int(44.4 * GiB), 362e12),
    GPU("B200-180GB", int(178.4 * GiB), 2250e12),
)}

RUNTIME_RESERVE_BYTES = 2 * GiB
"""Per GPU: CUDA context, NCCL buffers and allocator slack a training plan keeps free."""


def gpu(name: str) -> GPU:
    """The GPU called `name`, or a ValueError listing the known ones."""
    try:
        return GPUS[name]
    except KeyError:
        raise ValueError(f"GPU {name!r} is unknown; use one of {sorted(GPUS)}") from None
