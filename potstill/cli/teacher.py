"""`potstill teacher demo`: the shipped teacher, in vLLM, on fresh problems."""

from __future__ import annotations

import typer

from potstill.cli.common import VerboseOption, reserve_stdout_for_json

app = typer.Typer(help="The shipped arithmetic teacher.", no_args_is_help=True)


@app.command("demo")
def demo(
    n: int = typer.Option(200, "--n", min=1, help="Fresh problems to ask."),
    seed: int = typer.Option(7, "--seed", help="Seed of the problem generator."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object (accuracy, n, ...)."),
    verbose: bool = VerboseOption,
) -> None:
    """Ask the shipped teacher N fresh 3-digit additions in the real vLLM engine; print accuracy and a trace."""
    if json_out:
        reserve_stdout_for_json()
    from potstill.cli.scoring import run_scoring, sample_lines
    from potstill.pipelines.jobs.teacher_demo import run_teacher_demo

    def result_lines(result: dict) -> list[str]:
        return [*sample_lines(result, "question", "teacher"),
                f"accuracy {result['accuracy']:.3f} ({result['correct']}/{result['n']}) · "
                f"one <think> block {result['with_think_block']}/{result['n']} · "
                f"{result['output_tokens_per_s']:,.0f} output tokens/s · model {result['model']}"]

    run_scoring("teacher-demo", n, lambda progress: run_teacher_demo(n=n, seed=seed, on_completion=progress),
                result_lines, what=f"--n {n}",
                json_out=json_out, verbose=verbose)
