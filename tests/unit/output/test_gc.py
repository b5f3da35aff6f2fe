"""gc on a local folder: only potstill runs, only potstill's attempt objects, never one a writer may still commit.

    .venv/bin/pytest tests/unit/output/test_gc.py -q
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import pytest

import potstill.pipelines.output.commit as commit_module
from potstill.pipelines.output.commit import CommitError, commit_path, commit_shard, gc_run, read_commits
from potstill.pipelines.output.run_record import NotARunError
from potstill.pipelines.output.shard_writer import verify_shard, write_shard
from potstill.pipelines.output.storage import Storage
from potstill.schemas.manifest import RunRecord
from tests.unit.output.test_commit import RUN, stats_for, trace_rows, write_and_commit

ATTEMPT = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def run_store(tmp_path) -> Storage:
    """A run output root: run.json claimed, nothing else yet."""
    store = Storage(str(tmp_path / "out"))
    assert store.put_if_absent("run.json", RunRecord(run_id=RUN, config_fingerprint="fp").model_dump_json().encode())
    return store


def _plant(root, rel: str, data: bytes = b"not potstill's") -> str:
    path = os.path.join(root, *rel.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_gc_refuses_a_folder_that_is_not_a_potstill_run(tmp_path):
    # `potstill gc .` in the wrong folder: files that merely look like potstill's must survive.
    files = [_plant(tmp_path, rel) for rel in ("notes.txt", "data/photos/cat.parquet", f"data/000000-a/{ATTEMPT}.parquet")]
    with pytest.raises(NotARunError, match="no run.json.*not a potstill run output root"):
        gc_run(str(tmp_path))
    assert all(os.path.exists(f) for f in files)


def test_gc_deletes_only_attempt_objects_of_potstills_own_name_pattern(run_store):
    committed, _ = write_and_commit(run_store, "000000-a")
    orphan = write_shard(run_store, RUN, "000000-a", trace_rows("000000-a"))  # lost the race: collectable
    foreign = ["data/README.md", "data/000000-a/keep-me.parquet", f"data/000000-a/sub/{ATTEMPT}.parquet", "data/x.parquet"]
    for rel in foreign:
        _plant(run_store.root, rel)
    report = gc_run(run_store.uri)
    assert report.removed == [orphan.data_path] and report.kept == 1
    assert sorted(report.foreign) == sorted(foreign)
    assert sorted(run_store.list("data")) == sorted([committed.data_path, *foreign])


def test_gc_never_takes_an_attempt_a_live_writer_may_still_commit(run_store):
    # A slow (or paused) writer has written and verified its object; gc runs before its commit lands.
    rows = trace_rows("000001-b")
    written = write_shard(run_store, RUN, "000001-b", rows)
    report = gc_run(run_store.uri)  # the run is not finished and the shard has no commit: a writer may still commit
    assert report.removed == [] and report.skipped_live == [written.data_path]
    commit = commit_shard(run_store, written, RUN, "000001-b", sorted({r["prompt_id"] for r in rows}), [], stats_for(rows))
    assert run_store.exists(commit.data_path)
    verify_shard(run_store, written)


def test_forced_gc_takes_uncommitted_attempts_and_a_late_commit_withdraws_itself(run_store):
    rows = trace_rows("000001-b")
    written = write_shard(run_store, RUN, "000001-b", rows)
    report = gc_run(run_store.uri, force=True)  # the operator says no writer runs ... but one was only paused
    assert report.removed == [written.data_path]
    with pytest.raises(CommitError, match="is gone right after its commit.*withdrawn"):
        commit_shard(run_store, written, RUN, "000001-b", sorted({r["prompt_id"] for r in rows}), [], stats_for(rows))
    assert not run_store.exists(commit_path("000001-b")) and read_commits(run_store) == {}


def test_gc_ages_objects_by_the_store_clock_not_this_machines(run_store, monkeypatch):
    write_and_commit(run_store, "000000-a")
    orphan = write_shard(run_store, RUN, "000000-a", trace_rows("000000-a"))

    class SkewedClock(datetime):
        @classmethod
        def now(cls, tz=None):  # this machine runs two hours ahead of the store
            return datetime.now(tz) + timedelta(hours=2)

    monkeypatch.setattr(commit_module, "datetime", SkewedClock)
    report = gc_run(run_store.uri, min_age_s=900)  # the orphan is seconds old by the store's clock
    assert report.removed == [] and report.skipped_recent == [orphan.data_path]
    assert run_store.exists(orphan.data_path)


def test_gc_cleans_partial_writes_only_where_no_writer_can_commit(run_store):
    committed, _ = write_and_commit(run_store, "000000-a")
    done = _plant(run_store.root, f"data/000000-a/{ATTEMPT}.parquet.0123.potstill-tmp", b"half")  # shard committed
    live = _plant(run_store.root, f"data/000001-b/{ATTEMPT}.parquet.4567.potstill-tmp", b"half")  # shard open
    report = gc_run(run_store.uri)
    assert report.incomplete == [os.path.relpath(done, run_store.root)]
    assert not os.path.exists(done) and os.path.exists(live)
    assert gc_run(run_store.uri, dry_run=True, force=True).incomplete == [os.path.relpath(live, run_store.root)]
    assert os.path.exists(live)
    verify_shard(run_store, committed)


def test_store_clock_comes_from_the_store(run_store):
    before = datetime.now(timezone.utc) - timedelta(seconds=5)
    assert before <= run_store.store_now() <= datetime.now(timezone.utc) + timedelta(seconds=5)
    assert run_store.top_level() == ["run.json"]  # the probe is gone again
