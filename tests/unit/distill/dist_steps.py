"""Training steps on N gloo processes (or in this process), for the strategy and checkpoint tests.

    python -m tests.unit.distill.dist_steps step KIND WORLD PORT OUT.json              # one step, ddp/fsdp/fsdp-offload-ac (fp32)
    python -m tests.unit.distill.dist_steps save HF_DIR CKPT WORLD PORT OUT.json        # FSDP from HF, bf16, AC: 1 step, save
    python -m tests.unit.distill.dist_steps resume HF_DIR CKPT WORLD PORT OUT.json      # load CKPT, train the next step

`step` runs one optimizer step of a fresh student on a fixed global batch of 4
rows (2 micro-batches per worker on 1 worker, 1 on 2: gradient accumulation)
and writes the loss, gradient norm and parameter sums. `save` builds the
student from a Hugging Face folder on the meta device (FSDP2, bf16 parameters,
activation checkpointing), trains step 1, writes a DCP checkpoint and then
trains step 2; `resume` scores step 2's batch with the freshly loaded HF weights
(`fresh2`), loads that checkpoint on WORLD workers and trains step 2. Both
write step 2's loss, so a test compares a resume on 1 worker with the
uninterrupted run on 2.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np


def batch(seed: int, vocab: int = 32, rows: int = 4, t: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, vocab, (rows, t)).astype(np.int32)
    labels[:, :3] = -100
    return {"input_ids": rng.integers(0, vocab, (rows, t)).astype(np.int32), "labels": labels,
            "position_ids": np.tile(np.arange(t, dtype=np.int32), (rows, 1)),
            "topk_ids": np.where(labels[..., None] >= 0, rng.integers(0, vocab, (rows, t, 2)), -1).astype(np.int32),
            "topk_logprobs": np.full((rows, t, 2), -0.7, np.float16), "num_tokens": np.full(rows, t, np.int32)}


def micro_batches(b: dict[str, np.ndarray], rank: int, world: int) -> list[dict[str, np.ndarray]]:
    """This worker's micro-batches of a global batch of 4 rows: rows are split into chunks of 1 round-robin."""
    rows = len(b["input_ids"])
    mine = [i for i in range(rows) if i % world == rank]
    return [{k: v[i:i + 1] for k, v in b.items()} for i in mine]


def _setup(rank: int, world: int, port: int, always: bool = False) -> None:
    """torch.distributed over gloo (for 1 process too when `always`, as a 1-worker Ray Train job has it)."""
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if world > 1 or always:
        dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)


def _teardown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()  # no rank tears gloo down while the other still talks to it (std::terminate in teardown)
        dist.destroy_process_group()


def _step(model, opt, sched, b, rank, world, loss_cfg):
    import torch

    from potstill.pipelines.distill.train_loop import to_device, train_step

    return train_step(model, opt, sched, [to_device(x, torch.device("cpu")) for x in micro_batches(b, rank, world)],
                      loss_cfg, grad_clip=0.5)


