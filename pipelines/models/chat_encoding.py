"""Token ids of a chat rendered by its template, where only the template's own control tokens are control tokens.

    texts = [tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in conversations]
    ids = encode_rendered_chats(tokenizer, texts, conversations)      # the teacher's and the student's prompts

A chat template renders a conversation to text with its control tokens
(`<|user|>`, `<|end|>`, `<|im_end|>`, ...) written as text; tokenizing that
text turns every occurrence of a control token's text into the control
token, also one a user typed into a message: `What does <|end|> mean?` would
end the user's turn for the model. Here a conversation whose messages hold
the text of a special token is tokenized in pieces: the template's text with
special tokens parsed, each message's content with them split into plain
text (`split_special_tokens`). Conversations without such text (nearly all)
are tokenized as one batch, exactly as before. A template that changes a
message holding control text so that it cannot be found in the rendering is
refused for that conversation (`ControlTextError`), never encoded unsafely.
Non-special added tokens (e.g. `<think>`) are plain vocabulary, not control
tokens, and stay as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class ControlTextError(ValueError):
    """A message holds a special token's text and the chat template rewrote it, so it cannot be kept as text."""


def control_texts(tokenizer: Any) -> tuple[str, ...]:
    """The text of every special token of `tokenizer` (what the template writes as control tokens)."""
    texts = set(getattr(tokenizer, "all_special_tokens", None) or [])
    for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(token, "special", False):
            texts.add(str(token.content) if hasattr(token, "content") else str(token))
    return tuple(sorted((t for t in texts if t), key=len, reverse=True))


def _contents(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    return [m["content"] for m in messages if isinstance(m.get("content"), str) and m["content"]]


def holds_control_text(messages: Sequence[Mapping[str, Any]], controls: tuple[str, ...]) -> bool:
    return any(c in content for content in _contents(messages) for c in controls)


def _ids(tokenizer: Any, text: str, *, split: bool) -> list[int]:
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=split)["input_ids"])


def encode_pieces(tokenizer: Any, rendered: str, messages: Sequence[Mapping[str, Any]]) -> list[int]:
    """`rendered` tokenized with the template's text parsed and each message's content kept as plain text."""
    ids: list[int] = []
    pos = 0
    for content in _contents(messages):
        at = rendered.find(content, pos)
        if at < 0:
            raise ControlTextError(
                "a message holds the text of a special token and the chat template rewrote that message, so it "
                "cannot be sent as plain text; remove the special-token text from the prompt")
        ids += _ids(tokenizer, rendered[pos:at], split=False) + _ids(tokenizer, content, split=True)
        pos = at + len(content)
    return ids + _ids(tokenizer, rendered[pos:], split=False)


def encode_rendered_chats(tokenizer: Any, rendered: Sequence[str],
                          conversations: Sequence[Sequence[Mapping[str, Any]]]) -> list[list[int] | Exception]:
    """Ids of each rendered conversation (one batch call for all but those holding control text)."""
    controls = control_texts(tokenizer)
    out: list[list[int] | Exception | None] = [None] * len(rendered)
    plain = []
    for i, (text, messages) in enumerate(zip(rendered, conversations)):
        if controls and holds_control_text(messages, controls):
            try:
                out[i] = encode_pieces(tokenizer, text, messages)
            except ControlTextError as exc:
                out[i] = exc
        else:
            plain.append(i)
    if plain:
        batch = tokenizer([rendered[i] for i in plain], add_special_tokens=False)["input_ids"]
        for i, ids in zip(plain, batch):
            out[i] = list(ids)
    return out  # type: ignore[return-value]
