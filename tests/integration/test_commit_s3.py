"""Commit protocol against a real S3 HTTP endpoint (moto server): conditional create, races, gc, readers.

    .venv/bin/pytest tests/integration/test_commit_s3.py -q
"""

from __future__ import annotations

import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
import s3fs
from botocore.exceptions import ReadTimeoutError

from potstill.pipelines.output.commit import (
    MANIFEST, SUCCESS, commit_path, commit_shard, committed_data_files, committed_shard_ids, finalize_run, gc_run,
    read_manifest,
)
from potstill.pipelines.output.shard_writer import verify_shard, write_shard
from potstill.pipelines.output.storage import (
    ConditionalWritesUnsupportedError, RetryPolicy, Storage, StorageUnavailableError, filesystem_for,
)
from potstill.schemas.manifest import RunRecord, ShardStats
from potstill.schemas.generation import StorageConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))  # fault_proxy: a shared helper (importlib mode)

from fault_proxy import FaultProxy  # noqa: E402

RUN = "run-s3"


def trace_rows(shard_id: str, n: int = 4) -> list[dict]:
    return [{
        "run_id": RUN, "shard_id": shard_id, "prompt_id": f"{i:064x}", "sample_index": 0,
        "messages": [{"role": "user", "content": f"{i}+1?"}], "completion": str(i + 1), "answer": str(i + 1),
        "finish_reason": "stop", "prompt_tokens": 4, "completion_tokens": 1, "teacher_model": "tiny",
        "sampling": "{}", "created_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
    } for i in range(n)]


def attempt(store: Storage, shard_id: str):
    rows = trace_rows(shard_id)
    written = write_shard(store, RUN, shard_id, rows)
    return written, lambda: commit_shard(store, written, RUN, shard_id, [r["prompt_id"] for r in rows], [],
                                         ShardStats(prompts=len(rows), traces=len(rows)))


@pytest.fixture
def store(s3_bucket) -> Storage:
    uri, config = s3_bucket
    return Storage(uri, config, policy=RetryPolicy(max_retries=2, base_delay=0.01))


def test_conditional_create_is_honoured_over_http(store):
    assert store.put_if_absent("commits/x.json", b"first")
    assert not store.put_if_absent("commits/x.json", b"second")
    assert store.read_bytes("commits/x.json") == b"first"
    bucket, key = store._split("commits/x.json")
    with pytest.raises(FileExistsError):  # the raw request: moto answers 412 to If-None-Match: *
        store.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=b"third", IfNoneMatch="*")


def test_retried_put_whose_first_try_landed_counts_as_ours(store, monkeypatch):
    real_call, lost = s3fs.S3FileSystem._call_s3, []

    async def reply_lost_once(self, method, *args, **kwargs):
        out = await real_call(self, method, *args, **kwargs)
        if method == "put_object" and kwargs.get("IfNoneMatch") and not lost:
            lost.append(kwargs["Key"])  # the object is stored, but the client never hears back
            raise ReadTimeoutError(endpoint_url="http://moto")
        return out

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", reply_lost_once)
    written, commit = attempt(store, "000000-a")
    assert commit().attempt_id == written.attempt_id and lost == [store._split(commit_path("000000-a"))[1]]
    assert store.exists(written.data_path)


def test_non_throttling_4xx_is_not_retried(s3_bucket, monkeypatch):
    _, config = s3_bucket
    calls = []
    real_call = s3fs.S3FileSystem._call_s3

    async def counting(self, method, *args, **kwargs):
        calls.append(method)
        return await real_call(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counting)
    with pytest.raises(FileNotFoundError):
        Storage("s3://no-such-bucket-potstill/run", config).read_bytes("x")
    assert calls == ["get_object"]


def test_unreachable_endpoint_gives_up_with_a_clean_message(aws_test_env):
    config = StorageConfig(endpoint_url="http://127.0.0.1:9", max_retries=1)
    store = Storage("s3://bucket/run", config, policy=RetryPolicy(max_retries=1, base_delay=0.01))
    with pytest.raises(StorageUnavailableError) as info:
        store.put_if_absent("commits/x.json", b"{}")
    assert "after 2 attempts" in str(info.value)
    assert aws_test_env["AWS_SECRET_ACCESS_KEY"] not in str(info.value)
    assert aws_test_env["AWS_ACCESS_KEY_ID"] not in str(info.value)


