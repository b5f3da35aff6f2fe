"""The generation job driver: start (or attach to) the run's controller actor, follow it, return its summary.

    potstill generate examples/arithmetic.yaml --out runs/demo            # run, following progress
    potstill generate examples/arithmetic.yaml --address HEAD:6379 --detach   # start it and return

The driver holds no data: the controller actor plans, scales and schedules,
replicas write and commit shards. There is one controller per run: the
named actor `potstill-<run_id>` in the `potstill` namespace. A driver that
finds it alive attaches (progress, then the same summary) instead of
starting a second one; a driver on another cluster is refused by the run's
storage lease. Killing the driver that started a (non-detached) controller
kills it and its replicas; re-running with the same run id resumes from the
committed shards. A detached controller outlives its driver.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable

from potstill.schemas.generation import GenerationConfig
from potstill.schemas.results import GenerationStatus, GenerationSummary

log = logging.getLogger("potstill.generate")


class RunConflict(ValueError):
    """The run id is live on this cluster with another config or output."""


def output_uri(cfg: GenerationConfig) -> str:
    """`output.uri` with `{run_id}` filled in; a local path made absolute here, where the user named it (the
    controller actor runs in another working directory, and attaching drivers compare outputs)."""
    from potstill.pipelines.output.storage import is_remote

    uri = cfg.output.uri.replace("{run_id}", cfg.resolved_run_id())
    if is_remote(uri):
        return uri
    return os.path.abspath(os.path.expanduser(uri[len("file://"):] if uri.startswith("file://") else uri))


def _local(address: str | None) -> bool:
    """Whether this driver's Ray is, or would be, a local cluster of its own (which ends with the driver)."""
    import ray

    from potstill.cluster.connect import on_own_local_cluster

    if address or os.environ.get("RAY_ADDRESS"):
        return False
    return not ray.is_initialized() or on_own_local_cluster()


def _controller(cfg: GenerationConfig, token: str, detach: bool):
    """The run's controller actor: the live one, or a new one owned by this driver; (handle, attached)."""
    import ray

    from potstill.actors.controller_actor import ControllerActor, controller_name
    from potstill.cluster.ray_pool import NAMESPACE

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    run_id = cfg.resolved_run_id()
    # Beside the driver when it can be (a job's driver runs on the head, which spot preemption spares).
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    options = dict(name=controller_name(run_id), namespace=NAMESPACE, get_if_exists=True, num_cpus=0,
                   max_concurrency=16, max_restarts=0, scheduling_strategy=here)
    if detach:
        options["lifetime"] = "detached"
    actor = ray.remote(ControllerActor).options(**options).remote(cfg.model_dump_json(), output_uri(cfg), token, detach)
    ident = ray.get(actor.identity.remote())
    attached = ident["owner"] != token
    if attached and (ident["fingerprint"] != cfg.fingerprint() or ident["out"] != output_uri(cfg)):
        raise RunConflict(
            f"run {run_id!r} is live on this cluster with a different config or output ({ident['out']}, fingerprint "
            f"{ident['fingerprint'][:12]}; yours: {output_uri(cfg)}, {cfg.fingerprint()[:12]}); follow it with "
            f"`potstill status {run_id}`, or give this config another --run-id")
    if attached:
        log.warning("run %s is live on this cluster: attaching to its controller", run_id)
    return actor, attached, ident["detached"]


def start_generation(cfg: GenerationConfig, *, address: str | None = None) -> GenerationStatus:
    """Start the run with a detached controller (or find it live) and return at once; its status now."""
    import ray

    from potstill.cluster.connect import ensure_ray

    if _local(address):
        raise ValueError("--detach needs a Ray cluster that outlives this command; start one (`ray start --head`, or a "
                         "KubeRay cluster) and pass --address or set RAY_ADDRESS")
    ensure_ray(address)
    actor, _, _ = _controller(cfg, uuid.uuid4().hex, detach=True)
    ray.get(actor.start.remote())
    return GenerationStatus.model_validate(ray.get(actor.status.remote()))


def run_generation(cfg: GenerationConfig, *, address: str | None = None,
                   on_progress: Callable[[GenerationStatus], None] | None = None,
                   poll_s: float = 0.5) -> GenerationSummary:
    """Run (or resume, or attach to) a generation job until it ends; returns the run summary."""
    import ray

    from potstill.cluster import live_runs
    from potstill.cluster.connect import ensure_ray
    from potstill.pipelines.generate.controller import peak_rss_mb
    from potstill.pipelines.observe.redact import install_redaction

    install_redaction(cfg.model_dump())  # this driver's log records carry no credential or config secret
    started_local = ensure_ray(address)
    record = live_runs.record(cfg.resolved_run_id(), ray.get_runtime_context().gcs_address) if started_local else None
    token = uuid.uuid4().hex
    try:
        for attempt in range(3):
            actor, attached, detached = _controller(cfg, token, detach=False)
            finished = False
            try:
                summary = _follow(actor, on_progress, poll_s)
                finished = True
            except ray.exceptions.RayActorError:
                if not attached or attempt == 2:
                    raise
                log.warning("the controller this driver attached to is gone (its driver exited); taking the run over")
                continue
            finally:
                if not attached and not detached:
                    if finished:
                        _let_followers_read(actor)
                    ray.kill(actor)
                    time.sleep(0)  # let the kill be sent before the driver may exit
            summary.attached = attached
            summary.driver_peak_rss_mb = peak_rss_mb()
            return summary
        raise AssertionError("unreachable")
    finally:
        if record is not None:
            live_runs.forget(record)


def _let_followers_read(actor, limit_s: float = 10.0) -> None:
    """Before the owner removes a finished controller, give attached drivers up to `limit_s` to get the summary."""
    import ray

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            if ray.get(actor.waiting.remote(), timeout=5) == 0:
                return
        except ray.exceptions.RayError:
            return
        time.sleep(0.2)


def _follow(actor, on_progress: Callable[[GenerationStatus], None] | None, poll_s: float) -> GenerationSummary:
    import ray

    done = actor.run.remote()
    while True:
        ready, _ = ray.wait([done], timeout=poll_s)
        if on_progress is not None:
            try:
                on_progress(GenerationStatus.model_validate(ray.get(actor.status.remote(), timeout=5)))
            except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
                pass
        if ready:
            return GenerationSummary.model_validate(ray.get(done))
