"""Commit protocol on a local folder: write -> verify -> commit, races, finalize, readers, gc, retries.

    .venv/bin/pytest tests/unit/test_commit_local.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

import potstill.pipelines.output.shard_writer as sw
from potstill.pipelines.output.commit import (
    FAILURES, MANIFEST, SUCCESS, CommitError, RunNotFinishedError, commit_path, commit_shard, committed_data_files,
    committed_shard_ids, finalize_run, read_commits, read_manifest,
)
from potstill.pipelines.output.shard_writer import CorruptShardError, records_to_table, write_shard
from potstill.pipelines.output.storage import RetryPolicy, Storage, StorageUnavailableError, is_retryable, scrub
from potstill.pipelines.output.topk_codec import decode_logprob_rows
from potstill.schemas.manifest import FailedPrompt, ShardStats
from potstill.schemas.trace import TraceRecord, trace_arrow_schema

RUN = "run-1"


def trace_rows(shard_id: str, n: int = 6, run_id: str = RUN) -> list[dict]:
    return [{
        "run_id": run_id, "shard_id": shard_id, "prompt_id": f"{i // 2:064x}", "sample_index": i % 2,
        "messages": [{"role": "user", "content": f"What is {i}+{i}?"}], "reference": str(2 * i),
        "completion": f"<think>{i} plus {i}</think>{2 * i}", "reasoning": f"{i} plus {i}", "answer": str(2 * i),
        "finish_reason": "stop", "prompt_tokens": 7, "completion_tokens": 3, "completion_token_ids": [1, 2, 3],
        "topk_ids": [[1, 4], [2, 5], [3, 6]], "topk_logprobs": [[-0.1, -2.5], [-0.2, -3.0], [-0.05, -4.0]],
        "verified": True, "verifier": "math", "teacher_model": "tiny", "teacher_revision": "abc",
        "sampling": '{"temperature":0.7}', "created_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
    } for i in range(n)]


def stats_for(rows: list[dict], failed: list[FailedPrompt] = ()) -> ShardStats:
    return ShardStats(prompts=len({r["prompt_id"] for r in rows}) + len(failed), traces=len(rows),
                      verified=len(rows), failed_prompts=len(failed), samples_drawn=len(rows))


def write_and_commit(store: Storage, shard_id: str, n: int = 6, failed: list[FailedPrompt] = ()):
    rows = trace_rows(shard_id, n)
    written = write_shard(store, RUN, shard_id, rows, "zstd", 3)
    prompt_ids = sorted({r["prompt_id"] for r in rows})
    return written, commit_shard(store, written, RUN, shard_id, prompt_ids, list(failed), stats_for(rows, failed))


@pytest.fixture
def store(tmp_path) -> Storage:
    return Storage(str(tmp_path / "out"))


# ---- writer -----------------------------------------------------------------

def test_records_to_table_same_from_models_and_dicts():
    rows = trace_rows("000000-a")
    from_dicts = records_to_table(rows)
    from_models = records_to_table([TraceRecord.model_validate(r) for r in rows])
    assert from_dicts.equals(from_models)
    assert from_dicts.schema.equals(trace_arrow_schema())
    del rows[2]["answer"]
    with pytest.raises(ValueError, match="row 2 has no 'answer'"):
        records_to_table(rows)


def test_after_warm_up_the_first_shard_table_imports_nothing():
    # A fresh interpreter: this test process has long since imported whatever pyarrow loads lazily.
    script = textwrap.dedent("""
        import sys
        from tests.unit.output.test_commit import trace_rows
        from potstill.pipelines.output.shard_writer import records_to_table, warm_up
        warm_up()
        before = set(sys.modules)
        records_to_table(trace_rows("000000-a"))
        print(sorted(set(sys.modules) - before))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[3])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_write_verify_commit_roundtrip(store):
    written, commit = write_and_commit(store, "000000-a")
    assert written.data_path == f"data/000000-a/{written.attempt_id}.parquet"
    table = pq.read_table(store.uri_of(written.data_path))
    assert table.num_rows == written.row_count == commit.row_count == 6
    assert table.schema.remove_metadata().equals(trace_arrow_schema().remove_metadata())
    # Layout 2: top-k sorted by log-probability, log-probabilities as uint8 codes exact to 1/32 nat.
    assert set(table.column("schema_version").to_pylist()) == {2}
    assert table.column("topk_ids").to_pylist()[0] == [[1, 4], [2, 5], [3, 6]]
    assert decode_logprob_rows(table.column("topk_logprobs"))[0] == [[pytest.approx(-0.1, abs=1 / 32), -2.5],
                                                                     [pytest.approx(-0.2, abs=1 / 32), -3.0],
                                                                     [pytest.approx(-0.05, abs=1 / 32), -4.0]]
    assert committed_shard_ids(store) == {"000000-a"}
    assert read_commits(store)["000000-a"] == commit
    assert not [p for p in store.list_info("", include_temp=True) if p.rel.endswith(".potstill-tmp")]


