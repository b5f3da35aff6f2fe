"""`potstill eval MODEL PROMPTS`: a model's accuracy on held-out prompts (vLLM, greedy, the run's verifiers)."""

from __future__ import annotations

from typing import Optional

import typer

from potstill.cli.common import EndpointOption, VerboseOption, fail, reserve_stdout_for_json, storage_from


def eval_model(
    model: str = typer.Argument(..., help="Hugging Face model folder (e.g. runs/train/NAME/student) or potstill:arithmetic-teacher."),
    prompts: str = typer.Argument(..., help="arithmetic:N (fresh held-out additions) or a JSONL/Parquet file (local or s3://)."),
    prompt_field: str = typer.Option("prompt", "--prompt-field", help="Column with the prompt text."),
    reference_field: str = typer.Option("answer", "--reference-field", help="Column with the reference answer."),
    method: str = typer.Option("math", "--method", help="Verifier: math (answer equivalence) or exact."),
    max_tokens: int = typer.Option(256, "--max-tokens", min=1, help="Completion budget per prompt."),
    seed: int = typer.Option(7, "--seed", help="Seed of arithmetic:N problems."),
    endpoint_url: Optional[str] = EndpointOption,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object (accuracy, n, correct, sample, ...)."),
    verbose: bool = VerboseOption,
) -> None:
    """Generate with MODEL in vLLM on held-out PROMPTS, verify each answer, print the accuracy."""
    if json_out:
        reserve_stdout_for_json()
    from potstill.cli.scoring import run_scoring, sample_lines
    from potstill.pipelines.jobs.evaluate import evaluate, load_eval_prompts

    if method not in ("math", "exact"):
        fail(f"--method {method!r} is not a verifier; use math or exact")
    try:
        items = load_eval_prompts(prompts, prompt_field, reference_field, storage_from(endpoint_url), seed=seed)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))

    def result_lines(result: dict) -> list[str]:
        return [*sample_lines(result, "prompt", "model"),
                f"accuracy {result['accuracy']:.3f} ({result['correct']}/{result['n']}, {method} verifier) · "
                f"{result['finished']}/{result['n']} finished · {result['output_tokens_per_s'] or 0:,.0f} output "
                f"tokens/s · {result['elapsed_s']:.0f} s · model {model} · {len(items)} prompts from {prompts}"]

    run_scoring("eval", len(items),
                lambda progress: evaluate(model, items, method=method, max_tokens=max_tokens, on_completion=progress),
                result_lines, what=model, json_out=json_out, verbose=verbose)
