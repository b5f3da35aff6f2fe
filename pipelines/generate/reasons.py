"""Failure reasons as records keep them: credentials redacted, one line, bounded length.

    FailedPrompt(prompt_id=..., reason=failure_reason(f"{type(exc).__name__}: {exc}"), attempts=3)

A reason lands in commits, the manifest and `failures.jsonl`; an engine's
error text can hold a token from its environment or run to thousands of
characters (a CUDA traceback), so every recorded reason passes through here.
"""

from __future__ import annotations

from potstill.pipelines.observe.redact import redact

REASON_CHARS = 500


def failure_reason(text: str) -> str:
    """`text` with credentials redacted and whitespace collapsed, cut to REASON_CHARS characters."""
    text = " ".join(redact(text).split())
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 1] + "…"
