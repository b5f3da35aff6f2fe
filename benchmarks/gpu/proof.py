"""The GPU proof: potstill's teacher and student speed on one GPU machine, one command, no network.

    bash benchmarks/gpu/run.sh [--tiny] [--prompts N] [--logprobs K] [--student-steps N]

In one run, on random weights (no download):
1. plain `vllm.LLM.generate` with every prompt at once, on a Llama-3.1-8B-shaped
   teacher (vLLM `load_format="dummy"`, bf16) and a prompt set with skewed output
   budgets (`ignore_eos`, so every request runs to its budget): output tokens/s;
2. the potstill pipeline (`potstill generate`'s job: controller actor, 1 replica,
   Parquet shards written and committed) on the same prompts and engine settings;
3. a Qwen2-1.5B-shaped student trained by the distillation trainer's step (FSDP2,
   bf16, chunked CE + top-k KD) on packed 4,096-token rows, one process per GPU;
and prints ONE JSON object on stdout, last (everything else, vLLM's and Ray's logs
included, goes to stderr): the same-run ratio `pipeline_vs_bare_vllm_gpu`,
`roofline_fraction` (see `roofline.py`), the student's tokens/s/GPU and MFU,
and the cost per million teacher output tokens at $2 per GPU-hour.
The full sizes keep it to about 8 minutes of wall time on one H200.

`--tiny` runs the same code paths with tiny models (on the CPU build of vLLM and
gloo on this kind of machine) so CI proves the script runs; its roofline and
MFU divide by a nominal CPU placeholder peak, said so in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.gpu.models import StudentShape, TeacherShape  # noqa: E402
from benchmarks.gpu.student import StudentRun  # noqa: E402

USD_PER_GPU_HOUR = 2.0
STARTED = time.monotonic()


@dataclass(frozen=True)
class Sizes:
    teacher: TeacherShape
    max_model_len: int
    prompts: int
    short_budget: tuple[int, int]
    long_budget: tuple[int, int]
    long_share: float
    prompt_words: tuple[int, int]
    prompts_per_shard: int
    kv_cache_gib: float | None
    engine_kwargs: dict[str, Any]
    student: StudentRun


FULL = Sizes(
    teacher=TeacherShape.llama31_8b(), max_model_len=2560, prompts=1536,
    short_budget=(64, 384), long_budget=(1024, 1792), long_share=0.15, prompt_words=(12, 40),
    prompts_per_shard=256, kv_cache_gib=None,  # vLLM sizes the KV cache from gpu_memory_utilization
    engine_kwargs={"load_format": "dummy"},  # torch.compile and CUDA graphs on: what production runs
    # 2 rows of 4,096 a step: by estimate (not measured) ~55 GiB with the optimizer state, meant to fit an 80 GiB H100.
    student=StudentRun(shape=StudentShape.qwen2_1p5b(), row_tokens=4096, micro_rows=2, warmup_steps=3, timed_steps=10,
                       topk=20, prompt_len=(64, 512), completion_len=(256, 3584)),
)
TINY = Sizes(
    teacher=TeacherShape.tiny(), max_model_len=256, prompts=16,
    short_budget=(4, 12), long_budget=(48, 64), long_share=0.2, prompt_words=(2, 6),
    prompts_per_shard=8, kv_cache_gib=0.0625,
    engine_kwargs={"load_format": "dummy", "enforce_eager": True},  # no torch.compile: CI time (docs/PERFORMANCE.md)
    student=StudentRun(shape=StudentShape.tiny(), row_tokens=256, micro_rows=2, warmup_steps=1, timed_steps=2,
                       topk=4, prompt_len=(8, 32), completion_len=(16, 96)),
)


def say(message: str) -> None:
    print(f"[gpu-proof {time.monotonic() - STARTED:5.0f}s] {message}", file=sys.stderr, flush=True)


def json_stdout() -> Any:
    """A file on the real stdout; fd 1 itself (this process's, its children's, Ray's forwarded logs) now goes to
    stderr, so the JSON object is the only thing on stdout."""
    sys.stdout.flush()
    real = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(real, "w")


def prepare_teacher(sizes: Sizes, work: Path, logprobs: int) -> tuple[Any, Path]:
    """Write the teacher folder and the prompts; (the GenerationConfig both sides run, its JSON file)."""
    from benchmarks.gpu.models import write_teacher
    from benchmarks.gpu.teacher import generation_config, skewed_prompts

    model = write_teacher(work / "teacher", sizes.teacher, sizes.max_model_len)
    rows = skewed_prompts(sizes.prompts, sizes.short_budget, sizes.long_budget, sizes.long_share, seed=0,
                          words=sizes.prompt_words)
    prompts = work / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    teacher = {"model": str(model), "dtype": "bfloat16", "max_model_len": sizes.max_model_len,
               "engine_kwargs": sizes.engine_kwargs}
    if sizes.kv_cache_gib:
        teacher["kv_cache_gib"] = sizes.kv_cache_gib
    sampling = {"n": 1, "temperature": 0.6, "max_tokens": max(r["max_tokens"] for r in rows), "ignore_eos": True,
                "logprobs": logprobs}
    cfg = generation_config(prompts, str(work / "run"), teacher, sampling, sizes.prompts_per_shard)
    cfg_path = work / "generation.json"
    cfg_path.write_text(cfg.model_dump_json())
    say(f"teacher: {len(rows)} prompts, {sum(r['max_tokens'] for r in rows)} output tokens asked")
    return cfg, cfg_path


def bare_phase(cfg_path: Path, work: Path) -> dict[str, Any]:
    """Plain vLLM in a process of its own (it exits, freeing the device, before the pipeline's replica starts)."""
    say("plain vLLM: every prompt in one LLM.generate call")
    out = work / "bare.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu.teacher", "bare", str(cfg_path), str(out)], cwd=REPO,
                          stdout=sys.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"the plain vLLM process exited with {done.returncode}; its log is above on stderr")
    bare = json.loads(out.read_text())
    say(f"plain vLLM: {bare['tok_s']:.0f} output tok/s ({bare['output_tokens']} tokens in {bare['seconds']:.1f} s)")
    return bare


