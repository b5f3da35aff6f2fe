"""Scaling a live run on a real multi-node Ray cluster (`ray.cluster_utils.Cluster`), real vLLM replicas.

    .venv/bin/pytest tests/integration/test_scaling_cluster.py -q

One module-scoped cluster: a head that holds no CPU (drivers and controllers live there) and two 1-CPU
worker nodes, one replica each. Every step waits for an observed state (a replica ready on a node, N
commits, a request held at a gate), never for time; `hold` fault rules keep the last shards of a run in
flight until the test has seen what it waits for.

1. The whole story, through the CLI: `potstill generate --detach`; a second `potstill generate` of the
   same run attaches; a controller of the run elsewhere is refused by the run's lease; `potstill train
   --follow` trains on the live run; `potstill scale` takes it 1 -> 2 -> 1 from other processes; training
   ends at `_SUCCESS` having read every committed shard exactly once; no unit was generated twice.
2. Preemption: replicas spread over both nodes; a scale beyond the cluster leaves one pending (status says
   for what; its bundle is asked of the autoscaler); a node drains mid-run: no new unit goes there, what it
   runs past its deadline moves elsewhere unblamed; a node added mid-run takes the pending replica and
   works; the run finishes with a replica still pending and reports it.
3. A real zombie: a replica and its node's raylet SIGSTOPped past the unit deadline; the replica is
   replaced; after the replacement commits the shard, the zombie is resumed (SIGCONT), finishes its write,
   loses the commit race and deletes its own object; readers see each row once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from potstill.cli.common import last_json_line
from potstill.pipelines.arithmetic.problems import fresh_problems
from potstill.pipelines.output.commit import read_manifest
from potstill.pipelines.output.storage import Storage
from potstill.schemas import GenerationConfig
from potstill.schemas.results import GenerationStatus
from potstill.schemas.training import TrainingConfig

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SEED = 2468


def question(count: int, i: int) -> str:
    return fresh_problems(count, 3, SEED)[i][0]


def gen_config(out: str, run_id: str, count: int, per_shard: int, state_dir: str, held: list[int],
               **replicas) -> GenerationConfig:
    """A small run of the shipped teacher whose prompts `held` wait at the gate `state_dir/go`."""
    rules = [{"action": "hold", "marker": question(count, i), "release_file": "go"} for i in held]
    return GenerationConfig.model_validate({
        "run_id": run_id,
        "prompts": {"arithmetic": {"count": count, "digits": 3, "seed": SEED}},
        "teacher": {"model": "potstill:arithmetic-teacher", "dtype": "float32", "max_model_len": 256,
                    "kv_cache_gib": 0.5, "engine_kwargs": {"enforce_eager": True}},
        "replicas": {"unit_timeout_s": 900, "node_poll_s": 0.5, "min_sequences_in_flight": None, **replicas},
        "sampling": {"n": 2, "temperature": 0.6, "max_tokens": 96},
        "verify": {"method": "math"},
        "output": {"uri": out, "prompts_per_shard": per_shard},
        "faults": {"state_dir": state_dir, "rules": rules},
    })


def wait_for(predicate, limit_s: float, what: str, poll_s: float = 0.5):
    deadline = time.monotonic() + limit_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {limit_s:.0f} s waiting for {what} (last: {last!r})")


def keys_of(uri: str) -> list[tuple[str, int]]:
    """(prompt_id, sample_index) of every row the manifest names."""
    keys = []
    for shard in read_manifest(uri).shards:
        with open(f"{uri}/{shard.data_path}", "rb") as f, pq.ParquetFile(f) as pf:
            t = pf.read(columns=["prompt_id", "sample_index"])
        keys += list(zip(t.column("prompt_id").to_pylist(), t.column("sample_index").to_pylist()))
    return keys


def commits(uri: str) -> int:
    return len(Storage(uri).list("commits"))


@pytest.fixture(scope="module")
def cluster():
    """Head without CPUs + two 1-CPU worker nodes. Slow health checks: a frozen raylet is not declared dead
    while the zombie test needs it frozen. Replicas log at INFO (the zombie's lost commit race shows there)."""
    import ray
    from ray.cluster_utils import Cluster

    from potstill.cluster.connect import forwarded_env

    saved = {k: os.environ.get(k) for k in ("POTSTILL_LOG_LEVEL", "POTSTILL_STATE_DIR")}
    os.environ["POTSTILL_LOG_LEVEL"] = "INFO"  # replicas log the zombie's lost commit race at INFO
    state_dir = os.environ["POTSTILL_STATE_DIR"] = tempfile.mkdtemp(prefix="potstill-live-")
    ray.shutdown()
    system = {"health_check_period_ms": 1000, "health_check_failure_threshold": 600}
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                      "_system_config": system})
    workers = [c.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=c.address, runtime_env={"env_vars": forwarded_env()}, logging_level="WARNING")
    c.wait_for_nodes()
    yield c, workers
    ray.shutdown()
    c.shutdown()
    shutil.rmtree(state_dir, ignore_errors=True)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def cli(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    out = open(log, "wb")
    return subprocess.Popen([sys.executable, "-m", "potstill.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, **env}, cwd=REPO, start_new_session=True)


def finish(proc: subprocess.Popen, log: Path, limit_s: float) -> dict:
    try:
        rc = proc.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"{proc.args[3:5]} did not finish in {limit_s:.0f} s:\n{log.read_text()[-3000:]}") from None
    text = log.read_text()
    assert rc == 0, f"{proc.args[3:5]} exited {rc}:\n{text[-3000:]}"
    return last_json_line(text)


def controller_up(run_id: str, address: str) -> bool:
    """Whether the run's controller actor exists yet (a driver creates it a few seconds after it starts)."""
    from potstill.pipelines.jobs.run_control import RunNotLive, run_status

    try:
        run_status(run_id, address=address)
        return True
    except RunNotLive:
        return False


def stop_run(run_id: str, state: Path) -> None:
    """After a failed step: open the gate and remove the run's controller, so no thread outlives the test."""
    import ray

    from potstill.actors.controller_actor import controller_name
    from potstill.cluster.ray_pool import NAMESPACE

    (state / "go").touch()
    try:
        ray.kill(ray.get_actor(controller_name(run_id), namespace=NAMESPACE))
    except ValueError:
        pass


def ready_nodes(s: GenerationStatus) -> list[str]:
    return sorted(r.node_id for r in s.replicas if r.state == "ready")


# -- 1. the whole story ------------------------------------------------------------------------------------

def test_train_follows_a_live_run_scaled_1_2_1_from_other_processes_and_reads_every_row_once(cluster, tmp_path):
    from potstill.pipelines.distill.checkpointing import read_train_state
    from potstill.pipelines.generate.controller import GenerationController
    from potstill.pipelines.generate.run_lease import RunLiveElsewhere
    from potstill.pipelines.generate.simulated_pool import SimulatedPool
    from potstill.pipelines.jobs.run_control import run_status

    c, _ = cluster
    count, per_shard = 100, 10
    out, state = tmp_path / "gen", tmp_path / "faults"
    # The last shard waits at the gate until the scaling is done: the run is live as long as the test needs.
    cfg = gen_config(str(out), "story", count, per_shard, str(state), held=[count - 1],
                     min_replicas=1, max_replicas=2)
    gen_yaml = tmp_path / "gen.yaml"
    gen_yaml.write_text(cfg.model_dump_json(exclude={"run_id"}))
    train_cfg = TrainingConfig.model_validate({
        "name": "story", "data": {"runs": [str(out)], "follow": True, "follow_poll_s": 0.5, "verified_only": False},
        "student": {"hidden_size": 128, "num_layers": 1, "num_heads": 2, "intermediate_size": 256},
        "packing": {"max_tokens": 544}, "loss": {"sft_weight": 1.0, "kd_weight": 0.0},
        "optim": {"lr": 3e-3, "warmup_steps": 2, "schedule": "constant"}, "run": {"epochs": 1, "micro_batch_size": 2},
        "scaling": {"num_workers": 2, "use_gpu": False},
        "checkpoint": {"storage_path": str(tmp_path / "ckpt"), "every_steps": 5, "keep": 2},
    })
    train_yaml = tmp_path / "train.yaml"
    train_yaml.write_text(train_cfg.model_dump_json())
    on_cluster = ["--address", c.address]
    gen_args = ["generate", str(gen_yaml), "--run-id", "story", "--json"]

    procs: list[subprocess.Popen] = []

    def run_cli(args: list[str], name: str, **env: str) -> subprocess.Popen:
        procs.append(cli(args, tmp_path / name, **env))
        return procs[-1]

    try:
        # Two drivers of one run at once: whichever creates the controller, the other attaches.
        detached = run_cli(gen_args + on_cluster + ["--detach"], "detach.log")
        attached = run_cli(gen_args + on_cluster, "attach.log")
        started = finish(detached, tmp_path / "detach.log", 300)
        assert started["run_id"] == "story" and started["phase"] in ("planning", "generating")
        status = lambda: run_status("story", address=c.address)  # noqa: E731 - polled below
        wait_for(lambda: controller_up("story", c.address), 120, "the run's controller")
        wait_for(lambda: len(ready_nodes(status())) == 1, 300, "the first replica's engine")
        training = run_cli(["train", str(train_yaml), "--follow", "--json"], "train.log", RAY_ADDRESS="")
        wait_for(lambda: commits(str(out)) >= 2, 300, "two commits")

        scaled = run_cli(["scale", "story", "--replicas", "2", "--json"] + on_cluster, "scale2.log")
        assert finish(scaled, tmp_path / "scale2.log", 120)["target"] == 2
        two = wait_for(lambda: s if len(ready_nodes(s := status())) == 2 else None, 300, "two ready replicas")
        assert len(set(ready_nodes(two))) == 2  # spread over both nodes
        shown = run_cli(["status", "story", "--json"] + on_cluster, "status.log")
        seen = GenerationStatus.model_validate(finish(shown, tmp_path / "status.log", 120))
        assert seen.bounds.fixed == 2 and seen.backlog_prompts > 0 and seen.prompts_total == count

        scaled = run_cli(["scale", "story", "--replicas", "1", "--json"] + on_cluster, "scale1.log")
        assert finish(scaled, tmp_path / "scale1.log", 120)["target"] == 1
        wait_for(lambda: (s := status()).replicas_drained == 1 or any(r.state == "draining" for r in s.replicas), 300,
                 "the surplus replica to drain")
        # A controller of the same run on another cluster (here: a simulated one in this process) is refused by
        # the run's storage lease, before it plans anything, naming where the live one runs.
        with pytest.raises(RunLiveElsewhere, match=rf"run 'story' is live elsewhere: controller potstill-story on "
                                                   rf"Ray cluster {c.address}.*potstill status story"):
            GenerationController(cfg, str(out)).run(SimulatedPool(cfg, str(out)))

        # Training has trained on the live run before the run can end: its step-5 checkpoint exists (9 of the 10
        # shards are committed by now, a step or so each). Without this wait a slow training start on a loaded
        # machine began after _SUCCESS, and the test saw a finished run, not a live one.
        wait_for(lambda: (tmp_path / "ckpt" / "story" / "checkpoint_000000005").exists(), 600,
                 "training to checkpoint step 5 of the live run")
        (state / "go").touch()
        summary = finish(attached, tmp_path / "attach.log", 600)
        trained = finish(training, tmp_path / "train.log", 900)

    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        if not (out / "_SUCCESS").exists():
            stop_run("story", state)

    manifest = read_manifest(str(out))
    keys = keys_of(str(out))
    assert len(keys) == len(set(keys)) == count * 2  # nothing lost, nothing duplicated
    assert summary["engine_requests"] == count  # no unit generated twice (one request of n=2 per prompt)
    assert summary["replicas_drained"] == 1 and summary["peak_replicas"] == 2 and summary["replicas_replaced"] == 0
    assert max(s.ready for s in manifest.scaling[-1].samples) == 2  # the pool over time, in the manifest
    # Training followed the live run from before its end to _SUCCESS and read every shard exactly once.
    done = read_train_state(trained["checkpoint"])["loop"]["data"]["done"]
    assert sorted(done) == sorted(f"{out}/{s.data_path}" for s in manifest.shards) and len(done) == len(set(done))
    assert trained["follow"] and trained["attempts"][0]["at"] < (out / "_SUCCESS").stat().st_mtime
    if summary["attached"]:  # the detached controller was first: it lingers with the summary
        assert run_status("story", address=c.address).phase == "done"
    else:  # the following driver was first and owned it; the detached driver attached to it
        from potstill.pipelines.jobs.run_control import RunNotLive

        with pytest.raises(RunNotLive):
            run_status("story", address=c.address)


# -- 2. preemption, pending replicas, a node added mid-run -------------------------------------------------

def test_a_drained_node_loses_no_work_a_new_node_takes_the_pending_replica_and_the_run_ends_with_one_pending(
        cluster, tmp_path):
    from potstill.cluster.autoscaler import current_request
    from potstill.cluster.drain import drain_node
    from potstill.pipelines.jobs.run_control import run_status, scale_run
    from potstill.pipelines.jobs.run_generation import run_generation

    c, _ = cluster
    count, per_shard = 80, 5
    out, state = tmp_path / "gen", tmp_path / "faults"
    # The last four shards wait at the gate: work is left when the new node arrives.
    held = [i * per_shard for i in range(count // per_shard - 4, count // per_shard)]
    cfg = gen_config(str(out), "drain", count, per_shard, str(state), held=held, min_replicas=2, max_replicas=3,
                     drain_margin_s=5)
    outcome: dict = {}

    def drive() -> None:
        try:
            outcome["summary"] = run_generation(cfg)
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    statuses: list[GenerationStatus] = []

    def status() -> GenerationStatus:
        assert "error" not in outcome, outcome.get("error")
        statuses.append(run_status("drain", address=c.address))
        return statuses[-1]

    try:
        wait_for(lambda: controller_up("drain", c.address), 120, "the run's controller")
        two = wait_for(lambda: s if len(ready_nodes(s := status())) == 2 else None, 400, "two ready replicas")
        a, b = ready_nodes(two)
        assert a != b  # spread over both nodes
        scale_run("drain", 3, address=c.address)  # one more than the cluster holds
        pending = wait_for(lambda: [r for r in status().pending if r.waiting_for], 60, "a pending replica")
        assert "1 bundle of {CPU: 1}" in pending[0].waiting_for and "NO_RESOURCES" in pending[0].waiting_for
        assert current_request() == [{"CPU": 1.0}] * 3  # the autoscaler is asked for room for all three
        wait_for(lambda: (state / "go.held").exists(), 300, "a request held at the gate")
        # Drain a node whose replica holds a unit at the gate: an idle one would leave at once, never seen draining.
        wait_for(lambda: commits(str(out)) == count // per_shard - len(held), 300, "every shard but the held ones")
        victim = wait_for(lambda: next((r for r in status().replicas if r.state == "ready" and r.units_in_flight),
                                       None), 60, "a replica holding a unit at the gate")
        a = victim.node_id
        drain_node(a, deadline_s=20)  # a spot preemption notice
        wait_for(lambda: any(r.name == victim.name and r.state == "draining" for r in status().replicas), 30,
                 "the replica on the draining node to drain")
        wait_for(lambda: status().replicas_preempted == 1, 60, "the drained node's replica to leave")
        assert len(status().pending) == 2  # its replacement cannot go to the draining node, nor to the full one
        third = c.add_node(num_cpus=1)  # a node added mid-run
        wait_for(lambda: third.node_id in ready_nodes(status()), 400, "a replica on the new node")
        before_release = status()
        assert len(before_release.pending) == 1 and before_release.target_replicas == 3  # it works on with two
        (state / "go").touch()
        thread.join(600)
    finally:
        if thread.is_alive() or "error" in outcome:
            stop_run("drain", state)
            thread.join(60)
    assert "error" not in outcome, outcome.get("error")
    summary = outcome["summary"]

    on_new = [r for r in summary.replicas if r.node_id == third.node_id]
    assert on_new and max(r.units_done for r in on_new) >= 1  # the added node did work
    left = [r for r in summary.replicas if r.retired_because == "run finished"]
    assert sorted(r.state for r in left) == ["retired"] * 3 and sum(r.node_id is None for r in left) == 1
    assert summary.replicas_preempted == 1 and summary.units_retried == 0 and summary.failed_prompts == 0
    assert set(summary.replaced_for) <= {"node_lost"}  # never a prompt's fault
    keys = keys_of(str(out))
    assert len(keys) == len(set(keys)) == count * 2
    assert current_request() == []  # the autoscaler request is withdrawn at the end
    (gone,) = [r for r in summary.replicas if r.node_id == a]
    assert gone.retired_because == "preempted"


# -- 3. a real zombie --------------------------------------------------------------------------------------

def test_a_frozen_replica_is_replaced_and_its_late_write_loses_the_commit_race(cluster, tmp_path):
    import psutil
    import ray

    from potstill.cluster.ray_pool import RayReplicaPool
    from potstill.pipelines.generate.controller import GenerationController
    from potstill.pipelines.generate.plan import plan_run
    from potstill.pipelines.ingest.prompts import IngestReport, iter_prompts

    c, _ = cluster
    count, per_shard = 20, 5
    out, state = tmp_path / "gen", tmp_path / "faults"
    cfg = gen_config(str(out), "zombie", count, per_shard, str(state), held=[per_shard], min_replicas=1,
                     max_replicas=1, units_in_flight=1, max_units_in_flight=1, unit_timeout_s=15)
    controller = GenerationController(cfg, str(out))  # in this process, on the head: no node can take it away
    outcome: dict = {}

    def drive() -> None:
        try:
            outcome["summary"] = controller.run(RayReplicaPool(cfg, str(out)))
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            outcome["error"] = exc

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    try:
        wait_for(lambda: (state / "go.held").exists() or "error" in outcome, 400, "shard 1 held on the replica")
    except AssertionError:
        state.mkdir(parents=True, exist_ok=True)
        (state / "go").touch()
        thread.join(120)
        raise
    assert "error" not in outcome, outcome.get("error")
    rep = controller._replicas[0]
    info = ray.get(rep.handle.start.remote(), timeout=60)
    node = next(n for n in c.worker_nodes if n.node_id == info["node_id"])
    raylet = node.all_processes["raylet"][0].process.pid
    frozen = [psutil.Process(info["pid"])] + psutil.Process(info["pid"]).children(recursive=True)
    os.kill(raylet, signal.SIGSTOP)  # the node cannot kill it either: a partitioned, frozen replica
    for p in frozen:
        p.send_signal(signal.SIGSTOP)
    try:
        (state / "go").touch()  # the gate is open, but the zombie sleeps through it
        shard = plan_run(iter_prompts(cfg.prompts, None, IngestReport()), "zombie", per_shard).shard_ids[1]
        wait_for(lambda: Storage(str(out)).exists(f"commits/{shard}.json") or "error" in outcome, 600,
                 "the replacement to commit shard 1")
        assert controller.progress.replaced_for == {"hung": 1}  # replaced once its unit deadline passed
        winner = json.loads((out / "commits" / f"{shard}.json").read_text())["data_path"]
        for p in frozen:
            p.send_signal(signal.SIGCONT)
        logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
        lost = f"shard {shard}: attempt"

        def zombie_lost_the_race() -> bool:
            for f in logs.glob(f"worker-*-{info['pid']}.*"):
                text = f.read_text(errors="replace")
                if lost in text and "lost the commit" in text:
                    return True
            return False

        wait_for(zombie_lost_the_race, 300, "the resumed zombie to write its shard and lose the commit race")
    finally:
        for p in frozen:
            try:
                p.send_signal(signal.SIGCONT)
            except psutil.NoSuchProcess:
                pass
        os.kill(raylet, signal.SIGCONT)  # the node learns it was given up and goes away
    thread.join(600)
    assert "error" not in outcome, outcome.get("error")
    summary = outcome["summary"]
    assert summary.replaced_for == {"hung": 1} and summary.units_retried == 0 and summary.failed_prompts == 0
    keys = keys_of(str(out))
    assert len(keys) == len(set(keys)) == count * 2  # readers see each row once
    assert Storage(str(out)).list(f"data/{shard}") == [winner]  # the zombie deleted its own object
    c.remove_node(node, allow_graceful=False)