def run_step(rank: int, world: int, kind: str, port: int, out: str) -> None:
    _setup(rank, world, port)
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from potstill.pipelines.distill import parallel
    from potstill.pipelines.distill.loss_model import StudentWithLoss
    from potstill.pipelines.distill.schedule import build_scheduler
    from potstill.schemas.training import LossConfig, OptimConfig
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=1, num_key_value_heads=1, head_dim=64,
                                      max_position_embeddings=32, tie_word_embeddings=True))
    if kind == "fsdp-offload-ac":  # FSDP2 with CPU offload and activation checkpointing: the same math
        model = parallel.wrap_model(StudentWithLoss(lm), "fsdp", torch.device("cpu"), "fp32",
                                    activation_checkpointing=True, cpu_offload=True)
    else:
        model = parallel.wrap_model(StudentWithLoss(lm), kind, torch.device("cpu"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = build_scheduler(opt, OptimConfig(warmup_steps=0, schedule="constant"), 10)
    m = _step(model, opt, sched, batch(0), rank, world, LossConfig(sft_weight=1.0, kd_weight=0.5, chunk_tokens=7))
    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        json.dump({"loss": m["loss"], "grad_norm": m["grad_norm"],
                   "params": {k: v.float().sum().item() for k, v in sd.items()}}, open(out, "w"))
    _teardown()


def _loss(model, b, rank, world, loss_cfg) -> float:
    """The step's loss without training (no gradients): what the model as it is scores on the global batch `b`."""
    import torch
    import torch.distributed as dist

    from potstill.pipelines.distill.train_loop import loss_scales, to_device

    mbs = [to_device(x, torch.device("cpu")) for x in micro_batches(b, rank, world)]
    counts = torch.tensor([sum(float((m["labels"] != -100).sum()) for m in mbs)], dtype=torch.float64)
    dist.all_reduce(counts)
    scales = loss_scales(loss_cfg, float(counts[0]), float(counts[0]), 1)
    total = torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for m in mbs:
            total += model(m["input_ids"], m["position_ids"], m["labels"], m["topk_ids"], m["topk_logprobs"], scales=scales)[0].double()
    dist.all_reduce(total)
    return float(total)


def _fsdp_student(hf_dir: str):
    import torch

    from potstill.pipelines.distill.schedule import build_scheduler
    from potstill.pipelines.distill.student_init import build_trainable
    from potstill.schemas.training import OptimConfig, TrainingConfig

    cfg = TrainingConfig.model_validate({
        "name": "t", "data": {"runs": ["x"]}, "student": {"model": hf_dir, "attn_implementation": "sdpa"},
        "strategy": {"kind": "fsdp", "precision": "bf16", "activation_checkpointing": True}})
    from potstill.pipelines.distill.student import load_tokenizer

    model = build_trainable(cfg, load_tokenizer(hf_dir), torch.device("cpu"), "bf16")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    sched = build_scheduler(opt, OptimConfig(warmup_steps=0, schedule="linear"), 10)
    return model, opt, sched


def run_save_or_resume(rank: int, world: int, mode: str, hf_dir: str, ckpt_dir: str, port: int, out: str) -> None:
    _setup(rank, world, port, always=True)
    from potstill.pipelines.distill.checkpointing import Checkpointer
    from potstill.pipelines.distill.train_loop import LoopState
    from potstill.schemas.training import LossConfig

    loss_cfg = LossConfig(sft_weight=1.0, kd_weight=0.5)
    model, opt, sched = _fsdp_student(hf_dir)
    ckpt = Checkpointer(async_save=True)
    result = {}
    if mode == "save":
        result["step1"] = _step(model, opt, sched, batch(1, vocab=256), rank, world, loss_cfg)["loss"]
        ckpt.save(ckpt_dir, model, opt, sched, LoopState(step=1), {"loss": result["step1"]})
        ckpt.wait()
    else:
        result["fresh2"] = _loss(model, batch(2, vocab=256), rank, world, loss_cfg)  # before loading: the HF weights
        assert ckpt.load(ckpt_dir, model, opt, sched).step == 1
    m = _step(model, opt, sched, batch(2, vocab=256), rank, world, loss_cfg)
    result.update(step2=m["loss"], grad_norm2=m["grad_norm"], lr=m["lr"])
    if rank == 0:
        json.dump(result, open(out, "w"))
    _teardown()


def _spawn(fn, world: int, *args) -> None:
    import torch.multiprocessing as mp

    if world == 1:
        fn(0, 1, *args)
    else:
        mp.spawn(fn, args=(world, *args), nprocs=world)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "step":
        kind, world, port, out = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        _spawn(run_step, world, kind, port, out)
    else:
        hf_dir, ckpt_dir, world, port, out = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
        _spawn(run_save_or_resume, world, mode, hf_dir, ckpt_dir, port, out)
