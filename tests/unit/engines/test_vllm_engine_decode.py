"""A completion decoded once reads exactly as vLLM's incremental detokenizer would have streamed it.

    .venv/bin/pytest tests/unit/test_vllm_engine_decode.py -q

The engine turns vLLM's per-token detokenization off and decodes each
finished sample with `decode_completion`; the reference here is what vLLM
does (a `tokenizers` DecodeStream primed with the prompt's ids, stepped
token by token), on a SentencePiece-style tokenizer (leading spaces), a
byte-level one (characters split across tokens) and the shipped teacher's.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tokenizers.decoders import DecodeStream

from potstill.pipelines.engines.vllm_engine import decode_completion

TEACHER = Path(__file__).resolve().parents[3] / "potstill" / "assets" / "arithmetic-teacher" / "tokenizer.json"
WORDS = ["the", "answer", "is", "42.", "naïve", "café", "数学", "😀", "<think>", "\n", "add", "ones,", "carry", "1"]
CORPUS = [" ".join(random.Random(i).choices(WORDS, k=12)) for i in range(200)]


def _sentencepiece_like() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"]))
    return tok


def _byte_level(vocab_size: int = 300) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def _as_vllm_streams_it(tok: Tokenizer, prompt: list[int], completion: list[int]) -> str:
    stream = DecodeStream(ids=prompt, skip_special_tokens=True)
    return "".join(piece for piece in (stream.step(tok, t) for t in completion) if piece)


@pytest.mark.parametrize("make", [_sentencepiece_like, _byte_level, lambda: _byte_level(vocab_size=262),
                                  lambda: Tokenizer.from_file(str(TEACHER))],
                         ids=["sentencepiece", "byte_level", "byte_level_split_characters", "shipped_teacher"])
def test_decoded_once_equals_vllms_stream_at_every_prompt_completion_boundary(make):
    """At every cut of a text into prompt and completion. Where the prompt ends inside a character (a
    byte-level vocabulary too small to hold it in one token), the completion starts with that character."""
    tok = make()
    rng = random.Random(0)
    checked = 0
    for _ in range(150):
        text = " ".join(rng.choices(WORDS, k=rng.randint(2, 14)))
        ids = tok.encode("<s>" + text + "</s>").ids
        for cut in range(1, len(ids)):
            prompt, completion = ids[:cut], ids[cut:]
            prompt_text = tok.decode(prompt, skip_special_tokens=True)
            if prompt_text.endswith("\ufffd"):
                whole = prompt_text.rstrip("\ufffd")
                expected = tok.decode(ids, skip_special_tokens=True)[len(whole):]
            else:
                expected = _as_vllm_streams_it(tok, prompt, completion)
            assert decode_completion(tok, prompt, completion) == expected, (text, cut)
            checked += 1
    assert checked > 1000


def test_a_sentencepiece_completion_keeps_the_space_its_first_token_starts_with():
    tok = _sentencepiece_like()
    prompt, completion = tok.encode("the answer is").ids, tok.encode("the answer is 42.").ids[3:]
    assert decode_completion(tok, prompt, completion).startswith(" ")
    assert not tok.decode(completion, skip_special_tokens=True).startswith(" ")  # what decoding alone would give


def test_the_token_that_stopped_a_sample_is_left_out_of_its_text_as_vllm_does():
    from types import SimpleNamespace

    from potstill.pipelines.engines.vllm_engine import text_token_ids

    def out(reason, stop_reason):
        return SimpleNamespace(token_ids=[5, 6, 7], finish_reason=reason, stop_reason=stop_reason)

    assert text_token_ids(out("stop", None)) == [5, 6]  # EOS
    assert text_token_ids(out("stop", 7)) == [5, 6]  # one of stop_token_ids
    assert text_token_ids(out("length", None)) == [5, 6, 7]
    assert text_token_ids(out("abort", None)) == [5, 6, 7]
    assert text_token_ids(SimpleNamespace(token_ids=[], finish_reason="stop", stop_reason=None)) == []
