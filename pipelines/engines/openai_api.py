"""The OpenAI chat-completions wire format, as pure functions: request bodies, responses to `Sample`s, HTTP errors.

    body = chat_body(cfg.teacher, cfg.sampling, messages, n=4, max_tokens=None)
    samples, usage = samples_from_response(response_json, top_k=cfg.sampling.logprobs)

Used by `openai_engine.OpenAIEngine`. Servers differ in what they return:
reasoning models (DeepSeek-R1, vLLM with a reasoning parser) put the chain of
thought in `reasoning_content` (vLLM >= 0.11: `reasoning`), which is put back
in front of the answer as `<think>...</think>` so the trace reads as the
model wrote it; vLLM servers return token ids on request
(`return_token_ids`, and `token_id:N` logprob tokens), other servers return
none, and a sample's length then comes from its logprobs or from the
response's usage split over its choices.
"""

from __future__ import annotations

import json
from typing import Any

from potstill.pipelines.engines.protocol import Sample
from potstill.schemas.generation import SamplingConfig, TeacherConfig

_FINISH = {"stop": "stop", "length": "length", "abort": "abort", "content_filter": "abort"}
TOKEN_ID_PREFIX = "token_id:"


class RequestRefused(ValueError):
    """The server refused this request (400, 413, 422): the prompt is recorded failed, the replica is fine."""


def chat_body(teacher: TeacherConfig, sampling: SamplingConfig, messages: list[dict[str, str]], n: int,
              max_tokens: int | None) -> dict[str, Any]:
    """The JSON body of one chat-completions request for `n` samples."""
    api = teacher.api
    assert api is not None, "chat_body needs teacher.api"
    body: dict[str, Any] = {
        "model": teacher.model, "messages": messages, "n": n,
        "temperature": sampling.temperature, "top_p": sampling.top_p,
        api.max_tokens_field: max_tokens or sampling.max_tokens,
    }
    # Fields outside OpenAI's spec go only when they change something (vLLM and several providers accept them).
    if sampling.top_k != -1:
        body["top_k"] = sampling.top_k
    if sampling.min_p:
        body["min_p"] = sampling.min_p
    if sampling.ignore_eos:
        body["ignore_eos"] = True
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if sampling.logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = sampling.logprobs
    if api.return_token_ids:
        body["return_token_ids"] = True
        if sampling.logprobs:
            body["return_tokens_as_token_ids"] = True
    body.update(api.extra_body)
    return body


def completion_text(message: dict[str, Any]) -> str:
    """The sample's text: the answer, behind `<think>...</think>` when the server returned the reasoning apart."""
    content = message.get("content") or ""
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        return f"<think>\n{reasoning}\n</think>\n\n{content}"
    return content


def finish_reason(raw: str | None) -> str:
    """The trace's finish_reason (stop, length, abort, error) for a server's value."""
    return _FINISH.get(raw or "", "error")


def _token_id(token: str) -> int | None:
    if token.startswith(TOKEN_ID_PREFIX):
        try:
            return int(token[len(TOKEN_ID_PREFIX):])
        except ValueError:
            return None
    return None


def topk_from_logprobs(content: list[dict[str, Any]], k: int) -> tuple[list[list[int]], list[list[float]]] | None:
    """Per position, the top-k ids and logprobs, when the server named tokens by id (`token_id:N`); else None."""
    ids_out: list[list[int]] = []
    lps_out: list[list[float]] = []
    for position in content:
        ids: list[int] = []
        lps: list[float] = []
        for alt in (position.get("top_logprobs") or [])[:k]:
            token_id = _token_id(alt.get("token", ""))
            if token_id is None:
                return None
            if token_id not in ids:
                ids.append(token_id)
                lps.append(float(alt.get("logprob", -9999.0)))
        ids_out.append(ids)
        lps_out.append(lps)
    return ids_out, lps_out


def split_tokens(total: int, weights: list[int]) -> list[int]:
    """`total` split over choices in proportion to `weights` (their text lengths), summing exactly to `total`."""
    if not weights:
        return []
    weight_sum = sum(weights)
    if weight_sum == 0:
        weights, weight_sum = [1] * len(weights), len(weights)
    shares = [total * w / weight_sum for w in weights]
    out = [int(s) for s in shares]
    for i in sorted(range(len(shares)), key=lambda i: out[i] - shares[i])[: total - sum(out)]:
        out[i] += 1
    return out


def samples_from_response(data: dict[str, Any], top_k: int) -> tuple[list[Sample], dict[str, int]]:
    """The samples of one response and its usage ({prompt_tokens, completion_tokens})."""
    choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
    usage = data.get("usage") or {}
    prompt_tokens = int(usage.get("prompt_tokens") or 0)
    completion_tokens = int(usage.get("completion_tokens") or 0)
    texts = [completion_text(c.get("message") or {}) for c in choices]
    known: list[int | None] = []
    for choice in choices:
        if choice.get("token_ids") is not None:
            known.append(len(choice["token_ids"]))
        elif (choice.get("logprobs") or {}).get("content") is not None:
            known.append(len(choice["logprobs"]["content"]))
        else:
            known.append(None)
    unknown = [i for i, n in enumerate(known) if n is None]
    if unknown:  # no per-choice count: split what the usage leaves over those choices by text length
        rest = max(0, completion_tokens - sum(n for n in known if n is not None))
        for i, n in zip(unknown, split_tokens(rest, [len(texts[i]) for i in unknown])):
            known[i] = n
    samples = []
    for choice, text, n_tokens in zip(choices, texts, known):
        ids = choice.get("token_ids")
        content = (choice.get("logprobs") or {}).get("content")
        topk = topk_from_logprobs(content, top_k) if top_k and content else None
        samples.append(Sample(
            text=text, token_ids=list(ids) if ids is not None else [], finish_reason=finish_reason(choice.get("finish_reason")),
            topk_ids=topk[0] if topk else None, topk_logprobs=topk[1] if topk else None,
            completion_tokens=None if ids is not None else int(n_tokens or 0),
        ))
    if completion_tokens == 0:
        completion_tokens = sum(s.num_tokens for s in samples)
    return samples, {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}


def error_text(status: int, body: bytes | str) -> str:
    """`HTTP <status>: <the server's error message>` (one line, at most 300 characters)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    message = text
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict):
            err = parsed.get("error", parsed)
            message = err.get("message", text) if isinstance(err, dict) else str(err)
    except ValueError:
        pass
    message = " ".join(str(message).split())
    return f"HTTP {status}: {message[:300]}" if message else f"HTTP {status}"


def status_kind(status: int) -> str:
    """What a non-200 status means: `rate_limited` (429), `retry` (408, 409, 5xx), `refused` (this request's
    fault: 400, 413, 422) or `broken` (key, model or route wrong: every request would fail)."""
    if status == 429:
        return "rate_limited"
    if status in (408, 409) or status >= 500:
        return "retry"
    if status in (400, 413, 422):
        return "refused"
    return "broken"
