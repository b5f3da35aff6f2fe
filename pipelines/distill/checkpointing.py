"""What a training checkpoint holds, and how a worker group writes and restores it.

    save_checkpoint(d, model, optimizer, scheduler, state, metrics, tokenizer=tok if final else None)  # all ranks
    state = restore_checkpoint(d, model, optimizer, scheduler)                                        # all ranks

A checkpoint folder has `train_state.pt` (full model and optimizer state dicts
keyed by parameter name, the LR scheduler, and the loop counters
`LoopState`), `metrics.json`, and in the final one `hf/`: the student as a
Hugging Face folder that transformers and vLLM load. Full (unsharded) state
dicts make checkpoints independent of the strategy (DDP or FSDP) and of the
worker count. Saving is a collective under FSDP, so every rank calls it;
only rank 0 writes files.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from potstill.pipelines.distill.parallel import full_model_state, full_state, load_full_state

if TYPE_CHECKING:
    from potstill.pipelines.distill.train_loop import LoopState

STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.json"
HF_SUBDIR = "hf"


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def save_checkpoint(
    out_dir: str | Path, model: Any, optimizer: Any, scheduler: Any, state: "LoopState", metrics: dict[str, Any],
    tokenizer: Any = None,
) -> bool:
    """Write the checkpoint into `out_dir` (rank 0; every rank must call); with `tokenizer`, also `hf/`.

    Returns True on the rank that wrote files.
    """
    import torch

    model_sd, optim_sd = full_state(model, optimizer)
    if _rank() != 0:
        return False
    out = Path(out_dir)
    torch.save({"model": model_sd, "optimizer": optim_sd, "scheduler": scheduler.state_dict(), "loop": asdict(state)},
               out / STATE_FILE)
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    if tokenizer is not None:
        save_hf_from_state(model, model_sd, tokenizer, out / HF_SUBDIR)
    return True


def save_hf_from_state(model: Any, model_sd: dict[str, Any], tokenizer: Any, out_dir: Path) -> Path:
    """A plain (unwrapped, unsharded) copy of `model` with `model_sd` loaded, saved as a Hugging Face folder."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from potstill.pipelines.distill.student import save_hf, unwrap

    hf_logging.disable_progress_bar()

    config = unwrap(model).config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model_sd)
    return save_hf(plain, tokenizer, out_dir)


def final_hf(model: Any, tokenizer: Any, out_dir: str | Path) -> bool:
    """Save only the Hugging Face folder (every rank must call); True on the rank that wrote it."""
    model_sd = full_model_state(model)
    if _rank() != 0:
        return False
    save_hf_from_state(model, model_sd, tokenizer, Path(out_dir))
    return True


def load_checkpoint(in_dir: str | Path) -> dict[str, Any]:
    """What `save_checkpoint` wrote: `model`, `optimizer`, `scheduler` state dicts and `loop` counters."""
    import torch

    return torch.load(Path(in_dir) / STATE_FILE, map_location="cpu", weights_only=True)


def restore_checkpoint(in_dir: str | Path, model: Any, optimizer: Any, scheduler: Any) -> "LoopState":
    """Load a checkpoint into the (wrapped) model, optimizer and scheduler; returns its loop counters."""
    from potstill.pipelines.distill.train_loop import LoopState

    saved = load_checkpoint(in_dir)
    load_full_state(model, optimizer, saved["model"], saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    return LoopState(**saved["loop"])
