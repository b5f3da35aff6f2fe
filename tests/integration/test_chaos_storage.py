"""Chaos: the object store misbehaves (503s, dropped connections, corruption, racing commits, missing markers).

    .venv/bin/pytest tests/integration/test_chaos_storage.py -q

Real vLLM CPU engines in local Ray actors; moto S3, reached directly or
through `FaultProxy` (fault_proxy.py), a fault-injecting HTTP proxy.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # chaos_support, fault_proxy: shared helpers (importlib mode)

from chaos_support import (  # noqa: E402
    PER_SHARD, SHARDS, assert_same_output, chaos_config, finished, new_bucket,
)
from chaos_support import clean  # noqa: E402,F401 - fixture
from fault_proxy import FaultProxy  # noqa: E402

from potstill.pipelines.output.commit import (  # noqa: E402
    MANIFEST, SUCCESS, RunNotFinishedError, read_commits, read_manifest,
)
from potstill.pipelines.generate.controller import GenerationController  # noqa: E402
from potstill.cluster.ray_pool import RayReplicaPool  # noqa: E402
from potstill.pipelines.jobs.run_generation import run_generation  # noqa: E402
from potstill.pipelines.ingest.prompts import IngestReport, iter_prompts  # noqa: E402
from potstill.pipelines.generate.plan import iter_units, plan_run  # noqa: E402
from potstill.pipelines.output.run_record import open_run  # noqa: E402
from potstill.pipelines.output.storage import Storage  # noqa: E402
from potstill.schemas import StorageConfig  # noqa: E402

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


class _ReuseFirst(RayReplicaPool):
    """The Ray pool, except that its first replica is one already started."""

    def __init__(self, cfg, uri, first):
        super().__init__(cfg, uri)
        self.first = first

    def create(self):
        if self.first is not None:
            rep, self.first = self.first, None
            return rep
        return super().create()


def test_two_attempts_racing_to_commit_one_shard_commit_exactly_once(s3_server, ray_local, clean):
    import ray

    storage = StorageConfig(endpoint_url=s3_server)
    uri = new_bucket(s3_server) + "/race"
    cfg = chaos_config(uri, "chaos-race", storage)
    # The run is claimed as its controller claims it (run.json pins the plan and teacher) before any replica commits.
    plan = plan_run(iter_prompts(cfg.prompts, storage, IngestReport()), "chaos-race", PER_SHARD)
    open_run(Storage(uri, storage), cfg, "chaos-race", plan)
    pool = RayReplicaPool(cfg, uri)
    replica = pool.create()
    ray.get(replica.handle.start.remote())
    unit = next(iter_units(iter_prompts(cfg.prompts, storage, IngestReport()), "chaos-race", PER_SHARD, plan.plan_hash))
    # Two attempts of one shard generate, write and commit at the same time (as after a false hang verdict).
    first, second = ray.get([replica.handle.process.remote(unit), replica.handle.process.remote(unit)])
    assert first == second, "both attempts must report the one commit in force"
    store = Storage(uri, storage)
    assert store.list("commits") == [f"commits/{unit.shard_id}.json"]
    assert store.list(f"data/{unit.shard_id}") == [first.data_path]  # the loser deleted its own object
    summary = GenerationController(cfg, uri).run(_ReuseFirst(cfg, uri, replica))
    assert summary.shards_skipped == 1 and summary.shards == SHARDS
    run = finished(uri, storage, summary)
    assert run.manifest.shards[0].data_path == first.data_path
    assert_same_output(run, clean)


@pytest.fixture(scope="module")
def flaky_run(s3_server, ray_local):
    """A run whose every S3 request goes through FaultProxy: 30% answered 503, 3% dropped, one object corrupted."""
    uri = new_bucket(s3_server) + "/flaky"
    picked: list[str] = []

    def first_data_object(key: str) -> bool:
        if "/data/" in key and not picked:
            picked.append(key)
            return True
        return False

    with FaultProxy(s3_server, fail_rate=0.3, drop_rate=0.03, seed=6, corrupt_puts=first_data_object) as proxy:
        summary = run_generation(chaos_config(uri, "chaos-flaky", StorageConfig(endpoint_url=proxy.url, max_retries=10)))
    return finished(uri, StorageConfig(endpoint_url=s3_server), summary), proxy


def test_30_percent_s3_503s_and_dropped_connections_leave_the_output_identical(flaky_run, clean):
    run, proxy = flaky_run
    assert proxy.requests > 50 and proxy.failed >= 0.2 * proxy.requests and proxy.dropped > 0
    # The storage layer's retries absorbed every 503 and drop: no replica was lost, and the one unit that
    # re-ran is the one whose object was corrupted (next test).
    assert run.summary.replicas_replaced == 0 and run.summary.units_retried == 1
    assert_same_output(run, clean)


def test_a_data_object_corrupted_after_writing_is_never_committed(flaky_run, clean):
    run, proxy = flaky_run
    (bad,) = proxy.corrupted
    bad_rel = bad.split("/flaky/", 1)[1]
    store = Storage(run.uri, run.storage)
    commits = read_commits(store)
    assert bad_rel not in {c.data_path for c in commits.values()}
    assert not store.exists(bad_rel), "the verifier deletes the object it rejected"
    for c in commits.values():  # what is committed is exactly what was verified
        assert hashlib.sha256(store.read_bytes(c.data_path)).hexdigest() == c.sha256
    assert_same_output(run, clean)


def _copy_run(storage: StorageConfig, src_uri: str, dst_uri: str) -> None:
    src, dst = Storage(src_uri, storage), Storage(dst_uri, storage)
    for rel in src.list():
        assert dst.put_if_absent(rel, src.read_bytes(rel)), rel


def test_training_reads_ride_out_503s_and_dropped_connections(s3_server):
    """Trace reads for training go through the one S3 stack and its retry policy (storage.max_retries), not a
    second client with its own: half the requests answered 503 and some dropped change nothing that is read."""
    import pyarrow.parquet as pq

    from potstill.pipelines.distill.dataset import arrow_filesystem, strip_scheme, trace_sources
    from potstill.pipelines.output.commit import committed_data_files
    from tests.unit.output.committed_runs import make_run

    direct = StorageConfig(endpoint_url=s3_server)
    uri = make_run(new_bucket(s3_server) + "/traces", "reads", prompts=24, n=2, per_shard=4, storage=direct)
    files = committed_data_files(uri, direct)
    expected = [pq.ParquetFile(strip_scheme(f), filesystem=arrow_filesystem(f, direct)).read() for f in files]
    with FaultProxy(s3_server, fail_rate=0.5, drop_rate=0.05, seed=11) as proxy:
        flaky = StorageConfig(endpoint_url=proxy.url, max_retries=12)
        sources = trace_sources(files, flaky)
        fs = arrow_filesystem(files[0], flaky)
        got = [pq.ParquetFile(strip_scheme(f), filesystem=fs).read() for f in files]
    assert len(files) == 6 and proxy.failed >= 10 and proxy.dropped >= 1, (proxy.requests, proxy.failed, proxy.dropped)
    assert [(s.teacher_model, s.topk_width) for s in sources] == [("tiny-teacher", 0)]
    assert all(a.equals(b) for a, b in zip(got, expected)) and sum(t.num_rows for t in got) == 48


def test_finalize_rerun_is_idempotent_and_an_unfinished_run_is_refused(s3_server, ray_local, clean, tmp_path):
    storage = clean.storage
    uri = new_bucket(s3_server) + "/traces"
    _copy_run(storage, clean.uri, uri)
    store = Storage(uri, storage)
    before = {name: store.read_bytes(name) for name in (MANIFEST, SUCCESS)}
    summary = run_generation(chaos_config(uri, "chaos-clean", storage))  # the same run again: finalize re-runs
    assert summary.shards_skipped == SHARDS and summary.engine_requests == 0
    assert {name: store.read_bytes(name) for name in (MANIFEST, SUCCESS)} == before, "finalize changed bytes"

    store.delete(SUCCESS)
    train_cfg = yaml.safe_load((REPO / "examples" / "distill_arithmetic.yaml").read_text())
    train_cfg["data"].update(runs=[uri], storage=storage.model_dump())
    train_cfg["checkpoint"]["storage_path"] = str(tmp_path / "checkpoints")
    (tmp_path / "train.yaml").write_text(json.dumps(train_cfg))
    out = subprocess.run([sys.executable, "-m", "potstill.cli", "train", str(tmp_path / "train.yaml"), "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=300,
                         env={**os.environ, "COLUMNS": "400", "RAY_ADDRESS": ""})
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    message = " ".join(out.stderr.split())
    assert f"{uri} is not a finished generation run: _SUCCESS missing" in message
    assert "re-run `potstill generate` with the same config and run id" in message
    with pytest.raises(RunNotFinishedError, match=r"is not a finished run: _SUCCESS missing\. Re-run the generation"):
        read_manifest(uri, storage)
    store.delete(MANIFEST)
    with pytest.raises(RunNotFinishedError, match="manifest.json and _SUCCESS missing"):
        read_manifest(uri, storage)
