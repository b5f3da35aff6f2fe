"""Score a teacher in the real vLLM engine on fresh held-out additions (greedy), through the one scoring path.

    potstill teacher demo --n 200          # the CLI around `run_teacher_demo`
    python -m potstill.pipelines.jobs.teacher_demo --n 200

`n` held-out problems (3 digits by default, pairs the shipped teacher never
trained on: `potstill.pipelines.arithmetic.problems`) are scored by
`potstill.pipelines.jobs.evaluate.evaluate` exactly as `potstill eval MODEL
arithmetic:N` scores them: accuracy, how many completions are one well-formed
`<think>` block and an answer, one sample and the output token throughput.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from potstill.pipelines.jobs.evaluate import EVAL_SEED, evaluate, load_eval_prompts
from potstill.schemas.generation import SHIPPED_TEACHER

MAX_TOKENS = 256


def run_teacher_demo(
    n: int = 200, seed: int = EVAL_SEED, model: str = SHIPPED_TEACHER, digits: int = 3, temperature: float = 0.0,
    on_completion: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Decode `n` fresh held-out problems with vLLM (greedy by default) and score the answers after `</think>`;
    `on_completion(done)` counts the completions as they finish."""
    if n < 1:
        raise ValueError(f"n={n} must be at least 1; pass how many problems to score")
    problems = load_eval_prompts(f"arithmetic:{n}", seed=seed, digits=digits)
    return {**evaluate(model, problems, max_tokens=MAX_TOKENS, temperature=temperature, on_completion=on_completion),
            "digits": digits}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="How many fresh held-out problems to score.")
    parser.add_argument("--seed", type=int, default=EVAL_SEED, help="Seed of the problem generator.")
    parser.add_argument("--model", default=SHIPPED_TEACHER, help="Model name or path.")
    parser.add_argument("--digits", type=int, default=3, help="Digits per operand.")
    parser.add_argument("--temperature", type=float, default=0.0, help="Sampling temperature (0 is greedy).")
    args = parser.parse_args(argv)
    print(json.dumps(run_teacher_demo(args.n, args.seed, args.model, args.digits, args.temperature), indent=2))


if __name__ == "__main__":
    main()
