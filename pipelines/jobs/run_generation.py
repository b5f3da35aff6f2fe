"""The generation job driver: start the controller actor, follow it, return its summary.

    potstill generate examples/arithmetic.yaml --out runs/demo

The driver holds no data: the controller actor plans and schedules, replicas
write and commit shards. Killing the driver kills its actors; re-running
with the same run id resumes from the committed shards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from potstill.schemas.generation import GenerationConfig


def output_uri(cfg: GenerationConfig) -> str:
    """`output.uri` with `{run_id}` filled in."""
    return cfg.output.uri.replace("{run_id}", cfg.resolved_run_id())


def run_generation(cfg: GenerationConfig, *, address: str | None = None,
                   on_progress: Callable[[dict[str, Any]], None] | None = None,
                   poll_s: float = 0.5) -> dict[str, Any]:
    """Run (or resume) a generation job to completion; returns the run summary."""
    import ray

    from potstill.actors.controller_actor import ControllerActor, controller_name
    from potstill.cluster.connect import ensure_ray
    from potstill.pipelines.generate.controller import peak_rss_mb
    from potstill.pipelines.observe.redact import install_redaction

    install_redaction(cfg.model_dump())  # this driver's log records carry no credential or config secret
    ensure_ray(address)
    run_id = cfg.resolved_run_id()
    actor = ray.remote(ControllerActor).options(
        name=controller_name(run_id), num_cpus=0, max_concurrency=4, max_restarts=0,
    ).remote(cfg.model_dump_json(), output_uri(cfg))
    done = actor.run.remote()
    try:
        while True:
            ready, _ = ray.wait([done], timeout=poll_s)
            if on_progress is not None:
                try:
                    on_progress(ray.get(actor.progress.remote(), timeout=5))
                except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
                    pass
            if ready:
                summary = ray.get(done)
                summary["driver_peak_rss_mb"] = peak_rss_mb()
                return summary
    finally:
        ray.kill(actor)
        time.sleep(0)  # let the kill be sent before the driver may exit
