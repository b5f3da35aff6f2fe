"""The distillation job end to end on CPU, over one shared generation run (real vLLM teacher, real shards).

    .venv/bin/pytest tests/integration/test_distill_job.py -q

The whole loop's accuracy (a smaller student reaching 0.9x the teacher on fresh problems) is the README's main
command, `potstill demo`, tested in test_readme.py; here are the job's fault tolerance and storage paths:

- a worker fails at step k (the config's `faults` test hook) -> the group restarts from the last
  checkpoint, the step counter continues, the final checkpoint exists;
- a run with the same seed and no failure trains the very weights of the run that failed and resumed;
- the driver of `potstill train` is SIGKILLed -> re-running the same name resumes, no finished epoch redone,
  and the finished job scores its student on the config's `eval.prompts`;
- data.follow trains on a live run (shards committed after the job started) and ends at `_SUCCESS`;
- a pretrained Qwen2 student (a random one saved as a Hugging Face folder on S3) trains with FSDP2 from the meta
  device, bf16 parameters, activation checkpointing and chunked losses on 2 workers, traces and checkpoints on S3
  (moto); one worker is SIGKILLed and the group resumes from the DCP checkpoint on S3; that checkpoint resumed on
  1 worker trains the next step with the loss the 2 workers had; the exported folder on S3 is copied through the
  storage stack for scoring, loads and generates in transformers and vLLM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from potstill.cli.common import last_json_line
from potstill.pipelines.distill.faults import REGISTRY_FILE, registered_metrics
from potstill.pipelines.output.commit import commit_shard, committed_data_files, finalize_run, read_commits
from potstill.pipelines.output.shard_writer import write_shard
from potstill.pipelines.output.storage import Storage
from potstill.schemas import load_config
from potstill.schemas.generation import StorageConfig
from potstill.schemas.training import TrainingConfig

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def traces(ray_local, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One generation run shared by every test here: 500 fresh problems x 1 sample, 2 shards, top-4 logprobs."""
    from potstill.pipelines.jobs.run_generation import run_generation
    from potstill.schemas import GenerationConfig

    out = tmp_path_factory.mktemp("gen") / "traces"
    cfg = load_config(REPO / "examples" / "arithmetic.yaml", GenerationConfig, {
        "output.uri": str(out), "prompts.arithmetic.count": 500, "sampling.n": 1, "output.prompts_per_shard": 250})
    summary = run_generation(cfg)
    assert summary.totals.traces == 500 and (out / "_SUCCESS").exists()
    return {"uri": str(out), "files": committed_data_files(str(out)), "summary": summary}


def copy_shards(files: list[str], dest: str, storage: StorageConfig | None = None, finalize: bool = True) -> list[str]:
    """Commit the given shards into a new run root with the real commit protocol (write, verify, commit), then
    (with `finalize`) its manifest.json and _SUCCESS."""
    store = Storage(dest, storage)
    shard_ids = []
    for path in files:
        table = pq.read_table(path)
        shard_id = Path(path).parent.name
        run_id = table.column("run_id")[0].as_py()
        written = write_shard(store, run_id, shard_id, table)
        prompt_ids = sorted(set(table.column("prompt_id").to_pylist()))
        commit_shard(store, written, run_id, shard_id, prompt_ids, [], read_commits(Storage(path.rsplit("/data/", 1)[0]))[shard_id].stats)
        shard_ids.append(shard_id)
    if finalize:
        finalize_copy(files, dest, storage)
    return shard_ids


def finalize_copy(files: list[str], dest: str, storage: StorageConfig | None = None) -> None:
    """manifest.json and _SUCCESS for the copies of `files` in `dest`, as their own run's finalize wrote them."""
    src = json.loads(Path(files[0].rsplit("/data/", 1)[0], "manifest.json").read_text())
    finalize_run(Storage(dest, storage), src["run_id"], src["config_fingerprint"], src["teacher_model"],
                 src["teacher_revision"], [Path(f).parent.name for f in files])


