"""Where `potstill plan` finds a config's model shape and data size.

    shape, how = model_shape("s3://bucket/models/Qwen2.5-32B-Instruct", storage, architecture=None)
    data = training_data(cfg)                      # manifests of data.runs, else plan.traces / mean_trace_tokens

A model's shape comes from its folder's config.json when that is readable from
here (local, `potstill:` names, or s3:// through the storage stack), else from
the published shapes (`shapes.KNOWN`) by the configured `plan.architecture`
or the folder's name. Data size comes from the manifests of finished runs
(traces, and tokens per trace from the teacher's prompt and completion counts),
else from the config's plan hints.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from potstill.pipelines.planning.shapes import KNOWN, ModelShape, known_shape, shape_from_config
from potstill.pipelines.planning.train_plan import DataSize

if TYPE_CHECKING:
    from potstill.schemas.generation import GenerationConfig, StorageConfig
    from potstill.schemas.training import TrainingConfig


def _once(storage: "StorageConfig | None") -> "StorageConfig":
    """`storage` without retries: a plan falls back to published shapes or its hints rather than wait on a store."""
    from potstill.schemas.generation import StorageConfig

    return (storage or StorageConfig()).model_copy(update={"max_retries": 0})


def _read_config(folder: str, storage: "StorageConfig | None") -> dict | None:
    from potstill.pipelines.models.assets import resolve_model
    from potstill.pipelines.output.storage import filesystem_for

    try:
        fs, path = filesystem_for(resolve_model(folder), _once(storage))
        with fs.open(f"{path}/config.json", "rb") as f:
            return json.loads(f.read())
    except Exception:  # noqa: BLE001 - unreachable or not a model folder: fall back to the published shapes
        return None


def model_shape(folder: str, storage: "StorageConfig | None" = None, architecture: str | None = None,
                field: str = "student.model") -> tuple[ModelShape, str]:
    """(shape, where it came from) of the model in `folder` (see module docstring)."""
    if architecture:
        shape = known_shape(architecture)
        if shape is None:
            raise ValueError(f"plan.architecture {architecture!r} is not a published shape potstill knows; use one of "
                             f"{sorted(KNOWN)}")
        return shape, f"published shape of {shape.name}"
    config = _read_config(folder, storage)
    if config is not None:
        return shape_from_config(config, name=folder), f"{folder}/config.json"
    shape = known_shape(folder)
    if shape is None:
        raise ValueError(f"{field} {folder!r}: its config.json is not readable from here and its name matches no "
                         f"published shape; make the folder readable, or set plan.architecture to one of {sorted(KNOWN)}")
    return shape, f"published shape of {shape.name} (matched by name)"


def student_shape(cfg: "TrainingConfig") -> tuple[ModelShape, str]:
    """The student's shape: its pretrained folder, or a fresh Llama of `student.*`'s size."""
    s = cfg.student
    if s.model is not None or cfg.plan.architecture:
        return model_shape(s.model or "", cfg.data.storage, cfg.plan.architecture)
    shape = ModelShape("fresh Llama", vocab=32_000, hidden=s.hidden_size, layers=s.num_layers, heads=s.num_heads,
                       kv_heads=s.num_heads, head_dim=s.hidden_size // s.num_heads, intermediate=s.intermediate_size,
                       tied=True)
    return shape, "student.* sizes (vocabulary assumed 32,000: the teacher's tokenizer decides)"


def _read_manifest(uri: str, storage: "StorageConfig | None") -> Any:
    from potstill.pipelines.output.commit import read_manifest

    return read_manifest(uri, _once(storage))


def training_data(cfg: "TrainingConfig") -> DataSize:
    """Traces and mean tokens per trace: from the runs' manifests when all are finished and readable, else the
    plan hints; a ValueError names the fields when neither is there."""
    traces, tokens = 0, 0.0
    try:
        for uri in cfg.data.runs:
            m = _read_manifest(uri, cfg.data.storage)
            t = m.totals
            kept = t.verified if cfg.data.verified_only else t.traces
            per_trace = (t.prompt_tokens / max(t.prompts, 1)) + (t.completion_tokens / max(t.samples_drawn, 1))
            traces += kept
            tokens += kept * per_trace
        if traces:
            return DataSize(traces, tokens / traces, "manifests of data.runs")
    except Exception:  # noqa: BLE001 - runs not generated yet, or not readable from here
        pass
    p = cfg.plan
    if p.traces is None or p.mean_trace_tokens is None:
        raise ValueError("data.runs have no readable manifest.json yet; set plan.traces and plan.mean_trace_tokens "
                         "(the traces you expect and their mean length in tokens) to plan before generating")
    return DataSize(p.traces, float(p.mean_trace_tokens), "plan.traces and plan.mean_trace_tokens")


def count_prompts(cfg: "GenerationConfig") -> int | None:
    """Prompts of a generation config when countable from here (arithmetic, local JSONL or Parquet), else None."""
    from pathlib import Path

    p = cfg.prompts
    n = None
    if p.arithmetic is not None:
        n = p.arithmetic.count
    elif p.path and Path(p.path).is_file():
        path = Path(p.path)
        if p.format == "parquet" or path.suffix == ".parquet":
            import pyarrow.parquet as pq

            n = pq.ParquetFile(path).metadata.num_rows
        else:
            with open(path, "rb") as f:
                n = sum(1 for line in f if line.strip())
    if n is not None and p.limit is not None:
        n = min(n, p.limit)
    return n


def teacher_shape(cfg: "GenerationConfig") -> tuple[ModelShape | None, str]:
    """The teacher's shape (None for an API teacher: no GPUs)."""
    if getattr(cfg.teacher, "engine", "vllm") != "vllm":
        return None, f"{cfg.teacher.engine} engine (API teacher)"
    return model_shape(cfg.teacher.model, cfg.output.storage, field="teacher.model")
