"""Check, before vLLM starts on CPU, that the memory it is about to claim is free, so that a teacher config
that cannot fit fails with the field to change instead of vLLM's "Engine core initialization failed".

    check_cpu_memory(engine_args)   # raises ValueError naming teacher.kv_cache_gib / gpu_memory_utilization

On the CPU backend vLLM reads `gpu_memory_utilization` as the fraction of a
memory node's RAM to claim for the model and its KV cache when no KV cache
size is given (`teacher.kv_cache_gib`, or the VLLM_CPU_KVCACHE_SPACE
variable, which wins over it), and its worker refuses to start when less
than that is free. The default 0.9 rarely is on a machine that runs anything
else. An explicit size must be free too.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

log = logging.getLogger(__name__)

GIB = 2**30
ENV_KV_SPACE = "VLLM_CPU_KVCACHE_SPACE"
"""vLLM's legacy CPU KV cache size in GiB; when set it replaces the engine's kv_cache_memory_bytes."""


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def cpu_memory_problem(kv_cache_bytes: int | None, gpu_memory_utilization: float, env_kv_space: str | None,
                       nodes: list[tuple[int, int]]) -> str | None:
    """Why vLLM's CPU worker would refuse to start, or None.

    `nodes`: (total, available) bytes of each memory node the worker may use. The check only fails when no
    node fits, so it never refuses a config vLLM would have run.
    """
    if not nodes:
        return None
    best_total, best_free = max(nodes, key=lambda n: n[1])
    if env_kv_space not in (None, ""):
        wanted = int(env_kv_space) * GIB
        if all(wanted > free for _, free in nodes):
            return (f"{ENV_KV_SPACE}={env_kv_space} asks vLLM for a {_gib(wanted)} KV cache (it overrides "
                    f"teacher.kv_cache_gib), but this node has {_gib(best_free)} of memory free: lower it, or unset it "
                    f"and set teacher.kv_cache_gib")
        return None
    if kv_cache_bytes is not None:
        if all(kv_cache_bytes > free for _, free in nodes):
            return (f"teacher.kv_cache_gib asks vLLM for a {_gib(kv_cache_bytes)} KV cache, but this node has "
                    f"{_gib(best_free)} of memory free: lower teacher.kv_cache_gib")
        return None
    if all(math.ceil(total * gpu_memory_utilization) > free for total, free in nodes):
        wanted = math.ceil(best_total * gpu_memory_utilization)
        return (f"teacher.kv_cache_gib is not set, so vLLM's CPU backend claims teacher.gpu_memory_utilization "
                f"({gpu_memory_utilization}) of this node's {_gib(best_total)} of memory, {_gib(wanted)}, for the model "
                f"and its KV cache, but only {_gib(best_free)} is free. Set teacher.kv_cache_gib (the KV cache size "
                f"in GiB; 1 is plenty for a small model and a few hundred sequences) or lower "
                f"teacher.gpu_memory_utilization")
    return None


def env_override(kv_cache_bytes: int | None, env_kv_space: str | None) -> str | None:
    """A warning when VLLM_CPU_KVCACHE_SPACE silently replaces a configured `teacher.kv_cache_gib`, else None."""
    if kv_cache_bytes is None or env_kv_space in (None, "") or int(env_kv_space) * GIB == kv_cache_bytes:
        return None
    return (f"{ENV_KV_SPACE}={env_kv_space} is set, so vLLM sizes the KV cache at {_gib(int(env_kv_space) * GIB)} "
            f"instead of teacher.kv_cache_gib's {_gib(kv_cache_bytes)}; unset the variable to use the config")


def check_cpu_memory(engine_args: dict[str, Any]) -> None:
    """Raise ValueError when vLLM's CPU worker would not find the memory `engine_args` ask for; log a warning
    when the environment overrides the configured KV cache size."""
    from vllm.utils.cpu_resource_utils import get_memory_node_info, get_visible_memory_node

    kv_cache_bytes, env_kv_space = engine_args.get("kv_cache_memory_bytes"), os.environ.get(ENV_KV_SPACE)
    override = env_override(kv_cache_bytes, env_kv_space)
    if override:
        log.warning(override)
    nodes = [get_memory_node_info(n) for n in (get_visible_memory_node() or [0])]
    problem = cpu_memory_problem(kv_cache_bytes, engine_args.get("gpu_memory_utilization", 0.9), env_kv_space,
                                 [(n.total_memory, n.available_memory) for n in nodes])
    if problem:
        raise ValueError(problem)
