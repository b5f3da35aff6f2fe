"""The distillation job driver: committed trace files -> Ray Train -> student checkpoints and HF folder.

    potstill train examples/distill_arithmetic.yaml       # the CLI around `run_training`
    summary = run_training(cfg)                           # files from the runs' manifests (or live commits)

Reads exactly the committed Parquet files the runs' manifests list
(`run_data.finished_run_files`; a run without manifest.json/_SUCCESS is
refused with the fix), checks the student/teacher tokenizers and the KD
inputs up front (clear errors before any worker starts), builds the packed
Ray dataset and runs a `TorchTrainer` (gloo on CPU, NCCL on GPU) with
`RunConfig(name=cfg.name, storage_path=cfg.checkpoint.storage_path)`,
`CheckpointConfig(num_to_keep=checkpoint.keep)` and
`FailureConfig(max_failures=checkpoint.max_failures)`. The workers write
torch distributed checkpoints (one file per rank) under
`<storage_path>/<name>/checkpoint_<step>/` and register them with Ray Train,
which keeps a checkpoint-manager snapshot there; a re-run with the same name
loads it and the workers resume from the latest checkpoint (the step counter
continues), on any worker count. The final student is exported as a Hugging
Face folder to `<storage_path>/<name>/student/`.

With `data.follow` the workers read shards as they commit (`follow.py`); the
driver only waits for the first one (to learn the teacher and top-k width).
Otherwise the packed dataset is materialized once: its row count sets the
steps per epoch and (without `run.max_steps`) the LR schedule length, epochs
reuse it, and every worker reads its part of each global batch from its blocks
(`global_order.py`: the same batches on any worker count).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from potstill.cluster.connect import ensure_ray
from potstill.pipelines.distill.dataset import TraceSource, arrow_filesystem, trace_sources
from potstill.pipelines.jobs.train_dataset import build_dataset, materialized_blocks, split_by_format

if TYPE_CHECKING:
    from potstill.schemas.training import TrainingConfig

FOLLOW_UNBOUNDED_STEPS = 2**62
"""Step budget of a follow-mode job with a constant schedule and no run.max_steps: it ends with the run."""

ProgressFn = Callable[[dict[str, Any]], None]


def steps_per_epoch(rows: int, global_batch: int) -> int:
    """Optimizer steps per epoch of `rows` packed rows, `global_batch` rows a step (the last step may be short)."""
    return math.ceil(rows / global_batch)


def _teacher_of(sources: list[TraceSource]) -> str | None:
    teachers = sorted({s.teacher_model for s in sources})
    return teachers[0] if len(teachers) == 1 else None


def plan_tokenization(cfg: "TrainingConfig", sources: list[TraceSource]) -> tuple[str, bool, int]:
    """(student tokenizer folder, whether to use the teacher's completion ids, top-k width to load).

    Raises when KD is asked for but cannot work: several teachers, no top-k in
    the traces, or a student tokenizer that differs from the teacher's.
    """
    from potstill.pipelines.distill.student import check_kd_tokenizer, load_tokenizer, same_vocabulary, student_tokenizer_path
    from potstill.pipelines.models.assets import resolve_model

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
    student_tok, teacher_tok = load_tokenizer(path, cfg.data.storage), load_tokenizer(teacher_path)
    check_kd_tokenizer(cfg.loss, student_tok, teacher_tok)
    return path, same_vocabulary(student_tok, teacher_tok), width


def check_follow(cfg: "TrainingConfig") -> None:
    """A live run has no known size, so the LR schedule needs `run.max_steps` (or a constant schedule)."""
    if cfg.data.follow and cfg.run.max_steps is None and cfg.optim.schedule != "constant":
        raise ValueError(
            f"data.follow: true with optim.schedule: {cfg.optim.schedule} needs run.max_steps (the schedule's length; "
            "a live run's size is unknown when training starts); set run.max_steps, or optim.schedule: constant"
        )


def _storage(cfg: "TrainingConfig") -> tuple[str, Any]:
    """(storage_path for RunConfig, pyarrow filesystem or None)."""
    uri = cfg.checkpoint.storage_path
    fs = arrow_filesystem(uri, cfg.data.storage)
    if fs is not None:
        return uri.split("://", 1)[1], fs
    return os.path.abspath(uri), None


def _first_commits(cfg: "TrainingConfig", on_progress: ProgressFn | None) -> list[str]:
    """Follow mode: wait until the runs have at least one committed shard; returns the committed files so far."""
    from potstill.pipelines.distill.run_data import CommitWatcher

    watcher = CommitWatcher(cfg.data.runs, cfg.data.storage)
    while True:
        files, finished = watcher.poll()
        if files:
            return files
        if finished:
            raise ValueError(f"data.runs {cfg.data.runs} finished with no committed shards; generate traces into them first")
        watcher.check_alive(cfg.data.follow_idle_timeout_s)  # a dead generator: stop with the fix, never wait forever
        if on_progress is not None:
            on_progress({"phase": "waiting for the first shard", "step": 0, "total_steps": None})
        time.sleep(cfg.data.follow_poll_s)


def local_cpus(num_workers: int, cpus_per_worker: float) -> int:
    """Logical CPUs for a local Ray: the workers plus headroom for Ray Data's read and pack tasks."""
    return max(os.cpu_count() or 1, math.ceil(num_workers * cpus_per_worker) + 2)


def quiet_ray_data() -> None:
    """No per-operator progress bars from Ray Data (the job shows its own progress)."""
    import logging

    from ray.data import DataContext

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False


def _watch(board: Any, on_progress: ProgressFn, stop: threading.Event) -> None:
    import ray

    while not stop.wait(0.5):
        try:
            on_progress(ray.get(board.get.remote(), timeout=5))
        except Exception:  # noqa: BLE001 - progress is best effort; the fit result decides success
            pass


def run_training(
    cfg: "TrainingConfig", data_files: list[str] | None = None, *, address: str | None = None,
    on_progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Train the student; returns a summary of the run.

    `data_files` overrides where the traces come from (committed files, e.g.
    from `committed_data_files`); by default they are the manifests' files of
    `cfg.data.runs`, or, with `data.follow`, whatever commits while training.
    """
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from potstill.pipelines.distill.job_record import claim_job
    from potstill.pipelines.distill.faults import step_fault
    from potstill.pipelines.distill.local_reader import PackSpec
    from potstill.pipelines.distill.progress import TrainProgress
    from potstill.pipelines.distill.run_data import finished_run_files
    from potstill.pipelines.distill.student import load_tokenizer
    from potstill.pipelines.jobs.train_worker import STUDENT_SUBDIR, train_func, worker_config

    from potstill.pipelines.observe.redact import install_redaction

    install_redaction(cfg.model_dump())
    started = time.time()
    check_follow(cfg)
    follow = cfg.data.follow and data_files is None
    if data_files is None:
        data_files = _first_commits(cfg, on_progress) if follow else finished_run_files(cfg.data)
    if not data_files:
        raise ValueError(f"no committed data files for data.runs={cfg.data.runs}; generate (and commit) traces first")
    sources = trace_sources(data_files, cfg.data.storage)
    tokenizer_path, use_teacher_ids, width = plan_tokenization(cfg, sources)
    tok = load_tokenizer(tokenizer_path, cfg.data.storage)
    spec = PackSpec(cfg.data.model_dump(mode="json"), tokenizer_path, use_teacher_ids, width, cfg.packing.max_tokens,
                    cfg.packing.enabled, tok.pad_token_id if tok.pad_token_id is not None else 0)
    ensure_ray(address, local_cpus(cfg.scaling.num_workers, cfg.scaling.cpus_per_worker), dashboard=True)
    quiet_ray_data()
    use_gpu = cfg.scaling.use_gpu if cfg.scaling.use_gpu is not None else ray.cluster_resources().get("GPU", 0) > 0
    if on_progress is not None:
        on_progress({"phase": "packing traces", "step": 0, "total_steps": None})

    ds, blocks, rows, traces, efficiency = None, None, None, None, None
    total = cfg.run.max_steps
    if not follow:
        ds = build_dataset(split_by_format(data_files, sources), cfg, tokenizer_path, use_teacher_ids, width)
        ds.context.execution_options.preserve_order = True  # same rows in the same order on every run
        ds = ds.materialize()
        rows = ds.count()
        if rows == 0:
            raise ValueError(f"no trace of data.runs {cfg.data.runs} passed the data filters (verified_only, "
                             "require_stop, max_completion_tokens) and fit packing.max_tokens; relax them or add traces")
        if total is None:
            total = cfg.run.epochs * steps_per_epoch(rows, cfg.global_batch())
        sums = ds.sum(["num_docs", "num_tokens"])  # one pass over the materialized rows
        traces = int(sums["sum(num_docs)"])
        efficiency = float(sums["sum(num_tokens)"]) / (rows * cfg.packing.max_tokens)
        blocks = materialized_blocks(ds)
    elif total is None:
        total = FOLLOW_UNBOUNDED_STEPS

    claim_job(cfg, data_files, follow)  # a resume with another config, worker count or data is refused here
    storage_path, storage_fs = _storage(cfg)
    run_dir = f"{storage_path.rstrip('/')}/{cfg.name}"
    board = ray.remote(TrainProgress).options(num_cpus=0).remote()
    board.post.remote(phase="starting workers", step=0, total_steps=None if total == FOLLOW_UNBOUNDED_STEPS else total,
                      packed_rows=rows, packing_efficiency=efficiency, epochs=cfg.run.epochs)
    resources = {"CPU": cfg.scaling.cpus_per_worker} | ({"GPU": 1} if use_gpu else {})
    trainer = TorchTrainer(
        train_func,
        train_loop_config=worker_config(cfg, spec, total, board, step_fault(cfg.faults, run_dir), blocks),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.scaling.num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=cfg.name, storage_path=storage_path, storage_filesystem=storage_fs,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.checkpoint.keep),
            failure_config=ray.train.FailureConfig(max_failures=cfg.checkpoint.max_failures),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(board, on_progress, stop), daemon=True) if on_progress else None
    if watcher is not None:
        watcher.start()
    try:
        result = trainer.fit()
    finally:
        stop.set()
        if watcher is not None:
            watcher.join(timeout=2)
    progress = ray.get(board.get.remote())
    ray.kill(board)

    final = result.checkpoint
    student_dir = f"{run_dir}/{STUDENT_SUBDIR}"
    metrics = result.metrics or {}
    return {
        "name": cfg.name,
        "student": student_dir if storage_fs is None else f"s3://{student_dir}",
        "checkpoint": final.path,
        "steps": metrics.get("step", total),
        "planned_steps": None if total == FOLLOW_UNBOUNDED_STEPS else total,
        "epochs": cfg.run.epochs,
        "traces": traces,
        "packed_rows": rows,
        "packing_efficiency": efficiency if efficiency is not None else metrics.get("packing_efficiency"),
        "use_teacher_ids": use_teacher_ids,
        "topk_width": width,
        "strategy": cfg.strategy.kind,
        "workers": cfg.scaling.num_workers,
        "use_gpu": use_gpu,
        "follow": follow,
        "attempts": progress.get("attempts", []),
        "metrics": metrics,
        "elapsed_s": round(time.time() - started, 1),
    }
