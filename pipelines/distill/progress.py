"""Live progress of a training job: rank 0 posts, the driver polls (held by a Ray actor in between).

    board = ray.remote(TrainProgress).options(num_cpus=0).remote()     # driver
    board.post.remote(phase="training", step=12, total_steps=300, ...)  # rank 0, fire and forget
    snapshot = ray.get(board.get.remote())                              # driver, for its progress bar

It also records every worker-group start (`attempts`: the step each one
resumed at), which is how the driver tells that a failed worker group was
restarted from its last checkpoint.
"""

from __future__ import annotations

import time
from typing import Any


class TrainProgress:
    """The latest progress fields plus the start step of every worker-group attempt."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {"phase": "starting", "step": 0, "total_steps": None}
        self.attempts: list[dict[str, Any]] = []
        self.updated = time.time()

    def post(self, **fields: Any) -> None:
        """Merge `fields` into the snapshot."""
        self.fields.update(fields)
        self.updated = time.time()

    def started(self, step: int, epoch: int, resumed: bool) -> None:
        """A worker group started at `step` (resumed from a checkpoint or not)."""
        self.attempts.append({"start_step": step, "start_epoch": epoch, "resumed": resumed, "at": time.time()})
        self.post(phase="resumed" if resumed else "training", step=step, epoch=epoch)

    def get(self) -> dict[str, Any]:
        """The snapshot: the latest fields, `attempts`, and seconds since the last post."""
        return {**self.fields, "attempts": list(self.attempts), "age_s": time.time() - self.updated}