def pipeline_phase(cfg: Any) -> dict[str, Any]:
    import ray

    from benchmarks.gpu.teacher import pipeline

    say("potstill pipeline: 1 replica, shards written and committed")
    try:
        piped = pipeline(cfg)
    finally:
        ray.shutdown()
    say(f"pipeline: {piped['tok_s']:.0f} output tok/s ({piped['output_tokens']} tokens in {piped['seconds']:.1f} s, "
        f"{piped['shards']} shards committed)")
    return piped


def attempt(name: str, fn: Any, errors: dict[str, str], phases: dict[str, float]) -> Any:
    """`fn()`, timed; on an exception its message lands in `errors` and None is returned, so the phases after it
    still run and the JSON still reports what was measured (a GPU lent for minutes is not spent twice)."""
    started = time.monotonic()
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported in the JSON, exit status 1
        traceback.print_exc(file=sys.stderr)
        errors[name] = f"{type(exc).__name__}: {exc}"[-2000:]
        say(f"{name} FAILED: {errors[name]}")
        return None
    finally:
        phases[name] = time.monotonic() - started


def device_facts() -> tuple[str | None, int]:
    """(GPU name or None, GPU count), asked in a child process so this one never holds a CUDA context."""
    code = ("import json, torch; ok = torch.cuda.is_available(); "
            "print(json.dumps([torch.cuda.get_device_name(0) if ok else None, torch.cuda.device_count() if ok else 0]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    name, count = json.loads(out.stdout.strip().splitlines()[-1])
    return name, count


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


def _sig(x: float | None, digits: int = 4) -> float | None:
    """`x` to `digits` significant digits (fractions far below 1 keep their precision)."""
    return None if x is None else float(f"{x:.{digits}g}")


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def teacher_fields(sizes: Sizes, spec: Any, cfg: Any, bare: dict | None, piped: dict | None) -> dict[str, Any]:
    """The teacher's keys (None where its phase failed)."""
    from benchmarks.gpu.roofline import decode_roofline

    roof = None
    if bare is not None:
        roof = decode_roofline(bare["prompt_tokens"], bare["budgets"], sizes.teacher, spec, bare["max_num_seqs"],
                               dtype_bytes=2, priority=cfg.teacher.schedule == "longest_first")
    bare_tok_s, pipe_tok_s = (bare or {}).get("tok_s"), (piped or {}).get("tok_s")
    memory_tok_s = roof["memory_tok_s"] if roof else None
    gpu_hour_usd = USD_PER_GPU_HOUR * cfg.teacher.tensor_parallel_size  # one replica
    return {
        "bare_vllm_output_tok_s": _round(bare_tok_s, 1),
        "pipeline_output_tok_s": _round(pipe_tok_s, 1),
        "pipeline_vs_bare_vllm_gpu": _sig(_div(pipe_tok_s, bare_tok_s)),
        "roofline_fraction": _sig(_div(bare_tok_s, memory_tok_s)),
        "roofline_fraction_pipeline": _sig(_div(pipe_tok_s, memory_tok_s)),
        "roofline_fraction_with_compute_ceiling": _sig(_div(bare_tok_s, roof and roof["memory_and_compute_tok_s"])),
        "roofline_tok_s": _round(memory_tok_s, 1),
        "roofline_method": None if roof is None else (
            "plain vLLM output tok/s / memory-bandwidth roofline tok/s; the roofline replays this run's decode steps "
            f"(all {len(bare['budgets'])} prompts at once, at most max_num_seqs={bare['max_num_seqs']} running, "
            "longest budget first as the engine's priority schedule runs them) and charges each step "
            f"(decode weights {roof['weight_bytes_per_step']} B in bf16, input embedding table excluded, + KV cache "
            f"{roof['kv_bytes_per_context_token']} B per context token of every running sequence) / HBM "
            f"{spec.hbm_bytes_per_s:.3g} B/s ({spec.source}); roofline = output tokens / summed step times; prefill "
            "ignored. roofline_fraction_with_compute_ceiling: each step takes the larger of that and its FLOPs at the "
            "dense bf16 peak"),
        "roofline_details": None if roof is None else {k: round(v, 2) if isinstance(v, float) else v for k, v in roof.items()},
        "usd_per_million_teacher_output_tokens": _sig(_div(gpu_hour_usd / 3600 * 1e6, pipe_tok_s)),
        "usd_per_million_teacher_output_tokens_bare_vllm": _sig(_div(gpu_hour_usd / 3600 * 1e6, bare_tok_s)),
        "usd_per_gpu_hour": USD_PER_GPU_HOUR,
        "teacher_output_tokens": {"bare_vllm": (bare or {}).get("output_tokens"),
                                  "pipeline": (piped or {}).get("output_tokens"),
                                  "asked": sum(read_budgets(cfg)),
                                  "equal": bare is not None and piped is not None
                                  and bare["output_tokens"] == piped["output_tokens"]},
        "teacher_seconds": {"bare_vllm": _round((bare or {}).get("seconds"), 2),
                            "pipeline": _round((piped or {}).get("seconds"), 2)},
    }


def read_budgets(cfg: Any) -> list[int]:
    from benchmarks.gpu.teacher import read_rows

    return [r["max_tokens"] for r in read_rows(Path(cfg.prompts.path))]


def student_fields(sizes: Sizes, spec: Any, student: dict | None) -> dict[str, Any]:
    """The student's keys (None where its phase failed)."""
    from benchmarks.gpu.roofline import training_flops

    if student is None:
        keys = ("student_tokens_per_s_per_gpu", "student_mfu", "student_mfu_method", "student_step_s_median",
                "student_step_s", "student_packing_efficiency", "student_peak_memory_gib",
                "student_attn_implementation", "student_final_loss")
        return dict.fromkeys(keys)
    s = sizes.student
    head = s.shape.vocab * s.shape.hidden
    step_flops = training_flops(student["params"] - head, head, student["positions_per_step"],
                                student["labelled_per_step"], student["doc_lengths_per_step"], s.shape.layers,
                                s.shape.hidden) / s.steps
    step_s, world = student["step_s_median"], student["world"]
    return {
        "student_tokens_per_s_per_gpu": round(student["positions_per_step"] / world / step_s, 1),
        "student_mfu": _sig(step_flops / world / step_s / spec.bf16_dense_flops),
        "student_mfu_method": (
            "model FLOPs per step / median step time / workers / dense bf16 peak "
            f"{spec.bf16_dense_flops:.3g} FLOP/s ({spec.source}); FLOPs = 6 x decoder params x positions + 6 x "
            "output projection params x labelled positions (the chunked loss projects only those) + causal attention "
            "within each packed document (6 x layers x hidden x length^2); tokens = packed row positions"),
        "student_step_s_median": round(step_s, 4),
        "student_step_s": student["step_s"],
        "student_packing_efficiency": round(student["packing_efficiency"], 4),
        "student_peak_memory_gib": _round(student["peak_memory_gib"], 1),
        "student_attn_implementation": student["attn_implementation"],
        "student_final_loss": round(student["final_loss"], 4),
    }


def size_fields(sizes: Sizes, cfg: Any, bare: dict | None, piped: dict | None, student: dict | None,
                world: int) -> dict[str, Any]:
    budgets = read_budgets(cfg)
    s = sizes.student
    return {
        "teacher": asdict(sizes.teacher) | {"params": sizes.teacher.params(), "dtype": "bfloat16",
                                            "max_model_len": sizes.max_model_len, "weights": "random (vLLM dummy)",
                                            "engine_kwargs": sizes.engine_kwargs},
        "prompts": len(budgets),
        "prompt_tokens_mean": None if bare is None else round(sum(bare["prompt_tokens"]) / len(bare["prompt_tokens"]), 1),
        "output_budget": {"short": sizes.short_budget, "long": sizes.long_budget, "long_share": sizes.long_share,
                          "mean": round(sum(budgets) / len(budgets), 1), "total": sum(budgets)},
        "max_num_seqs": (bare or {}).get("max_num_seqs"), "logprobs": cfg.sampling.logprobs,
        "prompts_per_shard": sizes.prompts_per_shard, "shards": (piped or {}).get("shards"),
        "student": asdict(s.shape) | {"params": (student or {}).get("params"), "row_tokens": s.row_tokens,
                                      "micro_rows": s.micro_rows, "warmup_steps": s.warmup_steps,
                                      "timed_steps": s.timed_steps, "topk": s.topk, "workers": world,
                                      "fsdp": "FSDP2, bf16 params / fp32 reduce",
                                      "activation_checkpointing": s.activation_checkpointing},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="Tiny models, same code paths (CI on CPU).")
    parser.add_argument("--prompts", type=int, help=f"Teacher prompts (default: {FULL.prompts}, tiny {TINY.prompts}).")
    parser.add_argument("--logprobs", type=int, default=0, help="Teacher top-k logprobs per token, both sides (default 0).")
    parser.add_argument("--student-steps", type=int,
                        help=f"Timed student steps (default: {FULL.student.timed_steps}, tiny {TINY.student.timed_steps}).")
    parser.add_argument("--keep", metavar="DIR", help="Work in DIR and keep it (default: a temporary folder, removed).")
    args = parser.parse_args(argv)
    sizes = TINY if args.tiny else FULL
    if args.prompts:
        sizes = replace(sizes, prompts=args.prompts)
    if args.student_steps:
        sizes = replace(sizes, student=replace(sizes.student, timed_steps=args.student_steps))
    out = json_stdout()

    from benchmarks.gpu.roofline import device_spec
    from benchmarks.gpu.student import measure_student

    name, gpus = device_facts()
    spec = device_spec(name)
    world = max(1, gpus)
    say(f"device: {name or 'CPU'} ({gpus} GPUs); {spec.source}; {'tiny' if args.tiny else 'full'} sizes")
    phases: dict[str, float] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="potstill-gpu-proof-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        cfg, cfg_path = prepare_teacher(sizes, work, args.logprobs)
        bare = attempt("bare_vllm", lambda: bare_phase(cfg_path, work), errors, phases)
        piped = attempt("pipeline", lambda: pipeline_phase(cfg), errors, phases)
        say(f"student: {sizes.student.shape} FSDP on {world} worker(s), {sizes.student.row_tokens}-token rows")
        student = attempt("student", lambda: measure_student(sizes.student, world), errors, phases)
        if student:
            say(f"student: {student['step_s_median']:.3f} s a step")
        result = {**teacher_fields(sizes, spec, cfg, bare, piped), **student_fields(sizes, spec, student),
                  "gpu_name": spec.name, "gpus": gpus,
                  "device_spec": {"hbm_bytes_per_s": spec.hbm_bytes_per_s, "bf16_dense_flops": spec.bf16_dense_flops,
                                  "source": spec.source},
                  "sizes": size_fields(sizes, cfg, bare, piped, student, world),
                  "mode": "tiny" if args.tiny else "full", "errors": errors,
                  "phase_s": {k: round(v, 1) for k, v in phases.items()},
                  "wall_s": round(time.monotonic() - STARTED, 1)}
    out.write(json.dumps(result) + "\n")
    out.flush()
    if errors:
        raise SystemExit(f"[gpu-proof] failed phases: {', '.join(errors)} (the JSON says why)")


if __name__ == "__main__":
    main()
