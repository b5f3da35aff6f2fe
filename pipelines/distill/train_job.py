"""The distillation job driver: committed trace files -> Ray Train -> student checkpoints and HF folder.

    result = run_training(TrainingConfig(...), committed_data_files(run_uri, storage))

Reads exactly the given committed Parquet files, checks the student/teacher
tokenizers and the KD inputs up front (clear errors before any worker starts),
builds the packed Ray dataset, and runs a `TorchTrainer` with
`RunConfig(name=cfg.name, storage_path=cfg.checkpoint.storage_path)`. Ray Train
V2 keeps a checkpoint-manager snapshot under `<storage_path>/<name>/`; a
re-run with the same name loads it and `ray.train.get_checkpoint()` hands the
workers the latest checkpoint, so training resumes where it stopped (the
step counter continues). The final student is copied to
`<storage_path>/<name>/student/` as a Hugging Face folder.

With `run.max_steps` unset, the packed dataset is materialized once (its row
count sets the steps per epoch and the LR schedule length, and epochs reuse
it); with `run.max_steps` set it streams (for corpora too big for the object
store).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from potstill.pipelines.distill.dataset import TraceSource, arrow_filesystem, build_dataset, trace_sources

if TYPE_CHECKING:
    from potstill.schemas.training import TrainingConfig

STUDENT_SUBDIR = "student"


def steps_per_epoch(rows: int, num_workers: int, micro_batch_size: int, grad_accum: int) -> int:
    """Optimizer steps per epoch: Ray's equal split gives each worker rows // num_workers rows."""
    micro = math.ceil((rows // num_workers) / micro_batch_size)
    return math.ceil(micro / grad_accum)


def _teacher_of(sources: list[TraceSource]) -> str | None:
    teachers = sorted({s.teacher_model for s in sources})
    return teachers[0] if len(teachers) == 1 else None


def plan_tokenization(cfg: "TrainingConfig", sources: list[TraceSource]) -> tuple[str, bool, int]:
    """(student tokenizer folder, whether to use the teacher's completion ids, top-k width to load).

    Raises when KD is asked for but cannot work: several teachers, no top-k in
    the traces, or a student tokenizer that differs from the teacher's.
    """
    from potstill.pipelines.distill.student import check_kd_tokenizer, load_tokenizer, same_vocabulary, student_tokenizer_path
    from potstill.pipelines.model_assets import resolve_model

    teacher = _teacher_of(sources)
    kd = cfg.loss.kd_weight > 0
    if teacher is None and (kd or (cfg.student.model is None and cfg.student.tokenizer is None)):
        names = sorted({s.teacher_model for s in sources})
        raise ValueError(
            f"data.runs come from several teachers {names}; a fresh student or loss.kd_weight > 0 needs one teacher "
            "tokenizer: train on runs of one teacher, or set student.tokenizer and loss.kd_weight: 0"
        )
    path = student_tokenizer_path(cfg.student, teacher)
    width = max((s.topk_width for s in sources), default=0) if kd else 0
    if kd and width == 0:
        raise ValueError(
            f"loss.kd_weight={cfg.loss.kd_weight} but the traces carry no teacher top-k logprobs "
            "(they were generated with sampling.logprobs: 0); regenerate with sampling.logprobs: 20 or set loss.kd_weight: 0"
        )
    if teacher is None:
        return path, False, 0
    teacher_path = resolve_model(teacher)
    if teacher_path == path:
        return path, True, width
    if not Path(teacher_path).is_dir():
        if kd:
            raise ValueError(
                f"loss.kd_weight={cfg.loss.kd_weight} needs the teacher's tokenizer to check the ids match, but teacher "
                f"{teacher!r} is not a local folder; make it available at that path or set loss.kd_weight: 0"
            )
        return path, False, 0  # SFT only: re-tokenizing the completion text is always correct
    student_tok, teacher_tok = load_tokenizer(path), load_tokenizer(teacher_path)
    check_kd_tokenizer(cfg.loss, student_tok, teacher_tok)
    return path, same_vocabulary(student_tok, teacher_tok), width


def _storage(cfg: "TrainingConfig") -> tuple[str, Any]:
    """(storage_path for RunConfig, pyarrow filesystem or None)."""
    uri = cfg.checkpoint.storage_path
    fs = arrow_filesystem(uri, cfg.data.storage)
    if fs is not None:
        return uri.split("://", 1)[1], fs
    return os.path.abspath(uri), None


def run_training(cfg: "TrainingConfig", data_files: list[str]) -> dict[str, Any]:
    """Train the student on `data_files` (committed shards); returns a summary of the run."""
    import pyarrow.fs as pafs
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from potstill.pipelines.distill.train_loop import HF_SUBDIR, train_func, worker_config

    if cfg.strategy.kind != "ddp":
        raise ValueError(f"strategy.kind={cfg.strategy.kind!r} is not supported by the distillation loop yet; set strategy.kind: ddp")
    if not data_files:
        raise ValueError(f"no committed data files for data.runs={cfg.data.runs}; generate (and commit) traces first")
    sources = trace_sources(data_files, cfg.data.storage)
    tokenizer_path, use_teacher_ids, width = plan_tokenization(cfg, sources)
    if not ray.is_initialized():
        ray.init()
    use_gpu = cfg.scaling.use_gpu if cfg.scaling.use_gpu is not None else ray.cluster_resources().get("GPU", 0) > 0
    ds = build_dataset(data_files, cfg, tokenizer_path, use_teacher_ids, width)
    rows = None
    total = cfg.run.max_steps
    if total is None:
        ds = ds.materialize()
        rows = ds.count()
        per_epoch = steps_per_epoch(rows, cfg.scaling.num_workers, cfg.run.micro_batch_size, cfg.run.grad_accum_steps)
        if per_epoch == 0:
            raise ValueError(
                f"the traces pack into {rows} sequences, fewer than scaling.num_workers={cfg.scaling.num_workers}; "
                "add traces, lower packing.max_tokens or lower scaling.num_workers"
            )
        total = cfg.run.epochs * per_epoch
    storage_path, storage_fs = _storage(cfg)
    resources = {"CPU": cfg.scaling.cpus_per_worker} | ({"GPU": 1} if use_gpu else {})
    trainer = TorchTrainer(
        train_func,
        train_loop_config=worker_config(cfg, tokenizer_path, total),
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.scaling.num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=cfg.name, storage_path=storage_path, storage_filesystem=storage_fs,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.checkpoint.keep),
            failure_config=ray.train.FailureConfig(max_failures=cfg.checkpoint.max_failures),
        ),
        datasets={"train": ds},
    )
    result = trainer.fit()
    final = result.checkpoint
    student_dir = f"{storage_path.rstrip('/')}/{cfg.name}/{STUDENT_SUBDIR}"
    fs = final.filesystem
    if fs.get_file_info(student_dir).type != pafs.FileType.NotFound:
        fs.delete_dir(student_dir)
    fs.create_dir(student_dir, recursive=True)
    pafs.copy_files(f"{final.path}/{HF_SUBDIR}", student_dir, source_filesystem=fs, destination_filesystem=fs)
    return {
        "name": cfg.name,
        "student": student_dir if storage_fs is None else f"s3://{student_dir}",
        "checkpoint": final.path,
        "steps": total,
        "packed_rows": rows,
        "use_teacher_ids": use_teacher_ids,
        "topk_width": width,
        "metrics": result.metrics,
    }
