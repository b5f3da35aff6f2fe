"""Connect to Ray: the cluster named by RAY_ADDRESS / --address, else a local one; and let go of it.

    ensure_ray()            # laptop: starts local Ray with this machine's CPUs
    ensure_ray("auto")      # inside a KubeRay head / a submitted Ray job
    shutdown_ray()          # the end of a command (potstill/cli/session.py): a local cluster stops with it

Non-secret settings the actors need (vLLM's CPU KV-cache size, HF offline
flags) are forwarded through the runtime env so they reach workers on every
node. Credentials are not: a runtime env is visible in the dashboard and job
metadata. Local workers inherit them from this process; on a cluster they
come from the pods' own environment (a Kubernetes secret or IRSA).

Ray's driver-side records go through potstill's logging set-up
(`pipelines/observe/logs.py`) once the process has one (the CLI's commands);
the workers' output is forwarded to the driver, whose command session writes
it to the run's log file.
"""

from __future__ import annotations

import os

FORWARDED_ENV = (
    "VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
    "TOKENIZERS_PARALLELISM", "AWS_DEFAULT_REGION", "AWS_REGION",
)

LOCAL_ONLY_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
"""A local cluster is one node that this command starts and stops: no node of it is ever drained, so Ray Train's
preemption watcher (an extra actor polling for drains, whose core worker logged an error at every demo's
teardown) has nothing to watch."""


_local_cluster_gcs: str | None = None
"""The GCS address of the local cluster `ensure_ray` started in this process, if any."""


def forwarded_env() -> dict[str, str]:
    """The variables of FORWARDED_ENV set in this process (values are never logged)."""
    return {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}


def ensure_ray(address: str | None = None, num_cpus: int | None = None, *, dashboard: bool = False) -> bool:
    """Join the cluster at `address` / RAY_ADDRESS, or start a new local one; idempotent.

    Returns True when this call started a new local cluster (it lives as long as this process).

    Without an address the cluster is always a new local one (`address="local"`),
    never a stray cluster that `ray start` left on this machine. `dashboard`:
    start the local cluster with its dashboard, which serves the State API that
    Ray Train's controller watchdog polls (without it, it warns every second).
    """
    import ray

    from potstill.pipelines.observe.logs import adopt_library_loggers

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    env = {"RAY_DATA_LOG_LEVEL": os.environ.get("RAY_DATA_LOG_LEVEL", "WARNING"), **forwarded_env()}
    kwargs = {"runtime_env": {"env_vars": env}, "log_to_driver": True, "logging_level": "WARNING",
              "configure_logging": True}
    if address:
        ray.init(address=address, **kwargs)
        adopt_library_loggers()  # `import ray` and `ray.init` gave Ray's logger a handler of its own
        return False
    env.update(LOCAL_ONLY_ENV)
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, **kwargs)
    adopt_library_loggers()
    global _local_cluster_gcs
    _local_cluster_gcs = ray.get_runtime_context().gcs_address
    return True


def on_own_local_cluster() -> bool:
    """Whether this process is connected to a local cluster that `ensure_ray` started here (it stops with it)."""
    import ray

    return ray.is_initialized() and ray.get_runtime_context().gcs_address == _local_cluster_gcs


def shutdown_ray() -> None:
    """Disconnect from Ray; a local cluster `ensure_ray` started stops with it (its processes are gone when this
    returns). Call it after the job has retired its actors, not from an atexit hook."""
    import ray

    if ray.is_initialized():
        ray.shutdown(wait_for_processes=True)
