"""The generation job end to end: real vLLM CPU engine, local Ray, moto S3, real Parquet.

200 arithmetic prompts x n=4 -> committed shards whose verified fraction tracks the teacher's greedy
accuracy; bad input rows reported while the valid rows complete; `potstill inspect` of the run. A driver
killed mid-run and re-run is test_chaos_driver.py's (through the CLI, on S3).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from potstill.cli.common import last_json_line
from potstill.pipelines.output.commit import committed_data_files, read_manifest
from potstill.pipelines.jobs.run_generation import run_generation
from potstill.pipelines.output.storage import filesystem_for
from potstill.schemas import GenerationConfig, StorageConfig

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
N = 4
DIGITS, PROMPT_SEED = 3, 1234


def arithmetic_config(out: str, run_id: str, count: int = 200, per_shard: int = 25, storage: StorageConfig | None = None):
    return GenerationConfig.model_validate({
        "run_id": run_id,
        "prompts": {"arithmetic": {"count": count, "digits": DIGITS, "seed": PROMPT_SEED}},
        "teacher": {"model": "potstill:arithmetic-teacher", "dtype": "float32", "max_model_len": 256,
                    "engine_kwargs": {"enforce_eager": True}},
        "sampling": {"n": N, "temperature": 0.6, "max_tokens": 192, "logprobs": 4},
        "verify": {"method": "math"},
        "output": {"uri": out, "prompts_per_shard": per_shard, "storage": (storage or StorageConfig()).model_dump()},
    })


def read_rows(uri: str, storage: StorageConfig | None = None):
    fs, _ = filesystem_for(uri, storage)
    rows = []
    for path in committed_data_files(uri, storage):
        with fs.open(path.split("://", 1)[-1] if uri.startswith("s3://") else path, "rb") as f, pq.ParquetFile(f) as pf:
            rows.extend(pf.read(columns=["prompt_id", "sample_index", "verified", "topk_ids",
                                         "completion_tokens"]).to_pylist())
    return rows


@pytest.fixture(scope="module")
def clean_run(ray_local, s3_server):
    """One uninterrupted run of 200 prompts x 4 samples into a moto S3 bucket."""
    from potstill.pipelines.output.storage import s3_filesystem

    storage = StorageConfig(endpoint_url=s3_server)
    s3_filesystem(storage).call_s3("create_bucket", Bucket="clean-run")
    uri = "s3://clean-run/traces"
    summary = run_generation(arithmetic_config(uri, "clean", storage=storage))
    return uri, storage, summary


def test_200_prompts_x4_committed_to_s3(clean_run):
    uri, storage, summary = clean_run
    manifest = read_manifest(uri, storage)
    rows = read_rows(uri, storage)
    failed = {f.prompt_id for f in manifest.failed}
    by_prompt: dict[str, list[int]] = {}
    for r in rows:
        by_prompt.setdefault(r["prompt_id"], []).append(r["sample_index"])
    assert len(by_prompt) + len(failed) == 200
    for prompt_id, indices in by_prompt.items():
        assert sorted(indices) == list(range(N)), prompt_id
    assert manifest.totals.traces == len(rows) == sum(s.row_count for s in manifest.shards)
    assert manifest.totals.prompts == 200
    assert len(manifest.shards) == 8 and summary.shards == 8
    assert all(r["topk_ids"] and len(r["topk_ids"]) == r["completion_tokens"] for r in rows)
    fs, root = filesystem_for(uri, storage)
    assert fs.exists(f"{root}/_SUCCESS")


def test_verified_fraction_tracks_the_teachers_accuracy(clean_run, teacher_greedy):
    uri, storage, _ = clean_run
    rows = read_rows(uri, storage)
    verified = sum(r["verified"] is True for r in rows) / len(rows)
    teacher = teacher_greedy  # greedy, on the same problems (count 200, seed PROMPT_SEED), separate engine
    assert teacher["n"] == 200 and teacher["seed"] == PROMPT_SEED
    assert abs(verified - teacher["accuracy"]) <= 0.05, (verified, teacher["accuracy"])


def test_bad_rows_are_reported_and_valid_rows_complete(tmp_path, ray_local):
    from potstill.pipelines.arithmetic.problems import fresh_problems

    good = fresh_problems(6, 3, seed=99)

    def row(question: str, answer: str, role: str = "user") -> bytes:
        return json.dumps({"messages": [{"role": role, "content": question}], "answer": answer}).encode()

    lines = [row(q, a) for q, a in good[:3]]
    lines.append(row("What is 1 + 2?", "3", role="wizard"))
    lines.append(b'{"messages": [{"role": "user", "content": "caf\xe9 au lait"}], "answer": "1"}')
    lines.append(row("9" * 5000, "1"))
    lines.append(row(*good[0]))
    lines.extend(row(q, a) for q, a in good[3:])
    src = tmp_path / "prompts.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    cfg = GenerationConfig.model_validate({
        "run_id": "bad-input",
        "prompts": {"path": str(src), "fields": {"messages": "messages", "reference": "answer"}, "max_prompt_chars": 2000},
        "teacher": {"model": "potstill:arithmetic-teacher", "dtype": "float32", "max_model_len": 256,
                    "engine_kwargs": {"enforce_eager": True}},
        "sampling": {"n": 1, "temperature": 0.0, "max_tokens": 192},
        "output": {"uri": str(tmp_path / "out"), "prompts_per_shard": 4},
    })
    summary = run_generation(cfg)
    assert summary.totals.prompts == 6 and summary.totals.traces == 6
    errors = [json.loads(l) for l in (tmp_path / "out" / "errors" / "ingest.jsonl").read_text().splitlines()]
    by_row = {e["row"]: e for e in errors}
    assert set(by_row) == {3, 4, 5, 6}
    assert "wizard" in by_row[3]["reason"]
    assert "UTF-8" in by_row[4]["reason"] or "utf-8" in by_row[4]["reason"].lower()
    assert by_row[5]["field"] == "messages" and "2000" in by_row[5]["reason"]
    assert "duplicate of row 0" in by_row[6]["reason"]


def test_inspect_summarizes_the_run(clean_run):
    from potstill.pipelines.output.inspect_run import inspect_run

    uri, storage, summary = clean_run
    info = inspect_run(uri, storage)
    assert info["finished"] and info["shards"] == 8
    assert info["totals"] == summary.totals.model_dump()
    assert 0.9 <= info["accepted_fraction"] <= 1.0
    assert info["completion_tokens"]["p50"] > 0
    assert info["sample"]["completion"].startswith("<think>")
    out = subprocess.run([sys.executable, "-m", "potstill.cli", "inspect", uri, "--endpoint-url", storage.endpoint_url,
                          "--json"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert last_json_line(out.stdout)["totals"] == summary.totals.model_dump()


def test_detach_is_refused_on_the_local_cluster_this_process_started(ray_local, tmp_path, monkeypatch):
    """A local cluster that this process started ends with it too: `--detach` is refused, Ray running or not."""
    from potstill.pipelines.jobs.run_generation import start_generation

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ValueError, match="--detach needs a Ray cluster that outlives this command"):
        start_generation(arithmetic_config(str(tmp_path / "out"), "detach-local", count=4))
