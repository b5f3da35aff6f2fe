"""The chat-completions wire format: request bodies, responses to samples, errors."""

from __future__ import annotations

from potstill.pipelines.engines.openai_api import (
    chat_body, completion_text, error_text, samples_from_response, split_tokens, status_kind, topk_from_logprobs,
)
from potstill.pipelines.generate.reasoning import split_reasoning
from potstill.schemas.generation import SamplingConfig, TeacherConfig

MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]


def _teacher(**api) -> TeacherConfig:
    return TeacherConfig.model_validate({"engine": "openai", "model": "m", "api": {"base_url": "http://h/v1", **api}})


def test_the_body_carries_the_sampling_and_only_the_non_default_extensions():
    body = chat_body(_teacher(), SamplingConfig(n=4, temperature=0.6, max_tokens=128), MESSAGES, 4, None)
    assert body == {"model": "m", "messages": MESSAGES, "n": 4, "temperature": 0.6, "top_p": 1.0, "max_tokens": 128}
    sampling = SamplingConfig(top_k=20, min_p=0.05, stop=["###"], logprobs=3, ignore_eos=True)
    body = chat_body(_teacher(return_token_ids=True, max_tokens_field="max_completion_tokens",
                              extra_body={"reasoning_effort": "high"}), sampling, MESSAGES, 1, 64)
    assert body["max_completion_tokens"] == 64 and "max_tokens" not in body
    assert body["top_k"] == 20 and body["min_p"] == 0.05 and body["stop"] == ["###"] and body["ignore_eos"] is True
    assert body["logprobs"] is True and body["top_logprobs"] == 3
    assert body["return_token_ids"] is True and body["return_tokens_as_token_ids"] is True
    assert body["reasoning_effort"] == "high"
    assert "seed" not in body


def test_reasoning_returned_apart_is_put_back_as_a_think_block():
    text = completion_text({"content": "4", "reasoning_content": "2 plus 2 is 4"})
    assert split_reasoning(text) == ("2 plus 2 is 4", "4")
    assert completion_text({"content": "4", "reasoning": "two twos"}).startswith("<think>\ntwo twos")
    assert completion_text({"content": None}) == ""
    assert completion_text({"content": "<think>x</think>4"}) == "<think>x</think>4"


def _choice(index, text, finish="stop", **extra):
    return {"index": index, "message": {"role": "assistant", "content": text}, "finish_reason": finish, **extra}


def test_token_ids_and_top_k_come_from_a_vllm_server():
    logprobs = {"content": [
        {"token": "token_id:6", "logprob": 0.0, "top_logprobs": [{"token": "token_id:6", "logprob": 0.0},
                                                                  {"token": "token_id:38", "logprob": -17.2}]},
        {"token": "token_id:5", "logprob": -0.1, "top_logprobs": [{"token": "token_id:5", "logprob": -0.1},
                                                                  {"token": "token_id:5", "logprob": -0.1}]},
    ]}
    data = {"choices": [_choice(0, "ok", token_ids=[6, 5], logprobs=logprobs)],
            "usage": {"prompt_tokens": 21, "completion_tokens": 2}}
    (sample,), usage = samples_from_response(data, top_k=2)
    assert sample.token_ids == [6, 5] and sample.num_tokens == 2 and sample.completion_tokens is None
    assert sample.topk_ids == [[6, 38], [5]] and sample.topk_logprobs[0] == [0.0, -17.2]
    assert usage == {"prompt_tokens": 21, "completion_tokens": 2}


def test_without_token_ids_lengths_come_from_logprobs_or_the_usage_split_by_text():
    data = {"choices": [_choice(1, "bbbbbbbbb", "length"), _choice(0, "a", "content_filter")],
            "usage": {"prompt_tokens": 7, "completion_tokens": 10}}
    samples, _ = samples_from_response(data, top_k=0)
    assert [s.text for s in samples] == ["a", "bbbbbbbbb"]  # by index
    assert [s.num_tokens for s in samples] == [1, 9] and samples[0].token_ids == []
    assert [s.finish_reason for s in samples] == ["abort", "length"]
    named = {"content": [{"token": "Hello", "logprob": -1.0, "top_logprobs": [{"token": "Hello", "logprob": -1.0}]}]}
    (sample,), _ = samples_from_response({"choices": [_choice(0, "Hello", logprobs=named)],
                                          "usage": {"completion_tokens": 1}}, top_k=1)
    assert sample.num_tokens == 1 and sample.topk_ids is None  # a token named by text has no id to keep
    assert topk_from_logprobs(named["content"], 1) is None


def test_usage_split_sums_exactly():
    assert split_tokens(10, [1, 1, 1]) in ([4, 3, 3], [3, 4, 3], [3, 3, 4])
    assert sum(split_tokens(101, [5, 0, 17, 2])) == 101
    assert split_tokens(5, [0, 0]) in ([3, 2], [2, 3])


def test_errors_read_as_one_line_and_are_classified():
    body = b'{"error": {"message": "The model `nope` does not exist.\\n Valid: m", "code": 404}}'
    assert error_text(404, body) == "HTTP 404: The model `nope` does not exist. Valid: m"
    assert error_text(502, b"<html>Bad Gateway</html>") == "HTTP 502: <html>Bad Gateway</html>"
    assert [status_kind(s) for s in (429, 500, 503, 408, 400, 413, 422, 401, 403, 404)] == [
        "rate_limited", "retry", "retry", "retry", "refused", "refused", "refused", "broken", "broken", "broken"]
