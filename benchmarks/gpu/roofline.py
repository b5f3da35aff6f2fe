"""Device peaks and the ceilings the GPU proof divides by: the decode memory roofline and training FLOPs (pure).

    spec = device_spec(torch.cuda.get_device_name())          # HBM bytes/s and dense bf16 FLOP/s, from a table
    ceiling = decode_roofline(prompt_lens, budgets, shape, spec, max_num_seqs, dtype_bytes=2, priority=True)
    flops = training_flops(body_params, head_params, positions, labelled, doc_lengths, layers, attn_width)

`decode_roofline` replays the run's decode steps as the engine schedules them
(every prompt submitted at once, at most `max_num_seqs` running, the longest
budget first under priority scheduling, a finished sequence replaced by the
next waiting one) and charges each step the bytes it must read from HBM: the
weights once plus the KV cache of every running sequence at its current
length. The roofline rate is the run's output tokens over the sum of those
step times; a step's compute time at the dense peak is summed beside it, so
the JSON also carries the ceiling with both limits (the larger per step).
Prefill is left out of both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.gpu.models import TeacherShape


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    hbm_bytes_per_s: float
    bf16_dense_flops: float
    source: str


# (substring of torch.cuda.get_device_name(), HBM bytes/s, dense bf16 FLOP/s), most specific first; vendor datasheets.
GPU_TABLE: tuple[tuple[str, float, float], ...] = (
    ("H200", 4.8e12, 989e12),
    ("H100 PCIe", 2.0e12, 756e12),
    ("H100 NVL", 3.9e12, 835e12),
    ("H100", 3.35e12, 989e12),
    ("A100", 2.039e12, 312e12),
)
CPU_NOMINAL = DeviceSpec("cpu", 20e9, 1e12, "nominal CPU placeholder (20 GB/s, 1 TFLOP/s), not a measured peak: "
                         "the --tiny run's roofline and MFU fields only prove the code runs")


def device_spec(name: str | None) -> DeviceSpec:
    """The table row whose key the device name contains; H100 SXM figures (said so in `source`) for an unknown GPU;
    the nominal CPU placeholder for None."""
    if name is None:
        return CPU_NOMINAL
    for key, bandwidth, flops in GPU_TABLE:
        if key.lower() in name.lower():
            return DeviceSpec(name, bandwidth, flops, f"table row {key!r} (datasheet HBM bandwidth, dense bf16 peak)")
    return DeviceSpec(name, 3.35e12, 989e12, f"{name!r} is not in the table: H100 SXM figures assumed")


def decode_roofline(prompt_lens: list[int], budgets: list[int], shape: TeacherShape, spec: DeviceSpec,
                    max_num_seqs: int, dtype_bytes: int = 2, priority: bool = True) -> dict[str, Any]:
    """Output tokens/s the device could reach on this run if every decode step only had to read its bytes from HBM
    (`memory_tok_s`), and if it were also bound by dense peak FLOPs (`memory_and_compute_tok_s`); see module doc."""
    order = sorted(range(len(budgets)), key=lambda i: -budgets[i]) if priority else list(range(len(budgets)))
    weight_bytes = shape.decode_weight_params() * dtype_bytes
    kv_token = shape.kv_bytes_per_token(dtype_bytes)
    flops_per_token = 2 * shape.decode_weight_params()
    attn_flops_per_ctx_token = 4 * shape.layers * shape.heads * shape.head_dim  # QK^T and AV, one new token
    waiting = iter(order)
    running: list[list[int]] = []  # [context length, tokens left]
    memory_s = both_s = 0.0
    steps = tokens = 0

    def admit() -> None:
        while len(running) < max_num_seqs:
            i = next(waiting, None)
            if i is None:
                return
            running.append([prompt_lens[i], budgets[i]])

    admit()
    while running:
        context = sum(c for c, _ in running)
        step_mem = (weight_bytes + context * kv_token) / spec.hbm_bytes_per_s
        step_flops = (len(running) * flops_per_token + context * attn_flops_per_ctx_token) / spec.bf16_dense_flops
        memory_s += step_mem
        both_s += max(step_mem, step_flops)
        steps += 1
        tokens += len(running)
        for seq in running:
            seq[0] += 1
            seq[1] -= 1
        running[:] = [s for s in running if s[1] > 0]
        admit()
    return {
        "memory_tok_s": tokens / memory_s if memory_s else 0.0,
        "memory_and_compute_tok_s": tokens / both_s if both_s else 0.0,
        "decode_steps": steps, "output_tokens": tokens, "weight_bytes_per_step": weight_bytes,
        "kv_bytes_per_context_token": kv_token, "mean_batch": tokens / steps if steps else 0.0,
    }


def training_flops(body_params: int, head_params: int, positions: int, labelled: int, doc_lengths: list[int],
                   layers: int, attn_width: int) -> float:
    """Model FLOPs of forward + backward: 6 x decoder parameters x positions, 6 x output-projection parameters x
    labelled positions (the chunked loss projects only those), and causal attention within each packed document
    (6 x layers x attn_width x length^2: QK^T and AV, half the square, times 3 for backward). No recompute counted."""
    attention = 6 * layers * attn_width * sum(n * n for n in doc_lengths)
    return 6 * body_params * positions + 6 * head_params * labelled + attention
