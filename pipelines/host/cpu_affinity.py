"""CPU placement of processes through Linux /proc: pin a process's threads, and keep a CPU teacher's frontend
off the cores vLLM binds its model worker to (`distill/cpu_binding.py` pins training workers with `pin_process`,
away from `cores_held_by_vllm_workers()`).

    moved = keep_frontend_off_worker_cores(os.getpid())   # after the engine has started; {} when nothing moved

vLLM's CPU backend binds the model worker's OpenMP threads to some cores and
leaves the rest (`reserved_cpus` in its log) for everything else. A plain
`LLM.generate` script has little else running, but a replica actor (this
process: output handling, verification, shard writing) floats over all
cores, and the scheduler puts it on the worker's core as well, taking CPU
time from the forward pass (docs/PERFORMANCE.md). Moving this process's
threads onto the cores the worker does not use gives the forward pass its
core back.

vLLM's EngineCore process is left free. It is on the critical path of every
step (it schedules, then busy-waits for the worker's result), and confined
to the frontend's cores it waits behind the frontend: pinning it there too
made the pipeline slower (docs/PERFORMANCE.md).

Linux only; a no-op when vLLM did not bind (its worker may use every core)
or on machines with an accelerator.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

WORKER_NAME_PREFIX = "VLLM::Worker"
"""How vLLM names its model worker processes (`/proc/<pid>/comm`)."""


def _threads(pid: int) -> list[int]:
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for tid in _threads(pid):
        text = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
        out.extend(int(c) for c in text)
    return out


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, grandchildren, ...)."""
    found, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def process_name(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def pin_process(pid: int, cores: set[int]) -> None:
    """Restrict every current thread of `pid` to `cores` (threads started later inherit their creator's)."""
    for tid in _threads(pid):
        try:
            os.sched_setaffinity(tid, cores)
        except (ProcessLookupError, FileNotFoundError):  # a thread that ended meanwhile
            pass


def cores_held_by_vllm_workers() -> set[int]:
    """The cores that vLLM model workers on this machine (any process) are bound to; an unbound worker, whose
    affinity covers every core this process may use (in a container: its cpuset, not the host's), holds none."""
    ours = os.sched_getaffinity(0)
    held: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if process_name(int(entry)).startswith(WORKER_NAME_PREFIX):
                cores = os.sched_getaffinity(int(entry))
                if not ours <= cores:
                    held |= cores
        except (OSError, ValueError):  # exited meanwhile, or not ours to inspect
            continue
    return held


def keep_frontend_off_worker_cores(root: int) -> dict[str, list[int]]:
    """Pin `root` (the process that runs vLLM's frontend) to the cores its vLLM model workers are not bound to.

    Returns {"worker_cores": [...], "frontend_cores": [...]} when it moved anything, else {}.
    """
    if not hasattr(os, "sched_setaffinity") or not Path(f"/proc/{root}/task").is_dir():
        return {}
    try:
        below = descendants(root)
        workers = [p for p in below if process_name(p).startswith(WORKER_NAME_PREFIX)]
        if not workers:
            return {}
        # A worker's main thread is its OpenMP master thread, bound like the others.
        worker_cores = set().union(*(os.sched_getaffinity(p) for p in workers))
        free = os.sched_getaffinity(root) - worker_cores
        if not free:
            return {}
        pin_process(root, free)
    except (OSError, ValueError) as exc:  # /proc races with exiting processes; affinity is an optimization only
        log.debug("left CPU affinity alone: %s", exc)
        return {}
    return {"worker_cores": sorted(worker_cores), "frontend_cores": sorted(free)}
