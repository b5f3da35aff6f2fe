"""Score a teacher in the real vLLM engine on fresh held-out additions (greedy).

    python -m potstill.pipelines.jobs.teacher_demo --n 200

Loads the model with `vllm.LLM` (float32, which the CPU backend runs), applies
the model's chat template, decodes `n` held-out problems (3 digits by default) from
`potstill.pipelines.arithmetic.problems.fresh_problems` and reports accuracy, how many
completions kept the `<think>...</think>` structure, one sample and the
output token throughput. The CLI's `potstill teacher demo` calls
`run_teacher_demo`.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from potstill.pipelines.arithmetic import problems as arithmetic
from potstill.pipelines.jobs.evaluate import small_model_cache_args
from potstill.pipelines.models.assets import resolve_model
from potstill.schemas.generation import SHIPPED_TEACHER

MAX_TOKENS = 256


def run_teacher_demo(
    n: int = 200, seed: int = 7, model: str = SHIPPED_TEACHER, digits: int = 3, temperature: float = 0.0
) -> dict[str, Any]:
    """Decode `n` fresh held-out problems with vLLM (greedy by default) and score the answers after `</think>`."""
    if n < 1:
        raise ValueError(f"n={n} must be at least 1; pass how many problems to score")
    from vllm import LLM, SamplingParams

    path = resolve_model(model)
    problems = arithmetic.fresh_problems(n, digits, seed)
    llm = LLM(model=path, dtype="float32", seed=0, max_model_len=512, enforce_eager=True, **small_model_cache_args())
    params = SamplingParams(temperature=temperature, max_tokens=MAX_TOKENS)
    conversations = [[{"role": "user", "content": question}] for question, _ in problems]
    started = time.perf_counter()
    outputs = llm.chat(conversations, params, use_tqdm=False)
    elapsed = time.perf_counter() - started
    del llm  # stops the engine core process now instead of at garbage collection
    completions = [out.outputs[0].text for out in outputs]
    output_tokens = sum(len(out.outputs[0].token_ids) for out in outputs)
    correct = sum(arithmetic.extract_answer(c) == ref for c, (_, ref) in zip(completions, problems))
    return {
        "model": model,
        "n": n,
        "digits": digits,
        "temperature": temperature,
        "correct": correct,
        "accuracy": correct / n,
        "with_think_structure": sum(arithmetic.has_think_structure(c) for c in completions),
        "sample": {"question": problems[0][0], "completion": completions[0]},
        "output_tokens_per_s": round(output_tokens / elapsed, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="How many fresh held-out problems to score.")
    parser.add_argument("--seed", type=int, default=7, help="Seed of the problem generator.")
    parser.add_argument("--model", default=SHIPPED_TEACHER, help="Model name or path.")
    parser.add_argument("--digits", type=int, default=3, help="Digits per operand.")
    parser.add_argument("--temperature", type=float, default=0.0, help="Sampling temperature (0 is greedy).")
    args = parser.parse_args(argv)
    print(json.dumps(run_teacher_demo(args.n, args.seed, args.model, args.digits, args.temperature), indent=2))


if __name__ == "__main__":
    main()
