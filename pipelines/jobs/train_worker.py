"""The Ray Train worker of the distillation job: `train_func` wraps the framework-light loop.

    TorchTrainer(train_func, train_loop_config=worker_config(...), ...)

Each worker builds the student (`student_init.build_trainable`: sharded from
the meta device under FSDP, bf16 by policy, activation checkpointing), restores
the latest checkpoint Ray Train hands it (`ray.train.get_checkpoint()`, read as
a torch distributed checkpoint through the project's storage stack, on any
worker count; or `checkpoint.resume_from`, another job's, when it has none yet)
and runs `run_loop` over its data: the global-order source over the
materialized packed dataset (the same rows per step on any worker count), or
`FollowSource` for live runs (`data.follow`).

Every `checkpoint.every_steps` steps and at each epoch end every worker writes
its shard of a checkpoint into `<storage_path>/<name>/checkpoint_<step>/`
(`checkpointing.Checkpointer`, asynchronously by default) and reports it to Ray
Train once written (`checkpoint_upload_mode` ASYNC with an upload function that
waits for the write, or NO_UPLOAD after a synchronous write): Ray Train keeps
the newest `checkpoint.keep`, restarts failed worker groups from the latest,
and a re-run of the same name resumes from it. At the end the final checkpoint
is written synchronously and the student is exported, streaming, as a Hugging
Face folder to `<storage_path>/<name>/student/`. Rank 0 posts live progress to
the driver's `TrainProgress` actor; the `faults` test hook
fails a worker on purpose (`faults.py`).
"""

from __future__ import annotations

import logging
import tempfile
import time
from typing import TYPE_CHECKING, Any

from potstill.pipelines.distill.faults import StepFault, maybe_fail
from potstill.pipelines.distill.train_loop import LoopPlan, LoopState, run_loop

if TYPE_CHECKING:
    from potstill.pipelines.distill.local_reader import PackSpec
    from potstill.schemas.training import TrainingConfig

PROGRESS_EVERY_S = 0.5
SHUFFLE_BUFFER_ROWS = 256
"""Packed rows each worker shuffles among in follow mode (seeded per epoch). Packing sorts documents by length, so
rows arrive grouped by length; without this, every epoch would end on the shortest traces."""
STUDENT_SUBDIR = "student"


def worker_config(
    cfg: "TrainingConfig", spec: "PackSpec", total_steps: int, board: Any = None, fault: StepFault | None = None,
    blocks: list[tuple[Any, int]] | None = None,
) -> dict[str, Any]:
    """The `train_loop_config` of the TorchTrainer: plain values, the progress actor handle and, for a materialized
    dataset, its blocks (object refs and row counts) in order."""
    from dataclasses import asdict

    return {"cfg": cfg.model_dump(mode="json"), "spec": asdict(spec), "total_steps": total_steps,
            "board": board, "fault": fault, "blocks": blocks}


