"""Export row filters and the per-prompt best-of-k choice.

    .venv/bin/pytest tests/unit/export/test_filters.py -q
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from potstill.pipelines.export.filters import best_per_prompt, row_steps, verdict_rank
from potstill.pipelines.export.plan import cut_shards
from potstill.schemas.export import ExportFilters

TABLE = pa.table({
    "verified": [True, False, None, True, True],
    "finish_reason": ["stop", "stop", "stop", "length", "stop"],
    "prompt_tokens": [10, 10, 10, 10, 400],
    "completion_tokens": [50, 60, 70, 512, 20],
})


def test_row_steps_each_filter():
    s = row_steps(TABLE, ExportFilters())
    assert s.verified.tolist() == [True, False, False, True, True]
    assert s.finish_reason.all() and s.token_length.all()
    s = row_steps(TABLE, ExportFilters(verified_only=False, finish_reasons=["stop"], max_completion_tokens=100,
                                       min_completion_tokens=30, max_total_tokens=300))
    assert s.verified.all()
    assert s.finish_reason.tolist() == [True, True, True, False, True]
    assert s.token_length.tolist() == [True, True, True, False, False]


def test_best_of_k_prefers_accepted_then_shortest_then_first_sample():
    prompt = np.array([0, 0, 0, 1, 1, 2])
    verdict = verdict_rank([False, True, True, None, True, False])
    tokens = np.array([5, 90, 40, 10, 10, 7])
    sample = np.array([0, 1, 2, 0, 1, 0])
    keep = best_per_prompt(prompt, verdict, tokens, sample, 1, ["verified", "shortest"])
    assert keep.tolist() == [False, False, True, False, True, True]
    keep = best_per_prompt(prompt, verdict, tokens, sample, 2, ["shortest"])
    assert keep.tolist() == [True, False, True, True, True, True]
    keep = best_per_prompt(prompt, verdict, tokens, sample, 1, ["longest"])
    assert keep.tolist() == [False, True, False, True, False, True]
    keep = best_per_prompt(prompt, verdict, tokens, sample, 1, ["first"])
    assert keep.tolist() == [True, False, False, True, False, True]


def test_filter_config_rejects_contradictions():
    with pytest.raises(ValueError, match="min_completion_tokens .* is above max_completion_tokens"):
        ExportFilters(min_completion_tokens=10, max_completion_tokens=5)
    with pytest.raises(ValueError, match="both shortest and longest"):
        ExportFilters(best_by=["shortest", "longest"])


def test_shards_are_cut_by_bytes_and_never_empty():
    out, n = cut_shards(np.array([40, 40, 40, 40, 40]), 100)
    assert n == 2 and out.tolist() == [0, 0, 0, 1, 1]
    out, n = cut_shards(np.array([10, 500, 10, 10]), 100)  # one huge row spans several "slots": no empty shard
    assert n == 2 and out.tolist() == [0, 0, 1, 1]
    assert cut_shards(np.array([], dtype=np.int64), 100)[1] == 0
