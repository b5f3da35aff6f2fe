"""The trace record: one teacher sample for one prompt, one row of a shard.

`TraceRecord` is the single definition of a shard row; `trace_arrow_schema()`
derives the Parquet/Arrow schema from it (compact dtypes are declared per field
with `arrow=`), so the two can never drift apart.

Trace layout versions (`schema_version` of every row and the
`potstill.schema_version` Parquet metadata say which one a shard holds):
1 stored the teacher's top-k log-probabilities as float16 (~6 bytes an entry
before compression); 2 stores them as uint8 codes sorted per token
(`pipelines/output/topk_codec.py`) and writes the top-k ids with Parquet's
BYTE_STREAM_SPLIT encoding. Readers load both (`trace_arrow_schema(1)` is the
old layout).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from potstill.schemas.base import StrictModel
from potstill.schemas.prompt import Message

TRACE_SCHEMA_VERSION = 2
"""Layout version of trace shards written now (see module docstring)."""

FinishReason = Literal["stop", "length", "abort", "error"]


def _arrow(kind: str) -> dict[str, Any]:
    return {"arrow": kind}


class TraceRecord(StrictModel):
    """One sampled completion of a prompt, with its verification and provenance."""

    schema_version: int = Field(default=TRACE_SCHEMA_VERSION, description="Layout version of this record (2: compact top-k log-probabilities; the writer stamps the version it writes).", json_schema_extra=_arrow("int16"))
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
    topk_ids: list[list[int]] | None = Field(default=None, description="Per completion token, the teacher's top-k token ids (on disk sorted by log-probability, highest first; BYTE_STREAM_SPLIT-encoded).", json_schema_extra=_arrow("list<list<int32>>"))
    topk_logprobs: list[list[float]] | None = Field(default=None, description="Per completion token, the top-k log-probabilities; on disk uint8 codes, each the difference of round(-logprob * 16) to the previous entry's (decode: potstill.pipelines.output.topk_codec).", json_schema_extra=_arrow("list<list<uint8>>"))
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
        "list<list<uint8>>": pa.list_(pa.list_(pa.uint8())),
        "messages": pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])),
    }
    return simple[kind]


_V1_KINDS = {"topk_logprobs": "list<list<float16>>"}
"""Where layout version 1 differs from the current one."""


def _layout(version: int) -> list[tuple[str, str]]:
    if version not in (1, TRACE_SCHEMA_VERSION):
        raise ValueError(f"trace schema version {version} is unknown; this potstill reads versions 1 and {TRACE_SCHEMA_VERSION}")
    kinds = [(n, (i.json_schema_extra or {})["arrow"]) for n, i in TraceRecord.model_fields.items()]
    return [(n, _V1_KINDS.get(n, k)) for n, k in kinds] if version == 1 else kinds


def trace_arrow_schema(version: int = TRACE_SCHEMA_VERSION):
    """The Arrow schema of a shard of layout `version`, derived from `TraceRecord` (field order kept)."""
    import pyarrow as pa

    fields = []
    for name, kind in _layout(version):
        info = TraceRecord.model_fields[name]
        fields.append(pa.field(name, _arrow_type(kind), nullable=not info.is_required() and info.default is None))
    return pa.schema(fields, metadata={b"potstill.schema_version": str(version).encode()})


def trace_schema_hash(version: int = TRACE_SCHEMA_VERSION) -> str:
    """A short stable hash of a trace layout (default: the current one), recorded in commits and manifests."""
    return hashlib.sha256(json.dumps([version, _layout(version)]).encode()).hexdigest()[:16]


def readable_schema_hashes() -> set[str]:
    """The layouts readers load (every version so far)."""
    return {trace_schema_hash(v) for v in (1, TRACE_SCHEMA_VERSION)}


def trace_read_schema():
    """The Arrow schema readers hand out: the current layout with `topk_logprobs` as float32 log-probabilities
    (decoded from the stored codes; layout-1 float16 values widened)."""
    import pyarrow as pa

    schema = trace_arrow_schema()
    i = schema.get_field_index("topk_logprobs")
    return schema.set(i, schema.field(i).with_type(pa.list_(pa.list_(pa.float32()))))
