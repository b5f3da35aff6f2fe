"""End to end on CPU: synthetic arithmetic traces (with top-k) in a committed-style Parquet file ->
Ray Train with 2 gloo workers -> the loss falls, the student folder loads in transformers, and a
re-run with the same name resumes from the latest checkpoint."""

from __future__ import annotations

import json
import random
from datetime import datetime, timezone
from pathlib import Path

import pytest

from potstill.pipelines import arithmetic, teacher_build
from potstill.schemas.training import TrainingConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    # 2 train workers plus Ray Data's tasks: logical CPUs above the 2 cores so nothing starves.
    ray.init(num_cpus=4, include_dashboard=False)
    yield
    ray.shutdown()


def _write_traces(root: Path, teacher_dir: Path, count: int, topk: int) -> list[str]:
    """`count` arithmetic traces with teacher ids and a synthetic top-k (the true token at p~0.9)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    from potstill.schemas.trace import TraceRecord, trace_arrow_schema

    tok = AutoTokenizer.from_pretrained(teacher_dir)
    rng = random.Random(0)
    rows = []
    for i, (a, b) in enumerate(arithmetic.training_pairs(rng, count, (2, 3))):
        completion = arithmetic.completion_text(a, b)
        ids = tok.encode(completion + teacher_build.END, add_special_tokens=False)
        others = [[rng.randrange(len(tok)) for _ in range(topk - 1)] for _ in ids]
        rows.append(TraceRecord(
            run_id="r", shard_id="s0", prompt_id=f"p{i}", sample_index=0,
            messages=[{"role": "user", "content": arithmetic.question_text(a, b)}],
            completion=completion, reasoning=arithmetic.reasoning_text(a, b), answer=str(a + b), finish_reason="stop",
            prompt_tokens=20, completion_tokens=len(ids), completion_token_ids=ids,
            topk_ids=[[t] + [o for o in other if o != t] for t, other in zip(ids, others)],
            topk_logprobs=[[-0.1] + [-3.0] * (topk - 1) for _ in ids],
            verified=i % 10 != 0, verifier="exact", teacher_model=str(teacher_dir),
            sampling=json.dumps({"logprobs": topk}), created_at=datetime.now(timezone.utc),
        ).model_dump())
    path = root / "run" / "data" / "s0" / "attempt.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=trace_arrow_schema()), path, compression="zstd")
    return [str(path)]


def test_distill_trains_saves_and_resumes(ray_cluster, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from potstill.pipelines.distill.train_job import run_training

    teacher_dir = tmp_path / "teacher"
    teacher_dir.mkdir()
    teacher_build.save_tokenizer(teacher_build.build_tokenizer(), teacher_dir)
    files = _write_traces(tmp_path, teacher_dir, count=400, topk=4)
    base = {
        "name": "arith-student", "data": {"runs": [str(tmp_path / "run")]},
        "student": {"hidden_size": 64, "num_heads": 1, "num_layers": 1, "intermediate_size": 128},
        "packing": {"max_tokens": 512},
        "loss": {"sft_weight": 1.0, "kd_weight": 0.5},
        "optim": {"lr": 1e-2, "warmup_steps": 2, "schedule": "cosine"},
        "run": {"epochs": 2, "micro_batch_size": 4, "grad_accum_steps": 1, "seed": 0},
        "scaling": {"num_workers": 2, "use_gpu": False},
        "checkpoint": {"storage_path": str(tmp_path / "ckpt"), "every_steps": 4, "keep": 20},
    }
    first = run_training(TrainingConfig.model_validate(base), files)
    assert first["use_teacher_ids"] and first["topk_width"] == 4
    steps = first["steps"]
    assert first["metrics"]["step"] == steps and first["metrics"]["final"]

    history = sorted(
        (json.loads(p.read_text()) for p in (tmp_path / "ckpt" / "arith-student").glob("checkpoint_*/metrics.json")),
        key=lambda m: m["step"],
    )
    with_loss = [m for m in history if "loss" in m]
    print("loss by checkpoint:", [(m["step"], round(m["loss"], 3)) for m in with_loss])
    assert with_loss[-1]["loss"] < 0.6 * with_loss[0]["loss"], [round(m["loss"], 3) for m in with_loss]

    student = Path(first["student"])
    model = AutoModelForCausalLM.from_pretrained(student, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(student, local_files_only=True)
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 12 + 34?"}], add_generation_prompt=True, tokenize=False)
    ids = torch.tensor([tok.encode(prompt, add_special_tokens=False)])
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert tok.decode(out[0, ids.shape[1]:]).startswith("<think>")  # it learned the trace format

    # Same name, one more epoch: resumes at the last step and continues the counter.
    more = TrainingConfig.model_validate(base | {"run": base["run"] | {"epochs": 3}})
    second = run_training(more, files)
    assert second["steps"] == steps * 3 // 2
    assert second["metrics"]["step"] == second["steps"]
