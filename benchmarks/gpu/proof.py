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
    teacher=TeacherShape.llama31_8b(), max_model_len=2048, prompts=2048,
    short_budget=(64, 384), long_budget=(1024, 1792), long_share=0.15, prompt_words=(12, 40),
    prompts_per_shard=256, kv_cache_gib=None,  # vLLM sizes the KV cache from gpu_memory_utilization
    engine_kwargs={"load_format": "dummy"},  # torch.compile and CUDA graphs on: what production runs
    student=StudentRun(shape=StudentShape.qwen2_1p5b(), row_tokens=4096, micro_rows=4, warmup_steps=3, timed_steps=8,
                       topk=20, prompt_len=(64, 512), completion_len=(256, 3584)),
)
TINY = Sizes(
    teacher=TeacherShape.tiny(), max_model_len=256, prompts=16,
    short_budget=(4, 12), long_budget=(48, 64), long_share=0.2, prompt_words=(2, 6),
    prompts_per_shard=8, kv_cache_gib=0.0625,
    engine_kwargs={"load_format": "dummy", "enforce_eager": True},  # no torch.compile: ~45 s of CI saved per engine
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


def teacher_phase(sizes: Sizes, work: Path, logprobs: int) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """(plain vLLM result, pipeline result, the GenerationConfig both ran)."""
    from benchmarks.gpu.models import write_teacher
    from benchmarks.gpu.teacher import generation_config, pipeline, skewed_prompts

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

    say(f"plain vLLM: {len(rows)} prompts, {sum(r['max_tokens'] for r in rows)} output tokens asked, own process")
    out = work / "bare.json"
    subprocess.run([sys.executable, "-m", "benchmarks.gpu.teacher", "bare", str(cfg_path), str(out)], cwd=REPO,
                   check=True, stdout=sys.stderr)
    bare = json.loads(out.read_text())
    say(f"plain vLLM: {bare['tok_s']:.0f} output tok/s ({bare['output_tokens']} tokens in {bare['seconds']:.1f} s)")

    say("potstill pipeline: 1 replica, shards written and committed")
    import ray

    piped = pipeline(cfg)
    ray.shutdown()
    say(f"pipeline: {piped['tok_s']:.0f} output tok/s ({piped['output_tokens']} tokens in {piped['seconds']:.1f} s, "
        f"{piped['shards']} shards committed)")
    return bare, piped, cfg


def device_facts() -> tuple[str | None, int]:
    """(GPU name or None, GPU count), asked in a child process so this one never holds a CUDA context."""
    code = ("import json, torch; ok = torch.cuda.is_available(); "
            "print(json.dumps([torch.cuda.get_device_name(0) if ok else None, torch.cuda.device_count() if ok else 0]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    name, count = json.loads(out.stdout.strip().splitlines()[-1])
    return name, count


def summarize(sizes: Sizes, spec: Any, gpus: int, bare: dict, piped: dict, cfg: Any, student: dict,
              phases: dict[str, float]) -> dict[str, Any]:
    from benchmarks.gpu.roofline import decode_roofline, training_flops

    roof = decode_roofline(bare["prompt_tokens"], bare["budgets"], sizes.teacher, spec, bare["max_num_seqs"],
                           dtype_bytes=2, priority=cfg.teacher.schedule == "longest_first")
    s = sizes.student
    head = s.shape.vocab * s.shape.hidden
    step_flops = training_flops(student["params"] - head, head, student["positions_per_step"],
                                student["labelled_per_step"], student["doc_lengths_per_step"], s.shape.layers,
                                s.shape.hidden) / (s.warmup_steps + s.timed_steps)
    step_s, world = student["step_s_median"], student["world"]
    teacher_gpus = max(1, cfg.teacher.tensor_parallel_size) if gpus else 1
    return {
        "bare_vllm_output_tok_s": round(bare["tok_s"], 1),
        "pipeline_output_tok_s": round(piped["tok_s"], 1),
        "pipeline_vs_bare_vllm_gpu": round(piped["tok_s"] / bare["tok_s"], 4),
        "roofline_fraction": round(bare["tok_s"] / roof["memory_tok_s"], 4),
        "roofline_fraction_pipeline": round(piped["tok_s"] / roof["memory_tok_s"], 4),
        "roofline_fraction_with_compute_ceiling": round(bare["tok_s"] / roof["memory_and_compute_tok_s"], 4),
        "roofline_tok_s": round(roof["memory_tok_s"], 1),
        "roofline_method": (
            "plain vLLM output tok/s / memory-bandwidth roofline tok/s; the roofline replays this run's decode steps "
            f"(all {len(bare['budgets'])} prompts at once, at most max_num_seqs={bare['max_num_seqs']} running, "
            f"longest budget first as the engine's priority schedule runs them) and charges each step "
            f"(decode weights {roof['weight_bytes_per_step']} B, bf16, input embedding table excluded + KV cache "
            f"{roof['kv_bytes_per_context_token']} B per context token of every running sequence) / HBM "
            f"{spec.hbm_bytes_per_s:.3g} B/s ({spec.source}); output tokens / summed step times; prefill ignored. "
            "roofline_fraction_with_compute_ceiling takes each step's max of that and its FLOPs at the dense bf16 peak"),
        "roofline_details": {k: round(v, 2) if isinstance(v, float) else v for k, v in roof.items()},
        "student_tokens_per_s_per_gpu": round(student["positions_per_step"] / world / step_s, 1),
        "student_mfu": round(step_flops / world / step_s / spec.bf16_dense_flops, 4),
        "student_mfu_method": (
            "model FLOPs per step / step time / workers / dense bf16 peak "
            f"{spec.bf16_dense_flops:.3g} FLOP/s ({spec.source}); FLOPs = 6 x decoder params x positions + 6 x "
            "output projection params x labelled positions (the chunked loss projects only those) + causal attention "
            "within each packed document (6 x layers x hidden x length^2); tokens = packed row positions"),
        "student_step_s_median": round(step_s, 4),
        "student_step_s": student["step_s"],
        "student_packing_efficiency": round(student["packing_efficiency"], 4),
        "student_peak_memory_gib": None if student["peak_memory_gib"] is None else round(student["peak_memory_gib"], 1),
        "student_attn_implementation": student["attn_implementation"],
        "student_final_loss": round(student["final_loss"], 4),
        "usd_per_million_teacher_output_tokens": round(USD_PER_GPU_HOUR * teacher_gpus / 3600 / piped["tok_s"] * 1e6, 4),
        "usd_per_million_teacher_output_tokens_bare_vllm": round(USD_PER_GPU_HOUR * teacher_gpus / 3600 / bare["tok_s"] * 1e6, 4),
        "usd_per_gpu_hour": USD_PER_GPU_HOUR,
        "gpu_name": spec.name,
        "gpus": gpus,
        "device_spec": {"hbm_bytes_per_s": spec.hbm_bytes_per_s, "bf16_dense_flops": spec.bf16_dense_flops,
                        "source": spec.source},
        "teacher_output_tokens": {"bare_vllm": bare["output_tokens"], "pipeline": piped["output_tokens"],
                                  "equal": bare["output_tokens"] == piped["output_tokens"]},
        "sizes": {
            "teacher": asdict(sizes.teacher) | {"params": sizes.teacher.params(), "dtype": "bfloat16",
                                                "max_model_len": sizes.max_model_len, "weights": "random (vLLM dummy)",
                                                "engine_kwargs": sizes.engine_kwargs},
            "prompts": sizes.prompts, "prompt_tokens_mean": round(sum(bare["prompt_tokens"]) / len(bare["prompt_tokens"]), 1),
            "output_budget": {"short": sizes.short_budget, "long": sizes.long_budget, "long_share": sizes.long_share,
                              "mean": round(sum(bare["budgets"]) / len(bare["budgets"]), 1)},
            "max_num_seqs": bare["max_num_seqs"], "logprobs": cfg.sampling.logprobs,
            "prompts_per_shard": sizes.prompts_per_shard, "shards": piped["shards"],
            "student": asdict(s.shape) | {"params": student["params"], "row_tokens": s.row_tokens,
                                          "micro_rows": s.micro_rows, "warmup_steps": s.warmup_steps,
                                          "timed_steps": s.timed_steps, "topk": s.topk, "workers": world,
                                          "fsdp": "FSDP2, bf16 params / fp32 reduce",
                                          "activation_checkpointing": s.activation_checkpointing},
        },
        "phase_s": {k: round(v, 1) for k, v in phases.items()},
        "wall_s": round(time.monotonic() - STARTED, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="Tiny models, same code paths (CI on CPU).")
    parser.add_argument("--prompts", type=int, help="Teacher prompts (default: 2048, tiny 16).")
    parser.add_argument("--logprobs", type=int, default=0, help="Teacher top-k logprobs per token, both sides (default 0).")
    parser.add_argument("--student-steps", type=int, help="Timed student steps (default: 8, tiny 2).")
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
    say(f"device: {name or 'CPU'} ({gpus} GPUs); {spec.source}; {'tiny' if args.tiny else 'full'} sizes")
    phases: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="potstill-gpu-proof-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        bare, piped, cfg = teacher_phase(sizes, work, args.logprobs)
        phases["teacher"] = time.monotonic() - started
        started = time.monotonic()
        world = max(1, gpus)
        say(f"student: {sizes.student.shape} FSDP on {world} worker(s), {sizes.student.row_tokens}-token rows")
        student = measure_student(sizes.student, world)
        phases["student"] = time.monotonic() - started
        say(f"student: {student['step_s_median']:.3f} s a step")
    result = summarize(sizes, spec, gpus, bare, piped, cfg, student, phases)
    result["mode"] = "tiny" if args.tiny else "full"
    out.write(json.dumps(result) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
