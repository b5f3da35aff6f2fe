"""Turn one parsed source row into a validated `PromptRecord`, or a `RowError` saying why not.

    converter = RowConverter(cfg.prompts)
    converter.check_columns(["question", "answer"], "gsm8k.jsonl")   # IngestError if the mapping matches nothing
    record_or_error = converter.convert(row=0, data={"question": "...", "answer": "72"})

The conversation is the `fields.messages` column (a list of {role, content})
or the `fields.prompt` text wrapped as one user message. `prompt_template`
(a format string over the row's columns, `{prompt}` being the prompt text)
rewrites the prompt text, or the last user message of a chat column.
`system_prompt` is prepended unless the conversation already opens with a
system message (the row's own system message wins). The reference answer
and `fields.keep` columns are kept as strings (27.0 stays "27.0").
"""

from __future__ import annotations

import difflib
import json
import string
from collections.abc import Sequence
from typing import Any

from potstill.pipelines.ingest.report import IngestError, RowError
from potstill.schemas.generation import FieldMapping, PromptsConfig
from potstill.schemas.prompt import PromptRecord

ROLES = ("system", "user", "assistant")


class RowConverter:
    """Validates rows against one field mapping and builds their prompt records."""

    def __init__(self, cfg: PromptsConfig, fields: FieldMapping | None = None):
        self.fields = fields or cfg.fields
        self.system_prompt = cfg.system_prompt
        self.template = cfg.prompt_template
        self.max_chars = cfg.max_prompt_chars
        self.chat = self.fields.messages is not None
        self.text_key = "prompts.fields.messages" if self.chat else "prompts.fields.prompt"
        column = self.fields.messages or self.fields.prompt
        if not column:
            raise IngestError("prompts.fields: neither `prompt` nor `messages` names a column; "
                              "set prompts.fields.prompt to the column with the prompt text "
                              "(or prompts.fields.messages to a chat column)")
        self.column: str = column
        self.template_columns = _template_columns(self.template)

    def required(self) -> list[tuple[str, str]]:
        """(config key, source column) for every column the mapping reads."""
        needed = [(self.text_key, self.column)]
        if self.fields.reference:
            needed.append(("prompts.fields.reference", self.fields.reference))
        if self.fields.max_tokens:
            needed.append(("prompts.fields.max_tokens", self.fields.max_tokens))
        needed += [("prompts.fields.keep", c) for c in self.fields.keep]
        needed += [("prompts.prompt_template", c) for c in self.template_columns if c != "prompt"]
        return needed

    def projection(self) -> list[str]:
        """The distinct source columns to read (Parquet column projection)."""
        return list(dict.fromkeys(column for _, column in self.required()))

    def check_columns(self, columns: Sequence[str], where: str) -> None:
        """Raise IngestError naming the config key, the column and the fix when `columns` lacks a mapped one."""
        for key, column in self.required():
            if column not in columns:
                raise IngestError(f"{key}: column {column!r} is not in {where} (its columns: "
                                  f"{', '.join(columns) or 'none'}){_did_you_mean(column, columns)}; {_fix(key)}")

    def convert(self, row: int, data: dict[str, Any], file: str | None = None) -> PromptRecord | RowError:
        """The row's prompt record, or the first problem found in it."""
        def error(field: str, reason: str, kind: str) -> RowError:
            return RowError(row, field, reason, kind, file)

        if self.column not in data:
            return error(self.column, f"column {self.column!r} is missing from this row (it has: {', '.join(data)})"
                         f"{_did_you_mean(self.column, data)}; add it or fix {self.text_key}", "missing_field")
        messages = self._messages(data[self.column])
        if isinstance(messages, tuple):
            return error(self.column, *messages)
        if self.template:
            last = messages[-1]
            try:
                last["content"] = self.template.format_map({**data, "prompt": last["content"]})
            except KeyError as e:
                name = str(e.args[0])
                return error(name, f"prompts.prompt_template uses {{{name}}}, which this row lacks; add the column "
                             "or remove it from the template", "missing_field")
            except (ValueError, TypeError, IndexError, AttributeError) as e:
                return error(self.column, f"prompts.prompt_template cannot format this row ({e}); fix the template",
                             "template")
        if self.system_prompt and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        length = sum(len(m["content"]) for m in messages)
        if length > self.max_chars:
            return error(self.column, f"conversation is {length} characters, over prompts.max_prompt_chars="
                         f"{self.max_chars}; shorten the row or raise prompts.max_prompt_chars", "too_long")
        for i, m in enumerate(messages):
            if (bad := _surrogate(m["content"])) is not None:
                return error(self.column, f"message {i} has a lone UTF-16 surrogate {bad} (a broken \\u escape), "
                             "which is not valid UTF-8; fix or drop the row", "non_utf8")
        reference = self._reference(data)
        if isinstance(reference, tuple):
            return error(self.fields.reference or "", *reference)
        metadata = {k: _as_text(data[k]) for k in self.fields.keep if data.get(k) is not None}
        for k, v in metadata.items():
            if (bad := _surrogate(v)) is not None:
                return error(k, f"lone UTF-16 surrogate {bad}, not valid UTF-8; fix the value or drop {k!r} from "
                             "prompts.fields.keep", "non_utf8")
        max_tokens = None
        if self.fields.max_tokens:
            value = data.get(self.fields.max_tokens)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                return error(self.fields.max_tokens, f"max_tokens must be a positive integer, got {_short(value)}; fix the "
                             "value or unset prompts.fields.max_tokens", "bad_type")
            max_tokens = value
        return PromptRecord.from_messages(messages, source_row=row, reference=reference, metadata=metadata,
                                          max_tokens=max_tokens)

    def _messages(self, value: Any) -> list[dict[str, str]] | tuple[str, str]:
        """The conversation as fresh dicts, or (reason, kind)."""
        if not self.chat:
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            if value is None or (isinstance(value, str) and not value.strip()):
                return "empty prompt; fill the text in or drop the row", "empty_prompt"
            if not isinstance(value, str):
                return (f"prompt is a {type(value).__name__}, not text; point {self.text_key} at a text column "
                        "(or use prompts.fields.messages for a chat column)", "bad_type")
            return [{"role": "user", "content": value}]
        if value is None or value == []:
            return "empty prompt: no messages; fill the conversation in or drop the row", "empty_prompt"
        if not isinstance(value, list):
            return (f"messages must be a list of {{role, content}} objects, not a {type(value).__name__}; "
                    "store the conversation as a list (a JSON string must be decoded first)", "bad_messages")
        messages = []
        for i, m in enumerate(value):
            if not isinstance(m, dict) or not {"role", "content"} <= m.keys():
                return (f"message {i} is not a {{role, content}} object (got {_short(m)}); write each message as "
                        '{"role": "user", "content": "..."}', "bad_messages")
            role, content = m["role"], m["content"]
            if role not in ROLES:
                return (f"message {i} has unknown role {role!r}{_did_you_mean(str(role), ROLES)}; allowed roles are "
                        "system, user, assistant", "unknown_role")
            if not isinstance(content, str):
                return (f"message {i} content is a {type(content).__name__}, not text; only plain-text content is "
                        "supported", "bad_messages")
            if not content.strip():
                return f"empty prompt: message {i} ({role}) has no content; fill it in or drop the row", "empty_prompt"
            messages.append({"role": role, "content": content})
        if messages[-1]["role"] != "user":
            return (f"last message is from {messages[-1]['role']!r}, not the user; end the conversation with the "
                    "user turn the teacher should answer (drop trailing assistant messages)", "last_not_user")
        return messages

    def _reference(self, data: dict[str, Any]) -> str | None | tuple[str, str]:
        """The reference answer as text, None when not mapped, or (reason, kind)."""
        column = self.fields.reference
        if not column:
            return None
        if column not in data:
            return (f"reference column {column!r} is missing from this row{_did_you_mean(column, data)}; add it or "
                    "unset prompts.fields.reference", "missing_field")
        value = data[column]
        text = None if value is None else _as_text(value)
        if text is None or not text.strip():
            return f"reference {column!r} is empty; fill it in or unset prompts.fields.reference", "empty_reference"
        if (bad := _surrogate(text)) is not None:
            return f"reference has a lone UTF-16 surrogate {bad}, not valid UTF-8; fix or drop the row", "non_utf8"
        return text


