"""The prompt record: one validated, deduplicated prompt, as sent to a teacher."""

from __future__ import annotations

import hashlib
from json.encoder import encode_basestring  # json.dumps' own (C) string encoder for ensure_ascii=False
from typing import Literal

from pydantic import Field

from potstill.schemas.base import SCHEMA_VERSION, StrictModel

Role = Literal["system", "user", "assistant"]


class Message(StrictModel):
    """One chat message in TRL's conversational format."""

    role: Role = Field(description="Who speaks: system, user or assistant.")
    content: str = Field(description="The message text (valid UTF-8).")


def prompt_id_of(messages: list[Message] | list[dict]) -> str:
    """sha256 of the canonical JSON of the messages: the prompt's identity.

    Canonical means sorted keys, no whitespace, UTF-8 (ensure_ascii=False), so
    the same conversation always hashes the same whatever file it came from.
    """
    return hashlib.sha256(_canonical_json(messages).encode("utf-8")).hexdigest()


def _canonical_json(messages: list[Message] | list[dict]) -> str:
    """`json.dumps([{role, content}, ...], sort_keys=True, separators=(",", ":"), ensure_ascii=False)`, written
    directly with the string encoder json.dumps itself uses: the same text at a fraction of the cost (ingestion
    hashes every prompt of a run on each pass over its source)."""
    parts = []
    for m in messages:
        role, content = (m.role, m.content) if isinstance(m, Message) else (m["role"], m["content"])
        parts.append(f'{{"content":{encode_basestring(content)},"role":{encode_basestring(role)}}}')
    return "[" + ",".join(parts) + "]"


class PromptRecord(StrictModel):
    """A prompt that passed validation and is ready to be planned into a work unit."""

    schema_version: int = Field(default=SCHEMA_VERSION, description="Layout version of this record.")
    prompt_id: str = Field(description="sha256 hex of the canonical JSON of `messages`.")
    messages: list[Message] = Field(description="The conversation sent to the teacher (no assistant reply at the end).")
    reference: str | None = Field(default=None, description="Reference answer used by verifiers, if the source has one.")
    source_row: int = Field(description="0-based row number in the prompt source (first occurrence).")
    max_tokens: int | None = Field(default=None, gt=0, description="Per-prompt completion budget; None uses sampling.max_tokens.")
    metadata: dict[str, str] = Field(default_factory=dict, description="Extra source columns kept verbatim (as strings).")

    @classmethod
    def from_messages(cls, messages: list[Message] | list[dict], *, source_row: int, reference: str | None = None,
                      metadata: dict[str, str] | None = None, max_tokens: int | None = None) -> "PromptRecord":
        """Build a record, computing `prompt_id` from the messages (`Message`s or {role, content} dicts)."""
        return cls(prompt_id=prompt_id_of(messages), messages=messages, reference=reference,
                   source_row=source_row, metadata=metadata or {}, max_tokens=max_tokens)
