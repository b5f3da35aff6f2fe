"""CPU training: each worker on a node computes on cores of its own.

    cores = worker_cores(local_rank=1, local_world_size=2, cpus_per_worker=1, allowed={0, 1})   # {1}

Unbound, workers share their cores with the kernel's migrations and the Ray
processes' wake-ups, and every DDP step waits for whichever worker was
interrupted; bound to a core each, Ray Train's step comes close to the same
loop under plain torch.distributed (docs/PERFORMANCE.md).
`benchmarks/training_speed.py` binds its plain loop the same way, so the
comparison stays like for like.

Cores a vLLM model worker on the same machine is bound to (a CPU teacher
generating while `data.follow` trains on its shards) are left out: binding a
training worker onto them would halve both. When too few cores remain for
every local worker, the workers stay unbound and the kernel shares the cores.
"""

from __future__ import annotations

import os

from potstill.pipelines.host.cpu_affinity import cores_held_by_vllm_workers, pin_process


def worker_cores(local_rank: int, local_world_size: int, cpus_per_worker: float, allowed: set[int]) -> set[int] | None:
    """The cores of worker `local_rank`, or None when the node has fewer than every local worker needs."""
    per_worker = max(1, int(cpus_per_worker))
    cores = sorted(allowed)
    if local_world_size * per_worker > len(cores):
        return None
    return set(cores[local_rank * per_worker:(local_rank + 1) * per_worker])


def bind_worker(local_rank: int, local_world_size: int, cpus_per_worker: float) -> set[int] | None:
    """Bind every thread of this process to its worker's cores, among those no vLLM worker is bound to; returns
    them (None: left unbound)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    free = os.sched_getaffinity(0) - cores_held_by_vllm_workers()
    cores = worker_cores(local_rank, local_world_size, cpus_per_worker, free)
    if cores is not None:
        pin_process(os.getpid(), cores)
    return cores
