"""`potstill demo`: shipped teacher -> traces -> a smaller student with Ray Train -> both scored, one command.

The terminal shows one live line per stage and the summary; vLLM's, Ray's
and the workers' logs go to `<out>/logs/demo-<time>.log` (`--verbose` shows
them too; see `potstill/cli/session.py`).
"""

from __future__ import annotations

from typing import Any

import typer

from potstill.cli.common import VerboseOption, fail, print_json


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
    out: str = typer.Option("runs/demo", "--out", help="Output folder (traces/, train/, logs/); re-using it resumes every stage."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as one JSON object, alone on stdout."),
    verbose: bool = VerboseOption,
) -> None:
    """The whole loop on the shipped teacher: traces -> a smaller student (Ray Train, 2 CPU workers) -> accuracies."""
    from potstill.cli.session import command_session
    from potstill.cli.views import generation_view, training_view
    from potstill.pipelines.jobs.run_demo import run_demo

    with command_session("demo", out, json_out=json_out, verbose=verbose) as session:
        views: dict[str, Any] = {}

        def on_stage(text: str) -> None:
            session.end_phase()
            session.print(f"[bold cyan]potstill demo[/] {text}")

        def on_generation(p: Any) -> None:
            if "generation" not in views:
                views["generation"] = generation_view(session.next_phase("starting teacher", "prompts", "generated"))
            views["generation"](p)

        def on_training(p: dict[str, Any]) -> None:
            if "training" not in views:
                views["training"] = training_view(session.next_phase("starting", "steps", "trained"))
            views["training"](p)

        def on_scoring(done: int, total: int) -> None:
            if "scoring" not in views:
                views["scoring"] = session.next_phase("scoring", "completions", "scored", total=total)
            status = "scoring teacher" if done < total // 2 else "scoring student" if done < total else "scored"
            views["scoring"].update(done=done, total=total, status=status)

        try:
            summary = run_demo(out, on_stage=on_stage, on_generation=on_generation, on_training=on_training,
                               on_scoring=on_scoring)
        except (ValueError, FileNotFoundError) as exc:
            fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - one clear line; every stage resumes on a re-run
            cause = getattr(exc, "cause", None) or exc
            fail(f"{type(cause).__name__}: {cause}\nCommitted shards and checkpoints are kept; re-run the same "
                 f"command to resume (the log: {session.log_path}).", 1)
        session.end_phase()
        if json_out:
            print_json(summary)
            return
        for line in summary_lines(summary):
            session.print(line)
