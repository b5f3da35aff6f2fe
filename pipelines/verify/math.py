"""Math answer equivalence through math-verify (sympy), safe to call from any thread.

    .venv/bin/python -c "from potstill.pipelines.verify.math import math_equal; print(math_equal('\\\\boxed{\\\\frac{1}{2}}', '0.5'))"

Both sides go through the same extraction, so a reference may be a bare
number (`18`, `27.0`, `1,000`), a bare LaTeX expression (`\\frac{1}{2}`,
`(1, 2]`), or a whole solution ending in GSM8K's `#### 18` or holding a
`\\boxed{...}`; an answer may be any of those, or prose whose last number
or boxed expression is the answer.

math-verify's default timeouts use `signal.alarm`, which raises outside the
main thread (Ray actor methods and thread pools run verifiers off it). Both
timeouts are therefore disabled (`parsing_timeout=None`,
`timeout_seconds=None`) everywhere, so a verdict never depends on which
thread computed it; parse work is bounded by judging only the last
`MAX_ANSWER_CHARS` characters of the text instead.

math-verify and sympy are imported on the first check, not at import time.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

MAX_ANSWER_CHARS = 8_000
"""Only this many trailing characters of an answer or reference are parsed (final answers sit at the end)."""

BARE_MATH_MAX_CHARS = 200
"""Texts at most this long with no prose and no math delimiters are read as one LaTeX expression."""

_GSM8K_MARK = "####"
_PROSE_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")  # a word that is not a LaTeX command
# Words that are LaTeX, not prose: a \text{...} answer (`\text{east}`), an environment's name (`pmatrix`).
_LATEX_WORDS = re.compile(r"\\(?:text[a-z]*|math[a-z]*|mbox|operatorname|begin|end)\s*\{[^{}]*\}")
_DELIMITERS = ("$", "\\(", "\\[", "\\boxed")


@lru_cache(maxsize=1)
def _math_verify() -> Any:
    """Import math-verify once; silence its one-time warning that we turned its timeouts off on purpose."""
    import math_verify
    import math_verify.grader
    import math_verify.parser

    math_verify.parser.TIMEOUT_WARNING_SHOWN = True
    math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    return math_verify


@lru_cache(maxsize=1)
def _extraction_config() -> tuple[Any, ...]:
    """Boxed answers first, then other LaTeX, then plain expressions (math-verify's advice for predictions)."""
    mv = _math_verify()
    return (mv.LatexExtractionConfig(boxed_match_priority=0), mv.ExprExtractionConfig())


def _final_segment(text: str) -> str:
    """The part of `text` that holds the final answer: after GSM8K's `####`, else its tail."""
    text = text.replace("\\$", "")  # an escaped dollar is a currency sign, not a math delimiter
    if _GSM8K_MARK in text:
        tail = text.rsplit(_GSM8K_MARK, 1)[1].strip()
        return tail.splitlines()[0].strip() if tail else ""
    return text.strip()[-MAX_ANSWER_CHARS:]


def _is_short_bare(text: str) -> bool:
    return len(text) <= BARE_MATH_MAX_CHARS and not any(d in text for d in _DELIMITERS)


def _is_bare_math(text: str) -> bool:
    """True for short delimiter-less math like `\\sqrt{2}/2`, `(1, 2]`, `1,000`, `\\text{east}` or a
    `pmatrix` (no prose words outside LaTeX's own)."""
    return _is_short_bare(text) and _PROSE_WORD.search(_LATEX_WORDS.sub(" ", text)) is None


def _has_math(parsed: list[Any]) -> bool:
    """Whether math-verify produced at least one sympy object (not only its string fallback)."""
    return any(not isinstance(p, str) for p in parsed)


def parse_final_answer(text: str) -> list[Any]:
    """The parsed final answer of `text` (math-verify objects; empty when none is found)."""
    mv = _math_verify()
    segment = _final_segment(text)
    if not segment:
        return []
    config = _extraction_config()
    if _is_bare_math(segment):
        # Read as one LaTeX expression: plain extraction would turn `2\sqrt{3}` into 2 and `(1, 2]` into 2.
        parsed = mv.parse(f"${segment}$", extraction_config=config, parsing_timeout=None)
        if _has_math(parsed):
            return parsed
    parsed = mv.parse(segment, extraction_config=config, parsing_timeout=None)
    if not parsed and _is_short_bare(segment):
        # A short answer in words (`Monday`, `east`): what math-verify makes of it as LaTeX, as it would of a gold.
        parsed = mv.parse(f"${segment}$", extraction_config=config, parsing_timeout=None)
    return parsed


def math_equal(answer: str, reference: str) -> bool:
    """Whether `answer` (the text after `</think>`) states the same mathematical answer as `reference`."""
    gold = parse_final_answer(str(reference))
    if not gold:
        return False
    predicted = parse_final_answer(answer)
    if not predicted:
        return False
    return bool(_math_verify().verify(gold, predicted, timeout_seconds=None))
