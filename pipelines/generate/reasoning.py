"""The one `<think>` split: a completion's reasoning and its final answer.

    split_reasoning("<think>\\n7+9=16 ...\\n</think>\\n936") -> ("7+9=16 ...", "936")

Reasoning models (DeepSeek-R1 and its distills, s1, OpenThoughts) wrap their
chain of thought in `<think>...</think>`; some chat templates open the block
in the prompt, so a completion may hold only the closing tag. The unit runner
(trace rows), `potstill.verify` (the answer it checks), the exports and the
arithmetic teacher's builder all split here.
"""

from __future__ import annotations

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def split_reasoning(completion: str) -> tuple[str | None, str]:
    """(reasoning, answer); reasoning is None when the completion has no think block.

    An unclosed `<think>` (the sample hit max_tokens mid-thought) yields the
    partial reasoning and an empty answer.
    """
    close = completion.find(THINK_CLOSE)
    if close == -1:
        open_at = completion.find(THINK_OPEN)
        if open_at == -1:
            return None, completion.strip()
        return completion[open_at + len(THINK_OPEN):].strip(), ""
    open_at = completion.rfind(THINK_OPEN, 0, close)
    start = open_at + len(THINK_OPEN) if open_at != -1 else 0
    return completion[start:close].strip(), completion[close + len(THINK_CLOSE):].strip()


def has_one_think_block(completion: str) -> bool:
    """Whether the completion opens with a `<think>` block that is closed exactly once (a well-formed trace)."""
    text = completion.lstrip()
    return text.startswith(THINK_OPEN) and text.count(THINK_OPEN) == 1 and text.count(THINK_CLOSE) == 1
