"""Trace rows -> token ids and shifted labels with the student's chat template.

    tok = TraceTokenizer(student_tokenizer, use_teacher_ids=True, topk_width=20)
    doc = tok(row)          # row: a TraceRecord dict (or `rows_from_arrow(table, 20)[i]`)
    doc.input_ids, doc.labels, doc.topk_ids, doc.topk_logprobs

The prompt is rendered with the student's chat template (generation prompt
added) and masked out of the loss, so training is completion-only. Labels are
already shifted: `labels[t]` is the token that follows position `t`, so packed
documents never predict across a boundary and the loss needs no shift.

When the student shares the teacher's tokenizer and the row carries
`completion_token_ids`, those ids are used as the completion, so the stored
teacher top-k (one row per completion token) lines up with the labels token by
token; otherwise the completion text is re-tokenized and there is no top-k.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from potstill.pipelines.models.chat_encoding import encode_rendered_chats

if TYPE_CHECKING:
    import pyarrow as pa

IGNORE_INDEX = -100
"""Label of positions that carry no loss (prompt, padding, last token)."""

_SENTINEL = "POTSTILL_COMPLETION_SENTINEL_7F3A"


@dataclass(frozen=True)
class TokenizedTrace:
    """One document: `input_ids[t]` predicts `labels[t]`; top-k rows align with the labels."""

    input_ids: np.ndarray
    """int32 [n]."""
    labels: np.ndarray
    """int32 [n]; IGNORE_INDEX where there is no loss."""
    topk_ids: np.ndarray | None = None
    """int32 [n, k] teacher top-k ids of the distribution over `labels[t]`; -1 where there is none."""
    topk_logprobs: np.ndarray | None = None
    """float16 [n, k] teacher log-probabilities of `topk_ids` (0 where the id is -1)."""

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def assistant_end_text(tokenizer: Any) -> str:
    """What the chat template writes after an assistant reply, up to and including the EOS token.

    Found by rendering a probe conversation whose reply is a sentinel; e.g.
    `<|end|>` for the arithmetic teacher, `<|im_end|>` for ChatML. Falls back to
    the EOS token when the template transforms the reply beyond recognition.
    """
    probe = [{"role": "user", "content": "1"}, {"role": "assistant", "content": _SENTINEL}]
    rendered = tokenizer.apply_chat_template(probe, tokenize=False)
    eos = tokenizer.eos_token or ""
    tail = rendered.split(_SENTINEL, 1)[1] if _SENTINEL in rendered else eos
    if eos and eos in tail:
        tail = tail[: tail.index(eos) + len(eos)]
    return tail


class TraceTokenizer:
    """Turns trace rows into `TokenizedTrace` documents with one student tokenizer."""

    def __init__(self, tokenizer: Any, use_teacher_ids: bool, topk_width: int = 0):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"student tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} has no chat template; "
                "use a tokenizer whose tokenizer_config.json (or chat_template.jinja) defines one"
            )
        self.tokenizer = tokenizer
        self.use_teacher_ids = use_teacher_ids
        self.topk_width = topk_width
        self.end_ids: list[int] = self._encode(assistant_end_text(tokenizer))
        self.stop_ids = {i for i in (tokenizer.eos_token_id, self.end_ids[-1] if self.end_ids else None) if i is not None}

    def _encode(self, text: str, *, as_text: bool = False) -> list[int]:
        """Ids of `text`; `as_text`: special-token text in it stays plain text (a completion, a message)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=as_text))

    def prompt_ids(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """The prompt as the student sees it at inference: chat template plus generation prompt; special-token
        text typed into a message stays text (`chat_encoding`), as it did for the teacher."""
        plain = [{"role": m["role"], "content": m["content"]} for m in messages]
        rendered = self.tokenizer.apply_chat_template(plain, add_generation_prompt=True, tokenize=False)
        (ids,) = encode_rendered_chats(self.tokenizer, [rendered], [plain])
        if isinstance(ids, Exception):
            raise ids
        return ids

    def __call__(self, row: Mapping[str, Any]) -> TokenizedTrace:
        prompt = self.prompt_ids(row["messages"])
        if not prompt:
            raise ValueError(f"trace {_name(row)}: the chat template rendered an empty prompt; check the student's chat template")
        stopped = row["finish_reason"] == "stop"
        teacher_ids = row.get("completion_token_ids")
        topk = None
        if self.use_teacher_ids and teacher_ids is not None and len(teacher_ids) > 0:
            completion = [int(i) for i in teacher_ids]
            topk = self._topk(row, len(completion))
            if stopped and completion[-1] not in self.stop_ids:
                completion += self.end_ids
        else:
            completion = self._encode(row["completion"], as_text=True) + (self.end_ids if stopped else [])
        seq = np.asarray(prompt + completion, dtype=np.int32)
        input_ids, labels = seq[:-1].copy(), seq[1:].copy()
        labels[: len(prompt) - 1] = IGNORE_INDEX
        if topk is None:
            return TokenizedTrace(input_ids, labels)
        ids, lps = topk
        k = self.topk_width
        topk_ids = np.full((len(input_ids), k), -1, dtype=np.int32)
        topk_lps = np.zeros((len(input_ids), k), dtype=np.float16)
        start = len(prompt) - 1  # position predicting the first completion token
        topk_ids[start : start + len(ids)] = ids
        topk_lps[start : start + len(ids)] = lps
        return TokenizedTrace(input_ids, labels, topk_ids, topk_lps)

    def _topk(self, row: Mapping[str, Any], n: int) -> tuple[np.ndarray, np.ndarray] | None:
        ids, lps = row.get("topk_ids"), row.get("topk_logprobs")
        if self.topk_width == 0 or ids is None or lps is None:
            return None
        if not isinstance(ids, np.ndarray):
            ids, lps = dense_topk(ids, lps, self.topk_width)
        if len(ids) != n:
            raise ValueError(
                f"trace {_name(row)}: {n} completion_token_ids but {len(ids)} top-k rows; the shard is inconsistent, "
                "regenerate it or train with loss.kd_weight: 0"
            )
        return ids, lps


def dense_topk(ids: Sequence[Sequence[int]], logprobs: Sequence[Sequence[float]], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Ragged per-token top-k lists -> int32/float16 [n, width] arrays padded with id -1 (extra entries cut)."""
    out_ids = np.full((len(ids), width), -1, dtype=np.int32)
    out_lps = np.zeros((len(ids), width), dtype=np.float16)
    for t, (row_ids, row_lps) in enumerate(zip(ids, logprobs)):
        m = min(len(row_ids), width)
        out_ids[t, :m] = row_ids[:m]
        out_lps[t, :m] = row_lps[:m]
    return out_ids, out_lps


def rows_from_arrow(table: "pa.Table", topk_width: int) -> list[dict[str, Any]]:
    """Rows of a trace table as dicts, with token ids and top-k as numpy arrays (no per-float Python objects)."""
    columns = set(table.column_names)
    plain = [c for c in ("prompt_id", "sample_index", "messages", "completion", "finish_reason") if c in columns]
    rows = table.select(plain).to_pylist()
    if "completion_token_ids" in columns:
        for row, ids in zip(rows, _ragged(table.column("completion_token_ids"))):
            row["completion_token_ids"] = ids
    if topk_width and {"topk_ids", "topk_logprobs"} <= columns:
        from potstill.pipelines.output.topk_codec import is_compact

        ids = _ragged_topk(table.column("topk_ids"), topk_width, np.int32, -1)
        compact = is_compact(table.schema.field("topk_logprobs").type)  # layout 2: uint8 codes; 1: float16
        lps = _ragged_topk(table.column("topk_logprobs"), topk_width, np.float16, 0, decode=compact)
        for row, i, lp in zip(rows, ids, lps):
            row["topk_ids"], row["topk_logprobs"] = i, lp
    return rows


def _ragged(column: "pa.ChunkedArray | pa.Array") -> list[np.ndarray | None]:
    """list<int> column -> one numpy array per row (None for a null row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    values = arr.flatten().to_numpy(zero_copy_only=False)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    return [values[bounds[i] : bounds[i + 1]] if valid[i] else None for i in range(len(arr))]


def _ragged_topk(column: "pa.ChunkedArray | pa.Array", width: int, dtype: Any, fill: Any,
                 decode: bool = False) -> list[np.ndarray | None]:
    """list<list<x>> column -> one dense [tokens, width] array per row, padded with `fill` (None for a null row);
    `decode`: the values are compact log-probability codes (`topk_codec`), decoded first."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    tokens_per_row = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    inner = arr.flatten()
    k_per_token = pc.fill_null(pc.list_value_length(inner), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    values = inner.flatten().to_numpy(zero_copy_only=False)
    if decode:
        from potstill.pipelines.output.topk_codec import decode_codes

        values = decode_codes(values, k_per_token)
    dense = np.full((len(inner), width), fill, dtype=dtype)
    token_of_value = np.repeat(np.arange(len(inner)), k_per_token)
    rank = np.arange(len(values)) - np.repeat(np.cumsum(k_per_token) - k_per_token, k_per_token)
    keep = rank < width
    dense[token_of_value[keep], rank[keep]] = values[keep]
    bounds = np.concatenate([[0], np.cumsum(tokens_per_row)])
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    return [dense[bounds[i] : bounds[i + 1]] if valid[i] else None for i in range(len(arr))]


def _name(row: Mapping[str, Any]) -> str:
    return f"{row.get('prompt_id', '?')}/{row.get('sample_index', '?')}"
