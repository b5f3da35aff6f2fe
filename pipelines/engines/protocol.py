"""The `TeacherEngine` protocol every teacher backend implements.

A replica holds one engine. The engine turns a chat conversation into its
own prompt form (token ids through its chat template for vLLM; the messages
themselves for an API, whose server applies the template) and generates `n`
samples for it; many `generate` calls run concurrently so the backend can
batch continuously. Backends: `vllm` (AsyncLLM, production and CPU tests),
`openai` (any OpenAI-compatible endpoint) and `scripted` (a test double for
unit tests of the pure logic).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class Sample:
    """One generated completion."""

    text: str
    token_ids: list[int]
    finish_reason: str
    topk_ids: list[list[int]] | None = None
    topk_logprobs: list[list[float]] | None = None
    completion_tokens: int | None = None
    """Its length in tokens when `token_ids` is unknown (an API that returns no ids: then `token_ids` is empty)."""

    @property
    def num_tokens(self) -> int:
        """Completion length in teacher tokens."""
        return len(self.token_ids) if self.completion_tokens is None else self.completion_tokens


@dataclass
class Generation:
    """All samples generated for one request."""

    prompt_tokens: int
    """The prompt's length in teacher tokens."""
    samples: list[Sample] = field(default_factory=list)
    billed_prompt_tokens: int | None = None
    """Prompt tokens processed (and billed) for these samples when not `prompt_tokens`: an API asked n times
    for n samples reads the prompt n times."""

    @property
    def prompt_tokens_processed(self) -> int:
        return self.prompt_tokens if self.billed_prompt_tokens is None else self.billed_prompt_tokens


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

    def encode_chats(self, conversations: list[list[dict[str, str]]]) -> list[Any | Exception]:
        """Each conversation in the form `generate` takes (vLLM: token ids with the generation prompt appended),
        a unit's at once; a conversation that cannot be encoded gets its exception in its place."""

    async def generate(self, prompt: Any, n: int, request_id: str, max_tokens: int | None = None) -> Generation:
        """`n` samples for one encoded prompt (`max_tokens` overrides the config's); raises `EngineFailure` if the
        engine died (the replica is replaced), any other exception if it refused this prompt (recorded failed)."""

    async def shutdown(self) -> None:
        """Release the model and its memory."""

