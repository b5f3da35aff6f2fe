"""Test hook: make one training worker fail at a chosen step, once per job name.

    faults: {step: 7}                     # in a training config: rank 0 raises after optimizer step 7
    faults: {step: 7, rank: 1}            # rank 1 does
    faults: {step: 7, rank: 1, action: kill}   # rank 1's process is killed (SIGKILL)

For fault-tolerance tests only (`TrainingConfig.faults`; never set it in
production). The driver turns it into a `StepFault` for the job's folder and
passes it to the workers; the worker raises `InjectedFault` right after the
step, before any checkpoint of that step, so Ray Train restarts the worker
group from the previous checkpoint (`checkpoint.max_failures`). A marker
object `<storage_path>/<name>/faults/step-<k>` makes the fault fire only once,
so the restarted group trains through step k.

Checkpoints are written and registered in the background, so a worker that
dies a few fast steps after one may die before Ray Train has registered it,
and the restart then resumes from an older one (a real crash can). The hook
waits until Ray Train's checkpoint registry lists the worker's newest
checkpoint before it fires, so a test knows which checkpoint the restart
resumes from, on a fast machine as on a slow one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from potstill.schemas.training import TrainFaultConfig

REGISTRY_FILE = "checkpoint_manager_snapshot.json"
"""Ray Train's record of the checkpoints a run has registered, in the run's folder (what a restart resumes from)."""
REGISTRATION_WAIT_S = 120.0
"""Longest the hook waits for a checkpoint's registration; past it, it fires anyway."""


class InjectedFault(RuntimeError):
    """Raised by the test hook; never a real failure."""


@dataclass(frozen=True)
class StepFault:
    """Fail `rank` after optimizer step `step`; `marker` (a path in the checkpoint filesystem) records it fired."""

    step: int
    rank: int
    marker: str
    kill: bool
    """SIGKILL the worker process instead of raising (a crash with no Python cleanup: what a lost node looks like)."""
    registry: str
    """Ray Train's checkpoint registry of the run (`<run_dir>/checkpoint_manager_snapshot.json`)."""


def step_fault(fault: "TrainFaultConfig | None", run_dir: str) -> StepFault | None:
    """The worker-side plan of `TrainingConfig.faults` for the job folder `run_dir`, or None."""
    if fault is None:
        return None
    root = run_dir.rstrip("/")
    return StepFault(fault.step, fault.rank, f"{root}/faults/step-{fault.step}", fault.action == "kill",
                     f"{root}/{REGISTRY_FILE}")


def registered_metrics(filesystem: Any, registry: str) -> list[dict[str, Any]]:
    """The reported metrics (`step`, `epoch`, ...) of every checkpoint Ray Train has registered for a run, from its
    registry file (none before its first)."""
    try:
        with filesystem.open_input_stream(registry) as f:
            results = json.loads(f.read())["checkpoint_results"]
    except (OSError, ValueError, KeyError):  # not written yet (FileNotFoundError is an OSError)
        return []
    return [r["metrics"] for r in results if "step" in r.get("metrics", {})]


def maybe_fail(plan: StepFault | None, step: int, rank: int, filesystem: Any,
               checkpointed_step: int | None = None) -> None:
    """Fail when this is the planned rank and step and the fault has not fired before; first wait (up to
    REGISTRATION_WAIT_S) until Ray Train has registered `checkpointed_step`, the worker's newest checkpoint."""
    if plan is None or step != plan.step or rank != plan.rank:
        return
    from pyarrow.fs import FileType

    marker = plan.marker
    if filesystem.get_file_info(marker).type != FileType.NotFound:
        return
    deadline = time.monotonic() + REGISTRATION_WAIT_S
    while (checkpointed_step and time.monotonic() < deadline
           and max((m["step"] for m in registered_metrics(filesystem, plan.registry)), default=0) < checkpointed_step):
        time.sleep(0.1)
    filesystem.create_dir(marker.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(marker) as f:
        f.write(b"fired\n")
    if plan.kill:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    raise InjectedFault(f"faults: injected failure of rank {rank} after step {step} (a test hook; drop `faults` "
                        "from the config for real runs)")
