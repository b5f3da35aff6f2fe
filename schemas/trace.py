"""The trace record: one teacher sample for one prompt, one row of a shard.

`TraceRecord` is the single definition of a shard row; `trace_arrow_schema()`
derives the Parquet/Arrow schema from it (compact dtypes are declared per field
with `arrow=`), so the two can never drift apart.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from potstill.schemas.base import SCHEMA_VERSION, StrictModel
from potstill.schemas.prompt import Message

FinishReason = Literal["stop", "length", "abort", "error"]


def _arrow(kind: str) -> dict[str, Any]:
    return {"arrow": kind}


class TraceRecord(StrictModel):
    """One sampled completion of a prompt, with its verification and provenance."""

    schema_version: int = Field(default=SCHEMA_VERSION, description="Layout version of this record.", json_schema_extra=_arrow("int16"))
    run_id: str = Field(description="The generation run that produced this row.", json_schema_extra=_arrow("string"))
    shard_id: str = Field(description="Deterministic id of the work unit / shard holding this row.", json_schema_extra=_arrow("string"))
    prompt_id: str = Field(description="sha256 of the canonical prompt messages.", json_schema_extra=_arrow("string"))
    sample_index: int = Field(description="0-based index of this sample among the prompt's kept samples.", json_schema_extra=_arrow("int32"))
    attempt: int = Field(default=0, description="0-based sampling round that produced it (rejection sampling re-asks).", json_schema_extra=_arrow("int16"))
    messages: list[Message] = Field(description="The prompt, TRL conversational format.", json_schema_extra=_arrow("messages"))
    reference: str | None = Field(default=None, description="Reference answer the verifier compared against.", json_schema_extra=_arrow("string"))
    completion: str = Field(description="Raw completion text as the teacher produced it.", json_schema_extra=_arrow("string"))
    reasoning: str | None = Field(default=None, description="Text inside <think>...</think>, or None if absent.", json_schema_extra=_arrow("string"))
    answer: str = Field(description="The completion after the reasoning block (the final answer text).", json_schema_extra=_arrow("string"))
    finish_reason: FinishReason = Field(description="Why generation stopped: stop, length, abort or error.", json_schema_extra=_arrow("string"))
    prompt_tokens: int = Field(description="Prompt length in teacher tokens (after the chat template).", json_schema_extra=_arrow("int32"))
    completion_tokens: int = Field(description="Completion length in teacher tokens.", json_schema_extra=_arrow("int32"))
    completion_token_ids: list[int] | None = Field(default=None, description="Teacher token ids of the completion (aligns with top-k logprobs).", json_schema_extra=_arrow("list<int32>"))
    topk_ids: list[list[int]] | None = Field(default=None, description="Per completion token, the teacher's top-k token ids.", json_schema_extra=_arrow("list<list<int32>>"))
    topk_logprobs: list[list[float]] | None = Field(default=None, description="Per completion token, the top-k log-probabilities (float16 on disk).", json_schema_extra=_arrow("list<list<float16>>"))
    verified: bool | None = Field(default=None, description="Verifier verdict; None when no verifier ran.", json_schema_extra=_arrow("bool"))
    verifier: str | None = Field(default=None, description="Name of the verifier that judged this row.", json_schema_extra=_arrow("string"))
    teacher_model: str = Field(description="Teacher model name or path.", json_schema_extra=_arrow("string"))
    teacher_revision: str | None = Field(default=None, description="Teacher revision (commit, tag or content hash).", json_schema_extra=_arrow("string"))
    sampling: str = Field(description="Sampling parameters used, as canonical JSON.", json_schema_extra=_arrow("string"))
    created_at: datetime = Field(description="UTC time the sample finished.", json_schema_extra=_arrow("timestamp"))


def _arrow_type(kind: str):
    import pyarrow as pa

    simple = {
        "string": pa.string(), "bool": pa.bool_(), "int16": pa.int16(), "int32": pa.int32(),
        "int64": pa.int64(), "timestamp": pa.timestamp("ms", tz="UTC"),
        "list<int32>": pa.list_(pa.int32()),
        "list<list<int32>>": pa.list_(pa.list_(pa.int32())),
        "list<list<float16>>": pa.list_(pa.list_(pa.float16())),
        "messages": pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])),
    }
    return simple[kind]


def trace_arrow_schema():
    """The Arrow schema of a shard, derived from `TraceRecord` (field order kept)."""
    import pyarrow as pa

    fields = []
    for name, info in TraceRecord.model_fields.items():
        kind = (info.json_schema_extra or {})["arrow"]
        fields.append(pa.field(name, _arrow_type(kind), nullable=not info.is_required() and info.default is None))
    return pa.schema(fields, metadata={b"potstill.schema_version": str(SCHEMA_VERSION).encode()})


def trace_schema_hash() -> str:
    """A short stable hash of the trace layout, recorded in commits and manifests."""
    layout = [(n, (i.json_schema_extra or {})["arrow"]) for n, i in TraceRecord.model_fields.items()]
    return hashlib.sha256(json.dumps([SCHEMA_VERSION, layout]).encode()).hexdigest()[:16]
