"""The addition task: carry reasoning, the train/held-out split, fresh problems, a completion the one `<think>` split reads."""

from __future__ import annotations

import random

import pytest

from potstill.pipelines.arithmetic import problems as arithmetic
from potstill.pipelines.generate.reasoning import has_one_think_block, split_reasoning


def test_reasoning_walks_columns_from_the_right_with_carries() -> None:
    assert arithmetic.reasoning_text(347, 589) == (
        "7+9+0=16, write 6 carry 1\n4+8+1=13, write 3 carry 1\n3+5+1=09, write 9 carry 0"
    )


def test_carry_ripples_into_a_new_leading_digit() -> None:
    assert arithmetic.reasoning_text(999, 1) == (
        "9+1+0=10, write 0 carry 1\n9+0+1=10, write 0 carry 1\n9+0+1=10, write 0 carry 1"
    )
    assert arithmetic.completion_text(999, 1).endswith("</think>\n1000")


@pytest.mark.parametrize("seed", range(5))
def test_written_digits_and_final_carry_spell_the_sum(seed: int) -> None:
    rng = random.Random(seed)
    a, b = rng.randint(1, 9999), rng.randint(1, 9999)
    lines = arithmetic.reasoning_text(a, b).splitlines()
    digits = "".join(line.split("write ")[1][0] for line in reversed(lines))
    final_carry = lines[-1][-1]
    assert int(final_carry + digits) == a + b


def test_completion_layout() -> None:
    text = arithmetic.completion_text(12, 34)
    assert text == "<think>\n2+4+0=06, write 6 carry 0\n1+3+0=04, write 4 carry 0\n</think>\n46"
    assert has_one_think_block(text)
    assert split_reasoning(text) == ("2+4+0=06, write 6 carry 0\n1+3+0=04, write 4 carry 0", "46")
    assert arithmetic.question_text(347, 589) == "What is 347 + 589?"



def test_split_is_deterministic_and_holds_out_about_a_tenth() -> None:
    pairs = [(a, b) for a in range(100, 160) for b in range(500, 560)]
    flags = [arithmetic.is_training_pair(a, b) for a, b in pairs]
    assert flags == [arithmetic.is_training_pair(a, b) for a, b in pairs]
    held = flags.count(False) / len(flags)
    assert 0.07 < held < 0.13


def test_training_and_held_out_pairs_are_disjoint() -> None:
    train = set(arithmetic.training_pairs(random.Random(0), 5000, (3,)))
    held = set(arithmetic.held_out_pairs(2000, 3, seed=0))
    assert train and held and not train & held
    assert all(arithmetic.is_training_pair(a, b) for a, b in train)


def test_training_pairs_follow_digit_choices() -> None:
    pairs = arithmetic.training_pairs(random.Random(1), 200, (2, 4))
    assert {len(str(a)) for a, _ in pairs} == {2, 4}
    assert all(len(str(a)) == len(str(b)) for a, b in pairs)


@pytest.mark.parametrize("digits", [1, 2, 3, 5])
def test_fresh_problems_are_distinct_held_out_and_sized(digits: int) -> None:
    count = 5 if digits == 1 else 200
    problems = arithmetic.fresh_problems(count, digits, seed=3)
    assert len(problems) == len(set(problems)) == count
    assert problems == arithmetic.fresh_problems(count, digits, seed=3)
    for question, reference in problems:
        a, b = (int(x) for x in question.removeprefix("What is ").removesuffix("?").split(" + "))
        assert len(str(a)) == len(str(b)) == digits
        assert not arithmetic.is_training_pair(a, b)
        assert reference == str(a + b)


def test_fresh_problems_seed_changes_the_draw() -> None:
    assert arithmetic.fresh_problems(50, 3, seed=1) != arithmetic.fresh_problems(50, 3, seed=2)


def test_too_many_problems_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="count=10000 exceeds"):
        arithmetic.fresh_problems(10_000, 1, seed=0)
    with pytest.raises(ValueError, match="digits=0"):
        arithmetic.fresh_problems(1, 0, seed=0)
