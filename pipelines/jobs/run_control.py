"""Reach a live run's controller from any process: its status, and scaling its replicas.

    potstill.status("run-abc", address="10.0.0.5:6379")        # GenerationStatus
    potstill.scale("run-abc", replicas=4)                        # ScaleResult (fixed count)
    potstill.scale("run-abc", min_replicas=1, max_replicas=8)    # autoscale within bounds

`potstill status` and `potstill scale` are these, printed. The controller is
the named actor `potstill-<run_id>` in the `potstill` namespace; the cluster
is `address`, RAY_ADDRESS, or (a run this machine started on its own local
Ray) the address its driver recorded.
"""

from __future__ import annotations

from potstill.schemas.results import GenerationStatus, ScaleResult


class RunNotLive(LookupError):
    """No controller of that run is alive on the cluster."""


def _controller(run_id: str, address: str | None):
    import ray

    from potstill.actors.controller_actor import controller_name
    from potstill.cluster.connect import ensure_ray
    from potstill.cluster.live_runs import resolve_address
    from potstill.cluster.ray_pool import NAMESPACE

    where = resolve_address(run_id, address)
    ensure_ray(where)
    try:
        return ray.get_actor(controller_name(run_id), namespace=NAMESPACE)
    except ValueError:
        raise RunNotLive(
            f"no live controller for run {run_id!r} on the Ray cluster at {where}: it finished (see `potstill inspect` "
            f"on its output), runs on another cluster (pass --address), or its driver exited (re-run `potstill "
            f"generate` with the same config and run id to resume)") from None


def run_status(run_id: str, *, address: str | None = None, timeout_s: float = 30.0) -> GenerationStatus:
    """The live run's status."""
    import ray

    actor = _controller(run_id, address)
    return GenerationStatus.model_validate(ray.get(actor.status.remote(), timeout=timeout_s))


def scale_run(run_id: str, replicas: int | None = None, *, min_replicas: int | None = None,
              max_replicas: int | None = None, address: str | None = None, timeout_s: float = 30.0) -> ScaleResult:
    """Fix the live run's replica count, or set its autoscaling bounds; applied within a second."""
    import ray

    if replicas is None and min_replicas is None and max_replicas is None:
        raise ValueError("scale: pass replicas=N (a fixed count) or min_replicas/max_replicas (autoscaling bounds)")
    actor = _controller(run_id, address)
    try:
        return ScaleResult.model_validate(ray.get(actor.scale.remote(replicas, min_replicas, max_replicas),
                                                  timeout=timeout_s))
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, ValueError):
            raise ValueError(str(exc.cause)) from None
        raise
