"""Which shards training reads: each once however the runs are listed, and only those of a live run's plan.

    .venv/bin/pytest tests/unit/distill/test_run_data.py -q
"""

from __future__ import annotations

import os
from pathlib import Path

from potstill.pipelines.distill.run_data import CommitWatcher, finished_run_files
from potstill.pipelines.output.commit import commit_shard
from potstill.pipelines.output.shard_writer import write_shard
from potstill.pipelines.output.storage import Storage
from potstill.schemas.generation import StorageConfig
from potstill.schemas.manifest import PlanRecord, RunRecord, ShardStats
from potstill.schemas.training import TraceDataConfig
from tests.unit.output.committed_runs import make_run, trace


def test_the_same_run_listed_three_ways_is_read_once(tmp_path: Path, monkeypatch) -> None:
    root = make_run(tmp_path / "runs" / "r1", "r1", prompts=6, per_shard=2)
    monkeypatch.chdir(tmp_path)
    once = finished_run_files(TraceDataConfig(runs=[root]))
    assert len(once) == 3
    three_ways = [root, "runs/r1/", f"file://{os.path.join(tmp_path, 'runs', '.', 'r1')}"]
    assert finished_run_files(TraceDataConfig(runs=three_ways)) == once
    watcher = CommitWatcher(three_ways, StorageConfig())
    files, finished = watcher.poll()
    assert files == once and finished


def test_the_follow_watcher_reads_only_commits_of_the_runs_plan(tmp_path: Path) -> None:
    store = Storage(str(tmp_path / "live"))
    record = RunRecord(run_id="live", config_fingerprint="fp",
                       plan=PlanRecord(hash="plan-a" * 8, prompts=4, shard_ids=["000000-a", "000001-b"]))
    store.put_if_absent("run.json", record.model_dump_json().encode())
    for shard, plan in (("000000-a", record.plan_hash), ("000001-b", "plan-b" * 8)):
        rows = [trace("live", shard, i, 0) for i in range(2)]
        written = write_shard(store, "live", shard, rows)
        commit_shard(store, written, "live", shard, [r["prompt_id"] for r in rows], [],
                     ShardStats(prompts=2, traces=2), plan_hash=plan)
    files, _ = CommitWatcher([store.uri], StorageConfig()).poll()
    assert [f.split("/")[-2] for f in files] == ["000000-a"]