def small_config(name: str, runs: list[str], storage_path: str, **sections) -> TrainingConfig:
    """A small student and budget for the fault-tolerance tests."""
    base = {
        "name": name, "data": {"runs": runs},
        "student": {"hidden_size": 128, "num_layers": 1, "num_heads": 2, "intermediate_size": 256},
        "packing": {"max_tokens": 544}, "loss": {"sft_weight": 1.0, "kd_weight": 0.5},
        "optim": {"lr": 3e-3, "warmup_steps": 2}, "run": {"epochs": 1, "micro_batch_size": 3},
        "scaling": {"num_workers": 2, "use_gpu": False},
        "checkpoint": {"storage_path": storage_path, "every_steps": 5, "keep": 3, "max_failures": 2},
    }
    for key, value in sections.items():
        base[key] = base.get(key, {}) | value if isinstance(value, dict) else value
    return TrainingConfig.model_validate(base)


@pytest.fixture(scope="module")
def restarted(traces: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A run whose rank 1 raises right after step 7 (the last checkpoint is step 5); its folder, config and summary."""
    from potstill.pipelines.jobs.run_training import run_training

    root = tmp_path_factory.mktemp("restarted")
    run = str(root / "run")
    copy_shards(traces["files"][:1], run)  # 250 traces -> 50 packed rows -> 9 steps
    cfg = small_config("fault", [run], str(root / "ckpt"), faults={"step": 7, "rank": 1})
    return {"root": root, "config": cfg, "summary": run_training(cfg)}


def test_worker_failure_restarts_from_the_last_checkpoint(restarted: dict) -> None:
    summary, root = restarted["summary"], restarted["root"]
    assert summary["planned_steps"] == 9 and summary["steps"] == 9
    assert [(a["start_step"], a["resumed"]) for a in summary["attempts"]] == [(0, False), (5, True)]
    assert (root / "ckpt" / "fault" / "faults" / "step-7").exists()
    final = Path(summary["checkpoint"])
    assert json.loads((final / "metrics.json").read_text())["step"] == 9 and (final / ".metadata").exists()
    assert (root / "ckpt" / "fault" / "student" / "model.safetensors").exists()
    assert Path(summary["student"]) == root / "ckpt" / "fault" / "student"


def test_the_same_seed_trains_the_same_student_through_a_restart(restarted: dict) -> None:
    """Workers get fixed data splits and a restart restores the model, optimizer, schedule and data position, so a
    run with the same seed and no failure ends with the very weights of the run that failed and resumed."""
    import torch
    from safetensors.torch import load_file

    from potstill.pipelines.jobs.run_training import run_training

    uninterrupted = restarted["config"].model_copy(update={"name": "uninterrupted", "faults": None})
    student = run_training(uninterrupted)["student"]
    first, second = (load_file(f"{s}/model.safetensors") for s in (restarted["summary"]["student"], student))
    assert first.keys() == second.keys()
    differing = [name for name in first if not torch.equal(first[name], second[name])]
    assert not differing, f"same seed, different weights in {differing}"


def _latest_registered(snapshot: Path) -> dict | None:
    """The metrics of the newest checkpoint Ray Train's controller has registered (what a re-run resumes from)."""
    from pyarrow.fs import LocalFileSystem

    return max(registered_metrics(LocalFileSystem(), str(snapshot)), key=lambda m: m["step"], default=None)


def test_killed_driver_resumes_without_redoing_a_finished_epoch(traces: dict, tmp_path: Path) -> None:
    run = str(tmp_path / "run")
    copy_shards(traces["files"][:1], run)  # 250 traces -> 50 rows -> 13 steps an epoch at 2 rows per worker
    cfg = small_config("killed", [run], str(tmp_path / "ckpt"), run={"epochs": 3, "micro_batch_size": 2},
                       checkpoint={"every_steps": 5}, eval={"prompts": "arithmetic:20", "max_tokens": 128})
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps(cfg.model_dump(mode="json")))  # JSON is YAML
    cli = [sys.executable, "-m", "potstill.cli", "train", str(config), "--json"]
    env = dict(os.environ, RAY_ADDRESS="")  # its own local Ray: the kill takes the whole job down
    snapshot = tmp_path / "ckpt" / "killed" / REGISTRY_FILE
    proc = subprocess.Popen(cli, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            latest = _latest_registered(snapshot)
            if latest and latest["epoch"] >= 1:
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the job ended before it could be killed"
        killed_at = _latest_registered(snapshot)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed_at["step"] < 39
    out = subprocess.run(cli, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = last_json_line(out.stdout)
    first = summary["attempts"][0]
    assert first["resumed"] and first["start_step"] >= killed_at["step"] and first["start_epoch"] >= 1
    assert summary["steps"] == 39 and summary["metrics"]["epoch"] == 2
    # eval.prompts: the finished job scored its student in vLLM (a 39-step student's accuracy is not the point).
    assert summary["eval"]["n"] == 20 and summary["eval"]["model"] == summary["student"]
    assert 0 <= summary["eval"]["correct"] <= 20 and summary["eval"]["method"] == "math"


def test_follow_trains_on_a_live_run_and_ends_at_success(traces: dict, tmp_path: Path) -> None:
    from potstill.pipelines.distill.checkpointing import read_train_state
    from potstill.pipelines.jobs.run_training import run_training

    live = tmp_path / "live"
    files = traces["files"][:2]
    committed_at: list[float] = []
    started = time.time()
    seen = threading.Condition()
    waiting_with: list[int] = [0]  # shards the job had seen when it last said it was waiting for more

    def on_progress(update: dict) -> None:
        if update.get("phase") == "waiting for shards":
            with seen:
                waiting_with[0] = max(waiting_with[0], update.get("shards_seen") or 0)
                seen.notify_all()

    def wait_until_the_job_waits_with(count: int) -> None:
        with seen:
            assert seen.wait_for(lambda: waiting_with[0] >= count, timeout=300), f"the job never waited with {count} shards"

    def generation() -> None:
        """The run goes on while training reads it: each shard commits only once the job has trained on everything
        before it and waits for more, then _SUCCESS."""
        for i, path in enumerate(files):
            copy_shards([path], str(live), finalize=False)
            wait_until_the_job_waits_with(i + 1)
        finalize_copy(files, str(live))
        committed_at.append(time.time())

    writer = threading.Thread(target=generation, daemon=True)
    writer.start()
    cfg = small_config("follow", [str(live)], str(tmp_path / "ckpt"), data={"follow": True, "follow_poll_s": 0.5},
                       optim={"schedule": "constant"})
    summary = run_training(cfg, on_progress=on_progress)
    writer.join()
    assert summary["follow"] and committed_at and waiting_with[0] == len(files)
    # Training started before the run finished, read every shard exactly once, and ended after _SUCCESS.
    assert started < summary["attempts"][0]["at"] < (live / "_SUCCESS").stat().st_mtime
    done = read_train_state(summary["checkpoint"])["loop"]["data"]["done"]
    assert sorted(Path(f).parent.name for f in done) == sorted(Path(f).parent.name for f in files)
    # 2 shards x 50 packed rows over 2 workers at 3 rows a step: 17 steps when rounds split evenly, at most
    # 34 when every round holds one shard (the other worker pads).
    assert 17 <= summary["steps"] <= 34


@pytest.fixture
def qwen2_student_on_s3(s3_bucket, tmp_path: Path) -> tuple[str, StorageConfig]:
    """A small random Qwen2 (head_dim 64 for vLLM CPU) with the teacher's tokenizer, saved as a Hugging Face folder
    (bf16 safetensors) and uploaded to S3."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from potstill.pipelines.distill.student import load_tokenizer
    from potstill.pipelines.output.storage import filesystem_for

    root, storage = s3_bucket
    local = tmp_path / "qwen2"
    tok = load_tokenizer("potstill:arithmetic-teacher")  # a shared vocabulary, so KD on the teacher's top-k works
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=128, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=64, max_position_embeddings=1024,
                         tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(local)
    tok.save_pretrained(local)
    uri = f"{root}/models/qwen2-tiny"
    fs, path = filesystem_for(uri, storage)
    for f in local.iterdir():
        fs.put(str(f), f"{path}/{f.name}")
    return uri, storage


def test_pretrained_qwen2_student_fsdp_bf16_on_s3_survives_a_killed_worker_and_resumes_on_one_worker(
        traces: dict, qwen2_student_on_s3, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from potstill.pipelines.distill.checkpoint_storage import is_complete
    from potstill.pipelines.distill.checkpointing import read_metrics
    from potstill.pipelines.distill.student_files import local_model_dir
    from potstill.pipelines.jobs.evaluate import evaluate, load_eval_prompts
    from potstill.pipelines.jobs.run_training import run_training
    from potstill.pipelines.output.storage import filesystem_for

    student, storage = qwen2_student_on_s3
    root = student.rsplit("/models/", 1)[0]
    run = str(tmp_path / "run")
    copy_shards(traces["files"][:1], run)  # 250 traces -> 50 packed rows -> 13 steps of 4 rows
    sections = {
        "student": {"model": student}, "data": {"storage": storage.model_dump()},
        "strategy": {"kind": "fsdp", "precision": "bf16", "activation_checkpointing": True},
        "loss": {"sft_weight": 1.0, "kd_weight": 0.5, "chunk_tokens": 96},  # ~200 labelled positions a micro-batch
        "run": {"epochs": 1, "micro_batch_size": 2, "global_batch_size": 4},
        "checkpoint": {"every_steps": 3, "keep": 4, "max_failures": 2},
    }
    # Rank 1's process dies right after step 7; the last checkpoint is step 6.
    first = run_training(small_config("qwen2", [run], f"{root}/ckpt", **sections,
                                      faults={"step": 7, "rank": 1, "action": "kill"}))
    assert first["planned_steps"] == 13 and first["steps"] == 13 and first["student"] == f"{root}/ckpt/qwen2/student"
    # The restart resumes from the newest checkpoint Ray Train registered: step 6 (the fault hook fires only once
    # step 6's asynchronous write is registered; a real crash a few fast steps after it could resume from step 3).
    resumed_at = [(a["start_step"], a["resumed"]) for a in first["attempts"]]
    assert resumed_at == [(0, False), (6, True)], resumed_at
    fs, ckpt_root = filesystem_for(f"{root}/ckpt/qwen2", storage)
    kept = sorted(p.rsplit("/", 1)[1] for p in fs.ls(ckpt_root) if p.rsplit("/", 1)[1].startswith("checkpoint_0"))
    assert kept == [f"checkpoint_{s:09d}" for s in (6, 9, 12, 13)]  # keep: 4 (step 3 deleted)
    step6 = f"{root}/ckpt/qwen2/checkpoint_000000006"
    assert is_complete(step6, storage)
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(step6.split("://", 1)[1]) if p.endswith(".distcp")) == \
        ["__0_0.distcp", "__1_0.distcp"]  # one shard per rank
    after6_on_two = read_metrics(f"{root}/ckpt/qwen2/checkpoint_000000009", storage)["step_losses"]  # steps 7, 8, 9

    # The step-6 checkpoint of 2 workers, resumed by another job on 1 worker: step 7 trains on the same 4 rows.
    one = run_training(small_config("qwen2-on-one", [run], f"{root}/ckpt", **{
        **sections, "scaling": {"num_workers": 1}, "run": {**sections["run"], "max_steps": 7},
        "checkpoint": {**sections["checkpoint"], "resume_from": step6}}))
    assert [(a["start_step"], a["resumed"]) for a in one["attempts"]] == [(6, True)] and one["workers"] == 1
    on_one = read_metrics(f"{root}/ckpt/qwen2-on-one/checkpoint_000000007", storage)["step_losses"]
    print(f"step 7 after resuming step 6: 2 workers {after6_on_two[0]:.6f}, 1 worker {on_one[0]:.6f}")
    assert on_one[0] == pytest.approx(after6_on_two[0], rel=1e-3)

    # The exported student (bf16 safetensors, sharded state streamed by the workers) is copied from S3 byte for
    # byte (what scoring an S3 student loads into vLLM), loads and generates.
    folder = local_model_dir(first["student"], storage)
    stored = Storage(first["student"], storage)
    assert stored.size("model.safetensors") > 0
    for rel in stored.list():
        assert Path(folder, rel).read_bytes() == stored.read_bytes(rel), rel
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(folder)
    assert model.config.dtype == torch.bfloat16 and type(model).__name__ == "Qwen2ForCausalLM"
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 123 + 456?"}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)
    generated = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]
    scored = evaluate(folder, load_eval_prompts("arithmetic:8"))
    assert scored["n"] == 8 and scored["output_tokens_per_s"] > 0
