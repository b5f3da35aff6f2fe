"""Test hook: make one training worker fail at a chosen step, once per run name.

    POTSTILL_FAULT_TRAIN_STEP=7 potstill train CONFIG.yaml        # rank 0 raises after optimizer step 7
    POTSTILL_FAULT_TRAIN_STEP=7:1 potstill train CONFIG.yaml      # rank 1 does
    POTSTILL_FAULT_TRAIN_STEP=7:1:kill potstill train CONFIG.yaml # rank 1's process is killed (SIGKILL)

For fault-tolerance tests only (never set it in production). The driver
reads the variable when the job starts and passes it to the workers; the
worker raises `InjectedFault` right after the step, before any checkpoint of
that step, so Ray Train restarts the worker group from the previous
checkpoint (`checkpoint.max_failures`). A marker object
`<storage_path>/<name>/faults/step-<k>` makes the fault fire only once, so the
restarted group trains through step k.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

FAULT_ENV = "POTSTILL_FAULT_TRAIN_STEP"


class InjectedFault(RuntimeError):
    """Raised by the test hook; never a real failure."""


@dataclass(frozen=True)
class FaultPlan:
    """Fail `rank` after optimizer step `step`; `marker` (a path in the checkpoint filesystem) records it fired."""

    step: int
    rank: int
    marker: str
    kill: bool = False
    """SIGKILL the worker process instead of raising (a crash with no Python cleanup: what a lost node looks like)."""


def fault_from_env(run_dir: str) -> dict[str, Any] | None:
    """The fault plan of `POTSTILL_FAULT_TRAIN_STEP` ("k" or "k:rank") for the run folder `run_dir`, or None."""
    raw = os.environ.get(FAULT_ENV, "").strip()
    if not raw:
        return None
    step, _, rest = raw.partition(":")
    rank, _, action = rest.partition(":")
    try:
        if action not in ("", "kill"):
            raise ValueError(action)
        plan = FaultPlan(int(step), int(rank or 0), f"{run_dir.rstrip('/')}/faults/step-{int(step)}", action == "kill")
    except ValueError:
        raise ValueError(f"{FAULT_ENV}={raw!r} is not 'STEP', 'STEP:RANK' or 'STEP:RANK:kill' (integers); fix or unset it") from None
    return asdict(plan)


def maybe_fail(plan: dict[str, Any] | None, step: int, rank: int, filesystem: Any) -> None:
    """Raise InjectedFault when this is the planned rank and step and the fault has not fired before."""
    if plan is None or step != plan["step"] or rank != plan["rank"]:
        return
    from pyarrow.fs import FileType

    marker = plan["marker"]
    if filesystem.get_file_info(marker).type != FileType.NotFound:
        return
    filesystem.create_dir(marker.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(marker) as f:
        f.write(b"fired\n")
    if plan.get("kill"):
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    raise InjectedFault(f"{FAULT_ENV}: injected failure of rank {rank} after step {step} (a test hook; unset it for real runs)")
