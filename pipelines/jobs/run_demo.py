"""The whole loop on the embedded default: shipped teacher -> traces -> smaller student -> both scored.

    potstill demo [--out runs/demo] [--json]       # the CLI around `run_demo`

1. `run_generation` with `potstill/configs/arithmetic.yaml` (the shipped teacher,
   fresh 3-digit additions, top-4 logprobs) into `<out>/traces`, asking for
   `DEMO_PROMPTS` distinct problems at one sample each (a student needs
   varied problems more than repeated samples of the same ones);
2. `run_training` with `potstill/configs/distill_arithmetic.yaml` (a narrower student,
   SFT + sparse KD, Ray Train with 2 CPU workers) into `<out>/train`;
3. `evaluate` (the one scoring path, `jobs/evaluate.py`) of the teacher and
   the student in vLLM on the same fresh held-out problems (none of them in
   the traces).

Every stage resumes: re-running with the same `--out` skips committed shards,
continues training from the latest checkpoint, and re-scores.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from potstill.configs import GENERATION_DEMO, TRAINING_DEMO
from potstill.schemas.results import GenerationStatus

GENERATION_CONFIG = GENERATION_DEMO
TRAINING_CONFIG = TRAINING_DEMO
DEMO_PROMPTS = 2000
EVAL_PROBLEMS = 200

ProgressFn = Callable[[dict[str, Any]], None]


def run_demo(
    out: str = "runs/demo", *, prompts: int = DEMO_PROMPTS, eval_problems: int = EVAL_PROBLEMS,
    on_stage: Callable[[str], None] | None = None, on_generation: Callable[[GenerationStatus], None] | None = None,
    on_training: ProgressFn | None = None, on_scoring: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the three stages; returns the summary (teacher_acc, student_acc, params, traces, out, ...).

    `on_scoring(done, total)` counts the completions scored, the teacher's then the student's."""
    from potstill.cluster.connect import ensure_ray
    from potstill.pipelines.jobs.evaluate import count_parameters, evaluate, load_eval_prompts, trained_questions
    from potstill.pipelines.jobs.run_training import local_cpus, run_training
    from potstill.pipelines.jobs.run_generation import output_uri, run_generation
    from potstill.schemas import GenerationConfig, load_config
    from potstill.schemas.training import TrainingConfig

    stage = on_stage or (lambda _: None)
    started = time.time()
    root = Path(out).resolve()
    gen_cfg = load_config(GENERATION_CONFIG, GenerationConfig, {
        "output.uri": str(root / "traces"), "prompts.arithmetic.count": prompts, "sampling.n": 1})
    train_cfg = load_config(TRAINING_CONFIG, TrainingConfig, {
        "data.runs": [output_uri(gen_cfg)], "checkpoint.storage_path": str(root / "train")})
    ensure_ray(None, local_cpus(train_cfg.scaling.num_workers, train_cfg.scaling.cpus_per_worker), dashboard=True)
    stage(f"1/3 generating {prompts} traces with the shipped teacher ({gen_cfg.teacher.model}) into {root / 'traces'}")
    generation = run_generation(gen_cfg, on_progress=on_generation)
    traces_uri = output_uri(gen_cfg)
    s = train_cfg.student
    stage(f"2/3 distilling a {s.num_layers}-layer student (hidden {s.hidden_size}) with Ray Train, "
          f"{train_cfg.scaling.num_workers} CPU workers, {train_cfg.run.epochs} epochs")
    training = run_training(train_cfg, on_progress=on_training)

    stage(f"3/3 scoring teacher and student in vLLM on {eval_problems} fresh held-out problems")
    problems = load_eval_prompts(f"arithmetic:{eval_problems}", exclude=trained_questions([traces_uri]))
    scored = on_scoring or (lambda done, total: None)
    total = 2 * len(problems)
    scored(0, total)
    teacher = evaluate(gen_cfg.teacher.model, problems, on_completion=lambda done: scored(done, total))
    student = evaluate(training["student"], problems, on_completion=lambda done: scored(len(problems) + done, total))
    return {
        "teacher_acc": teacher["accuracy"],
        "student_acc": student["accuracy"],
        "teacher_params": count_parameters(gen_cfg.teacher.model),
        "student_params": count_parameters(training["student"]),
        "traces": generation.totals.traces,
        "verified_traces": generation.totals.verified,
        "eval_problems": len(problems),
        "train_steps": training["steps"],
        "packing_efficiency": training["packing_efficiency"],
        "kd_topk": training["topk_width"],
        "student": training["student"],
        "student_sample": student["sample"],
        "generation_s": round(generation.elapsed_s, 1),
        "training_s": training["elapsed_s"],
        "elapsed_s": round(time.time() - started, 1),
        "out": str(root),
    }
