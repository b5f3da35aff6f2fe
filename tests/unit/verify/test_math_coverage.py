"""The math verifier keeps math-verify's coverage: text, matrix, vector, interval and set answers.

    .venv/bin/pytest tests/unit/verify/test_math_coverage.py -q

Each answer is judged by potstill and by math-verify used as its README
shows (the gold parsed as `$gold$`); potstill must accept what the library
accepts and reject a wrong answer of the same form. The real-data checks
(GSM8K, AIME, AMC) are in test_datasets.py.
"""

from __future__ import annotations

import math_verify
import pytest

from potstill.pipelines.verify import verify

RIGHT = [
    # text answers (MATH's `\text{...}` golds, and bare words)
    ("The ship sails \\boxed{\\text{east}}.", "\\text{east}"),
    ("So the answer is \\boxed{\\text{(C)}}", "\\text{(C)}"),
    ("It happens on \\boxed{\\text{Monday}}", "Monday"),
    ("\\boxed{east}", "east"),
    # vectors and matrices
    ("Hence \\boxed{\\begin{pmatrix} -1/3 \\\\ 2/3 \\end{pmatrix}}", "\\begin{pmatrix} -1/3 \\\\ 2/3 \\end{pmatrix}"),
    ("\\boxed{\\begin{pmatrix} -\\frac{1}{3} \\\\ \\frac{2}{3} \\end{pmatrix}}", "\\begin{pmatrix} -1/3 \\\\ 2/3 \\end{pmatrix}"),
    ("The matrix is \\boxed{\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}}", "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}"),
    # intervals
    ("\\boxed{(-\\infty, 2) \\cup (3, \\infty)}", "(-\\infty,2)\\cup(3,\\infty)"),
    ("x lies in \\boxed{[1, 5)}", "[1,5)"),
    # sets and lists of solutions
    ("\\boxed{\\{1, 2, 3\\}}", "\\{1,2,3\\}"),
    ("The roots are \\boxed{3, 1, 2}", "1,2,3"),
]

WRONG = [
    ("The ship sails \\boxed{\\text{east}}.", "\\text{west}"),
    ("Hence \\boxed{\\begin{pmatrix} 1/3 \\\\ 2/3 \\end{pmatrix}}", "\\begin{pmatrix} -1/3 \\\\ 2/3 \\end{pmatrix}"),
    ("The matrix is \\boxed{\\begin{pmatrix} 1 & 2 \\\\ 4 & 3 \\end{pmatrix}}", "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}"),
    ("x lies in \\boxed{[1, 5]}", "[1,5)"),
    ("\\boxed{\\{1, 2\\}}", "\\{1,2,3\\}"),
]


def _library(completion: str, gold: str) -> bool:
    return bool(math_verify.verify(math_verify.parse(f"${gold}$"), math_verify.parse(completion)))


@pytest.mark.parametrize(("completion", "gold"), RIGHT)
def test_answers_math_verify_accepts_are_accepted(completion: str, gold: str) -> None:
    assert _library(completion, gold), "the case itself is wrong: math-verify does not accept it"
    assert verify(completion, gold) is True


@pytest.mark.parametrize(("completion", "gold"), WRONG)
def test_wrong_answers_of_the_same_form_are_rejected(completion: str, gold: str) -> None:
    assert verify(completion, gold) is False
