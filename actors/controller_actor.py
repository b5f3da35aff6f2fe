"""The controller actor: hosts `GenerationController` so a run is addressable by name.

Named `potstill-<run_id>`, it answers `progress()` for the CLI while `run()`
works, and `scale(n)` sets the replica target of a live run. A threaded actor:
the `run()` loop holds one thread, queries take others. The pool's gauges
(replicas, queue depth, spend) go to Prometheus through `PoolMetrics`.
"""

from __future__ import annotations

from typing import Any

from potstill.pipelines.generate.controller import GenerationController
from potstill.schemas.generation import GenerationConfig


def controller_name(run_id: str) -> str:
    return f"potstill-{run_id}"


class ControllerActor:
    """Thin actor over `GenerationController`."""

    def __init__(self, config_json: str, out_uri: str):
        from potstill.pipelines.observe.redact import configure_logging

        from potstill.actors.metrics import PoolMetrics

        configure_logging()  # level from POTSTILL_LOG_LEVEL; credentials redacted from every record
        cfg = GenerationConfig.model_validate_json(config_json)
        self.controller = GenerationController(cfg, out_uri, observer=PoolMetrics(cfg.resolved_run_id()))

    def run(self) -> dict[str, Any]:
        from potstill.cluster.ray_pool import RayReplicaPool

        return self.controller.run(RayReplicaPool(self.controller.cfg, self.controller.out_uri))

    def progress(self) -> dict[str, Any]:
        return self.controller.snapshot()

    def scale(self, replicas: int) -> int:
        return self.controller.scale(replicas)
