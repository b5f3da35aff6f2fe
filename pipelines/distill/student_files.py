"""A student's Hugging Face folder on this machine: local paths as they are, s3:// folders cached once per node.

    folder = local_model_dir("s3://bucket/models/Qwen2.5-7B-Instruct", storage)                 # every file
    folder = local_model_dir("s3://bucket/models/Qwen2.5-7B-Instruct", storage, weights=False)  # config + tokenizer

Weights are read by `torch.distributed.checkpoint`'s Hugging Face reader, which
reads local safetensors files (each worker only the slices of its shard), so an
s3:// student is copied to a node-local cache first, through the project's one
S3 stack (`output.storage.filesystem_for`, with its retry policy). The workers
of a node share one copy: the first takes a file lock and downloads into a
temporary folder that is renamed into place when complete; the others wait on
the lock and find it done. `weights=False` fetches only the small files (config,
tokenizer, chat template, generation config) the driver needs.

The cache root is `$POTSTILL_MODEL_CACHE`, else `~/.cache/potstill/models`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from potstill.schemas.generation import StorageConfig

CACHE_ENV = "POTSTILL_MODEL_CACHE"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
COMPLETE = ".potstill-complete"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "potstill" / "models")


def _is_weight(name: str) -> bool:
    return name.endswith(WEIGHT_SUFFIXES)


def local_model_dir(uri: str, storage: "StorageConfig | None" = None, *, weights: bool = True) -> str:
    """The local folder holding `uri`'s files (all, or without the weights); downloads s3:// folders once."""
    from potstill.pipelines.models.assets import resolve_model
    from potstill.pipelines.output.storage import is_remote

    if not is_remote(uri):
        return resolve_model(uri)
    key = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    target = cache_root() / f"{name}-{key}" / ("full" if weights else "meta")
    if (target / COMPLETE).exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other workers of this node wait here, then find it complete
        if not (target / COMPLETE).exists():
            _download(uri, storage, target, weights)
    return str(target)


def _download(uri: str, storage: "StorageConfig | None", target: Path, weights: bool) -> None:
    from potstill.pipelines.output.storage import filesystem_for

    fs, root = filesystem_for(uri, storage)
    try:
        found = fs.find(root, detail=False)
    except FileNotFoundError:
        found = []
    files = [f for f in found if f.startswith(root + "/") and (weights or not _is_weight(f))]
    if not any(f.endswith("/config.json") for f in files):
        raise FileNotFoundError(
            f"student.model {uri!r} has no config.json: it is not a Hugging Face model folder (or the bucket is not "
            "readable with these credentials and storage settings); point student.model at the folder holding config.json"
        )
    tmp = target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        for f in files:
            dest = tmp / f[len(root) + 1:]
            dest.parent.mkdir(parents=True, exist_ok=True)
            fs.get(f, str(dest))
        (tmp / COMPLETE).write_text(uri + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
