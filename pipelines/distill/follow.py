"""Worker-side data sources of the training loop: equal-length streams and the live-run follower.

    source = FollowSource(state, reader, spec, watcher=CommitWatcher(...) if rank == 0 else None)
    run_loop(..., epoch_batches=source, ...)      # epoch 0 follows the live run, later epochs re-read it

`equalized` keeps data-parallel workers in step when their shares differ in
length: every micro-batch all workers agree (one tiny all-reduce) whether
anyone still has data, and a worker that ran out trains on all-padding rows
(no labels, so no loss and no gradient) until all are done.

`FollowSource` is `data.follow`: rank 0 polls the runs' commits and hands
each round of newly committed shards to all workers (a broadcast every poll,
so waiting for a slow run never trips the collective timeout); each worker
reads its share of the round (`files[rank::world]`) with `LocalReader`. A
round starts once at least `world` new shards are committed (or the runs have
finished); epoch 0 ends when every run has its `_SUCCESS` and all of its
shards were trained on. Later epochs re-read every shard seen. Which shards
each round held is kept in `LoopState.data` (a round counts as done once its
last micro-batch is handed out), so a resume replays the same rounds and skips
the micro-batches already trained on without re-reading finished rounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from potstill.pipelines.distill.local_reader import LocalReader, PackSpec, empty_batch
from potstill.pipelines.distill.train_loop import skip_consumed

if TYPE_CHECKING:
    import torch

    from potstill.pipelines.distill.run_data import CommitWatcher
    from potstill.pipelines.distill.train_loop import LoopState


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def equalized(
    batches: Iterable[dict[str, np.ndarray]], spec: PackSpec, rows: int, device: "torch.device",
) -> Iterator[dict[str, np.ndarray]]:
    """`batches`, then all-padding batches of `rows` rows until every worker's stream has ended."""
    import torch
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized()
    it = iter(batches)
    while True:
        batch = next(it, None)
        if distributed:
            flag = torch.tensor([0 if batch is None else 1], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if not int(flag.item()):
                return
        elif batch is None:
            return
        yield batch if batch is not None else empty_batch(spec, rows)


def _broadcast(obj: Any) -> Any:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class FollowSource:
    """`epoch_batches(epoch, state)` for `run_loop` over live runs (see module docstring)."""

    def __init__(
        self, state: "LoopState", reader: LocalReader, spec: PackSpec, device: "torch.device",
        watcher: "CommitWatcher | None", poll_s: float = 2.0,
        on_wait: Callable[[int, bool], None] | None = None, idle_timeout_s: float = 1800.0,
    ):
        self.state = state
        self.reader = reader
        self.spec = spec
        self.device = device
        self.watcher = watcher
        self.poll_s = poll_s
        self.on_wait = on_wait
        self.idle_timeout_s = idle_timeout_s
        self.rank, self.world = _world()
        data = state.data
        data.setdefault("done", [])  # files of finished rounds, in order
        data.setdefault("done_micro", 0)  # micro-batches those rounds took (epoch 0)
        data.setdefault("round", None)  # files of the round in progress
        if watcher is not None:
            watcher.seen.update(data["done"] + (data["round"] or []))

    def __call__(self, epoch: int, state: "LoopState") -> Iterator[dict[str, np.ndarray]]:
        skip_micro = state.micro_in_epoch
        if epoch > 0:
            return skip_consumed(self._stream(self.state.data["done"], 1_000_000 + epoch), skip_micro)
        return self._live(skip_micro)

    def _stream(self, files: list[str], salt: int) -> Iterator[dict[str, np.ndarray]]:
        """This worker's share of `files`, equalized; `salt` seeds the shuffle (the same on a resume)."""
        mine = files[self.rank :: self.world]
        return equalized(self.reader.batches(mine, salt), self.spec, self.reader.micro_batch_size, self.device)

    def _live(self, skip_micro: int) -> Iterator[dict[str, np.ndarray]]:
        data = self.state.data
        in_round = max(0, skip_micro - data["done_micro"])
        while True:
            if data["round"] is None:
                files, finished = self._next_round()
                if not files:
                    return
                data["round"] = files
            # One batch of look-ahead: the round is marked done as its last batch is handed out, so a checkpoint
            # taken right after the step that trained it (the run's last step, say) already records the round.
            stream = skip_consumed(self._stream(data["round"], len(data["done"])), in_round)
            count, batch = 0, next(stream, None)
            if batch is None:
                self._finish_round(in_round)
            while batch is not None:
                following = next(stream, None)
                count += 1
                if following is None:
                    self._finish_round(in_round + count)
                yield batch
                batch = following
            in_round = 0

    def _finish_round(self, micro_batches: int) -> None:
        data = self.state.data
        data["done"] = data["done"] + data["round"]
        data["done_micro"] += micro_batches
        data["round"] = None

    def _next_round(self) -> tuple[list[str], bool]:
        """Rank 0 waits for >= world new shards (or the end of the runs); all ranks get the same answer, also
        when a run's generator died (every rank raises its GeneratorStalledError)."""
        from potstill.pipelines.distill.run_data import GeneratorStalledError

        pending: list[str] = []
        while True:
            reply = None
            if self.watcher is not None:
                new, finished = self.watcher.poll()
                pending += new
                ready = finished or len(pending) >= self.world
                stalled = None
                if not new and not ready:
                    try:
                        self.watcher.check_alive(self.idle_timeout_s)
                    except GeneratorStalledError as exc:
                        stalled = str(exc)
                reply = (pending if ready else [], finished, ready, len(self.watcher.seen), stalled)
            files, finished, ready, seen, stalled = _broadcast(reply)
            if stalled is not None:
                raise GeneratorStalledError(stalled)
            if ready:
                return files, finished
            if self.on_wait is not None:
                self.on_wait(seen, finished)
            time.sleep(self.poll_s)
