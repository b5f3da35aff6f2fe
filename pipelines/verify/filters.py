"""Cheap sample filters applied before any answer check: length, finish_reason, reasoning present.

    .venv/bin/python -c "from potstill.pipelines.verify.filters import failed_filter; from potstill.schemas.generation import VerifyConfig; print(failed_filter(VerifyConfig(), finish_reason='length', completion_tokens=9, has_reasoning=False))"
"""

from __future__ import annotations

from potstill.schemas.generation import VerifyConfig


def failed_filter(
    cfg: VerifyConfig, *, finish_reason: str, completion_tokens: int, has_reasoning: bool
) -> str | None:
    """Why the sample fails the configured filters (a short reason), or None when it passes them all."""
    if cfg.require_stop and finish_reason != "stop":
        return f"finish_reason={finish_reason!r}, not 'stop' (verify.require_stop)"
    if cfg.max_completion_tokens is not None and completion_tokens > cfg.max_completion_tokens:
        return f"{completion_tokens} completion tokens > verify.max_completion_tokens={cfg.max_completion_tokens}"
    if cfg.require_reasoning and not has_reasoning:
        return "no <think>...</think> reasoning (verify.require_reasoning)"
    return None
