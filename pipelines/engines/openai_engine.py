"""The API teacher engine: any OpenAI-compatible chat-completions endpoint behind the `TeacherEngine` protocol.

    teacher: {engine: openai, model: deepseek-reasoner,
              api: {base_url: https://api.deepseek.com/v1, api_key_env: DEEPSEEK_API_KEY,
                    requests_per_minute: 500, price: {input_usd_per_million: 0.55, output_usd_per_million: 2.19}}}

A replica holds one `OpenAIEngine` exactly as it would hold a vLLM engine
(same unit runner, verification, rejection sampling, commits and
supervision), on no GPU. Every HTTP attempt passes the replica's share of the
endpoint's budgets (`rate_limit.RateLimiter`). A 429 holds all new requests
for its Retry-After; 408, 409, 5xx, timeouts and dropped connections are
retried with exponential backoff (honouring Retry-After), at most
`api.max_retries` times, after which the engine counts as broken
(`EngineFailure`: the replica is replaced and its units requeued). 400, 413
and 422 refuse the one prompt (recorded failed); 401, 403 and 404 mean the
key, model or URL is wrong and break the engine. `start()` sends one
one-token request, so a dead endpoint, a bad key or an unknown model fails
the replica's start with the server's reason instead of every prompt.

The API key comes from `api.api_key_env` or `api.api_key_file`, is read in
the replica's own process, sent only in the Authorization header, and
scrubbed from any server message that echoes it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

from potstill.pipelines.engines.openai_api import (
    RequestRefused, chat_body, error_text, samples_from_response, status_kind,
)
from potstill.pipelines.engines.protocol import EngineFailure, Generation, Sample
from potstill.pipelines.engines.rate_limit import Limits, RateLimiter, backoff_s, retry_after_s
from potstill.schemas.generation import ApiConfig, SamplingConfig, TeacherConfig

log = logging.getLogger(__name__)

PROBE_RETRIES = 2  # a dead endpoint fails the replica's start within seconds, not after the run's full backoff
CHARS_PER_TOKEN_GUESS = 4.0  # prompt-size guess for the tokens-per-minute budget until the server's usage is known


def read_api_key(api: ApiConfig) -> str | None:
    """The key named by `api_key_env` / `api_key_file` (None when neither is set); a clear error when missing."""
    if api.api_key_env:
        key = os.environ.get(api.api_key_env, "").strip()
        if not key:
            raise ValueError(f"teacher.api.api_key_env: the environment variable {api.api_key_env} is not set (or empty) "
                             "in this process; export it before `potstill generate` (on a cluster: in the pods' env)")
        return key
    if api.api_key_file:
        path = Path(api.api_key_file).expanduser()
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"teacher.api.api_key_file: cannot read {path} ({exc.strerror or exc}); "
                             "point it at a file holding the key") from None
        if not key:
            raise ValueError(f"teacher.api.api_key_file: {path} is empty; put the API key in it")
        return key
    return None


class OpenAIEngine:
    """`TeacherEngine` over an OpenAI-compatible chat-completions endpoint."""

    def __init__(self, teacher: TeacherConfig, sampling: SamplingConfig, limits: Limits):
        if teacher.api is None:
            raise ValueError("teacher.api: the openai engine needs an endpoint (api.base_url)")
        self.teacher, self.sampling, self.api = teacher, sampling, teacher.api
        self.model_name = teacher.model
        self.revision = teacher.revision
        self.limits = limits
        per_request = sampling.n if self.api.supports_n else 1
        self.batch_capacity: int | None = limits.max_concurrency * per_request
        self.url = self.api.base_url.rstrip("/") + "/chat/completions"
        self.limiter = RateLimiter(limits)
        self._client: Any = None
        self._key: str | None = None
        self._rng = random.Random()
        # What this engine sent and was charged for (the replica reports it; costs are computed from units' stats).
        self.http_requests = self.rate_limited = self.retried = 0
        self.prompt_tokens = self.completion_tokens = self.samples = 0
        self._prompt_chars = 0

    async def start(self) -> None:
        import aiohttp  # vLLM and ray[default] both depend on it

        self._key = read_api_key(self.api)
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        self._client = aiohttp.ClientSession(
            headers=headers, connector=aiohttp.TCPConnector(limit=self.limits.max_concurrency),
            timeout=aiohttp.ClientTimeout(total=self.api.timeout_s, connect=min(30.0, self.api.timeout_s)))
        await self._probe()

    async def _probe(self) -> None:
        """One one-token request: the endpoint answers, the key and model are right, the sampling fields accepted."""
        messages = [{"role": "user", "content": "Say OK."}]
        n = min(2, self.sampling.n) if self.api.supports_n else 1
        body = chat_body(self.teacher, self.sampling, messages, n, max_tokens=1)
        try:
            data = await self._post(body, messages, n, retries=PROBE_RETRIES)
        except (RequestRefused, EngineFailure) as exc:
            reason = str(exc).removeprefix(f"{self.url}: ")  # the URL leads the message once
            raise EngineFailure(f"{self.url} refused the start probe for model {self.model_name!r}: {reason}") from None
        choices = data.get("choices") or []
        if len(choices) < n:
            raise EngineFailure(f"teacher.api.supports_n: {self.url} returned {len(choices)} choice(s) for n={n}; "
                                "set supports_n: false so each sample is its own request")
        if self.api.return_token_ids and choices[0].get("token_ids") is None:
            raise EngineFailure(f"teacher.api.return_token_ids: {self.url} returned no token_ids (only vLLM servers do); "
                                "set return_token_ids: false")

    def encode_chats(self, conversations: list[list[dict[str, str]]]) -> list[Any | Exception]:
        """The conversations themselves: the server applies the chat template."""
        return [[{"role": m["role"], "content": m["content"]} for m in messages] for messages in conversations]

    async def generate(self, prompt: Any, n: int, request_id: str, max_tokens: int | None = None) -> Generation:
        per_request = n if self.api.supports_n else 1
        samples: list[Sample] = []
        prompt_length = billed = 0
        # A server that returned fewer choices than asked (some ignore `n`) is asked again for the rest.
        while len(samples) < n:
            want = min(per_request, n - len(samples))
            calls = (n - len(samples)) // want
            body = chat_body(self.teacher, self.sampling, prompt, want, max_tokens)
            responses = await _gather_or_cancel([self._post(body, prompt, want) for _ in range(calls)])
            got = 0
            for data in responses:
                batch, usage = samples_from_response(data, self.sampling.logprobs)
                samples.extend(batch)
                got += len(batch)
                billed += usage["prompt_tokens"]
                prompt_length = prompt_length or usage["prompt_tokens"]
            if got == 0:
                raise RequestRefused(f"{self.url} returned no choices for request {request_id}")
        return Generation(prompt_tokens=prompt_length, samples=samples[:n], billed_prompt_tokens=billed)

    def _expected_tokens(self, messages: list[dict[str, str]], n: int) -> float:
        """Tokens a request will use, for the tokens-per-minute budget: its prompt plus n typical completions."""
        chars = sum(len(m.get("content", "")) for m in messages)
        per_char = self.prompt_tokens / self._prompt_chars if self._prompt_chars else 1 / CHARS_PER_TOKEN_GUESS
        per_sample = self.completion_tokens / self.samples if self.samples else self.sampling.max_tokens
        return chars * per_char + n * per_sample

    async def _post(self, body: dict[str, Any], messages: list[dict[str, str]], n: int,
                    retries: int | None = None) -> dict[str, Any]:
        """POST one request through the budgets, retrying what is transient; the response JSON."""
        import aiohttp

        retries = self.api.max_retries if retries is None else retries
        last = "no attempt"
        for attempt in range(retries + 1):
            delay = None
            async with self.limiter.request(self._expected_tokens(messages, n)) as permit:
                self.http_requests += 1
                try:
                    async with self._client.post(self.url, json=body) as response:
                        status, payload, headers = response.status, await response.read(), dict(response.headers)
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:  # refused, dropped, timed out
                    last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                else:
                    if status == 200:
                        data = json.loads(payload)
                        usage = data.get("usage") or {}
                        used = int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
                        permit.settle(used)
                        self._account(data, messages)
                        return data
                    permit.settle(0)  # rejected requests use no tokens
                    last = self._scrub(error_text(status, payload))
                    kind = status_kind(status)
                    if kind == "refused":
                        raise RequestRefused(last)
                    if kind == "broken":
                        raise EngineFailure(f"{self.url}: {last}")
                    delay = retry_after_s(headers)
                    if kind == "rate_limited":
                        self.rate_limited += 1
                        self.limiter.hold(delay if delay is not None else backoff_s(attempt, self._rng.random()))
                        delay = 0.0  # the hold paces every request, this one included
            if attempt < retries:
                self.retried += 1
                await asyncio.sleep(delay if delay is not None else backoff_s(attempt, self._rng.random()))
        raise EngineFailure(f"{self.url}: {retries + 1} attempts failed (teacher.api.max_retries={self.api.max_retries}); "
                            f"last: {last}")

    def _account(self, data: dict[str, Any], messages: list[dict[str, str]]) -> None:
        usage = data.get("usage") or {}
        self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        self.completion_tokens += int(usage.get("completion_tokens") or 0)
        self.samples += len(data.get("choices") or [])
        self._prompt_chars += sum(len(m.get("content", "")) for m in messages)

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def usage(self) -> dict[str, int]:
        """HTTP requests sent, 429s and retries, and the tokens the server reported."""
        return {"http_requests": self.http_requests, "rate_limited": self.rate_limited, "retried": self.retried,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}

    async def shutdown(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


async def _gather_or_cancel(coros: list) -> list:
    """`asyncio.gather`, except that the first exception cancels the other requests before it propagates."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
