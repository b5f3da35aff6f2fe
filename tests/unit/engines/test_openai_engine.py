"""`OpenAIEngine` against a scripted local HTTP endpoint: the start probe, retries, 429 holds, refusals, the key.

The endpoint here answers what each test scripts (status, headers, body), so
the engine's handling of each answer is pinned; tests/integration/
test_api_teacher.py runs it against a real `vllm serve`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from potstill.pipelines.engines import build_engine
from potstill.pipelines.engines.openai_api import RequestRefused
from potstill.pipelines.engines.openai_engine import PROBE_RETRIES, OpenAIEngine, read_api_key
from potstill.pipelines.engines.protocol import EngineFailure
from potstill.pipelines.engines.rate_limit import Limits
from potstill.schemas.generation import ApiConfig, SamplingConfig, TeacherConfig

KEY = "sk-test-0123456789abcdef"


def completion(n: int, text: str = "<think>2+2</think>4") -> dict:
    return {"choices": [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                        for i in range(n)], "usage": {"prompt_tokens": 11, "completion_tokens": 5 * n}}


class Endpoint:
    """A local HTTP server whose answers a test scripts: `answer(body) -> (status, headers, json)`."""

    def __init__(self, answer):
        self.answer, self.requests, self.lock = answer, [], threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with endpoint.lock:
                    endpoint.requests.append((time.monotonic(), self.path, dict(self.headers), body))
                status, headers, payload = endpoint.answer(body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    made = []

    def make(answer):
        made.append(Endpoint(answer))
        return made[-1]

    yield make
    for e in made:
        e.close()


def _engine(base_url: str, n: int = 2, **api) -> OpenAIEngine:
    teacher = TeacherConfig.model_validate({"engine": "openai", "model": "teacher-x",
                                            "api": {"base_url": base_url, "max_retries": 3, **api}})
    return OpenAIEngine(teacher, SamplingConfig(n=n, max_tokens=32), Limits(max_concurrency=8))


def _run(engine: OpenAIEngine, coro_fn):
    async def main():
        await engine.start()
        try:
            return await coro_fn()
        finally:
            await engine.shutdown()

    return asyncio.run(main())


def test_samples_come_back_and_the_key_goes_only_in_the_authorization_header(endpoint, monkeypatch):
    ep = endpoint(lambda body: (200, {}, completion(body["n"])))
    monkeypatch.setenv("TEACHER_KEY", KEY)
    engine = _engine(ep.base_url, api_key_env="TEACHER_KEY")
    (prompt,) = engine.encode_chats([[{"role": "user", "content": "What is 2 + 2?"}]])
    gen = _run(engine, lambda: engine.generate(prompt, 2, "r0"))
    assert [s.text for s in gen.samples] == ["<think>2+2</think>4"] * 2
    assert gen.prompt_tokens == 11 and gen.samples[0].num_tokens == 5
    _, path, headers, body = ep.requests[-1]
    assert path == "/v1/chat/completions" and headers["Authorization"] == f"Bearer {KEY}"
    assert body["model"] == "teacher-x" and body["messages"] == prompt and body["n"] == 2
    assert len(ep.requests) == 2  # the start probe, then the request
    assert engine.usage()["prompt_tokens"] == 22


def test_without_n_support_each_sample_is_its_own_request(endpoint):
    ep = endpoint(lambda body: (200, {}, completion(1)))  # a server that ignores n
    engine = _engine(ep.base_url, n=3, supports_n=False)
    (prompt,) = engine.encode_chats([[{"role": "user", "content": "q"}]])
    gen = _run(engine, lambda: engine.generate(prompt, 3, "r0"))
    assert len(gen.samples) == 3 and all(body["n"] == 1 for *_, body in ep.requests)
    assert gen.prompt_tokens == 11 and gen.billed_prompt_tokens == 33


def test_a_server_that_ignores_n_fails_the_start_naming_supports_n(endpoint):
    ep = endpoint(lambda body: (200, {}, completion(1)))
    engine = _engine(ep.base_url, n=4)
    with pytest.raises(EngineFailure, match="supports_n: false"):
        _run(engine, lambda: asyncio.sleep(0))


def test_429_holds_for_retry_after_and_5xx_are_retried(endpoint):
    answers = iter([(200, {}, completion(2)),  # probe
                    (429, {"Retry-After": "1"}, {"error": {"message": "slow down"}}),
                    (503, {}, {"error": {"message": "overloaded"}}),
                    (200, {}, completion(2))])
    ep = endpoint(lambda body: next(answers))
    engine = _engine(ep.base_url)
    (prompt,) = engine.encode_chats([[{"role": "user", "content": "q"}]])
    gen = _run(engine, lambda: engine.generate(prompt, 2, "r0"))
    assert len(gen.samples) == 2
    times = [t for t, *_ in ep.requests]
    assert times[2] - times[1] >= 0.95  # the 429's Retry-After was waited out
    assert engine.usage()["rate_limited"] == 1 and engine.usage()["retried"] == 2


def test_a_refused_prompt_is_that_prompts_failure_and_persistent_5xx_break_the_engine(endpoint):
    def answer(body):
        if body["max_tokens"] == 1:
            return 200, {}, completion(body["n"])
        if "long" in body["messages"][0]["content"]:
            return 400, {}, {"error": {"message": "maximum context length is 256 tokens"}}
        return 500, {"Retry-After": "0"}, {"error": {"message": "internal error"}}

    engine = _engine(endpoint(answer).base_url)
    long_prompt, other = engine.encode_chats([[{"role": "user", "content": "long"}], [{"role": "user", "content": "x"}]])

    async def both():
        with pytest.raises(RequestRefused, match="maximum context length"):
            await engine.generate(long_prompt, 2, "r0")
        with pytest.raises(EngineFailure, match=r"4 attempts failed .*HTTP 500: internal error"):
            await engine.generate(other, 2, "r1")

    _run(engine, both)


def test_a_dead_endpoint_fails_the_start_with_its_reason_not_a_hang():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    engine = _engine(f"http://127.0.0.1:{port}/v1")
    with pytest.raises(EngineFailure, match="ClientConnectorError: Cannot connect to host") as info:
        _run(engine, lambda: asyncio.sleep(0))
    assert engine.http_requests == PROBE_RETRIES + 1  # a bounded number of attempts, then the reason
    assert str(info.value).count(engine.url) == 1


def test_a_bad_key_fails_the_start_and_an_echoed_key_is_scrubbed(endpoint, tmp_path):
    ep = endpoint(lambda body: (401, {}, {"error": {"message": f"Incorrect API key provided: {KEY}"}}))
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    engine = _engine(ep.base_url, api_key_file=str(key_file))
    with pytest.raises(EngineFailure) as info:
        _run(engine, lambda: asyncio.sleep(0))
    assert "HTTP 401: Incorrect API key provided: ***" in str(info.value) and KEY not in str(info.value)
    assert len(ep.requests) == 1  # a wrong key is not retried


def test_a_missing_key_names_the_field_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ValueError, match="api_key_env: the environment variable NO_SUCH_KEY_VAR is not set"):
        read_api_key(ApiConfig(base_url="http://h/v1", api_key_env="NO_SUCH_KEY_VAR"))
    with pytest.raises(ValueError, match="api_key_file: cannot read"):
        read_api_key(ApiConfig(base_url="http://h/v1", api_key_file=str(tmp_path / "absent")))
    assert read_api_key(ApiConfig(base_url="http://h/v1")) is None


def test_build_engine_gives_each_replica_its_share_of_the_budgets():
    teacher = TeacherConfig.model_validate({"engine": "openai", "model": "m", "api": {
        "base_url": "http://h/v1", "max_concurrency": 64, "requests_per_minute": 600}})
    engine = build_engine(teacher, SamplingConfig(n=4), replicas_sharing=4)
    assert engine.limits == Limits(max_concurrency=16, requests_per_minute=150)
    assert engine.batch_capacity == 64  # 16 requests of n=4 sequences
