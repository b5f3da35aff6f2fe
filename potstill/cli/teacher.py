"""`potstill teacher demo`: the shipped teacher, in vLLM, on fresh problems."""

from __future__ import annotations

import typer

from potstill.cli.common import console, print_json, reserve_stdout_for_json

app = typer.Typer(help="The shipped arithmetic teacher.", no_args_is_help=True)


@app.command("demo")
def demo(
    n: int = typer.Option(200, "--n", min=1, help="Fresh problems to ask."),
    seed: int = typer.Option(7, "--seed", help="Seed of the problem generator."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object (accuracy, n, ...)."),
) -> None:
    """Ask the shipped teacher N fresh 3-digit additions in the real vLLM engine; print accuracy and a trace."""
    if json_out:
        reserve_stdout_for_json()
    from potstill.pipelines.jobs.teacher_demo import run_teacher_demo

    result = run_teacher_demo(n=n, seed=seed)
    if json_out:
        print_json(result)
        return
    sample = result["sample"]
    console.print(f"[bold]question[/]: {sample['prompt']}", highlight=False)
    console.print(f"[bold]teacher[/]:\n{sample['completion']}", highlight=False)
    console.print(f"accuracy {result['accuracy']:.3f} ({result['correct']}/{result['n']}) · "
                  f"one <think> block {result['with_think_block']}/{result['n']} · "
                  f"{result['output_tokens_per_s']:,.0f} output tokens/s · model {result['model']}", highlight=False)