def _template_columns(template: str | None) -> list[str]:
    """Column names a format-string template reads; IngestError when it is malformed or positional."""
    if not template:
        return []
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise IngestError(f"prompts.prompt_template: {e}; write literal braces as {{{{ and }}}}") from e
    columns = []
    for name in names:
        base = name.split(".", 1)[0].split("[", 1)[0]
        if not base or base.isdigit():
            raise IngestError(f"prompts.prompt_template: positional field {{{name}}}; name a column instead, "
                              "e.g. {prompt} for the prompt text")
        columns.append(base)
    return list(dict.fromkeys(columns))


def _as_text(value: Any) -> str:
    """A cell as text: strings as is, numbers by str() (27.0 -> "27.0"), lists/dicts as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return str(value)


def _surrogate(text: str) -> str | None:
    """The first lone surrogate (as \\uXXXX) that makes `text` unencodable as UTF-8, else None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"\\u{ord(text[e.start]):04x} at character {e.start}"
    return None


def _did_you_mean(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(name, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fix(key: str) -> str:
    return {
        "prompts.fields.prompt": "set prompts.fields.prompt to the column holding the prompt text "
                                 "(or prompts.fields.messages to a chat column)",
        "prompts.fields.messages": "set prompts.fields.messages to the column holding the conversation "
                                   "(or prompts.fields.prompt to a text column)",
        "prompts.fields.reference": "set prompts.fields.reference to the reference-answer column, or unset it",
        "prompts.fields.keep": "remove it from prompts.fields.keep or fix its name",
        "prompts.fields.max_tokens": "set prompts.fields.max_tokens to the per-prompt budget column, or unset it",
        "prompts.prompt_template": "use {prompt} for the prompt text, or a column the source has",
    }[key]


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
