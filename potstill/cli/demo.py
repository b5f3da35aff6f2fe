"""`potstill demo`: shipped teacher -> traces -> a smaller student with Ray Train -> both scored, one command."""

from __future__ import annotations

import time
from typing import Any

import typer

from potstill.cli.common import console, fail, print_json, reserve_stdout_for_json
from potstill.schemas.results import GenerationStatus


def _generation_bar(disable: bool) -> tuple[Any, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("prompts"),
                   TextColumn("· traces {task.fields[traces]} · verified {task.fields[acc]}"), TimeElapsedColumn(),
                   console=console, disable=disable)
    task = bar.add_task("starting teacher", total=None, traces=0, acc="-")

    def update(p: GenerationStatus) -> None:
        t = p.totals
        judged = t.verified + t.rejected
        bar.update(task, description=p.phase, total=p.prompts_total or None, completed=p.prompts_done,
                   traces=t.traces, acc=f"{t.verified / judged:.0%}" if judged else "-")

    return bar, update


def summary_lines(s: dict[str, Any]) -> list[str]:
    """The human summary of a `run_demo` result."""
    ratio = s["student_params"] / s["teacher_params"]
    return [
        f"teacher  {s['teacher_acc']:.1%} on {s['eval_problems']} fresh problems · {s['teacher_params']:,} parameters",
        f"student  {s['student_acc']:.1%} on the same problems · {s['student_params']:,} parameters ({ratio:.0%} of the teacher)",
        f"traces {s['traces']} ({s['verified_traces']} verified) · {s['train_steps']} training steps · packing "
        f"efficiency {s['packing_efficiency']:.1%} · KD on top-{s['kd_topk']} teacher logprobs",
        f"time: generation {s['generation_s']:.0f} s · training {s['training_s']:.0f} s · total {s['elapsed_s']:.0f} s",
        f"student model: {s['student']}  (try: potstill eval {s['student']} arithmetic:100)",
        f"output: {s['out']}",
    ]


def demo(
    out: str = typer.Option("runs/demo", "--out", help="Output folder (traces/, train/); re-using it resumes every stage."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as one JSON object, alone on stdout."),
) -> None:
    """The whole loop on the shipped teacher: traces -> a smaller student (Ray Train, 2 CPU workers) -> accuracies."""
    if json_out:
        reserve_stdout_for_json()
    from potstill.cli.train import TrainBar
    from potstill.pipelines.jobs.run_demo import run_demo

    started = time.time()
    gen_bar, on_generation = _generation_bar(disable=False)
    train_bar = TrainBar(disable=False)
    training = False

    def on_stage(text: str) -> None:
        nonlocal training
        console.print(f"[bold cyan]potstill demo[/] {text} ({time.time() - started:.0f} s)", highlight=False)
        if text.startswith("2/3"):
            gen_bar.stop()
            train_bar.__enter__()
            training = True
        elif text.startswith("3/3") and training:
            train_bar.__exit__(None, None, None)
            training = False

    gen_bar.start()
    try:
        summary = run_demo(out, on_stage=on_stage, on_generation=on_generation, on_training=train_bar)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - one clear line; every stage resumes on a re-run
        cause = getattr(exc, "cause", None) or exc
        fail(f"{type(cause).__name__}: {cause}\nCommitted shards and checkpoints are kept; re-run the same command "
             "to resume.", 1)
    finally:
        gen_bar.stop()
        if training:
            train_bar.__exit__(None, None, None)
    if json_out:
        print_json(summary)
        return
    for line in summary_lines(summary):
        console.print(line, highlight=False)
