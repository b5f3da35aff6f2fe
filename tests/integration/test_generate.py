"""The generation job end to end: real vLLM CPU engine, local Ray, moto S3, real Parquet.

200 arithmetic prompts x n=4 -> committed shards; resume after the driver is
killed; bad input rows reported while the valid rows complete.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from potstill.cli.common import last_json_line
from potstill.pipelines.output.commit import committed_data_files, read_manifest
from potstill.pipelines.jobs.run_generation import run_generation
from potstill.pipelines.output.storage import filesystem_for
from potstill.schemas import GenerationConfig, StorageConfig
from tests.integration.process_groups import kill_process_group

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


def test_verified_fraction_tracks_the_teachers_accuracy(clean_run):
    from potstill.pipelines.jobs.teacher_demo import run_teacher_demo

    uri, storage, _ = clean_run
    rows = read_rows(uri, storage)
    verified = sum(r["verified"] is True for r in rows) / len(rows)
    teacher = run_teacher_demo(n=200, seed=PROMPT_SEED)  # greedy, same held-out problems, separate engine
    assert abs(verified - teacher["accuracy"]) <= 0.05, (verified, teacher["accuracy"])


def _generate_cli(config: Path, out: Path, run_id: str, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, RAY_ADDRESS="")
    env.pop("POTSTILL_LOG_LEVEL", None)  # --verbose alone must show the engine logs
    return subprocess.Popen([sys.executable, "-m", "potstill.cli", "generate", str(config), "--out", str(out),
                             "--run-id", run_id, "--json", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, cwd=REPO, start_new_session=True)


def test_resume_after_the_driver_is_killed(tmp_path, clean_run):
    """Kill the driver after some shards commit; the re-run completes only the rest."""
    from potstill.pipelines.arithmetic.problems import fresh_problems

    uri, storage, _ = clean_run
    out = tmp_path / "resumed"
    config = tmp_path / "gen.yaml"
    config.write_text(json.dumps(json.loads(arithmetic_config(str(out), "resume").model_dump_json(exclude={"run_id"}))))
    # The first run's shards 2..7 each hang on one prompt, so exactly shards 0 and 1 can commit before the
    # kill (without it all 8 shards, in flight together, can commit within the test's polling interval).
    # Faults are not part of the run's fingerprint: the re-run below, without them, resumes the same run.
    first = json.loads(config.read_text())
    first["faults"] = {"rules": [{"action": "hang", "marker": question} for question, _ in
                                 (fresh_problems(200, DIGITS, seed=PROMPT_SEED)[s * 25] for s in range(2, 8))]}
    first_config = tmp_path / "gen-first.yaml"
    first_config.write_text(json.dumps(first))
    proc = _generate_cli(first_config, out, "resume")
    commits = out / "commits"
    deadline = time.time() + 1200  # a bound for a stuck run, not a wait: the loop ends at the second commit
    while time.time() < deadline and len(list(commits.glob("*.json"))) < 2 and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
    # The driver's actors die with it, but a replica may still be landing the shard it was committing: once no
    # process of the command's group is alive, `before` is what the re-run finds.
    kill_process_group(proc)
    before = {p.name: p.read_bytes() for p in commits.glob("*.json")}
    assert len(before) == 2, f"expected shards 0 and 1 committed at the kill, found {sorted(before)}"
    assert not (out / "_SUCCESS").exists()

    rerun = _generate_cli(config, out, "resume", "--verbose")
    stdout, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr.decode()[-3000:]
    # --verbose: the engine's logs reach the terminal too (by default they only go to <out>/logs/).
    assert re.search(rb"vllm\S* (INFO|WARNING) |(INFO|WARNING) \d\d-\d\d [\d:.]+ \[[\w.]+:\d+\]", stderr), \
        stderr.decode()[-3000:]
    summary = last_json_line(stdout)
    assert summary["shards_skipped"] == len(before)
    # One engine request per prompt of the shards that were not committed, none for the committed ones.
    assert summary["engine_requests"] == 25 * (8 - len(before))
    for name, data in before.items():
        assert (commits / name).read_bytes() == data, "a committed shard was rewritten"
    keys = {(r["prompt_id"], r["sample_index"]) for r in read_rows(str(out))}
    clean_keys = {(r["prompt_id"], r["sample_index"]) for r in read_rows(uri, storage)}
    assert keys == clean_keys
    assert len(read_rows(str(out))) == len(keys)  # no duplicates


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
