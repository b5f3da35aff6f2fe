"""Scaling benchmarks: replicas on a 2-node cluster, the controller at 1,000 replicas, finalize and follow at
100,000 shards. Prints one JSON object.

    .venv/bin/python benchmarks/scaling.py [--only replicas,controller,finalize,follow]

- `replicas2_vs_1`: completion tokens/s with 2 replicas / with 1, same prompts, on a local
  `ray.cluster_utils.Cluster` of two 1-CPU worker nodes (the head holds no CPU), real vLLM on the shipped
  arithmetic teacher. Each rate counts from the first engine ready to the last commit, so the second
  replica's own engine start is paid inside the 2-replica run (goal >= 1.6).
- `controller_us_per_trace`: the controller's CPU time per trace (prompts x n) driving 1,000 simulated
  replicas (`SimulatedPool(write=False)`: engine starts of 60-180 s, units at ~3,000 tokens/s per replica
  with +-30% jitter, 400 tokens per sample) over 1,000,000 prompts x n=4, planning and both passes over the
  prompt file included. The pool's own CPU time (every protocol call timed) is subtracted (goal <= 50 us);
  `controller_ingest_cpu_s` times the two passes over the prompt file alone, so
  `controller_scheduling_us_per_trace` is what the scheduling loop itself costs.
- `finalize_s_100k_shards`: `finalize_run` (manifest and _SUCCESS) of a local run of 100,000 committed
  shards (goal <= 60 s).
- `follow_poll_s_100k`: one `CommitWatcher.poll` at 100,000 commits after 100 new ones (only new commit
  keys read; goal <= 2 s); `follow_full_read_s_100k` reads every commit as polls did before, same run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PARTS = ("replicas", "controller", "finalize", "follow")


# -- the controller at 1,000 replicas ----------------------------------------------------------------------

class TimedPool:
    """Wraps a pool and adds up the CPU time spent inside its methods (so it can be subtracted)."""

    def __init__(self, pool):
        self.pool = pool
        self.cpu_s = 0.0
        for name in ("create", "call", "wait", "result", "kill", "retire", "now", "placement", "draining_nodes",
                     "request_capacity", "location"):
            setattr(self, name, self._timed(getattr(pool, name)))

    def _timed(self, fn):
        def timed(*args, **kwargs):
            t = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu_s += time.process_time() - t
        return timed


def controller_us_per_trace(work: Path, prompts: int, replicas: int, n: int) -> dict:
    from potstill.pipelines.generate.controller import GenerationController
    from potstill.pipelines.generate.simulated_pool import SimulatedPool
    from potstill.schemas import GenerationConfig

    work.mkdir(parents=True, exist_ok=True)
    src = work / "prompts.jsonl"
    with open(src, "w") as f:
        for i in range(prompts):
            f.write(json.dumps({"prompt": f"What is {i} + {i % 997}? Think step by step."}) + "\n")
    cfg = GenerationConfig.model_validate({
        "run_id": "bench-controller",
        "prompts": {"path": str(src)},
        "teacher": {"model": "simulated", "revision": "bench"},
        "replicas": {"min_replicas": replicas, "max_replicas": replicas, "start_timeout_s": 3600,
                     "unit_timeout_s": 3600},
        "sampling": {"n": n},
        "verify": {"method": "none"},
        "output": {"uri": str(work / "out")},
    })
    rng = random.Random(0)
    tokens_per_sample, tps = 400, 3000.0
    speeds = {}

    def unit_s(unit, replica: int) -> float:
        base = len(unit.prompts) * n * tokens_per_sample / tps
        return base * rng.uniform(0.7, 1.3) * cfg.replicas.units_in_flight

    def start_speed(index: int) -> float:  # engine starts of 60-180 s (start_s = 120 / speed)
        speeds[index] = rng.uniform(120 / 180, 120 / 60)
        return speeds[index]

    sim = SimulatedPool(cfg, cfg.output.uri, write=False, unit_s=unit_s, start_s=120.0, batch_capacity=256,
                        tokens_per_sample=tokens_per_sample, speed=start_speed)
    pool = TimedPool(sim)
    controller = GenerationController(cfg, cfg.output.uri)
    t0 = time.process_time()
    wall = time.perf_counter()
    summary = controller.run(pool, finalize=False)
    total_cpu = time.process_time() - t0
    traces = prompts * n
    assert summary.this_run.traces == traces, summary.this_run
    controller_cpu = total_cpu - pool.cpu_s
    # Where it goes: the controller reads the prompt file twice (plan, then units); time those passes alone.
    from potstill.pipelines.ingest.prompts import IngestReport, iter_prompts

    t0 = time.process_time()
    for _ in range(2):
        sum(1 for _ in iter_prompts(cfg.prompts, cfg.output.storage, IngestReport()))
    ingest_cpu = time.process_time() - t0
    return {"controller_us_per_trace": round(controller_cpu / traces * 1e6, 2),
            "controller_cpu_s": round(controller_cpu, 1), "controller_pool_cpu_s": round(pool.cpu_s, 1),
            "controller_ingest_cpu_s": round(ingest_cpu, 1),
            "controller_scheduling_us_per_trace": round((controller_cpu - ingest_cpu) / traces * 1e6, 2),
            "controller_wall_s": round(time.perf_counter() - wall, 1), "controller_replicas": replicas,
            "controller_prompts": prompts, "controller_virtual_s": round(sim.now(), 0)}


# -- finalize and follow at 100,000 shards -------------------------------------------------------------------

def fake_run(root: Path, shards: int, start: int = 0) -> list[str]:
    """`shards` committed shards (valid commit records, data objects of the recorded size), written directly."""
    from datetime import datetime, timezone

    from potstill.pipelines.generate.plan import shard_id_for
    from potstill.schemas.manifest import ShardCommit, ShardStats
    from potstill.schemas.trace import trace_schema_hash

    (root / "commits").mkdir(parents=True, exist_ok=True)
    schema = trace_schema_hash()
    now = datetime.now(timezone.utc)
    ids = []
    for i in range(start, start + shards):
        shard_id = shard_id_for(i, [f"p{i}"])
        data_rel = f"data/{shard_id}/attempt-{i}.parquet"
        body = f"shard {i} ".encode().ljust(64, b"x")  # distinct bytes: readers key shards by their sha256
        (root / "data" / shard_id).mkdir(parents=True, exist_ok=True)
        (root / data_rel).write_bytes(body)
        commit = ShardCommit(run_id="bench", shard_id=shard_id, attempt_id=f"attempt-{i}", data_path=data_rel,
                             row_count=4, size_bytes=len(body), sha256=hashlib.sha256(body).hexdigest(), schema_hash=schema,
                             prompt_ids=[f"p{i}"], stats=ShardStats(prompts=1, traces=4, verified=4, samples_drawn=4,
                                                                     completion_tokens=1600), committed_at=now)
        (root / "commits" / f"{shard_id}.json").write_bytes(commit.model_dump_json(indent=2).encode() + b"\n")
        ids.append(shard_id)
    return ids


def finalize_and_follow(work: Path, shards: int, parts: set[str]) -> dict:
    from potstill.pipelines.distill.run_data import CommitWatcher
    from potstill.pipelines.output.commit import finalize_run, read_commits
    from potstill.pipelines.output.storage import Storage
    from potstill.schemas.generation import StorageConfig

    root = work / "run"
    t = time.perf_counter()
    ids = fake_run(root, shards - 100)
    setup_s = time.perf_counter() - t
    out: dict = {"setup_s_100k": round(setup_s, 1)}
    store = Storage(str(root))
    if "follow" in parts:
        watcher = CommitWatcher([str(root)], StorageConfig())
        first, _ = watcher.poll()  # a follower that started early has seen these
        assert len(first) == shards - 100
        ids += fake_run(root, 100, start=shards - 100)
        t = time.perf_counter()
        new, finished = watcher.poll()
        out["follow_poll_s_100k"] = round(time.perf_counter() - t, 3)
        assert len(new) == 100 and not finished
        t = time.perf_counter()
        full = read_commits(store)  # what every poll did before: read every commit
        out["follow_full_read_s_100k"] = round(time.perf_counter() - t, 2)
        assert len(full) == shards
        out["follow_poll_vs_full_read"] = round(out["follow_full_read_s_100k"] / max(out["follow_poll_s_100k"], 1e-9), 1)
    else:
        ids += fake_run(root, 100, start=shards - 100)
    if "finalize" in parts:
        t = time.perf_counter()
        manifest = finalize_run(store, "bench", "fp", "teacher", "rev", ids)
        out["finalize_s_100k_shards"] = round(time.perf_counter() - t, 2)
        assert len(manifest.shards) == shards and (root / "_SUCCESS").exists()
    return out


# -- 2 replicas / 1 on a 2-node cluster ----------------------------------------------------------------------

def replicas2_vs_1(work: Path, prompts: int) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from potstill.cluster.connect import forwarded_env
    from potstill.pipelines.jobs.run_generation import run_generation
    from potstill.schemas import GenerationConfig

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, runtime_env={"env_vars": forwarded_env()}, logging_level="WARNING")
    cluster.wait_for_nodes()
    rates, nodes = {}, {}
    try:
        for replicas in (1, 2):
            cfg = GenerationConfig.model_validate({
                "run_id": f"bench-replicas-{replicas}",
                "prompts": {"arithmetic": {"count": prompts, "digits": 3, "seed": 7}},
                "teacher": {"model": "potstill:arithmetic-teacher", "dtype": "float32", "max_model_len": 256,
                            "kv_cache_gib": 1, "engine_kwargs": {"enforce_eager": True}},
                "replicas": {"min_replicas": replicas, "max_replicas": replicas},
                "sampling": {"n": 4, "temperature": 0.6, "max_tokens": 128, "ignore_eos": True},
                "verify": {"method": "none", "require_stop": False},
                "output": {"uri": str(work / f"r{replicas}"), "prompts_per_shard": 32},
            })
            summary = run_generation(cfg)
            rates[replicas] = summary.tokens_per_s
            nodes[replicas] = summary.peak_replicas
    finally:
        ray.shutdown()
        cluster.shutdown()
    return {"replicas2_vs_1": round(rates[2] / rates[1], 2), "tokens_per_s_1_replica": round(rates[1]),
            "tokens_per_s_2_replicas": round(rates[2]), "peak_replicas_in_2_replica_run": nodes[2],
            "replica_bench_prompts": prompts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    ap.add_argument("--prompts", type=int, default=1_000_000, help="prompts of the controller benchmark")
    ap.add_argument("--replicas", type=int, default=1000, help="simulated replicas of the controller benchmark")
    ap.add_argument("--shards", type=int, default=100_000, help="committed shards of the finalize/follow benchmark")
    ap.add_argument("--replica-prompts", type=int, default=768, help="prompts of the 2-vs-1 replica benchmark")
    args = ap.parse_args()
    parts = set(args.only.split(","))
    unknown = parts - set(PARTS)
    if unknown:
        ap.error(f"--only: unknown part(s) {sorted(unknown)}; choose from {PARTS}")
    import logging

    logging.getLogger("potstill").setLevel(logging.ERROR)
    result: dict = {}
    work = Path(tempfile.mkdtemp(prefix="potstill-scaling-"))
    try:
        if "controller" in parts:
            result.update(controller_us_per_trace(work / "controller", args.prompts, args.replicas, n=4))
        if parts & {"finalize", "follow"}:
            result.update(finalize_and_follow(work / "finalize", args.shards, parts))
        if "replicas" in parts:
            result.update(replicas2_vs_1(work / "replicas", args.replica_prompts))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
