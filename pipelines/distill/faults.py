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

Checkpoints are written and registered in the background, so a worker that
dies a few fast steps after one may die before Ray Train has registered it,
and the restart then resumes from an older one (a real crash can). The hook
waits until Ray Train's checkpoint registry lists the worker's newest
checkpoint before it fires, so a test knows which checkpoint the restart
resumes from, on a fast machine as on a slow one.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

FAULT_ENV = "POTSTILL_FAULT_TRAIN_STEP"
REGISTRY_FILE = "checkpoint_manager_snapshot.json"
"""Ray Train's record of the checkpoints a run has registered, in the run's folder (what a restart resumes from)."""
REGISTRATION_WAIT_S = 120.0
"""Longest the hook waits for a checkpoint's registration; past it, it fires anyway."""


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
    registry: str = ""
    """Ray Train's checkpoint registry of the run (`<run_dir>/checkpoint_manager_snapshot.json`)."""


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
        root = run_dir.rstrip("/")
        plan = FaultPlan(int(step), int(rank or 0), f"{root}/faults/step-{int(step)}", action == "kill",
                         f"{root}/{REGISTRY_FILE}")
    except ValueError:
        raise ValueError(f"{FAULT_ENV}={raw!r} is not 'STEP', 'STEP:RANK' or 'STEP:RANK:kill' (integers); fix or unset it") from None
    return asdict(plan)


def registered_steps(filesystem: Any, registry: str) -> list[int]:
    """Steps of the checkpoints Ray Train has registered for the run (none before its first)."""
    try:
        with filesystem.open_input_stream(registry) as f:
            results = json.loads(f.read())["checkpoint_results"]
    except (OSError, ValueError, KeyError):  # not written yet (FileNotFoundError is an OSError)
        return []
    return [r["metrics"]["step"] for r in results if "step" in r.get("metrics", {})]


def maybe_fail(plan: dict[str, Any] | None, step: int, rank: int, filesystem: Any,
               checkpointed_step: int | None = None) -> None:
    """Raise InjectedFault when this is the planned rank and step and the fault has not fired before; first wait
    (up to REGISTRATION_WAIT_S) until Ray Train has registered `checkpointed_step`, the worker's newest checkpoint."""
    if plan is None or step != plan["step"] or rank != plan["rank"]:
        return
    from pyarrow.fs import FileType

    marker = plan["marker"]
    if filesystem.get_file_info(marker).type != FileType.NotFound:
        return
    deadline = time.monotonic() + REGISTRATION_WAIT_S
    while (checkpointed_step and plan.get("registry") and time.monotonic() < deadline
           and max(registered_steps(filesystem, plan["registry"]), default=0) < checkpointed_step):
        time.sleep(0.1)
    filesystem.create_dir(marker.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(marker) as f:
        f.write(b"fired\n")
    if plan.get("kill"):
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    raise InjectedFault(f"{FAULT_ENV}: injected failure of rank {rank} after step {step} (a test hook; unset it for real runs)")
