"""Follow mode's commit polling: one listing per poll, and only commits it has not read before are read."""

from __future__ import annotations

from datetime import datetime, timezone

from potstill.pipelines.distill.run_data import CommitWatcher
from potstill.pipelines.output.commit import commit_path, finalize_run
from potstill.pipelines.output.storage import Storage
from potstill.schemas.generation import StorageConfig
from potstill.schemas.manifest import ShardCommit, ShardStats
from potstill.schemas.trace import trace_schema_hash


def commit(store: Storage, i: int) -> str:
    shard_id = f"{i:06d}-abc"
    data = f"data/{shard_id}/a{i}.parquet"
    store.put(data, b"x" * 10)
    record = ShardCommit(run_id="r", shard_id=shard_id, attempt_id=f"a{i}", data_path=data, row_count=1, size_bytes=10,
                         sha256=f"{i:064x}", schema_hash=trace_schema_hash(), prompt_ids=[f"p{i}"],
                         stats=ShardStats(prompts=1, traces=1), committed_at=datetime.now(timezone.utc))
    store.put_if_absent(commit_path(shard_id), record.model_dump_json().encode())
    return store.uri_of(data)


def test_each_poll_reads_only_the_new_commits(tmp_path, monkeypatch):
    store = Storage(str(tmp_path / "run"))
    files = [commit(store, i) for i in range(50)]
    reads: list[str] = []
    original = Storage.read_many
    monkeypatch.setattr(Storage, "read_many", lambda self, rels: reads.extend(rels) or original(self, rels))
    watcher = CommitWatcher([store.uri], StorageConfig())
    assert watcher.poll() == (files, False)
    assert len(reads) == 50
    reads.clear()
    assert watcher.poll() == ([], False) and reads == []  # nothing new: nothing read
    later = [commit(store, i) for i in (52, 50, 51)]
    new, finished = watcher.poll()
    assert new == sorted(later) and not finished  # in shard order
    assert sorted(reads) == sorted(commit_path(f"{i:06d}-abc") for i in (50, 51, 52))
    finalize_run(store, "r", "fp", "m", None, [f"{i:06d}-abc" for i in range(53)])
    assert watcher.poll() == ([], True)


def test_a_resumed_follower_reads_each_commit_once_and_returns_only_what_it_has_not_trained_on(tmp_path):
    store = Storage(str(tmp_path / "run"))
    files = [commit(store, i) for i in range(5)]
    watcher = CommitWatcher([store.uri], StorageConfig(), seen=files[:3])
    assert watcher.poll() == (files[3:], False)
    assert watcher.poll() == ([], False)