def _quiet_reports() -> None:
    """No INFO line per `ray.train.report` on the console (the driver shows progress instead)."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:  # Ray Train V2 logs each report through a logger named after its file, outside `ray.train`
        from ray.train.v2._internal.execution import context

        logging.getLogger(context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def export_dtype(cfg: "TrainingConfig", precision: str) -> Any:
    import torch

    if cfg.checkpoint.export_dtype == "auto":
        return torch.bfloat16 if precision == "bf16" else torch.float32
    return getattr(torch, cfg.checkpoint.export_dtype)


def checkpoint_uri(fs_path: str, remote: bool) -> str:
    """The storage URI of a Ray Train filesystem path (`bucket/key` on S3)."""
    return f"s3://{fs_path}" if remote else fs_path


def train_func(config: dict[str, Any]) -> None:
    """Ray Train worker entry point (see module docstring)."""
    import ray.train
    import ray.train.torch
    import torch

    from potstill.pipelines.distill.checkpointing import Checkpointer
    from potstill.pipelines.distill.cpu_binding import bind_worker
    from potstill.pipelines.distill.dataset import arrow_filesystem
    from potstill.pipelines.distill.local_reader import PackSpec, empty_batch
    from potstill.pipelines.distill.parallel import autocast_dtype, resolve_precision
    from potstill.pipelines.distill.schedule import build_scheduler
    from potstill.pipelines.distill.student import load_tokenizer
    from potstill.pipelines.distill.student_init import build_trainable
    from potstill.pipelines.output.storage import is_remote
    from potstill.schemas.training import TrainingConfig

    from potstill.pipelines.observe.redact import install_redaction

    install_redaction(config["cfg"])  # every log record of this worker (Ray Train's, torch's, ours) redacted
    _quiet_reports()
    cfg = TrainingConfig.model_validate(config["cfg"])
    spec = PackSpec(**config["spec"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    # Ray does not always set OMP_NUM_THREADS in train workers (it was unset under `potstill demo`); torch then
    # computes on every core in every worker, and two workers on 2 cores ran 4 busy threads against each other.
    torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)))
    if device.type == "cpu" and cfg.scaling.bind_cpu_cores:
        bind_worker(ctx.get_local_rank(), ctx.get_local_world_size(), cfg.scaling.cpus_per_worker)
    board = config["board"] if rank == 0 else None
    storage = cfg.data.storage
    remote = is_remote(cfg.checkpoint.storage_path)
    tokenizer = load_tokenizer(spec.tokenizer_path, storage)
    precision = resolve_precision(cfg.strategy.precision, device)
    torch.manual_seed(cfg.run.seed)
    model = build_trainable(cfg, tokenizer, device, precision)
    o = cfg.optim
    optimizer = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    scheduler = build_scheduler(optimizer, o, config["total_steps"])
    ckpt = Checkpointer(storage, async_save=cfg.checkpoint.async_save)
    run_storage = ctx.get_storage()
    run_dir = run_storage.experiment_fs_path.rstrip("/")
    state = LoopState()
    checkpoint = ray.train.get_checkpoint()
    saved_step = None  # step of the newest checkpoint this worker group restored or wrote
    start = checkpoint_uri(checkpoint.path, remote) if checkpoint is not None else cfg.checkpoint.resume_from
    if start is not None:
        state = ckpt.load(start, model, optimizer, scheduler)
        saved_step = state.step if checkpoint is not None else None  # resume_from is another job's: save our own
        if rank == 0:
            print(f"[potstill train] resumed from {start} at step {state.step}, epoch {state.epoch} "
                  f"on {world} workers", flush=True)
    if board is not None:
        board.started.remote(state.step, state.epoch, start is not None)

    grad_accum = cfg.grad_accum(world)
    micro = cfg.run.micro_batch_size
    if cfg.data.follow:
        from potstill.pipelines.distill.follow import FollowSource
        from potstill.pipelines.distill.local_reader import LocalReader
        from potstill.pipelines.distill.run_data import CommitWatcher

        watcher = CommitWatcher(cfg.data.runs, storage) if rank == 0 else None

        def on_wait(seen: int, finished: bool) -> None:
            if board is not None:
                board.post.remote(phase="waiting for shards", shards_seen=seen)

        reader = LocalReader(spec, micro, SHUFFLE_BUFFER_ROWS, cfg.run.seed * 1000 + rank)
        epoch_batches = FollowSource(state, reader, spec, device, watcher, poll_s=cfg.data.follow_poll_s, on_wait=on_wait,
                                     idle_timeout_s=cfg.data.follow_idle_timeout_s)
    else:
        from potstill.pipelines.distill.global_order import BlockRows, GlobalOrderSource
        from potstill.pipelines.jobs.train_dataset import fetch_block

        epoch_batches = GlobalOrderSource(BlockRows(config["blocks"], fetch_block), micro, grad_accum, rank, world, cfg.run.seed,
                                          pad=lambda rows: empty_batch(spec, rows))

    fault = config["fault"]
    fault_fs = arrow_filesystem(cfg.checkpoint.storage_path, storage) if fault else None
    if fault and fault_fs is None:
        from pyarrow.fs import LocalFileSystem

        fault_fs = LocalFileSystem()
    last_post = 0.0

    def after_step(st: LoopState, m: dict[str, float]) -> None:
        nonlocal last_post
        maybe_fail(fault, st.step, rank, fault_fs, checkpointed_step=saved_step)
        now = time.monotonic()
        if board is not None and (now - last_post >= PROGRESS_EVERY_S or st.step == config["total_steps"]):
            last_post = now
            board.post.remote(phase="training", step=st.step, epoch=st.epoch, loss=m["loss"], lr=m["lr"],
                              packing_efficiency=m["doc_tokens"] / m["positions"] if m["positions"] else 0.0,
                              tokens_per_s=m["positions"] / m["step_s"] if m["step_s"] else 0.0)

    def report(st: LoopState, metrics: dict[str, float], final: bool) -> None:
        nonlocal saved_step
        from ray.train import Checkpoint, CheckpointUploadMode

        if board is not None:
            board.post.remote(phase="saving final model" if final else "checkpointing", step=st.step, epoch=st.epoch)
        metrics = {**metrics, "final": final}
        if st.step == saved_step:  # already checkpointed (a resumed, finished run; a final report right after one)
            ckpt.wait()
            if final:
                export_student(st)
            ray.train.report(metrics)
            return
        name = f"checkpoint_{st.step:09d}"
        uri = checkpoint_uri(f"{run_dir}/{name}", remote)
        pending = ckpt.save(uri, model, optimizer, scheduler, st, metrics, blocking=final)
        saved_step = st.step
        persisted = Checkpoint(path=f"{run_dir}/{name}", filesystem=run_storage.storage_filesystem)
        if final:
            export_student(st)
        if pending.done:
            ray.train.report(metrics, checkpoint=persisted, checkpoint_dir_name=name,
                             checkpoint_upload_mode=CheckpointUploadMode.NO_UPLOAD)
            return
        # Ray registers the checkpoint from a background thread once the upload function returns: after the write.
        with tempfile.TemporaryDirectory() as placeholder:
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(placeholder), checkpoint_dir_name=name,
                             checkpoint_upload_mode=CheckpointUploadMode.ASYNC, delete_local_checkpoint_after_upload=False,
                             checkpoint_upload_fn=lambda _ckpt, _name, pending=pending: (pending.wait(), persisted)[1])

    def export_student(st: LoopState) -> None:
        from potstill.pipelines.distill.hf_export import export_hf

        export_hf(model, tokenizer, checkpoint_uri(f"{run_dir}/{STUDENT_SUBDIR}", remote), storage,
                  export_dtype(cfg, precision))

    plan = LoopPlan(cfg.run.epochs, config["total_steps"], grad_accum, cfg.checkpoint.every_steps)
    run_loop(model, optimizer, scheduler, epoch_batches, plan, state, cfg.loss, o.grad_clip, device, report,
             autocast_dtype(cfg.strategy.kind, precision), after_step)
    ckpt.wait()
    if board is not None:
        board.post.remote(phase="done", step=state.step, epoch=state.epoch)
