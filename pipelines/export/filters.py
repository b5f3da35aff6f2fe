"""Which committed rows an export keeps: row filters, then at most k samples per prompt, best first.

    steps = row_steps(table, cfg.filters)            # numpy bool masks: verified, finish_reason, token_length
    keep = best_per_prompt(candidates, k=1, best_by=["verified", "shortest"])

Row filters are independent per row; the per-prompt choice runs over every
candidate of every shard at once (a prompt's samples may come from several
runs), after the row filters and decontamination, so "one sample per
prompt" means one surviving sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

    from potstill.schemas.export import ExportFilters

FILTER_COLUMNS = ["verified", "finish_reason", "prompt_tokens", "completion_tokens"]


@dataclass(frozen=True)
class RowSteps:
    """Per-row pass/fail of each row filter (True: passes)."""

    verified: np.ndarray
    finish_reason: np.ndarray
    token_length: np.ndarray


def row_steps(table: "pa.Table", filters: "ExportFilters") -> RowSteps:
    """Evaluate the row filters of `filters` on a table with FILTER_COLUMNS."""
    n = table.num_rows
    verified = np.array([v is True for v in table.column("verified").to_pylist()], dtype=bool)
    if not filters.verified_only:
        verified = np.ones(n, dtype=bool)
    if filters.finish_reasons:
        allowed = set(filters.finish_reasons)
        finish = np.array([r in allowed for r in table.column("finish_reason").to_pylist()], dtype=bool)
    else:
        finish = np.ones(n, dtype=bool)
    prompt = table.column("prompt_tokens").to_numpy(zero_copy_only=False).astype(np.int64)
    completion = table.column("completion_tokens").to_numpy(zero_copy_only=False).astype(np.int64)
    length = np.ones(n, dtype=bool)
    if filters.min_completion_tokens is not None:
        length &= completion >= filters.min_completion_tokens
    if filters.max_completion_tokens is not None:
        length &= completion <= filters.max_completion_tokens
    if filters.max_prompt_tokens is not None:
        length &= prompt <= filters.max_prompt_tokens
    if filters.max_total_tokens is not None:
        length &= prompt + completion <= filters.max_total_tokens
    return RowSteps(verified, finish, length)


def verdict_rank(verified: list[bool | None]) -> np.ndarray:
    """0 for accepted, 1 for unjudged (None), 2 for rejected: lower is better."""
    return np.array([0 if v is True else 2 if v is False else 1 for v in verified], dtype=np.int8)


def best_per_prompt(prompt: np.ndarray, verdict: np.ndarray, completion_tokens: np.ndarray,
                    sample_index: np.ndarray, k: int, best_by: list[str]) -> np.ndarray:
    """Mask keeping at most `k` rows per distinct `prompt` code, the best first by `best_by`.

    `prompt` holds one integer code per distinct prompt; `verdict` is
    `verdict_rank`'s output. Ties fall back to the sample index, then the
    row's position, so the choice is deterministic.
    """
    n = len(prompt)
    if n == 0:
        return np.zeros(0, dtype=bool)
    keys: list[np.ndarray] = []  # np.lexsort sorts by the LAST key first
    for key in best_by:
        if key == "verified":
            keys.append(verdict.astype(np.int64))
        elif key == "shortest":
            keys.append(completion_tokens.astype(np.int64))
        elif key == "longest":
            keys.append(-completion_tokens.astype(np.int64))
        elif key == "first":
            keys.append(sample_index.astype(np.int64))
        else:
            raise ValueError(f"best_by key {key!r} is not one of verified, shortest, longest, first")
    order = np.lexsort([np.arange(n), sample_index.astype(np.int64), *reversed(keys), prompt])
    sorted_prompt = prompt[order]
    starts = np.r_[True, sorted_prompt[1:] != sorted_prompt[:-1]]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    rank = np.arange(n) - group_start
    keep = np.zeros(n, dtype=bool)
    keep[order[rank < k]] = True
    return keep
