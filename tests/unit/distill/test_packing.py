"""Packing: every document placed once, positions restart per document, a packed forward equals the
separate forwards, and little padding on realistic length mixes."""

from __future__ import annotations

import random

import numpy as np
import pytest

from potstill.pipelines.arithmetic import problems as arithmetic
from potstill.pipelines.distill.packing import assign_bins, pack, packing_efficiency
from potstill.pipelines.distill.tokenize import IGNORE_INDEX, TokenizedTrace


def _doc(n: int, prompt: int, seed: int, k: int = 0) -> TokenizedTrace:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 50, n).astype(np.int32)
    labels = rng.integers(1, 50, n).astype(np.int32)
    labels[:prompt] = IGNORE_INDEX
    if not k:
        return TokenizedTrace(ids, labels)
    topk = np.where(labels[:, None] >= 0, rng.integers(0, 50, (n, k)), -1).astype(np.int32)
    return TokenizedTrace(ids, labels, topk, np.where(topk >= 0, -1.0, 0.0).astype(np.float16))


def test_bins_hold_every_fitting_document_once_within_capacity() -> None:
    lengths = [5, 9, 3, 12, 1, 7, 7, 20, 2]
    bins, too_long = assign_bins(lengths, max_tokens=12)
    assert too_long == [7]
    placed = sorted(i for b in bins for i in b)
    assert placed == [0, 1, 2, 3, 4, 5, 6, 8]
    assert all(sum(lengths[i] for i in b) <= 12 for b in bins)
    assert len(bins) == 4  # 46 tokens need at least 4 bins of 12
    unpacked, _ = assign_bins(lengths, max_tokens=12, enabled=False)
    assert unpacked == [[i] for i in placed]


def test_pack_layout_restarts_positions_and_keeps_labels_and_topk() -> None:
    docs = [_doc(5, 2, 0, k=3), _doc(4, 1, 1, k=3), _doc(6, 3, 2)]
    out = pack(docs, max_tokens=16, pad_id=0, topk_width=3)
    assert out["input_ids"].shape == (1, 16) and out["topk_ids"].shape == (1, 16, 3)
    assert out["num_docs"].tolist() == [3] and out["num_tokens"].tolist() == [15]
    order = [2, 0, 1]  # longest first
    at = 0
    for i in order:
        n = len(docs[i])
        assert out["position_ids"][0, at : at + n].tolist() == list(range(n))
        assert (out["input_ids"][0, at : at + n] == docs[i].input_ids).all()
        assert (out["labels"][0, at : at + n] == docs[i].labels).all()
        want = docs[i].topk_ids if docs[i].topk_ids is not None else np.full((n, 3), -1)
        assert (out["topk_ids"][0, at : at + n] == want).all()
        at += n
    assert out["labels"][0, at:].tolist() == [IGNORE_INDEX] and out["position_ids"][0, at:].tolist() == [0]
    assert packing_efficiency(out) == pytest.approx(15 / 16)


def _arithmetic_lengths(count: int, seed: int) -> list[int]:
    """Token lengths of real arithmetic traces (character tokenizer: one token per character)."""
    rng = random.Random(seed)
    lengths = []
    for _ in range(count):
        lo, hi = arithmetic.operand_range(rng.choice([1, 2, 3, 4, 5, 6]))
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        prompt = f"<|user|>{arithmetic.question_text(a, b)}<|end|><|assistant|>"
        lengths.append(len(prompt) + len(arithmetic.completion_text(a, b)))  # + <|end|> token - 1 shift
    return lengths


@pytest.mark.parametrize(
    "name, lengths, max_tokens",
    [
        ("arithmetic traces, 1-6 digits", _arithmetic_lengths(1024, 0), 1024),
        ("reasoning traces, lognormal median 2k", np.random.default_rng(0).lognormal(np.log(2000), 0.8, 512).astype(int) + 32, 16384),
        ("short chat traces, lognormal median 600", np.random.default_rng(1).lognormal(np.log(600), 0.7, 1024).astype(int) + 32, 4096),
    ],
)
def test_packing_efficiency_is_at_least_095_on_realistic_lengths(name: str, lengths, max_tokens: int) -> None:
    docs = [TokenizedTrace(np.zeros(n, np.int32), np.zeros(n, np.int32)) for n in lengths]
    out = pack(docs, max_tokens=max_tokens, pad_id=0)
    assert packing_efficiency(out) >= 0.95, name


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "mistral"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_forward_equals_separate_forwards(attn: str, arch: str) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(arch, vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=2, num_key_value_heads=2, head_dim=16, max_position_embeddings=64)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()
    docs = [_doc(7, 2, 0), _doc(1, 0, 1), _doc(5, 1, 2), _doc(9, 3, 3)]
    out = pack(docs, max_tokens=16, pad_id=0)
    bins, _ = assign_bins([len(d) for d in docs], 16)  # the layout `pack` used
    assert len(bins) == 2
    ids, pos = torch.as_tensor(out["input_ids"]).long(), torch.as_tensor(out["position_ids"]).long()
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=pos, use_cache=False).logits
        causal_only = model(input_ids=ids, use_cache=False).logits
        leaked = False
        for row, members in enumerate(bins):
            at = 0
            for i in members:
                n = len(docs[i])
                alone = model(input_ids=torch.as_tensor(docs[i].input_ids[None]).long(), use_cache=False).logits[0]
                torch.testing.assert_close(packed[row, at : at + n], alone, atol=1e-5, rtol=1e-5)
                leaked |= not torch.allclose(causal_only[row, at : at + n], alone, atol=1e-3)
                at += n
    assert leaked, "a plain causal forward should leak across documents (else this test has no teeth)"
