"""The controller actor: hosts `GenerationController` so a run is addressable by name from any process.

    actor = ray.get_actor(controller_name(run_id), namespace=NAMESPACE)
    ray.get(actor.status.remote())          # GenerationStatus as JSON-ready dict, while run() works
    ray.get(actor.scale.remote(4))          # ScaleResult

One per run: named `potstill-<run_id>` in the `potstill` namespace and
created with `get_if_exists`, so a second driver of the same run gets this
actor instead of a second controller. `run()` is idempotent: the first call
works, later calls (attached drivers) wait for the same summary. A threaded
actor: `run()` holds one thread, queries take others. A detached controller
(`potstill generate --detach`) stays `linger_s` after the run ends, so
`status` and attaching drivers still get the summary, then exits. The pool's gauges
(replicas, queue depth, spend) go to Prometheus through `PoolMetrics`.
"""

from __future__ import annotations

import threading
from typing import Any

from potstill.pipelines.generate.controller import GenerationController
from potstill.schemas.generation import GenerationConfig

LINGER_S = 600.0


def controller_name(run_id: str) -> str:
    return f"potstill-{run_id}"


class ControllerActor:
    """Thin actor over `GenerationController`."""

    def __init__(self, config_json: str, out_uri: str, owner: str, detached: bool = False, linger_s: float = LINGER_S):
        from potstill.pipelines.observe.redact import configure_logging

        from potstill.actors.metrics import PoolMetrics

        self.cfg = GenerationConfig.model_validate_json(config_json)
        configure_logging(self.cfg.model_dump())  # level from POTSTILL_LOG_LEVEL; credentials redacted from every record
        self.controller = GenerationController(self.cfg, out_uri, observer=PoolMetrics(self.cfg.resolved_run_id()))
        self.owner, self.detached, self.linger_s = owner, detached, linger_s
        self._started = threading.Lock()
        self._done = threading.Event()
        self._summary: dict[str, Any] | None = None
        self._error: BaseException | None = None
        self._waiting = 0  # run() calls that have not returned yet
        self._count_lock = threading.Lock()

    def identity(self) -> dict[str, Any]:
        """Who made this controller and for which run and config (attaching drivers check it)."""
        return {"owner": self.owner, "run_id": self.controller.run_id, "out": self.controller.out_uri,
                "fingerprint": self.cfg.fingerprint(), "detached": self.detached}

    def run(self) -> dict[str, Any]:
        """Run the generation (the first call) or wait for it (every later call); the summary as a dict."""
        with self._count_lock:
            self._waiting += 1
        try:
            if self._started.acquire(blocking=False):
                self._work()
            self._done.wait()
            if self._error is not None:
                raise self._error
            return self._summary
        finally:
            with self._count_lock:
                self._waiting -= 1

    def waiting(self) -> int:
        """How many run() calls (drivers following the run) have not been answered yet."""
        return self._waiting

    def start(self) -> bool:
        """Start the run in the background (for detached runs); True if this call started it."""
        if not self._started.acquire(blocking=False):
            return False
        threading.Thread(target=self._work, name="potstill-generation", daemon=True).start()
        return True

    def _work(self) -> None:
        from potstill.cluster.ray_pool import RayReplicaPool

        try:
            summary = self.controller.run(RayReplicaPool(self.controller.cfg, self.controller.out_uri))
            self._summary = summary.model_dump(mode="json")
        except BaseException as exc:  # noqa: BLE001 - handed to every caller of run()
            self._error = exc
        finally:
            self._done.set()
            if self.detached:
                threading.Timer(self.linger_s, _exit_actor).start()

    def status(self) -> dict[str, Any]:
        return self.controller.status().model_dump(mode="json")

    def summary(self) -> dict[str, Any] | None:
        """The summary once the run finished (None before)."""
        return self._summary

    def scale(self, replicas: int | None = None, min_replicas: int | None = None,
              max_replicas: int | None = None) -> dict[str, Any]:
        return self.controller.scale(replicas, min_replicas, max_replicas).model_dump(mode="json")


def _exit_actor() -> None:
    import ray

    ray.kill(ray.get_runtime_context().current_actor)
