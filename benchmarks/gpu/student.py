"""The GPU proof's student measurement: the distillation trainer's step on a random-weight Qwen2 under FSDP2.

    result = measure_student(StudentRun(...), world=torch.cuda.device_count() or 1)

One process per device (NCCL on GPUs, gloo on the CPU) builds a Qwen2 of the
given shape with random weights on its device and wraps it as the trainer does
(`loss_model.StudentWithLoss`, `parallel.wrap_model(..., "fsdp", precision="bf16")`:
FSDP2 per decoder layer, bf16 compute over float32 master weights, the chunked
CE + top-k KD loss). It then runs the trainer's own `train_loop.run_loop` over
packed rows (`packing.pack`, best-fit, per-document positions) of synthetic
documents whose completions carry teacher top-k ids and log-probabilities.
The step time (forward, backward, clip, AdamW, scheduler: what `run_loop`
times) is the median of the steps after `warmup_steps`.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.gpu.models import StudentShape


@dataclass(frozen=True)
class StudentRun:
    shape: StudentShape
    row_tokens: int
    micro_rows: int
    warmup_steps: int
    timed_steps: int
    topk: int
    prompt_len: tuple[int, int]
    completion_len: tuple[int, int]
    activation_checkpointing: bool = False
    seed: int = 0

    @property
    def steps(self) -> int:
        return self.warmup_steps + self.timed_steps


def synthetic_docs(run: StudentRun, tokens: int, rng: Any) -> list[Any]:
    """Documents (prompt unlabelled, completion labelled with teacher top-k) adding up to at least `tokens`."""
    import numpy as np

    from potstill.pipelines.distill.tokenize import IGNORE_INDEX, TokenizedTrace

    docs, total = [], 0
    while total < tokens:
        p, c = int(rng.integers(*run.prompt_len, endpoint=True)), int(rng.integers(*run.completion_len, endpoint=True))
        n = p + c
        ids = rng.integers(0, run.shape.vocab, n + 1, dtype=np.int32)
        labels = ids[1:].copy()
        labels[: p - 1] = IGNORE_INDEX
        topk_ids = rng.integers(0, run.shape.vocab, (n, run.topk), dtype=np.int32)
        topk_ids[: p - 1] = -1
        logits = np.sort(rng.normal(size=(n, run.topk)), axis=1)[:, ::-1]
        lps = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        lps[: p - 1] = 0
        docs.append(TokenizedTrace(ids[:-1], labels, topk_ids, lps.astype(np.float16)))
        total += n
    return docs


def packed_rows(run: StudentRun, rows: int) -> dict[str, Any]:
    """At least `rows` packed rows of `run.row_tokens` (`packing.pack`), trimmed to `rows`."""
    import numpy as np

    from potstill.pipelines.distill.packing import pack

    rng = np.random.default_rng(run.seed)
    tokens = int(rows * run.row_tokens * 1.05)
    while True:
        batch = pack(synthetic_docs(run, tokens, rng), run.row_tokens, pad_id=0, topk_width=run.topk)
        if len(batch["input_ids"]) >= rows:
            return {k: v[:rows] for k, v in batch.items()}
        tokens = int(tokens * 1.2)


def doc_lengths(batch: dict[str, Any]) -> list[int]:
    """Lengths of the packed documents of every row (position_ids restart at 0 per document; the pad run after
    `num_tokens` is left out)."""
    import numpy as np

    out = []
    for pos, used in zip(batch["position_ids"], batch["num_tokens"]):
        starts = np.flatnonzero(pos[:used] == 0).tolist() + [int(used)]
        out += [b - a for a, b in zip(starts, starts[1:])]
    return out


def wait_for_free_device(torch: Any, share: float = 0.8, timeout_s: float = 90) -> None:
    """Wait until the teacher's processes (exiting) have released this GPU's memory."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        free, total = torch.cuda.mem_get_info()
        if free >= share * total:
            return
        time.sleep(1)
    print(f"[gpu-proof] only {free / 2**30:.0f} of {total / 2**30:.0f} GiB free after {timeout_s:.0f} s; training anyway",
          file=sys.stderr, flush=True)