def test_racing_commits_exactly_one_wins(store):
    barrier, results = threading.Barrier(3), []

    def run():
        written, commit = attempt(store, "000000-a")
        barrier.wait()
        results.append((written, commit()))

    threads = [threading.Thread(target=run) for _ in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    commits = {c.attempt_id for _, c in results}
    assert len(results) == 3 and len(commits) == 1
    (winner,) = commits
    assert store.list("data") == [f"data/000000-a/{winner}.parquet"]
    assert committed_shard_ids(store) == {"000000-a"}


def test_write_commit_finalize_and_read_back(store):
    for shard_id in ("000001-b", "000000-a"):
        _, commit = attempt(store, shard_id)
        commit()
    write_shard(store, RUN, "000002-c", trace_rows("000002-c"))  # uncommitted: invisible to readers
    files = committed_data_files(store.uri, store.config)
    assert [f.split("/")[-2] for f in files] == ["000000-a", "000001-b"] and all(f.startswith("s3://") for f in files)
    manifest = finalize_run(store, RUN, "fp", "tiny", None, ["000000-a", "000001-b"])
    manifest_bytes = store.read_bytes(MANIFEST)
    assert finalize_run(store, RUN, "fp", "tiny", None, ["000000-a", "000001-b"]) == manifest
    assert store.read_bytes(MANIFEST) == manifest_bytes and store.exists(SUCCESS)
    assert read_manifest(store.uri, store.config) == manifest
    assert committed_data_files(store.uri, store.config) == files
    rels = [f.removeprefix(store.uri + "/") for f in files]
    assert sum(store.read_table(rel).num_rows for rel in rels) == 8
    assert store.read_table(rels[0], columns=["answer"]).column_names == ["answer"]


def test_gc_removes_orphans_and_abandoned_uploads(store):
    store.put_if_absent("run.json", RunRecord(run_id=RUN, config_fingerprint="fp").model_dump_json().encode())
    committed, commit = attempt(store, "000000-a")
    commit()
    orphan = write_shard(store, RUN, "000000-a", trace_rows("000000-a"))
    bucket, _ = store._split("data")
    for shard in ("000000-a", "000001-b"):  # writers died mid-upload: one of a committed shard, one of an open one
        key = store._split(f"data/{shard}/{'0' * 32}.parquet")[1]
        store.fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)
    store.put("data/notes.txt", b"not potstill's")
    report = gc_run(store.uri, store.config)
    assert report.removed == [orphan.data_path] and report.kept == 1 and report.foreign == ["data/notes.txt"]
    assert len(report.incomplete) == 1 and "000000-a" in report.incomplete[0]  # the open shard's upload may still finish
    assert sorted(store.list("data")) == sorted([committed.data_path, "data/notes.txt"])
    uploads = store.fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", [])
    assert [u["Key"].split("/")[-2] for u in uploads] == ["000001-b"]
    assert len(gc_run(store.uri, store.config, force=True).incomplete) == 1  # no writer runs: forced
    verify_shard(store, committed)


def test_the_store_clock_comes_from_the_store(store):
    before = store.store_now()
    store.put("x", b"1")
    assert abs((store.modified("x") - before).total_seconds()) < 60
    assert not [n for n in store.top_level() if n.startswith("_potstill_probe")]


def test_a_store_without_conditional_writes_is_named_at_once(s3_bucket):
    uri, config = s3_bucket
    with FaultProxy(config.endpoint_url, refuse_conditional=True) as proxy:
        store = Storage(uri, StorageConfig(endpoint_url=proxy.url, max_retries=8))
        with pytest.raises(ConditionalWritesUnsupportedError, match="501 NotImplemented to a conditional write"):
            store.check_conditional_create()
        assert proxy.refused == 1  # named at once, not retried 9 times as a transient 5xx


def test_streaming_write_uses_multipart_and_discards_on_error(s3_bucket):
    uri, config = s3_bucket
    store = Storage(uri, config, part_size=5 * 2**20)
    payload = bytes(range(256)) * (11 * 2**20 // 256)
    with store.open_write("data/big.bin") as f:
        for i in range(0, len(payload), 2**20):
            f.write(payload[i:i + 2**20])
    assert store.size("data/big.bin") == len(payload) and store.read_bytes("data/big.bin") == payload
    head = store.fs.call_s3("head_object", Bucket=store._split("data/big.bin")[0], Key=store._split("data/big.bin")[1])
    assert head["ETag"].strip('"').endswith("-3")  # three parts
    with pytest.raises(RuntimeError):
        with store.open_write("data/partial.bin") as f:
            f.write(payload)
            raise RuntimeError("writer crashed")
    assert not store.exists("data/partial.bin")
    bucket = store._split("data/x")[0]
    assert store.fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", []) == []


def test_storage_and_filesystem_pickle_for_ray_workers(store):
    import pickle

    clone = pickle.loads(pickle.dumps(store))
    assert clone.uri == store.uri and clone.policy == store.policy
    clone.put("x.txt", b"hello")
    assert store.read_bytes("x.txt") == b"hello"
    fs, _ = filesystem_for(store.uri, store.config)
    fs2 = pickle.loads(pickle.dumps(fs))
    assert type(fs2) is type(fs) and fs2.retry_policy == fs.retry_policy
    assert fs2.cat_file(store.path("x.txt")) == b"hello"
    store.check_conditional_create()  # moto honours If-None-Match