def test_write_shard_rejects_rows_of_another_shard(store):
    with pytest.raises(ValueError, match="shard_id"):
        write_shard(store, RUN, "000001-b", trace_rows("000000-a"))
    assert store.list("data") == []


def test_corrupted_object_raises_and_is_never_committed(store, monkeypatch):
    real_verify = sw.verify_shard

    def flip_then_verify(storage, written):
        path = storage.path(written.data_path)
        with open(path, "r+b") as f:  # bit rot between write and verify
            f.seek(written.size_bytes // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0xFF]))
        real_verify(storage, written)

    monkeypatch.setattr(sw, "verify_shard", flip_then_verify)
    with pytest.raises(CorruptShardError, match="sha256"):
        write_shard(store, RUN, "000000-a", trace_rows("000000-a"))
    assert store.list("data") == [] and committed_shard_ids(store) == set()


def test_truncated_object_is_detected(store):
    written = write_shard(store, RUN, "000000-a", trace_rows("000000-a"))
    with open(store.path(written.data_path), "r+b") as f:
        f.truncate(written.size_bytes - 10)
    with pytest.raises(CorruptShardError, match="size"):
        sw.verify_shard(store, written)


# ---- commit -----------------------------------------------------------------

def test_racing_commits_exactly_one_wins_and_loser_object_is_deleted(store):
    for shard_id in ("000000-a", "000001-b", "000002-c"):
        barrier, results = threading.Barrier(2), []

        def attempt(shard_id=shard_id, barrier=barrier, results=results):
            rows = trace_rows(shard_id)
            written = write_shard(store, RUN, shard_id, rows)
            barrier.wait()
            results.append((written, commit_shard(store, written, RUN, shard_id, ["p"], [], stats_for(rows))))

        threads = [threading.Thread(target=attempt) for _ in range(2)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        (w1, c1), (w2, c2) = results
        assert c1 == c2, "both attempts must see the same winning commit"
        winner = c1.attempt_id
        assert w1.attempt_id != w2.attempt_id and winner in (w1.attempt_id, w2.attempt_id)
        assert store.list(f"data/{shard_id}") == [f"data/{shard_id}/{winner}.parquet"]
    assert committed_shard_ids(store) == {"000000-a", "000001-b", "000002-c"}


def test_recommit_of_the_same_attempt_is_a_noop(store):
    written, first = write_and_commit(store, "000000-a")
    before = store.read_bytes(commit_path("000000-a"))
    again = commit_shard(store, written, RUN, "000000-a", first.prompt_ids, [], first.stats)
    assert again == first
    assert store.read_bytes(commit_path("000000-a")) == before
    assert store.exists(written.data_path)


def test_commit_checks_stats_against_rows(store):
    rows = trace_rows("000000-a")
    written = write_shard(store, RUN, "000000-a", rows)
    with pytest.raises(ValueError, match="stats.traces=1"):
        commit_shard(store, written, RUN, "000000-a", ["p"], [], ShardStats(traces=1))


# ---- finalize and readers ---------------------------------------------------

def test_finalize_is_idempotent_and_byte_identical(store):
    failed = [FailedPrompt(prompt_id="f" * 64, reason="engine died twice", attempts=3)]
    _, c0 = write_and_commit(store, "000000-a")
    _, c1 = write_and_commit(store, "000001-b", n=4, failed=failed)
    m1 = finalize_run(store, RUN, "fp", "tiny", "abc", ["000000-a", "000001-b"])
    manifest_bytes, success_bytes = store.read_bytes(MANIFEST), store.read_bytes(SUCCESS)
    m2 = finalize_run(store, RUN, "fp", "tiny", "abc", ["000000-a", "000001-b"])
    assert m1 == m2 and store.read_bytes(MANIFEST) == manifest_bytes and store.read_bytes(SUCCESS) == success_bytes
    assert [s.shard_id for s in m1.shards] == ["000000-a", "000001-b"]
    assert m1.totals.traces == 10 and m1.failed == failed
    assert m1.finished_at == max(c0.committed_at, c1.committed_at)
    lines = [json.loads(line) for line in store.read_bytes(FAILURES).decode().splitlines()]
    assert lines == [{"shard_id": "000001-b", "prompt_id": "f" * 64, "reason": "engine died twice", "attempts": 3}]
    with pytest.raises(CommitError, match="different content"):
        finalize_run(store, RUN, "another-fingerprint", "tiny", "abc", ["000000-a", "000001-b"])
    assert store.read_bytes(MANIFEST) == manifest_bytes
    assert read_manifest(store.uri) == m1


def test_finalize_refuses_uncommitted_shards(store):
    write_and_commit(store, "000000-a")
    with pytest.raises(CommitError, match=r"1 of 2 planned shards are not committed.*000001-b.*same run_id"):
        finalize_run(store, RUN, "fp", "tiny", None, ["000000-a", "000001-b"])
    assert not store.exists(MANIFEST)


def test_finalize_recovers_from_a_crash_between_manifest_and_success(store):
    write_and_commit(store, "000000-a")
    finalize_run(store, RUN, "fp", "tiny", None, ["000000-a"])
    store.delete(SUCCESS)
    with pytest.raises(RunNotFinishedError, match="_SUCCESS missing"):
        read_manifest(store.uri)
    finalize_run(store, RUN, "fp", "tiny", None, ["000000-a"])
    assert read_manifest(store.uri).run_id == RUN


def test_read_manifest_names_what_is_missing_and_the_fix(store):
    write_and_commit(store, "000000-a")
    with pytest.raises(RunNotFinishedError, match=r"manifest\.json and _SUCCESS missing.*same run_id"):
        read_manifest(store.uri)


def test_committed_data_files_lists_only_committed_objects_in_order(store):
    w1, _ = write_and_commit(store, "000001-b")
    w0, _ = write_and_commit(store, "000000-a")
    write_shard(store, RUN, "000002-c", trace_rows("000002-c"))  # written, never committed
    expected = [store.uri_of(w0.data_path), store.uri_of(w1.data_path)]
    assert committed_data_files(store.uri) == expected
    finalize_run(store, RUN, "fp", "tiny", None, ["000000-a", "000001-b"])
    assert committed_data_files(store.uri) == expected
    assert pq.read_table(expected).num_rows == 12


# ---- storage: retries and scrubbing -----------------------------------------

def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


def test_retry_classification():
    assert is_retryable(_client_error("SlowDown", 503))
    assert is_retryable(_client_error("InternalError", 500))
    assert is_retryable(_client_error("TooManyRequestsException", 429))
    assert is_retryable(EndpointConnectionError(endpoint_url="http://x"))
    assert is_retryable(TimeoutError())
    assert not is_retryable(_client_error("AccessDenied", 403))
    assert not is_retryable(_client_error("NotImplemented", 501))  # a missing feature: asking again cannot help
    assert not is_retryable(_client_error("PreconditionFailed", 412))
    assert not is_retryable(FileNotFoundError("k"))
    wrapped = PermissionError("denied")
    wrapped.__cause__ = _client_error("AccessDenied", 403)
    assert not is_retryable(wrapped)


def test_retry_policy_backs_off_then_gives_up_without_leaking_secrets(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sup3r-s3cret-value")
    policy, calls = RetryPolicy(max_retries=3, base_delay=0.001), []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise _client_error("SlowDown", 503)
        return "ok"

    assert policy.call(flaky, "put x") == "ok" and len(calls) == 3

    def denied():
        calls.append(1)
        raise _client_error("AccessDenied", 403)

    calls.clear()
    with pytest.raises(ClientError):
        policy.call(denied, "put x")
    assert len(calls) == 1

    def down():
        raise ConnectionError("connect to http://user:pw@host failed, key sup3r-s3cret-value")

    with pytest.raises(StorageUnavailableError) as info:
        policy.call(down, "put x")
    text = str(info.value)
    assert "after 4 attempts" in text and "sup3r-s3cret-value" not in text and "user:pw" not in text


def test_scrub_removes_credentials():
    text = scrub("AKIAABCDEFGHIJKLMNOP at https://me:pw@h/x?X-Amz-Signature=abc&X-Amz-Credential=def")
    assert "AKIA" not in text and "me:pw" not in text and "abc" not in text and "def" not in text


def test_local_put_if_absent_is_exclusive_and_content_checked(store):
    assert store.put_if_absent("commits/a.json", b"one")
    assert store.put_if_absent("commits/a.json", b"one")  # already exactly ours (what a retried PUT sees)
    assert not store.put_if_absent("commits/a.json", b"two")
    assert store.read_bytes("commits/a.json") == b"one"
    store.check_conditional_create()
    assert store.list("") == ["commits/a.json"]


@pytest.mark.parametrize("codec", ["zstd", "snappy", "none"])
def test_every_output_codec_writes_with_the_default_level(store, codec):
    written = write_shard(store, RUN, "000000-a", trace_rows("000000-a"), codec, 3)
    assert pq.read_metadata(store.uri_of(written.data_path)).num_rows == 6
