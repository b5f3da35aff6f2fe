"""Answer checking: `verify(completion, reference)` for users, `Judge` for generation runs.

    .venv/bin/python -c "import potstill; print(potstill.verify('<think>...</think> \\\\boxed{\\\\frac{1}{2}}', '0.5'))"

Methods: `math` (answer equivalence through math-verify, see `math.py`),
`exact` (normalized string match, `exact.py`), `callable` (a user function,
`user_callable.py`) and `none`. `Judge` adds the length / finish_reason /
reasoning filters of `VerifyConfig` (`filters.py`). Nothing here imports
Ray, vLLM or torch, and math-verify/sympy load only when a math check runs.
"""

from __future__ import annotations

from potstill.pipelines.generate.reasoning import split_reasoning
from potstill.pipelines.verify.exact import exact_match
from potstill.pipelines.verify.isolated import shared_checker
from potstill.pipelines.verify.judge import Judge, VerifierError, build_judge
from potstill.pipelines.verify.user_callable import CallableLoadError, load_callable

__all__ = ["verify", "build_judge", "Judge", "VerifierError", "CallableLoadError"]

METHODS = ("math", "exact")


def verify(completion: str, reference: str, method: str = "math", *, timeout_s: float = 1.0) -> bool:
    """Whether `completion` (text after `</think>` when it has one) answers `reference`.

    method: `math` (equivalent mathematical answers: `\\boxed{\\frac{1}{2}}` vs `0.5`,
    `... #### 18` vs `18`, `\\text{east}`, matrices, intervals, sets) or `exact` (normalized string
    match; plain numbers by value). A `math` verdict runs in a verifier process and is False when it
    takes longer than `timeout_s`. A user function is called as
    `load_callable("pkg.mod:fn")(completion, reference)`.
    """
    _, answer = split_reasoning(completion)
    if method == "math":
        return bool(shared_checker(timeout_s).check("math", answer, str(reference)))
    if method == "exact":
        return exact_match(answer, str(reference))
    raise ValueError(f"verify(method={method!r}) is not a method; use one of {', '.join(METHODS)}")
