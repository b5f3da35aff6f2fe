"""Synthetic multi-digit addition: the task of the shipped arithmetic teacher.

A problem is `a + b` with two operands of the same digit count. Its completion
is a `<think>` block of column-by-column carry reasoning (right to left) and
then the bare sum:

    <think>
    7+9+0=16, write 6 carry 1
    4+8+1=13, write 3 carry 1
    3+5+1=09, write 9 carry 0
    </think>
    936

Every column line has the same layout (carry in always written, the column
sum always two digits), so a tiny character-level model finds each digit at a
fixed offset and learns the procedure reliably.

Pairs are split deterministically by a hash: training uses only
`is_training_pair` pairs; evaluation and generation use only held-out ones,
so the teacher is always scored on problems it never saw.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from potstill.pipelines.generate.reasoning import THINK_CLOSE, THINK_OPEN

HELD_OUT_BUCKETS = 10
"""One pair in this many (by hash) is held out of training."""


def question_text(a: int, b: int) -> str:
    """The user prompt, e.g. "What is 347 + 589?"."""
    return f"What is {a} + {b}?"


def reasoning_text(a: int, b: int) -> str:
    """Column-by-column carry reasoning from the rightmost digit, one line per column."""
    _check_operands(a, b)
    xs, ys = str(a)[::-1], str(b)[::-1]
    lines, carry = [], 0
    for i in range(max(len(xs), len(ys))):
        x = int(xs[i]) if i < len(xs) else 0
        y = int(ys[i]) if i < len(ys) else 0
        total = x + y + carry
        lines.append(f"{x}+{y}+{carry}={total:02d}, write {total % 10} carry {total // 10}")
        carry = total // 10
    return "\n".join(lines)


def completion_text(a: int, b: int) -> str:
    """The full teacher completion: reasoning in a `<think>` block, then only the sum."""
    return f"{THINK_OPEN}\n{reasoning_text(a, b)}\n{THINK_CLOSE}\n{a + b}"


def is_training_pair(a: int, b: int) -> bool:
    """Deterministic split: False for the ~1/10 of pairs held out for evaluation and generation."""
    digest = hashlib.blake2b(f"{a}+{b}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % HELD_OUT_BUCKETS != 0


def operand_range(digits: int) -> tuple[int, int]:
    """Smallest and largest operand with exactly `digits` digits (1 digit: 1..9)."""
    if digits < 1:
        raise ValueError(f"digits={digits} is below 1; pass a digit count of at least 1")
    return 10 ** (digits - 1), 10**digits - 1


def training_pairs(rng: random.Random, batch: int, digits_choices: Sequence[int]) -> list[tuple[int, int]]:
    """`batch` training-split pairs; each pair's digit count is drawn from `digits_choices` (repeat a value to weight it)."""
    if not digits_choices:
        raise ValueError("digits_choices is empty; pass at least one digit count, e.g. (3,)")
    pairs = []
    while len(pairs) < batch:
        lo, hi = operand_range(rng.choice(digits_choices))
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        if is_training_pair(a, b):
            pairs.append((a, b))
    return pairs


def held_out_pool(digits: int) -> list[tuple[int, int]]:
    """Every held-out pair of `digits`-digit operands, in order; only for digits <= 2 (larger pools are huge)."""
    if digits > 2:
        raise ValueError(f"digits={digits}: the full held-out pool is only listed for 1 or 2 digits; use held_out_pairs")
    lo, hi = operand_range(digits)
    return [(a, b) for a in range(lo, hi + 1) for b in range(lo, hi + 1) if not is_training_pair(a, b)]


def held_out_pairs(count: int, digits: int, seed: int) -> list[tuple[int, int]]:
    """`count` distinct held-out pairs with operands of exactly `digits` digits, in a seeded order."""
    if count < 0:
        raise ValueError(f"count={count} is negative; pass a count of at least 0")
    lo, hi = operand_range(digits)
    rng = random.Random(seed)
    if digits <= 2:  # few pairs: enumerate them so the capacity check is exact
        pool = held_out_pool(digits)
        if count > len(pool):
            raise ValueError(
                f"count={count} exceeds the {len(pool)} held-out {digits}-digit pairs; lower count or raise digits"
            )
        rng.shuffle(pool)
        return pool[:count]
    seen: set[tuple[int, int]] = set()
    pairs: list[tuple[int, int]] = []
    budget = 50 * count + 10_000
    while len(pairs) < count:
        budget -= 1
        if budget < 0:
            raise ValueError(f"count={count} is too many distinct held-out {digits}-digit pairs; lower count or raise digits")
        pair = (rng.randint(lo, hi), rng.randint(lo, hi))
        if pair not in seen and not is_training_pair(*pair):
            seen.add(pair)
            pairs.append(pair)
    return pairs


def fresh_problems(count: int, digits: int, seed: int) -> list[tuple[str, str]]:
    """`count` distinct held-out problems as (question, reference answer), operands of exactly `digits` digits."""
    return [(question_text(a, b), str(a + b)) for a, b in held_out_pairs(count, digits, seed)]


def _check_operands(a: int, b: int) -> None:
    if a < 0 or b < 0:
        raise ValueError(f"operands ({a}, {b}) must be non-negative integers; pass a, b >= 0")
