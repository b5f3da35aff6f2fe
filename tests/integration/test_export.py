"""Committed traces of a real run (vLLM arithmetic teacher, moto S3) read as Arrow / HF / Ray datasets, exported, and
trained on with TRL's SFTTrainer.

    .venv/bin/pytest tests/integration/test_export.py -q

One generation run (40 prompts x 2 samples, 3 shards, into S3) with an uncommitted attempt planted in data/ the way
a killed writer leaves it; every test reads that run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

import potstill
from potstill.cli.common import last_json_line
from potstill.pipelines.export.run_export import export_runs
from potstill.pipelines.jobs.run_generation import run_generation
from potstill.pipelines.output.commit import read_manifest
from potstill.pipelines.output.shard_writer import write_shard
from potstill.pipelines.output.storage import Storage
from potstill.schemas import GenerationConfig, StorageConfig
from potstill.schemas.export import ExportConfig

REPO = Path(__file__).resolve().parents[2]
UNCOMMITTED = "UNCOMMITTED ATTEMPT <think>x</think>0"


@pytest.fixture(scope="module")
def teacher_run(ray_local, s3_server):
    """(uri, storage): a finished run in S3 plus one verified but uncommitted attempt object in its data/."""
    from potstill.pipelines.output.storage import s3_filesystem

    storage = StorageConfig(endpoint_url=s3_server, region="us-east-1")
    s3_filesystem(storage).call_s3("create_bucket", Bucket="export-run")
    uri = "s3://export-run/traces"
    cfg = GenerationConfig.model_validate({
        "run_id": "export-it",
        "prompts": {"arithmetic": {"count": 40, "digits": 3, "seed": 4321}},
        "teacher": {"model": "potstill:arithmetic-teacher", "dtype": "float32", "max_model_len": 256,
                    "engine_kwargs": {"enforce_eager": True}},
        "sampling": {"n": 2, "temperature": 0.6, "max_tokens": 192},
        "verify": {"method": "math"},
        "output": {"uri": uri, "prompts_per_shard": 14, "storage": storage.model_dump()},
    })
    run_generation(cfg)
    store = Storage(uri, storage)
    first = read_manifest(uri, storage).shards[0]
    killed = store.read_table(first.data_path)
    killed = killed.set_column(killed.schema.get_field_index("completion"), "completion",
                               pa.array([UNCOMMITTED] * killed.num_rows))
    write_shard(store, "export-it", first.shard_id, killed, "zstd", 3)  # written + verified, never committed
    assert len(store.list("data")) == len(read_manifest(uri, storage).shards) + 1
    return uri, storage


@pytest.fixture(scope="module")
def trl_export(teacher_run, tmp_path_factory):
    uri, storage = teacher_run
    out = tmp_path_factory.mktemp("exports") / "trl"
    summary = export_runs(ExportConfig(runs=[uri], out=str(out), format="trl", storage=storage))
    return out, summary


def test_read_run_gives_exactly_the_committed_verified_rows_as_arrow_hf_and_ray(teacher_run):
    uri, storage = teacher_run
    manifest = read_manifest(uri, storage)
    runs = potstill.read_run(uri, storage=storage)
    assert manifest.totals.verified > 40  # the teacher is right most of the time
    assert runs.count_rows() == manifest.totals.verified
    table = runs.to_table(["prompt_id", "sample_index", "completion", "verified"])
    assert table.num_rows == manifest.totals.verified and UNCOMMITTED not in table.column("completion").to_pylist()
    assert runs.dataset.count_rows() == manifest.totals.verified  # pyarrow Dataset over the retrying s3fs
    every = potstill.read_run(uri, storage=storage, verified_only=False)
    assert every.count_rows() == manifest.totals.traces == 80 - 2 * len(manifest.failed)

    hf = runs.to_hf(columns=["prompt_id", "completion"])
    stream = runs.to_hf(streaming=True, columns=["prompt_id", "completion"])
    streamed = list(stream)
    assert hf.num_rows == len(streamed) == manifest.totals.verified and stream.num_shards == len(manifest.shards)
    assert UNCOMMITTED not in {r["completion"] for r in streamed}

    ray_ds = runs.to_ray(columns=["prompt_id", "sample_index", "completion"])
    ray_rows = ray_ds.take_all()
    assert len(ray_rows) == manifest.totals.verified and UNCOMMITTED not in {r["completion"] for r in ray_rows}
    assert sorted((r["prompt_id"], r["sample_index"]) for r in ray_rows) == sorted(
        zip(table.column("prompt_id").to_pylist(), table.column("sample_index").to_pylist()))


def test_trl_export_has_every_verified_row_and_a_card_with_the_runs_provenance(teacher_run, trl_export, tmp_path):
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    uri, storage = teacher_run
    out, summary = trl_export
    manifest = read_manifest(uri, storage)
    ds = load_dataset("parquet", data_files=f"{out}/data/train-*.parquet", split="train", cache_dir=str(tmp_path))
    assert ds.num_rows == summary.rows == manifest.totals.verified
    reply = ds[0]["messages"][-1]["content"]
    assert reply.startswith("<think>\n") and "</think>" in reply and UNCOMMITTED not in json.dumps(list(ds["messages"]))
    meta = DatasetCard.load(out / "README.md").data.to_dict()
    run = meta["potstill"]["runs"][0]
    assert (run["teacher_model"], run["verifier"], run["sampling"]["n"]) == ("potstill:arithmetic-teacher", "math", 2)
    assert run["teacher_revision"] == manifest.teacher_revision and run["finished"] is True
    assert meta["potstill"]["completion_tokens"]["total"] == sum(ds["completion_tokens"])


def test_cli_exports_to_s3_decontaminated_against_planted_questions(teacher_run, tmp_path):
    uri, storage = teacher_run
    questions = potstill.read_run(uri, storage=storage).to_table(["messages"]).column("messages").to_pylist()
    planted = sorted({m[-1]["content"] for m in questions})[:2]
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"problem": planted[0]}) + "\n" + json.dumps({"problem": f"  {planted[1].upper()}   "}) + "\n")
    out = "s3://export-run/exports/pc"
    proc = subprocess.run(
        [sys.executable, "-m", "potstill.cli", "export", uri, "--format", "prompt-completion", "--out", out,
         "--endpoint-url", storage.endpoint_url, "--against", str(bench), "--per-prompt", "1", "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = last_json_line(proc.stdout)
    d = summary["decontamination"]
    assert d["prompts_matched"] == 2 and summary["counts"]["decontaminated"] == d["rows_removed"] > 0
    store = Storage(out, storage)
    assert store.list("") == ["README.md", "data/train-00000-of-00001.parquet"]  # staging gone, card last
    rows = store.read_table("data/train-00000-of-00001.parquet").to_pylist()
    assert len(rows) == summary["rows"] == summary["prompts"]
    assert not {r["prompt"][-1]["content"] for r in rows} & set(planted)
    assert f"**{d['rows_removed']} rows removed**" in store.read_bytes("README.md").decode()


def test_trl_sft_trainer_trains_a_tiny_student_on_the_export_and_the_loss_goes_down(trl_export, tmp_path):
    import torch
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    from potstill.pipelines.distill.student import build_student, load_tokenizer
    from potstill.schemas.training import StudentConfig

    out, _ = trl_export
    ds = load_dataset("parquet", data_files=f"{out}/data/train-*.parquet", split="train", cache_dir=str(tmp_path / "hf"))
    tokenizer = load_tokenizer("potstill:arithmetic-teacher")
    student = build_student(StudentConfig(hidden_size=64, num_layers=2, num_heads=1, intermediate_size=128),
                            tokenizer, max_positions=256, seed=0)
    torch.manual_seed(0)
    args = SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=20, per_device_train_batch_size=8, learning_rate=3e-3,
                     lr_scheduler_type="constant", logging_steps=1, report_to=[], save_strategy="no", max_length=256,
                     use_cpu=True, dataloader_num_workers=0, seed=0)
    trainer = SFTTrainer(model=student, args=args, train_dataset=ds, processing_class=tokenizer)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 20
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"SFTTrainer on the trl export: mean loss of steps 1-5 {first:.3f}, steps 16-20 {last:.3f}")
    assert last < 0.7 * first, losses
