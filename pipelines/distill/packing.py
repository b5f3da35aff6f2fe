"""Pack tokenized traces into fixed-size training sequences with per-document positions.

    bins = assign_bins([len(d) for d in docs], max_tokens=1024)
    batch = pack(docs, max_tokens=1024, pad_id=0, topk_width=20)   # dict of [rows, 1024(, 20)] arrays
    packing_efficiency(batch)                                        # non-pad tokens / all tokens

Documents are placed best-fit-decreasing (longest first, each into the fullest
sequence it still fits), which leaves little padding on realistic length mixes.
`position_ids` restart at 0 for every document (and for the trailing pad run);
Hugging Face Llama (transformers 5) turns that into a block-diagonal causal mask
when it is called with `position_ids`, `attention_mask=None` and
`use_cache=False`, on sdpa and eager attention alike (flash-attention uses the
same positions for its varlen kernel), so no token attends across documents.
A test checks that a packed forward equals the separate per-document forwards.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

from potstill.pipelines.distill.tokenize import IGNORE_INDEX, TokenizedTrace


def assign_bins(lengths: Sequence[int], max_tokens: int, enabled: bool = True) -> tuple[list[list[int]], list[int]]:
    """(bins of document indices, indices of documents longer than `max_tokens`, which are left out).

    With `enabled=False` every document gets its own bin (pad-to-length, no packing).
    """
    too_long = [i for i, n in enumerate(lengths) if n > max_tokens]
    fits = [i for i, n in enumerate(lengths) if 0 < n <= max_tokens]
    if not enabled:
        return [[i] for i in fits], too_long
    bins: list[list[int]] = []
    # Sorted (free space, bin index) pairs: the tightest bin that still fits is one bisect away.
    free: list[tuple[int, int]] = []
    for i in sorted(fits, key=lambda j: -lengths[j]):
        at = bisect.bisect_left(free, (lengths[i], -1))
        if at == len(free):
            bins.append([i])
            bisect.insort(free, (max_tokens - lengths[i], len(bins) - 1))
        else:
            space, b = free.pop(at)
            bins[b].append(i)
            bisect.insort(free, (space - lengths[i], b))
    return bins, too_long


def pack(
    docs: Sequence[TokenizedTrace], max_tokens: int, pad_id: int, topk_width: int = 0, enabled: bool = True,
) -> dict[str, np.ndarray]:
    """Pack documents into rows of `max_tokens`; documents longer than that are dropped.

    Returns int32 `input_ids`, `labels`, `position_ids` [rows, max_tokens] and,
    when `topk_width > 0`, `topk_ids` int32 / `topk_logprobs` float16
    [rows, max_tokens, topk_width] (id -1 where a position has no teacher
    top-k), plus `num_docs` and `num_tokens` (document tokens) int32 [rows].
    """
    bins, _ = assign_bins([len(d) for d in docs], max_tokens, enabled)
    rows = len(bins)
    input_ids = np.full((rows, max_tokens), pad_id, dtype=np.int32)
    labels = np.full((rows, max_tokens), IGNORE_INDEX, dtype=np.int32)
    position_ids = np.zeros((rows, max_tokens), dtype=np.int32)
    out = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
    if topk_width:
        out["topk_ids"] = np.full((rows, max_tokens, topk_width), -1, dtype=np.int32)
        out["topk_logprobs"] = np.zeros((rows, max_tokens, topk_width), dtype=np.float16)
    for r, members in enumerate(bins):
        at = 0
        for i in members:
            doc, n = docs[i], len(docs[i])
            input_ids[r, at : at + n] = doc.input_ids
            labels[r, at : at + n] = doc.labels
            position_ids[r, at : at + n] = np.arange(n)
            if topk_width and doc.topk_ids is not None:
                out["topk_ids"][r, at : at + n] = doc.topk_ids
                out["topk_logprobs"][r, at : at + n] = doc.topk_logprobs
            at += n
        position_ids[r, at:] = np.arange(max_tokens - at)  # the pad run is its own segment
    out["num_docs"] = np.asarray([len(b) for b in bins], dtype=np.int32)
    out["num_tokens"] = np.asarray([sum(len(docs[i]) for i in b) for b in bins], dtype=np.int32)
    return out


def packing_efficiency(batch: dict[str, np.ndarray]) -> float:
    """Document tokens / all positions of a `pack` output (1.0 means no padding)."""
    total = batch["input_ids"].size
    return float(batch["num_tokens"].sum()) / total if total else 0.0
