"""`potstill.read_run`: only committed rows, each once, as Arrow / pyarrow Dataset / Hugging Face datasets.

    .venv/bin/pytest tests/unit/output/test_reader.py -q
"""

from __future__ import annotations

import os
import shutil

import pyarrow.parquet as pq
import pytest

import potstill
from potstill.pipelines.output.commit import CommitError, RunNotFinishedError, read_manifest
from potstill.pipelines.output.reader import EmptyRunError
from potstill.pipelines.output.storage import Storage
from tests.unit.output.committed_runs import UNCOMMITTED, make_run


def test_killed_attempt_never_read_and_counts_match_the_manifest(tmp_path):
    root = make_run(tmp_path / "r1", "r1", prompts=6, n=2)
    data_objects = list((tmp_path / "r1" / "data").rglob("*.parquet"))
    assert len(data_objects) == 4  # 3 committed shards + the killed attempt
    manifest = read_manifest(root)
    verified = potstill.read_run(root)
    every = potstill.read_run(root, verified_only=False)
    assert verified.count_rows() == manifest.totals.verified == 10
    assert every.count_rows() == manifest.totals.traces == 12
    for runs in (verified, every):
        table = runs.to_table()
        assert UNCOMMITTED not in table.column("completion").to_pylist()
        assert runs.dataset.count_rows() == table.num_rows
        assert runs.dataset.to_table().column("completion").to_pylist() == table.column("completion").to_pylist()
    assert all(v is True for v in verified.to_table(columns=["verified"]).column("verified").to_pylist())
    assert verified.to_table(columns=["prompt_id"]).column_names == ["prompt_id"]


def test_live_run_reads_commits_and_can_be_refused(tmp_path):
    root = make_run(tmp_path / "live", "live", prompts=4, n=2, finalize=False)
    runs = potstill.read_run(root, verified_only=False)
    assert not runs.runs[0].finished and runs.count_rows() == 8
    assert UNCOMMITTED not in runs.to_table(["completion"]).column("completion").to_pylist()
    with pytest.raises(RunNotFinishedError, match="not a finished run .*2 shards committed so far.*--live"):
        potstill.read_run(root, allow_live=False)
    with pytest.raises(EmptyRunError, match="no committed shard"):
        potstill.read_run(str(tmp_path / "nothing-here"))


def test_several_runs_read_as_one_each_row_once(tmp_path):
    a = make_run(tmp_path / "a", "a", prompts=4, n=2)
    b = make_run(tmp_path / "b", "b", prompts=2, n=2, first_prompt=10)
    shutil.copytree(tmp_path / "a", tmp_path / "a-copy")  # the same shards under another root
    runs = potstill.read_run([a, b, a + "/", str(tmp_path / "a-copy")], verified_only=False)
    assert [r.run_id for r in runs.runs] == ["a", "b", "a"]  # the repeated root is read once, the copy is listed
    assert runs.duplicate_shards == 2  # ...but its shards (same sha256) are skipped
    table = runs.to_table(["run_id", "prompt_id", "sample_index"])
    keys = list(zip(*(table.column(c).to_pylist() for c in table.column_names)))
    assert len(keys) == len(set(keys)) == 8 + 4


def test_filters_columns_and_bad_columns(tmp_path):
    root = make_run(tmp_path / "r", "r", prompts=4, n=2, finish="length")
    assert potstill.read_run(root, finish_reasons=["stop"], verified_only=False).count_rows() == 0
    assert potstill.read_run(root, finish_reasons=["length"], verified_only=False).count_rows() == 8
    runs = potstill.read_run(root)
    with pytest.raises(ValueError, match=r"columns \['promptid'\] are not trace columns; choose from .*prompt_id"):
        runs.to_table(["promptid"])
    with pytest.raises(ValueError, match="is a string; pass a list"):
        runs.to_table("prompt_id")


def test_verified_only_on_a_run_without_verdicts_says_how_to_read_it(tmp_path):
    root = make_run(tmp_path / "nv", "nv", prompts=2, n=1, verdict=lambda i, k: None)
    with pytest.raises(ValueError, match="no verifier verdicts .*verified_only=False"):
        potstill.read_run(root)
    assert potstill.read_run(root, verified_only=False).count_rows() == 2


def test_a_committed_shard_changed_outside_potstill_is_refused(tmp_path):
    root = make_run(tmp_path / "r", "r", prompts=4, n=2, killed_attempt=False)
    runs = potstill.read_run(root, verified_only=False)
    shard = runs.shards[0]
    path = Storage(root).path(shard.rel)
    pq.write_table(pq.read_table(path).slice(0, 1), path)
    with pytest.raises(CommitError, match="holds 1 rows but its commit says 4.*re-run the generation"):
        runs.to_table()


def test_to_hf_in_memory_and_streaming(tmp_path):
    root = make_run(tmp_path / "r", "r", prompts=6, n=2)
    runs = potstill.read_run(root)
    ds = runs.to_hf(columns=["prompt_id", "messages", "completion", "verified"])
    assert ds.num_rows == 10 and ds.column_names == ["prompt_id", "messages", "completion", "verified"]
    assert ds[0]["messages"][0]["role"] == "user"
    stream = runs.to_hf(streaming=True, columns=["prompt_id", "completion"])
    assert stream.num_shards == 3  # one data source per committed shard
    rows = list(stream)
    assert len(rows) == 10 and UNCOMMITTED not in {r["completion"] for r in rows}
    assert sorted(r["prompt_id"] for r in rows) == sorted(ds["prompt_id"])
    full = next(iter(runs.to_hf(streaming=True)))
    assert set(full) == set(runs.schema.names) and full["topk_logprobs"][0][0] == pytest.approx(-0.1, abs=1e-3)


def test_streaming_splits_by_node_without_overlap(tmp_path):
    from datasets.distributed import split_dataset_by_node

    root = make_run(tmp_path / "r", "r", prompts=8, n=1)
    stream = potstill.read_run(root, verified_only=False).to_hf(streaming=True, columns=["prompt_id"])
    parts = [[r["prompt_id"] for r in split_dataset_by_node(stream, rank=i, world_size=2)] for i in range(2)]
    assert not set(parts[0]) & set(parts[1]) and len(parts[0]) + len(parts[1]) == 8


def test_import_potstill_stays_light_and_read_run_is_lazy():
    import subprocess
    import sys

    code = ("import sys, potstill; before = {m.split('.')[0] for m in sys.modules}; potstill.read_run; "
            "print(sorted({'pyarrow', 'datasets', 'ray', 's3fs'} & before), 'datasets' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] False"