def _worker(rank: int, world: int, port: int, run_json: str, out_path: str) -> None:
    import torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    from benchmarks.gpu.models import student_config
    from potstill.pipelines.distill.loss_model import StudentWithLoss
    from potstill.pipelines.distill.parallel import wrap_model
    from potstill.pipelines.distill.schedule import build_scheduler
    from potstill.pipelines.distill.student import attn_implementation
    from potstill.pipelines.distill.train_loop import LoopPlan, LoopState, run_loop
    from potstill.schemas.training import LossConfig, OptimConfig, StudentConfig

    raw = json.loads(run_json)
    run = StudentRun(**(raw | {"shape": StudentShape(**raw["shape"]), "prompt_len": tuple(raw["prompt_len"]),
                               "completion_len": tuple(raw["completion_len"])}))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(rank)
        wait_for_free_device(torch)
        device = torch.device("cuda", rank)
        dist.init_process_group("nccl", rank=rank, world_size=world, device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo", rank=rank, world_size=world)
    attn = attn_implementation(StudentConfig(), device.type)
    torch.manual_seed(run.seed)
    with torch.device(device):
        lm = AutoModelForCausalLM.from_config(student_config(run.shape, run.row_tokens), attn_implementation=attn,
                                              dtype=torch.float32)
    params = sum(p.numel() for p in lm.parameters())  # the tied embedding once
    model = wrap_model(StudentWithLoss(lm), "fsdp", device, precision="bf16",
                       activation_checkpointing=run.activation_checkpointing)
    optim = OptimConfig(warmup_steps=0, schedule="constant")
    optimizer = torch.optim.AdamW(model.parameters(), lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
    scheduler = build_scheduler(optimizer, optim, run.steps)
    rows = packed_rows(run, world * run.micro_rows * run.steps)
    mine = {k: v[rank::world] for k, v in rows.items()}
    micro = [{k: v[i:i + run.micro_rows] for k, v in mine.items()} for i in range(0, len(mine["input_ids"]), run.micro_rows)]
    steps: list[dict[str, float]] = []

    def after_step(state: LoopState, metrics: dict[str, float]) -> None:
        steps.append(metrics)
        if rank == 0:
            print(f"[gpu-proof] student step {state.step}/{run.steps}: {metrics['step_s']:.3f} s, "
                  f"loss {metrics['loss']:.3f}", file=sys.stderr, flush=True)

    loss = LossConfig(sft_weight=1.0, kd_weight=1.0)
    run_loop(model, optimizer, scheduler, lambda epoch, state: iter(micro), LoopPlan(1, run.steps, 1, 10**9),
             LoopState(), loss, optim.grad_clip, device, lambda *a: None, after_step=after_step)
    timed = steps[run.warmup_steps:]
    if rank == 0:
        Path(out_path).write_text(json.dumps({
            "step_s_median": statistics.median(m["step_s"] for m in timed),
            "step_s": [round(m["step_s"], 4) for m in steps],
            "positions_per_step": sum(m["positions"] for m in timed) / len(timed),  # all workers
            "labelled_per_step": sum(m["tokens"] for m in timed) / len(timed),
            "packing_efficiency": sum(m["doc_tokens"] for m in timed) / sum(m["positions"] for m in timed),
            "doc_lengths_per_step": doc_lengths(rows),  # every step's rows: divided by the step count below
            "rows": len(rows["input_ids"]),
            "params": params, "attn_implementation": attn, "world": world,
            "final_loss": steps[-1]["loss"],
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
        }))
    dist.destroy_process_group()


def measure_student(run: StudentRun, world: int) -> dict[str, Any]:
    """Run `_worker` on `world` processes; rank 0's measurements."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        out = str(Path(d) / "student.json")
        mp.spawn(_worker, args=(world, port, json.dumps(asdict(run)), out), nprocs=world)
        return json.loads(Path(out).read_text())
