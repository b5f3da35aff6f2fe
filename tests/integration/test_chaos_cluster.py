"""Chaos on a two-node Ray cluster: the node running the teacher replica is removed mid-run.

    .venv/bin/pytest tests/integration/test_chaos_cluster.py -q

`ray.cluster_utils.Cluster` starts a head (no CPUs: it hosts nothing) and two
one-CPU worker nodes on this machine; the replica lands on one of them.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # chaos_support: shared helpers (importlib mode)

from chaos_support import (  # noqa: E402
    EXACT_SLOTS, PER_SHARD, SHARDS, assert_same_output, chaos_config, clean_baseline, commit_count, finished, new_bucket,
    question, replica_handles, wait_for,
)

from potstill.cluster.ray_pool import RayReplicaPool  # noqa: E402
from potstill.pipelines.generate.controller import GenerationController  # noqa: E402
from potstill.schemas import StorageConfig  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    from potstill.cluster.connect import forwarded_env

    ray.shutdown()
    # Quick health checks: a removed node is declared dead in ~3 s instead of ~30 s.
    system = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": system})
    workers = [c.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=c.address, runtime_env={"env_vars": forwarded_env()}, logging_level="WARNING")
    c.wait_for_nodes()
    yield c, workers
    ray.shutdown()
    c.shutdown()


@pytest.fixture
def clean(s3_server, cluster):
    return clean_baseline(s3_server)


def test_node_removed_mid_run_work_continues_on_the_remaining_node(s3_server, cluster, clean, tmp_path):
    import ray

    c, workers = cluster
    storage = StorageConfig(endpoint_url=s3_server)
    uri = new_bucket(s3_server) + "/node"
    # The last shard hangs once, on the first replica, so the node is removed while that shard is in flight
    # (without it the few remaining shards can all commit between the check and the removal). Its deadline
    # outlasts the test's waits: on a loaded machine the hung shard still cannot commit before the removal.
    faults = {"state_dir": str(tmp_path / "faults"), "rules": [
        {"action": "hang", "marker": question((SHARDS - 1) * PER_SHARD + 2), "times": 1}]}
    cfg = chaos_config(uri, "chaos-node", storage, faults=faults, replicas={**EXACT_SLOTS, "unit_timeout_s": 600})
    controller = GenerationController(cfg, uri)  # in the driver, on the head
    outcome: dict = {}

    def drive() -> None:
        from potstill.cluster.ray_pool import RayReplicaPool

        try:
            outcome["summary"] = controller.run(RayReplicaPool(cfg, uri))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    try:
        wait_for(lambda: (tmp_path / "faults" / "rule0-0").exists() or "error" in outcome, 240, "the last shard to hang")
        ((first_name, replica),) = wait_for(lambda: replica_handles("chaos-node").items(), 10, "the replica actor")
        first_node = ray.get(replica.start.remote(), timeout=30)["node_id"]
        (victim,) = [w for w in workers if w.node_id == first_node]
        (survivor,) = [w for w in workers if w is not victim]
        assert "error" not in outcome and commit_count(uri, storage) < SHARDS, "the run ended before the node was removed"
        c.remove_node(victim, allow_graceful=False)

        def replaced():
            assert "error" not in outcome, f"the controller failed: {outcome['error']!r}"
            return controller.progress.replicas_replaced >= 1 and list(controller._replicas)

        try:
            (new_replica,) = [r.handle for r in wait_for(replaced, 120, "the controller to replace the replica")]
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_state_of(controller)}") from None
        assert ray.get(new_replica.start.remote(), timeout=120)["node_id"] == survivor.node_id
    finally:
        thread.join(300)
    assert "error" not in outcome, outcome.get("error")
    summary = outcome["summary"]
    # The node died with the replica: its units are requeued, none blamed.
    assert summary.replaced_for == {"node_lost": 1} and summary.units_requeued >= 1 and summary.units_retried == 0
    assert_same_output(finished(uri, storage, summary), clean)


def _state_of(controller: GenerationController) -> str:
    """What the controller and Ray know of the replicas (for a failure message)."""
    from ray.util.state import list_actors, list_nodes

    mine = [(r.name, len(r.inflight), r.ready_at is not None, r.hung_reason) for r in controller._replicas]
    actors = [(a.name, a.state, a.node_id[:8], a.death_cause) for a in list_actors(filters=[("class_name", "=", "TeacherReplica")])]
    nodes = [(n.node_id[:8], n.state, n.resources_total) for n in list_nodes()]
    return (f"controller replicas (name, in flight, started, hung): {mine}; units waiting {len(controller._retry)}, "
            f"exhausted {controller._exhausted}; progress {controller.progress}\nray actors: {actors}\nray nodes: {nodes}")
