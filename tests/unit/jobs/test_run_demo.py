"""`potstill demo` without running it (the README test runs it end to end): the configs it uses make a
smaller student that vLLM can serve and packs the teacher's traces well, and its summary reads right
(leaving trained questions out of the scoring is `test_evaluate.py`'s).

    .venv/bin/pytest tests/unit/jobs/test_run_demo.py -q
"""

from __future__ import annotations

from potstill.cli.demo import summary_lines
from potstill.pipelines.jobs import run_demo as demo
from potstill.schemas import GenerationConfig, load_config
from potstill.schemas.training import TrainingConfig


def test_demo_configs_make_a_smaller_servable_student() -> None:
    from potstill.pipelines.distill.student import build_student, load_tokenizer
    from potstill.pipelines.jobs.evaluate import count_parameters

    gen = load_config(demo.GENERATION_CONFIG, GenerationConfig)
    train = load_config(demo.TRAINING_CONFIG, TrainingConfig)
    assert gen.teacher.model == "potstill:arithmetic-teacher" and gen.sampling.logprobs >= 1  # KD needs top-k
    assert train.scaling.num_workers == 2 and train.loss.kd_weight > 0 and train.student.model is None
    student = build_student(train.student, load_tokenizer(gen.teacher.model), train.packing.max_tokens)
    params = sum(p.numel() for p in student.parameters())
    assert params < count_parameters(gen.teacher.model) == 541_312
    assert student.config.head_dim >= 64  # vLLM's CPU attention


def test_a_trace_fits_the_packing_budget_several_times_over() -> None:
    from potstill.pipelines.arithmetic import problems as arithmetic
    from potstill.pipelines.distill.student import load_tokenizer
    from potstill.pipelines.distill.tokenize import TraceTokenizer

    train = load_config(demo.TRAINING_CONFIG, TrainingConfig)
    tok = TraceTokenizer(load_tokenizer("potstill:arithmetic-teacher"), use_teacher_ids=False)
    row = {"messages": [{"role": "user", "content": arithmetic.question_text(999, 999)}],
           "completion": arithmetic.completion_text(999, 999), "finish_reason": "stop"}
    longest = len(tok(row))
    per_row = train.packing.max_tokens // longest
    assert per_row >= 5 and per_row * longest / train.packing.max_tokens >= 0.95


def test_summary_reads_right() -> None:
    lines = summary_lines({
        "teacher_acc": 1.0, "student_acc": 0.985, "teacher_params": 541312, "student_params": 278912, "traces": 2000,
        "verified_traces": 2000, "eval_problems": 200, "train_steps": 670, "packing_efficiency": 0.977, "kd_topk": 4,
        "generation_s": 70.0, "training_s": 120.0, "elapsed_s": 260.0, "student": "/o/train/s/student", "out": "/o",
    })
    assert lines[0] == "teacher  100.0% on 200 fresh problems · 541,312 parameters"
    assert lines[1] == "student  98.5% on the same problems · 278,912 parameters (52% of the teacher)"
    assert "packing efficiency 97.7%" in lines[2] and lines[-1] == "output: /o"
