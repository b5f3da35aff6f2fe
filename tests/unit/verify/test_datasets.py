"""The math verifier on real datasets: own solutions verify, deranged answers do not.

    .venv/bin/pytest tests/unit/test_verify_datasets.py -q -s   # -s prints the measured fractions

Data: the repo's sibling `shared/data/` (GSM8K train 2,000 rows, AIME 2024,
AMC 2023); the tests skip when it is absent. Measured here (math-verify 0.9.0):
GSM8K 2000/2000 own solutions verify, 0/2000 deranged; AIME 29/30 (one
solution boxes `\\textbf{(073)}`, which math-verify reads as a symbol), 0/30
deranged; AMC 40/40 for every answer form, 0/40 deranged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Hashable

import pytest

from potstill.pipelines.verify import verify

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def _rows(name: str) -> list[dict[str, Any]]:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} not found: the real datasets live in the repo's sibling shared/data/")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _derangement(rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], Hashable]) -> list[int]:
    """For each row, the index of the next row (cyclically) whose answer differs from it."""
    n = len(rows)
    partner = []
    for i in range(n):
        j = (i + 1) % n
        while key(rows[j]) == key(rows[i]):
            j = (j + 1) % n
            assert j != i, "every answer is the same: no derangement exists"
        partner.append(j)
    return partner


def _fraction(verdicts: list[bool], label: str) -> float:
    frac = sum(verdicts) / len(verdicts)
    print(f"{label}: {sum(verdicts)}/{len(verdicts)} = {frac:.3f}")
    return frac


def _gsm8k_number(row: dict[str, Any]) -> str:
    return row["answer"].rsplit("####", 1)[1].strip()


@pytest.mark.slow  # 4,000 math-verify checks (each of 2,000 solutions against its own and a deranged answer)
def test_gsm8k_solutions_verify_against_their_number() -> None:
    rows = _rows("gsm8k_train_2000.jsonl")
    own = [verify(r["answer"], _gsm8k_number(r)) for r in rows]
    assert _fraction(own, "gsm8k own") >= 0.99
    partner = _derangement(rows, lambda r: float(_gsm8k_number(r).replace(",", "")))
    shuffled = [verify(rows[i]["answer"], _gsm8k_number(rows[j])) for i, j in enumerate(partner)]
    assert _fraction(shuffled, "gsm8k deranged") <= 0.02


def test_aime_solutions_verify_against_their_answer() -> None:
    rows = _rows("aime24.jsonl")
    own = [verify(r["solution"], str(r["answer"])) for r in rows]
    assert _fraction(own, "aime own") >= 0.9
    partner = _derangement(rows, lambda r: int(r["answer"]))
    shuffled = [verify(rows[i]["solution"], str(rows[j]["answer"])) for i, j in enumerate(partner)]
    assert _fraction(shuffled, "aime deranged") <= 0.02


@pytest.mark.parametrize(
    "form",
    [
        lambda a: str(a),  # "27.0"
        lambda a: str(int(a)),  # "27"
        lambda a: f"\\boxed{{{int(a)}}}",
        lambda a: f"<think>Let me compute.</think>\nThe answer is $\\boxed{{{int(a)}}}$.",
    ],
    ids=["float", "int", "boxed", "think-then-boxed"],
)
def test_amc_answer_forms_verify_against_the_float_answer(form: Callable[[float], str]) -> None:
    rows = _rows("amc23.jsonl")
    assert all(float(r["answer"]).is_integer() for r in rows)
    own = [verify(form(r["answer"]), str(r["answer"])) for r in rows]
    assert _fraction(own, "amc own") == 1.0
    partner = _derangement(rows, lambda r: r["answer"])
    shuffled = [verify(form(rows[i]["answer"]), str(rows[j]["answer"])) for i, j in enumerate(partner)]
    assert _fraction(shuffled, "amc deranged") <= 0.02
