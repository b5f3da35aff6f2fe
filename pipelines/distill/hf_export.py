"""Export the trained student as a Hugging Face folder (sharded safetensors), streaming, from a sharded model.

    export_hf(model, tokenizer, "s3://bucket/train/run/student", storage, dtype=torch.bfloat16)   # every rank

The weights are planned into safetensors files of at most `max_file_bytes`
(`model-00001-of-0000N.safetensors` + `model.safetensors.index.json`, or one
`model.safetensors`), in state-dict order. Then, one parameter at a time, every
rank takes part in gathering that parameter (`DTensor.full_tensor`, under FSDP)
and only the rank that writes its file keeps it, in host memory, until the file
is written; files are spread over the ranks. So no GPU ever holds more than one
whole parameter, and no rank more than one file's worth of host memory. The
config (with the exported dtype), generation config and the tokenizer with its
chat template are written by rank 0; everything goes through the project's one
storage stack (local or s3://). The folder loads offline in transformers and vLLM.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import TYPE_CHECKING, Any

from potstill.pipelines.distill.student_init import hf_key, tied_aliases

if TYPE_CHECKING:
    import torch

    from potstill.schemas.generation import StorageConfig

MAX_FILE_BYTES = 5 * 2**30
INDEX_FILE = "model.safetensors.index.json"


def plan_files(sizes: dict[str, int], max_file_bytes: int) -> list[list[str]]:
    """Consecutive keys grouped into files of at most `max_file_bytes` (a larger single tensor gets its own)."""
    files: list[list[str]] = []
    current: list[str] = []
    used = 0
    for key, size in sizes.items():
        if current and used + size > max_file_bytes:
            files.append(current)
            current, used = [], 0
        current.append(key)
        used += size
    if current:
        files.append(current)
    return files


def file_names(n: int) -> list[str]:
    return ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]


def _dist() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def export_hf(model: Any, tokenizer: Any, uri: str, storage: "StorageConfig | None" = None,
              dtype: "torch.dtype | None" = None, max_file_bytes: int = MAX_FILE_BYTES) -> str:
    """Write `model` (a sharded or plain `StudentWithLoss`, or an HF model) as a Hugging Face folder at `uri`;
    every rank must call. Returns `uri`."""
    import torch
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    from potstill.pipelines.distill.loss_model import bare_lm
    from potstill.pipelines.output.storage import filesystem_for

    rank, world = _dist()
    lm = bare_lm(model)
    dtype = dtype or torch.float32
    fs, root = filesystem_for(uri, storage)
    state = get_model_state_dict(model)
    skip = tied_aliases(model)
    tensors = {hf_key(k): v for k, v in state.items() if k not in skip}
    sizes = {k: v.numel() * torch.empty((), dtype=dtype).element_size() for k, v in tensors.items()}
    files = plan_files(sizes, max_file_bytes)
    names = file_names(len(files))
    if rank == 0:
        if fs.exists(root):
            fs.rm(root, recursive=True)  # an earlier export (maybe with another file count) is replaced whole
        fs.makedirs(root, exist_ok=True)
    _barrier()
    with tempfile.TemporaryDirectory(prefix="potstill-export-") as tmp:
        for i, (keys, name) in enumerate(zip(files, names)):
            owner = i % world
            kept: dict[str, torch.Tensor] = {}
            for key in keys:
                t = tensors[key]
                mesh = getattr(t, "device_mesh", None)
                if mesh is not None and t.device.type != mesh.device_type:  # CPU-offloaded shards gather on the mesh's device
                    t = t.to(mesh.device_type)
                full = t.full_tensor() if hasattr(t, "full_tensor") else t  # a collective under FSDP: every rank
                if rank == owner:
                    kept[key] = full.detach().to(device="cpu", dtype=dtype).contiguous()
                del full
            if rank == owner:
                local = os.path.join(tmp, name)
                save_file(kept, local, metadata={"format": "pt"})
                fs.put(local, f"{root}/{name}")
                os.remove(local)
            del kept
        if rank == 0:
            _write_metadata(lm, tokenizer, dtype, files, names, sizes, tmp)
            for name in sorted(os.listdir(tmp)):
                fs.put(os.path.join(tmp, name), f"{root}/{name}")
    _barrier()
    return uri


def _write_metadata(lm: Any, tokenizer: Any, dtype: "torch.dtype", files: list[list[str]], names: list[str],
                    sizes: dict[str, int], out: str) -> None:
    """config.json, generation_config.json, tokenizer files and (several files) the weight index, into `out`."""
    import copy

    config = copy.deepcopy(lm.config)
    config.use_cache = True  # training runs without a KV cache; inference wants it
    config.dtype = dtype
    config.architectures = config.architectures or [type(lm).__name__]
    config.save_pretrained(out)
    gen = copy.deepcopy(lm.generation_config)
    gen.bos_token_id = tokenizer.bos_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    gen.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if len(names) > 1:
        index = {"metadata": {"total_size": sum(sizes.values())},
                 "weight_map": {key: name for keys, name in zip(files, names) for key in keys}}
        with open(os.path.join(out, INDEX_FILE), "w") as f:
            json.dump(index, f, indent=2)
