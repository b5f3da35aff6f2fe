"""The Ray replica pool on a real one-CPU local Ray, without starting an engine: placement groups are freed
with their replica, an unplaceable first replica stops the run at the start deadline naming what it waits
for, and its bundles are asked of the autoscaler while it waits and withdrawn after.

    .venv/bin/pytest tests/integration/test_ray_pool.py -q
"""

from __future__ import annotations

import threading
import time

import pytest

from potstill.schemas import GenerationConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def one_cpu_ray():
    import ray

    from potstill.cluster.connect import ensure_ray

    ray.shutdown()
    ensure_ray(num_cpus=1)
    yield
    ray.shutdown()


def config(out: str, **replicas) -> GenerationConfig:
    return GenerationConfig.model_validate({
        "run_id": "pool-test",
        "prompts": {"arithmetic": {"count": 4, "digits": 2, "seed": 1}},
        "teacher": {"model": "potstill:arithmetic-teacher", "dtype": "float32", "max_model_len": 256,
                    "engine_kwargs": {"enforce_eager": True}},
        "replicas": {"cpus_per_replica": 1, **replicas},
        "output": {"uri": out, "prompts_per_shard": 2},
    })


def wait_until(predicate, limit_s: float, what: str):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {limit_s:.0f} s waiting for {what}")


def test_a_killed_replica_frees_its_placement_group_and_the_replacement_is_placed_at_once(one_cpu_ray, tmp_path):
    from potstill.cluster.ray_pool import RayReplicaPool

    cfg = config(str(tmp_path / "out"))
    pool = RayReplicaPool(cfg, cfg.output.uri)
    first = pool.create()
    wait_until(lambda: pool.placement(first).placed, 60, "the first replica's placement group")
    second = pool.create()
    time.sleep(3)
    waiting = pool.placement(second)
    assert not waiting.placed and "1 bundle of {CPU: 1}" in waiting.waiting_for  # the only CPU is the first's
    pool.kill(first)  # its placement group goes with it (a retired, hung or drained replica alike)
    wait_until(lambda: pool.placement(second).placed, 30, "the replacement to take the freed CPU")
    pool.kill(second)


def test_an_unplaceable_first_replica_stops_the_run_at_the_deadline_naming_its_bundle(one_cpu_ray, tmp_path):
    from potstill.cluster.autoscaler import current_request
    from potstill.cluster.ray_pool import RayReplicaPool
    from potstill.pipelines.generate.controller import GenerationController

    cfg = config(str(tmp_path / "out"), cpus_per_replica=4, start_timeout_s=8, node_poll_s=0.5)
    controller = GenerationController(cfg, cfg.output.uri)
    requested: list = []
    stop = threading.Event()

    def watch() -> None:  # what the autoscaler is asked for while the replica waits
        while not stop.wait(0.5):
            requested.append(current_request())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with pytest.raises(RuntimeError) as err:
            controller.run(RayReplicaPool(cfg, cfg.output.uri))
    finally:
        stop.set()
        watcher.join(5)
    text = str(err.value)
    assert "no teacher replica could start: replica-1 could not be placed within 8 s (replicas.start_timeout_s)" in text
    assert "1 bundle of {CPU: 4} packed on one node" in text and "(INFEASIBLE)" in text
    assert "replicas.cpus_per_replica" in text  # and how to fix it
    assert [{"CPU": 4.0}] in requested  # pending: its bundle was asked of the autoscaler
    assert current_request() == []  # and withdrawn when the run ended
    status = controller.status()
    assert status.phase == "failed" and "could not be placed" in status.error


def test_a_second_driver_attaches_to_the_live_controller_and_another_config_is_refused(one_cpu_ray, tmp_path):
    import ray

    from potstill.pipelines.jobs.run_generation import RunConflict, _controller

    cfg = config(str(tmp_path / "out"))
    first, attached, _ = _controller(cfg, "driver-1", detach=False)
    try:
        again, attached_again, _ = _controller(cfg, "driver-2", detach=False)
        assert not attached and attached_again  # one controller per run: the second driver gets the first's
        assert ray.get(again.identity.remote())["owner"] == "driver-1"
        other = cfg.model_copy(update={"sampling": cfg.sampling.model_copy(update={"n": 3})})
        with pytest.raises(RunConflict, match="run 'pool-test' is live on this cluster with a different config"):
            _controller(other, "driver-3", detach=False)
    finally:
        ray.kill(first)
