"""The Ray Train worker of the distillation job: `train_func` wraps the framework-light loop.

    TorchTrainer(train_func, train_loop_config=worker_config(...), datasets={"train": ds}, ...)

Each worker builds the student, wraps it for the strategy (DDP or FSDP,
`parallel.py`), restores the latest checkpoint Ray Train hands it
(`ray.train.get_checkpoint()`: model, optimizer, scheduler, step, epoch,
position in the epoch), and runs `run_loop` over its data: the dataset shard
(`ray.train.get_dataset_shard`) for finished runs, or `FollowSource` for
live runs (`data.follow`). Every `checkpoint.every_steps` steps, at each
epoch end and at the end it reports metrics with a checkpoint
(`ray.train.report`); the final checkpoint also holds the student as a
Hugging Face folder under `hf/`. Rank 0 posts live progress to the driver's
`TrainProgress` actor; the `POTSTILL_FAULT_TRAIN_STEP` test hook fails a
worker on purpose (`faults.py`).
"""

from __future__ import annotations

import logging
import tempfile
import time
from typing import TYPE_CHECKING, Any

from potstill.pipelines.distill.checkpointing import restore_checkpoint, save_checkpoint
from potstill.pipelines.distill.faults import maybe_fail
from potstill.pipelines.distill.train_loop import LoopPlan, LoopState, run_loop, skip_consumed

if TYPE_CHECKING:
    from potstill.pipelines.distill.local_reader import PackSpec
    from potstill.schemas.training import TrainingConfig

PROGRESS_EVERY_S = 0.5
SHUFFLE_BUFFER_ROWS = 256
"""Packed rows each worker shuffles among (seeded per epoch). Packing sorts documents by length, so rows
arrive grouped by length; without this, every epoch would end on the shortest traces."""


