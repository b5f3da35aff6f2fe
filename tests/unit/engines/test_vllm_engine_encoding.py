"""The vLLM engine's prompt encoding (tokenizer only; no engine is started)."""

from __future__ import annotations

from potstill.pipelines.engines.vllm_engine import VllmEngine
from potstill.schemas.generation import SamplingConfig, TeacherConfig


def test_a_units_conversations_encode_in_one_batch_like_one_at_a_time_and_a_bad_one_fails_alone():
    engine = VllmEngine(TeacherConfig(), SamplingConfig())
    engine.load_tokenizer()
    tok = engine._tokenizer
    good = [[{"role": "user", "content": f"What is {i} + {i * 7}?"}] for i in range(5)]
    bad = [{"role": "tool", "content": "not a role this template accepts"}]
    encoded = engine.encode_chats(good[:2] + [bad] + good[2:])
    expected = [tok.encode(tok.apply_chat_template(m, add_generation_prompt=True, tokenize=False), add_special_tokens=False)
                for m in good]
    assert encoded[:2] + encoded[3:] == expected
    assert isinstance(encoded[2], Exception) and "role must be" in str(encoded[2])
    assert engine.encode_chats([]) == []
