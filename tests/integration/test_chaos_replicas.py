"""Chaos: replicas and engines fail mid-run; the output is still exactly the clean run's.

    .venv/bin/pytest tests/integration/test_chaos_replicas.py -q

One run (real vLLM CPU engines in local Ray actors, moto S3) takes five
faults, one per shard, injected through `GenerationConfig.faults` (see
pipelines/engines/faulty.py) and `ray.kill`; each test checks one of them.
Units run one at a time so the faults never overlap. Sharing the run keeps
the engine restarts (the slow part) to the ones the faults cause.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # chaos_support: shared helpers (importlib mode)

from chaos_support import (  # noqa: E402
    DEADLINE_S, EXACT_SLOTS, N, PER_SHARD, SHARDS, assert_same_output, chaos_config, finished, new_bucket, question,
    replica_handles, wait_for,
)
from chaos_support import clean  # noqa: E402,F401 - fixture

from leftovers import orphaned_engine_processes  # noqa: E402

from potstill.pipelines.output.commit import gc_run  # noqa: E402
from potstill.pipelines.jobs.run_generation import run_generation  # noqa: E402
from potstill.pipelines.output.storage import Storage  # noqa: E402
from potstill.schemas import StorageConfig  # noqa: E402

pytestmark = pytest.mark.slow

MAX_ATTEMPTS = 2
KILLED, DEAD, HUNG, CRASHED, POISONED = range(5)  # shard index -> its fault; also the fault rule's index
POISON = question(POISONED * PER_SHARD + 4)
ORPHAN_GRACE_S = 30.0
"""How long after the run the engine processes of replicas that died may take to go (Ray reaps a dead worker's
processes within seconds)."""


@pytest.fixture(scope="module")
def chaos_run(s3_server, ray_local, tmp_path_factory):
    """The faulted run; returns (finished run, its config, the fault-count folder)."""
    import ray

    storage = StorageConfig(endpoint_url=s3_server)
    uri = new_bucket(s3_server) + "/faults"
    state = tmp_path_factory.mktemp("fault-state")
    rules = [
        {"action": "hang", "marker": question(KILLED * PER_SHARD + 2), "times": 1},  # holds it while ray.kill lands
        {"action": "engine_dead", "marker": question(DEAD * PER_SHARD + 3), "times": 1},
        {"action": "hang", "marker": question(HUNG * PER_SHARD + 5), "times": 1},
        {"action": "exit_before_commit", "marker": question(CRASHED * PER_SHARD + 1), "times": 1},
        {"action": "engine_dead", "marker": POISON},  # every time
    ]
    # After a unit fails alone MAX_ATTEMPTS times its prompts re-run one by one (split_into = its size).
    replicas = {"units_in_flight": 1, "max_attempts": MAX_ATTEMPTS, "split_into": PER_SHARD, **EXACT_SLOTS}
    cfg = chaos_config(uri, "chaos-faults", storage, faults={"state_dir": str(state), "rules": rules}, replicas=replicas)
    outcome: dict = {}

    def drive() -> None:
        try:
            outcome["summary"] = run_generation(cfg)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    wait_for(lambda: (state / f"rule{KILLED}-0").exists(), 300, "the first shard to be in flight")
    (replica,) = replica_handles("chaos-faults").values()
    ray.kill(replica, no_restart=True)  # mid-shard: shard 0's unit is on it
    thread.join(600)
    assert "error" not in outcome, outcome.get("error")
    return finished(uri, storage, outcome["summary"]), cfg, state


def test_replica_killed_mid_shard_is_replaced_and_nothing_is_lost_or_duplicated(chaos_run, clean):
    run, _, state = chaos_run
    assert (state / f"rule{KILLED}-0").exists()
    # Two actor deaths: the ray.kill, and the crash before a commit (below); each replaced once.
    assert run.summary.replaced_for["actor_died"] == 2
    assert run.manifest.shards[KILLED].row_count == PER_SHARD * N
    assert_same_output(run, clean, minus={run.prompt_of(POISON)})


def test_no_engine_process_outlives_its_replica(chaos_run):
    """Eight replicas died mid-run (ray.kill, engine deaths, the hang deadline, os._exit before a commit): none left
    its vLLM engine process running on the node."""
    deadline = time.monotonic() + ORPHAN_GRACE_S
    while (left := orphaned_engine_processes()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"engine processes outlived their replicas: {left}"


def test_engine_death_replaces_the_replica_and_attempts_stay_bounded(chaos_run, clean):
    run, _, state = chaos_run
    assert (state / f"rule{DEAD}-0").exists() and not (state / f"rule{DEAD}-1").exists()
    # One EngineDeadError from the transient fault, 2 x MAX_ATTEMPTS from the poison prompt; nothing more.
    assert run.summary.replaced_for["engine_failure"] == 1 + 2 * MAX_ATTEMPTS
    assert run.summary.replicas_replaced == 8  # one per fault event above: every failure was bounded
    assert run.manifest.shards[DEAD].row_count == PER_SHARD * N
    assert_same_output(run, clean, minus={run.prompt_of(POISON)})


def test_hung_engine_hits_the_deadline_and_is_replaced(chaos_run, clean):
    run, cfg, state = chaos_run
    assert (state / f"rule{HUNG}-0").exists()
    assert cfg.replicas.unit_timeout_s == DEADLINE_S
    assert run.summary.replaced_for["hung"] == 1  # only the deadline kill (shard 0's hang was cut by ray.kill)
    assert run.summary.generation_s >= DEADLINE_S
    assert run.manifest.shards[HUNG].row_count == PER_SHARD * N
    assert_same_output(run, clean, minus={run.prompt_of(POISON)})


def test_crash_between_data_put_and_commit_commits_once_and_the_orphan_is_collected(chaos_run, clean):
    run, cfg, state = chaos_run
    assert (state / f"rule{CRASHED}-0").exists()
    store = Storage(run.uri, run.storage)
    shard = run.manifest.shards[CRASHED]
    objects = store.list(f"data/{shard.shard_id}")
    assert len(objects) == 2 and shard.data_path in objects  # the crashed attempt's object and the committed one
    (orphan,) = set(objects) - {shard.data_path}
    assert_same_output(run, clean, minus={run.prompt_of(POISON)})  # readers never saw the orphan
    commits_before = {rel: store.read_bytes(rel) for rel in store.list("commits")}
    report = gc_run(run.uri, run.storage)
    assert report.removed == [orphan] and report.kept == SHARDS
    assert store.list(f"data/{shard.shard_id}") == [shard.data_path]
    # Re-running the finished run commits nothing twice: every shard is skipped, the records are untouched.
    again = run_generation(cfg)
    assert again.shards_skipped == SHARDS and again.engine_requests == 0
    assert {rel: store.read_bytes(rel) for rel in store.list("commits")} == commits_before
    assert_same_output(finished(run.uri, run.storage, again), clean, minus={run.prompt_of(POISON)})


def test_poison_prompt_is_recorded_failed_after_bounded_attempts_and_the_rest_completes(chaos_run, clean):
    run, _, _ = chaos_run
    bad = run.prompt_of(POISON)
    assert [(f.prompt_id, f.attempts) for f in run.manifest.failed] == [(bad, MAX_ATTEMPTS)]
    assert "EngineFailure" in run.manifest.failed[0].reason
    assert run.summary.units_split == 1  # its unit, after failing alone MAX_ATTEMPTS times
    assert run.manifest.shards[POISONED].row_count == (PER_SHARD - 1) * N  # its neighbours all completed
    failures = Storage(run.uri, run.storage).read_bytes("failures.jsonl").decode().splitlines()
    assert len(failures) == 1 and bad in failures[0] and f'"attempts": {MAX_ATTEMPTS}' in failures[0]
    assert '"reason": "EngineFailure' in failures[0]
    assert_same_output(run, clean, minus={bad})
