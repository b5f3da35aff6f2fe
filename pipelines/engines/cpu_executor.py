"""On a CPU host, a one-worker vLLM engine runs its model inside its engine-core process (vLLM's "uni" executor)
instead of in a worker process of its own.

    with model_in_engine_core(args):          # args: AsyncEngineArgs keywords, updated in place
        llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**args))

vLLM's CPU platform turns a one-worker engine's executor into the multiprocessing one unless
`VLLM_ENABLE_V1_MULTIPROCESSING` is 0 when the engine's config is built. That executor starts one more
interpreter, which imports torch and vLLM again at every engine start, and every model step then crosses a
process boundary that both sides busy-wait on. On a small CPU host that costs seconds per replica start and a
share of the throughput (docs/PERFORMANCE.md). The async engine keeps its engine-core process either way; only
the config is built with the variable at 0, so nothing else in this process sees it changed.

The engine's threads then follow the process's `OMP_NUM_THREADS`, which Ray sets to the CPUs a replica actor
reserves (`replicas.cpus_per_replica`), so replicas sharing a host no longer all bind to the same core.

A user's own `distributed_executor_backend` (in `teacher.engine_kwargs`) and tensor- or pipeline-parallel engines
are left as they are.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

MULTIPROCESSING_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"
IN_ENGINE_CORE = "uni"


def wants_model_in_engine_core(args: dict[str, Any], on_cpu: bool) -> bool:
    """Whether an engine with these AsyncEngineArgs keywords should run its model in its engine-core process."""
    workers = args.get("tensor_parallel_size", 1) * args.get("pipeline_parallel_size", 1)
    return on_cpu and workers == 1 and "distributed_executor_backend" not in args


@contextmanager
def model_in_engine_core(args: dict[str, Any], on_cpu: bool) -> Iterator[None]:
    """While the engine is built, ask for the in-process executor (see the module docstring); a no-op where
    `wants_model_in_engine_core` says no."""
    if not wants_model_in_engine_core(args, on_cpu):
        yield
        return
    args["distributed_executor_backend"] = IN_ENGINE_CORE
    before = os.environ.get(MULTIPROCESSING_ENV)
    os.environ[MULTIPROCESSING_ENV] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(MULTIPROCESSING_ENV, None)
        else:
            os.environ[MULTIPROCESSING_ENV] = before
