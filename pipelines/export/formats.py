"""Trace rows -> the chat formats downstream trainers read (TRL, prompt-completion, ShareGPT, OpenAI).

    fmt = ExportFormatter("trl", reasoning="think", metadata=True)
    table = fmt.to_table(trace_rows)          # Arrow table with fmt.schema
    fmt.to_jsonl_lines(trace_rows)             # the same rows as JSON lines

Every format carries the whole conversation: the prompt's messages (system
and user turns as the run recorded them) and the teacher's reply as the
assistant turn. Where the reasoning goes (`reasoning`):
- `think`: the assistant content is the teacher's completion itself, its
  `<think>...</think>` block included (a completion whose chat template
  opened the block in the prompt gets the opening tag back);
- `field`: the content is the final answer and the reasoning sits in the
  assistant message's `reasoning_content` (what Qwen3/DeepSeek-style chat
  templates and TRL read); other messages carry `reasoning_content: null`
  so every message has one Arrow type;
- `drop`: the content is the final answer only.

Formats (TRL names, https://huggingface.co/docs/trl/dataset_formats):
`trl` = conversational language modeling (`messages`), `prompt-completion`
= conversational prompt-completion (`prompt` = the prompt turns,
`completion` = the assistant turn; TRL then trains on the completion only),
`sharegpt` = `conversations` of `{from: system|human|gpt, value}`
(axolotl, LLaMA-Factory, FastChat), `openai` = `{messages}` lines for chat
fine-tuning APIs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa

from potstill.pipelines.generate.reasoning import THINK_CLOSE, THINK_OPEN

METADATA_COLUMNS: dict[str, pa.DataType] = {
    "run_id": pa.string(), "prompt_id": pa.string(), "sample_index": pa.int32(), "reference": pa.string(),
    "verified": pa.bool_(), "finish_reason": pa.string(), "prompt_tokens": pa.int32(), "completion_tokens": pa.int32(),
}
"""Provenance columns added when `metadata` is on (trace columns of the same name)."""

SOURCE_COLUMNS = ["messages", "completion", "reasoning", "answer"]
"""Trace columns every format reads."""

_SHAREGPT_FROM = {"system": "system", "user": "human", "assistant": "gpt"}


def assistant_turn(completion: str, reasoning: str | None, answer: str, mode: str) -> dict[str, Any]:
    """The assistant message for one trace (see the module docstring for the modes)."""
    if mode == "think":
        content = completion
        if reasoning is not None and THINK_CLOSE in completion and THINK_OPEN not in completion.split(THINK_CLOSE, 1)[0]:
            content = THINK_OPEN + ("" if completion.startswith("\n") else "\n") + completion
        return {"role": "assistant", "content": content}
    if mode == "field":
        return {"role": "assistant", "content": answer, "reasoning_content": reasoning}
    if mode == "drop":
        return {"role": "assistant", "content": answer}
    raise ValueError(f"reasoning mode {mode!r} is not one of think, field, drop")


class ExportFormatter:
    """Builds one format's rows from trace rows (dicts with SOURCE_COLUMNS and, with metadata, METADATA_COLUMNS)."""

    def __init__(self, fmt: str, reasoning: str = "think", metadata: bool = True):
        if fmt not in ("trl", "prompt-completion", "sharegpt", "openai"):
            raise ValueError(f"format {fmt!r} is not one of trl, prompt-completion, sharegpt, openai")
        if fmt == "sharegpt" and reasoning == "field":
            raise ValueError("format sharegpt has no reasoning field; use reasoning think or drop")
        self.format = fmt
        self.reasoning = reasoning
        self.metadata = metadata

    @property
    def source_columns(self) -> list[str]:
        return SOURCE_COLUMNS + (list(METADATA_COLUMNS) if self.metadata else [])

    @property
    def message_type(self) -> pa.DataType:
        fields = [("role", pa.string()), ("content", pa.string())]
        if self.reasoning == "field":
            fields.append(("reasoning_content", pa.string()))
        return pa.struct(fields)

    @property
    def schema(self) -> pa.Schema:
        messages = pa.list_(self.message_type)
        if self.format in ("trl", "openai"):
            fields = [pa.field("messages", messages)]
        elif self.format == "prompt-completion":
            fields = [pa.field("prompt", messages), pa.field("completion", messages)]
        else:
            fields = [pa.field("conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())])))]
        if self.metadata:
            fields += [pa.field(name, kind) for name, kind in METADATA_COLUMNS.items()]
        return pa.schema(fields)

    def _prompt_turns(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        turns = [{"role": m["role"], "content": m["content"]} for m in messages]
        if self.reasoning == "field":
            for t in turns:
                t["reasoning_content"] = None
        return turns

    def row(self, trace: dict[str, Any]) -> dict[str, Any]:
        """One exported row (a plain dict) from one trace row."""
        prompt = self._prompt_turns(trace["messages"])
        reply = assistant_turn(trace["completion"], trace["reasoning"], trace["answer"], self.reasoning)
        if self.format in ("trl", "openai"):
            out: dict[str, Any] = {"messages": [*prompt, reply]}
        elif self.format == "prompt-completion":
            out = {"prompt": prompt, "completion": [reply]}
        else:
            out = {"conversations": [{"from": _SHAREGPT_FROM[t["role"]], "value": t["content"]} for t in [*prompt, reply]]}
        if self.metadata:
            out.update({name: trace[name] for name in METADATA_COLUMNS})
        return out

    def rows(self, traces: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        return (self.row(t) for t in traces)

    def to_table(self, traces: Iterable[dict[str, Any]]) -> pa.Table:
        """Exported rows as an Arrow table with `schema`."""
        return pa.Table.from_pylist(list(self.rows(traces)), schema=self.schema)

    def to_jsonl(self, traces: Iterable[dict[str, Any]]) -> bytes:
        """Exported rows as JSON lines (UTF-8, one object per line, keys in schema order)."""
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows(traces)).encode()
