"""The `TeacherEngine` protocol every teacher backend implements.

A replica holds one engine. The engine turns a chat conversation into token
ids (its own chat template) and generates `n` samples for it; many
`generate` calls run concurrently so the backend can batch continuously.
Backends: `vllm` (AsyncLLM, production and CPU tests) and `scripted` (a test
double for unit tests of the pure logic).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass
class Sample:
    """One generated completion."""

    text: str
    token_ids: list[int]
    finish_reason: str
    topk_ids: list[list[int]] | None = None
    topk_logprobs: list[list[float]] | None = None


@dataclass
class Generation:
    """All samples generated for one request."""

    prompt_tokens: int
    samples: list[Sample] = field(default_factory=list)


class EngineFailure(RuntimeError):
    """The engine is dead or broken: the replica must be replaced, its work requeued."""


@runtime_checkable
class TeacherEngine(Protocol):
    """What a replica needs from a teacher backend."""

    model_name: str
    revision: str | None
    batch_capacity: int | None
    """Sequences the engine runs at once once started (vLLM's max_num_seqs); None: no fixed limit."""

    async def start(self) -> None:
        """Load the model; raise on failure."""

    def encode_chats(self, conversations: list[list[dict[str, str]]]) -> list[list[int] | Exception]:
        """Token ids of each conversation with the generation prompt appended (a unit's at once); a conversation
        that cannot be encoded gets its exception in its place, the others their ids."""

    async def generate(self, prompt_token_ids: list[int], n: int, request_id: str,
                       max_tokens: int | None = None) -> Generation:
        """`n` samples for one prompt (`max_tokens` overrides the config's); raises `EngineFailure` if the engine died."""

    async def shutdown(self) -> None:
        """Release the model and its memory."""

