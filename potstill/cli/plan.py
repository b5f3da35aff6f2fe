"""`potstill plan CONFIG.yaml`: memory, time and cost of a training or generation job before it runs.

    potstill plan examples/recipes/s1/train.yaml                  # per-GPU memory, tokens, steps, minutes, $
    potstill plan examples/recipes/r1-distill/train-70b.yaml --workers 8    # refused: names what must change
    potstill plan examples/recipes/r1-distill/generate.yaml --gpus 32 --tokens-per-s-per-gpu 1500

Exits 2 when the plan cannot fit, naming the config fields to change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from potstill.cli.common import console, fail, print_json, reserve_stdout_for_json


def plan_config(config: Path, workers: Optional[int] = None, gpu: Optional[str] = None, mfu: Optional[float] = None,
                usd_per_gpu_hour: Optional[float] = None, gpus: Optional[int] = None,
                tokens_per_s_per_gpu: float = 1000.0, prompts: Optional[int] = None,
                mean_completion_tokens: Optional[int] = None) -> dict[str, Any]:
    """The plan of a training or generation config as a dict (its `kind` says which)."""
    import yaml

    from potstill.schemas import GenerationConfig, load_config
    from potstill.schemas.training import TrainingConfig

    raw = yaml.safe_load(config.read_text(encoding="utf-8")) if config.is_file() else None
    if isinstance(raw, dict) and "prompts" in raw:
        from potstill.pipelines.planning.generate_plan import GenAssumptions, plan_generation
        from potstill.pipelines.planning.inputs import count_prompts, teacher_shape

        cfg = load_config(config, GenerationConfig)
        shape, source = teacher_shape(cfg)
        a = GenAssumptions(gpu=gpu, gpus=gpus, tokens_per_s_per_gpu=tokens_per_s_per_gpu,
                           mean_completion_tokens=mean_completion_tokens, prompts=prompts or count_prompts(cfg),
                           usd_per_gpu_hour=2.5 if usd_per_gpu_hour is None else usd_per_gpu_hour)
        out = plan_generation(cfg, shape, a).as_dict()
        out["shape_source"] = source
        return out
    from potstill.pipelines.planning.inputs import student_shape, training_data
    from potstill.pipelines.planning.train_plan import plan_training

    overrides = {"plan.gpu": gpu, "plan.mfu": mfu, "plan.usd_per_gpu_hour": usd_per_gpu_hour, "scaling.num_workers": workers}
    cfg = load_config(config, TrainingConfig, overrides)
    shape, source = student_shape(cfg)
    out = plan_training(cfg, shape, training_data(cfg)).as_dict()
    out["shape_source"] = source
    return out


def summary_lines(p: dict[str, Any]) -> list[str]:
    """The human summary of a plan."""
    if p["kind"] == "training":
        mem = p["memory_gib_per_gpu"]
        parts = " · ".join(f"{k} {v:.1f}" for k, v in mem.items() if k != "total")
        lines = [
            f"student {p['model']} ({p['params'] / 1e9:.2f}B parameters, {p['shape_source']})",
            f"{p['gpus']} x {p['gpu']} · {p['strategy']} · {p['precision']} · activation checkpointing "
            f"{'on' if p['activation_checkpointing'] else 'off'}",
            f"memory per GPU {mem['total']:.1f} of {p['gpu_memory_gib']:.1f} GiB ({parts} GiB); with activation "
            f"checkpointing {p['memory_gib_per_gpu_with_checkpointing']:.1f}, without "
            f"{p['memory_gib_per_gpu_without_checkpointing']:.1f}"
            + (f"; host memory for offloaded state {p['host_memory_gib']:.0f} GiB" if p["host_memory_gib"] else ""),
            f"data {p['traces']:,} traces x {p['mean_trace_tokens']:,.0f} tokens ({p['data_source']}) -> "
            f"{p['tokens']:,} tokens, {p['steps']:,} steps of {p['global_batch']} sequences",
            f"time {p['minutes']:,.1f} min at MFU {p['mfu']:.0%} ({p['gpu_hours']:,.1f} GPU-hours) · ${p['usd']:,.2f}",
        ]
    else:
        lines = [f"teacher {p['teacher']} ({p['shape_source']}) · engine {p['engine']}"]
        if p["gpus_per_replica"]:
            lines += [
                f"{p['replicas']} replica(s) x {p['gpus_per_replica']} {p['gpu']} · weights {p['weights_gib_per_gpu']:.1f} "
                f"GiB per GPU · KV cache {p['kv_cache_gib_per_replica']:.1f} GiB per replica "
                f"({p['kv_cache_tokens']:,} tokens: {p['sequences_at_full_length']} sequences of {p['max_sequence_tokens']:,})",
                f"expected {p['tokens_per_s']:,.0f} tokens/s at {p['tokens_per_s_per_gpu']:,.0f} tokens/s per GPU",
            ]
        if p["samples"]:
            lo, hi = p["samples"]
            lines.append(f"{p['prompts']:,} prompts -> {lo:,}-{hi:,} samples, up to {p['completion_tokens']:,} tokens"
                         + (f" · {p['hours']:,.2f} h · ${p['usd']:,.2f}" if p["usd"] is not None else
                            f" · {p['hours']:,.2f} h" if p["hours"] is not None else ""))
    return lines + [f"does not fit: {why}" for why in p["problems"]]


def plan(
    config: Path = typer.Argument(..., help="Training or generation config YAML."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Training: plan with this many workers (GPUs); overrides scaling.num_workers."),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="GPU type, e.g. H100-80GB, H200-141GB (training: overrides plan.gpu; generation: default replicas.accelerator_type)."),
    mfu: Optional[float] = typer.Option(None, "--mfu", help="Training: model FLOPs utilization to assume (overrides plan.mfu)."),
    usd_per_gpu_hour: Optional[float] = typer.Option(None, "--usd-per-gpu-hour", help="Price of a GPU-hour."),
    gpus: Optional[int] = typer.Option(None, "--gpus", help="Generation: GPUs available to the teacher (default: max_replicas x GPUs per replica)."),
    tokens_per_s_per_gpu: float = typer.Option(1000.0, "--tokens-per-s-per-gpu", help="Generation: output tokens/s one GPU of a replica delivers."),
    prompts: Optional[int] = typer.Option(None, "--prompts", help="Generation: prompts in the run, when the prompt file is not countable from here."),
    mean_completion_tokens: Optional[int] = typer.Option(None, "--mean-completion-tokens", help="Generation: mean completion length (default: half of sampling.max_tokens)."),
    json_out: bool = typer.Option(False, "--json", help="Print the plan as one JSON object."),
) -> None:
    """Memory, time and cost of a job before it runs; exits 2 naming what to change when it cannot fit."""
    if json_out:
        reserve_stdout_for_json()
    from potstill.schemas import ConfigError

    try:
        p = plan_config(config, workers, gpu, mfu, usd_per_gpu_hour, gpus, tokens_per_s_per_gpu, prompts,
                        mean_completion_tokens)
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    if json_out:
        print_json(p)
    else:
        for line in summary_lines(p):
            console.print(line, highlight=False)
    if p["problems"]:
        raise typer.Exit(2)
