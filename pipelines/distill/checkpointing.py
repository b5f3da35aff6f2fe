"""Training checkpoints: model and optimizer as a torch distributed checkpoint (one file per rank) plus the loop state.

    ckpt = Checkpointer(storage_cfg, async_save=True)                          # every rank, after torch.distributed is up
    pending = ckpt.save(uri, model, optimizer, scheduler, state, metrics)      # every rank; returns once staged (async)
    pending.wait()                                                             # written: `.metadata` exists
    state = ckpt.load(uri, model, optimizer, scheduler)                        # every rank, any worker count

A checkpoint folder (local or s3://, written through `checkpoint_storage`) holds
`__<rank>_0.distcp`, one per rank, and DCP's `.metadata`: the model and
optimizer state dicts of `torch.distributed.checkpoint.state_dict`, keyed by
parameter name and sharded as trained (no rank ever gathers the whole model);
`train_state.json`: the LR scheduler and the loop counters (`LoopState`);
`metrics.json`. The JSON files are written by rank 0 before the DCP save
starts, so a checkpoint with `.metadata` is complete. DCP reshards on load, so
a checkpoint written by 2 FSDP workers resumes on 1 (or under DDP), and the
other way round.

With `async_save`, `torch.distributed.checkpoint.async_save` copies the state to
host memory and writes it in a background thread while training goes on; its
collectives run on a gloo process group of their own so they never interleave
with the training step's. A new save first waits for the previous one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from potstill.pipelines.distill.checkpoint_storage import dcp_reader, dcp_writer, read_text, write_text

if TYPE_CHECKING:
    from potstill.pipelines.distill.train_loop import LoopState
    from potstill.schemas.generation import StorageConfig

TRAIN_STATE = "train_state.json"
METRICS = "metrics.json"


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@dataclass
class PendingSave:
    """A checkpoint being written (`future` None: already written)."""

    uri: str
    future: Any = None

    def wait(self) -> str:
        """Block until the checkpoint is complete; returns its URI (re-raises a failed write)."""
        if self.future is not None:
            self.future.result()
            self.future = None
        return self.uri

    @property
    def done(self) -> bool:
        return self.future is None or self.future.done()


class Checkpointer:
    """Saves and loads checkpoints of one worker group (see module docstring)."""

    def __init__(self, storage: "StorageConfig | None" = None, async_save: bool = True):
        import torch.distributed as dist

        self.storage = storage
        self.async_save = async_save
        self.pending: PendingSave | None = None
        distributed = dist.is_available() and dist.is_initialized()
        # A process group of its own (created collectively, now, on every rank) for the background writer.
        self.group = dist.new_group(backend="gloo") if async_save and distributed else None

    def _states(self, model: Any, optimizer: Any) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_sd, optim_sd = get_state_dict(model, optimizer)
        return {"model": model_sd, "optim": optim_sd}

    def save(self, uri: str, model: Any, optimizer: Any, scheduler: Any, state: "LoopState", metrics: dict[str, Any],
             *, blocking: bool = False) -> PendingSave:
        """Start writing a checkpoint of the current state to `uri` (every rank must call)."""
        import torch.distributed.checkpoint as dcp

        self.wait()
        states = self._states(model, optimizer)
        if _rank() == 0:
            write_text(uri, TRAIN_STATE, json.dumps({"scheduler": scheduler.state_dict(), "loop": asdict(state)}), self.storage)
            write_text(uri, METRICS, json.dumps(metrics, indent=2, default=str) + "\n", self.storage)
        writer = dcp_writer(uri, self.storage)
        if self.async_save and not blocking:
            self.pending = PendingSave(uri, dcp.async_save(states, storage_writer=writer, process_group=self.group))
        else:
            dcp.save(states, storage_writer=writer)
            self.pending = PendingSave(uri)
        return self.pending

    def wait(self) -> None:
        """Block until the last save is complete."""
        if self.pending is not None:
            self.pending.wait()

    def load(self, uri: str, model: Any, optimizer: Any, scheduler: Any) -> "LoopState":
        """Load the checkpoint at `uri` into the (wrapped) model, optimizer and scheduler; returns its loop counters."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_state_dict

        from potstill.pipelines.distill.train_loop import LoopState

        states = self._states(model, optimizer)
        dcp.load(states, storage_reader=dcp_reader(uri, self.storage))
        set_state_dict(model, optimizer, model_state_dict=states["model"], optim_state_dict=states["optim"])
        saved = read_train_state(uri, self.storage)
        scheduler.load_state_dict(saved["scheduler"])
        return LoopState(**saved["loop"])


def read_train_state(uri: str, storage: "StorageConfig | None" = None) -> dict[str, Any]:
    """`train_state.json` of a checkpoint: {"scheduler": ..., "loop": LoopState fields}."""
    return json.loads(read_text(uri, TRAIN_STATE, storage))


def read_metrics(uri: str, storage: "StorageConfig | None" = None) -> dict[str, Any]:
    return json.loads(read_text(uri, METRICS, storage))
