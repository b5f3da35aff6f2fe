"""A scripted `TeacherEngine` for unit tests of the pure logic (never used by a real run).

Completions come from a function of (prompt text, sample number), so tests
state exactly what the "teacher" says; integration tests use the real vLLM
engine instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from potstill.pipelines.engines.protocol import Generation, Sample


class ScriptedEngine:
    """Answers each request with `script(prompt_text, k)` for its k-th sample of that prompt."""

    def __init__(self, script: Callable[[str, int], str], *, model_name: str = "scripted", fail_on: str | None = None):
        self.script = script
        self.model_name = model_name
        self.revision = "test"
        self.batch_capacity = None
        self.fail_on = fail_on
        self.drawn: dict[str, int] = {}

    async def start(self) -> None:
        return None

    def encode_chats(self, conversations: list[list[dict[str, str]]]) -> list[list[int] | Exception]:
        return [[ord(c) for c in messages[-1]["content"]] for messages in conversations]

    async def generate(self, prompt_token_ids: list[int], n: int, request_id: str,
                       max_tokens: int | None = None) -> Generation:
        prompt = "".join(chr(i) for i in prompt_token_ids)
        if self.fail_on is not None and self.fail_on in prompt:
            raise ValueError(f"prompt refused: {prompt!r}")
        await asyncio.sleep(0)
        samples = []
        for _ in range(n):
            k = self.drawn.get(prompt, 0)
            self.drawn[prompt] = k + 1
            text = self.script(prompt, k)[: max_tokens or None]
            samples.append(Sample(text, [ord(c) for c in text], "stop"))
        return Generation(prompt_tokens=len(prompt_token_ids), samples=samples)

    async def shutdown(self) -> None:
        return None