def worker_config(
    cfg: "TrainingConfig", spec: "PackSpec", total_steps: int, board: Any = None, fault: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The `train_loop_config` of the TorchTrainer: plain values, plus the progress actor handle."""
    from dataclasses import asdict

    return {"cfg": cfg.model_dump(mode="json"), "spec": asdict(spec), "total_steps": total_steps,
            "board": board, "fault": fault}


def _quiet_reports() -> None:
    """No INFO line per `ray.train.report` on the console (the driver shows progress instead)."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:  # Ray Train V2 logs each report through a logger named after its file, outside `ray.train`
        from ray.train.v2._internal.execution import context

        logging.getLogger(context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass


def prefetch_batches(device: Any) -> int:
    """Batches Ray Data prepares ahead in background threads: 2 while an accelerator computes, none on CPU.

    A CPU worker computes on the very cores those threads would use: in the training benchmark (2 workers on 2
    cores) the median step took 63.3-64.8 ms with prefetching (one run, 3 rounds) and 61.1-62.3 ms with each
    batch fetched between steps (two runs, 5 rounds)."""
    return 0 if device.type == "cpu" else 2


def _autocast(precision: str, device: Any) -> Any:
    import torch

    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def train_func(config: dict[str, Any]) -> None:
    """Ray Train worker entry point (see module docstring)."""
    import ray.train
    import ray.train.torch
    import torch

    from potstill.pipelines.distill.cpu_binding import bind_worker
    from potstill.pipelines.distill.dataset import arrow_filesystem
    from potstill.pipelines.distill.local_reader import PackSpec
    from potstill.pipelines.distill.parallel import wrap_model
    from potstill.pipelines.distill.schedule import build_scheduler
    from potstill.pipelines.distill.student import load_student, load_tokenizer
    from potstill.schemas.training import TrainingConfig

    from potstill.pipelines.observe.redact import install_redaction

    install_redaction(config["cfg"])  # every log record of this worker (Ray Train's, torch's, ours) redacted
    _quiet_reports()
    cfg = TrainingConfig.model_validate(config["cfg"])
    spec = PackSpec(**config["spec"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()
    # Ray does not always set OMP_NUM_THREADS in train workers (it was unset under `potstill demo`); torch then
    # computes on every core in every worker, and two workers on 2 cores ran 4 busy threads against each other.
    torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)))
    if device.type == "cpu" and cfg.scaling.bind_cpu_cores:
        bind_worker(ctx.get_local_rank(), ctx.get_local_world_size(), cfg.scaling.cpus_per_worker)
    board = config["board"] if rank == 0 else None
    tokenizer = load_tokenizer(spec.tokenizer_path)
    model = load_student(cfg.student, tokenizer, max_positions=cfg.packing.max_tokens, seed=cfg.run.seed)
    model = wrap_model(model, cfg.strategy.kind, device)
    o = cfg.optim
    optimizer = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    scheduler = build_scheduler(optimizer, o, config["total_steps"])
    state = LoopState()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = restore_checkpoint(d, model, optimizer, scheduler)
        if rank == 0:
            print(f"[potstill train] resumed from checkpoint at step {state.step}, epoch {state.epoch}", flush=True)
    if board is not None:
        board.started.remote(state.step, state.epoch, checkpoint is not None)

    if cfg.data.follow:
        from potstill.pipelines.distill.follow import FollowSource
        from potstill.pipelines.distill.local_reader import LocalReader
        from potstill.pipelines.distill.run_data import CommitWatcher

        watcher = CommitWatcher(cfg.data.runs, cfg.data.storage) if rank == 0 else None

        def on_wait(seen: int, finished: bool) -> None:
            if board is not None:
                board.post.remote(phase="waiting for shards", shards_seen=seen)

        reader = LocalReader(spec, cfg.run.micro_batch_size, SHUFFLE_BUFFER_ROWS, cfg.run.seed * 1000 + rank)
        epoch_batches = FollowSource(state, reader, spec, device, watcher, poll_s=cfg.data.follow_poll_s, on_wait=on_wait,
                                     idle_timeout_s=cfg.data.follow_idle_timeout_s)
    else:
        shard = ray.train.get_dataset_shard("train")
        prefetch = prefetch_batches(device)

        def epoch_batches(epoch: int, skip: int) -> Any:
            batches = shard.iter_batches(batch_size=cfg.run.micro_batch_size, batch_format="numpy", prefetch_batches=prefetch,
                                         local_shuffle_buffer_size=SHUFFLE_BUFFER_ROWS,
                                         local_shuffle_seed=cfg.run.seed * 1000 + epoch * 10 + rank)
            return skip_consumed(batches, skip)

    fault = config["fault"]
    fault_fs = arrow_filesystem(cfg.checkpoint.storage_path, cfg.data.storage) if fault else None
    if fault and fault_fs is None:
        from pyarrow.fs import LocalFileSystem

        fault_fs = LocalFileSystem()
    last_post = 0.0

    def after_step(st: LoopState, m: dict[str, float]) -> None:
        nonlocal last_post
        maybe_fail(fault, st.step, rank, fault_fs)
        now = time.monotonic()
        if board is not None and (now - last_post >= PROGRESS_EVERY_S or st.step == config["total_steps"]):
            last_post = now
            board.post.remote(phase="training", step=st.step, epoch=st.epoch, loss=m["loss"], lr=m["lr"],
                              packing_efficiency=m["doc_tokens"] / m["positions"] if m["positions"] else 0.0,
                              tokens_per_s=m["positions"] / m["step_s"] if m["step_s"] else 0.0)

    def report(st: LoopState, metrics: dict[str, float], final: bool) -> None:
        if board is not None:
            board.post.remote(phase="saving final model" if final else "checkpointing", step=st.step, epoch=st.epoch)
        with tempfile.TemporaryDirectory() as d:
            wrote = save_checkpoint(d, model, optimizer, scheduler, st, metrics, tokenizer if final else None)
            ckpt = ray.train.Checkpoint.from_directory(d) if wrote else None
            ray.train.report({**metrics, "final": final}, checkpoint=ckpt)

    plan = LoopPlan(cfg.run.epochs, config["total_steps"], cfg.run.grad_accum_steps, cfg.checkpoint.every_steps)
    run_loop(model, optimizer, scheduler, epoch_batches, plan, state, cfg.loss, o.grad_clip, device, report,
             _autocast(cfg.strategy.precision, device), after_step)
    if board is not None:
        board.post.remote(phase="done", step=state.step, epoch=state.epoch)

