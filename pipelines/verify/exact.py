"""Normalized exact match of a final answer against a reference.

    .venv/bin/python -c "from potstill.pipelines.verify.exact import exact_match; print(exact_match(' Paris. ', 'Paris'))"

Normalization: strip, collapse runs of whitespace, drop one trailing period.
With `numeric=True` (the default) two texts that both read as plain numbers
compare by value, so `27.0` equals `27` and `1,000` equals `1000`. Case is
kept: use method `callable` for looser rules.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_WHITESPACE = re.compile(r"\s+")
_NUMBER = re.compile(r"[+-]?(\d{1,3}(,\d{3})+|\d+)(\.\d*)?|[+-]?\.\d+")


def normalize(text: str) -> str:
    """Strip, collapse whitespace to single spaces, and drop a trailing period."""
    text = _WHITESPACE.sub(" ", text).strip()
    if text.endswith("."):
        text = text[:-1].rstrip()
    return text


def as_number(text: str) -> Decimal | None:
    """The value of a plain number (`27`, `-3.50`, `1,000`), or None for anything else."""
    if not _NUMBER.fullmatch(text):
        return None
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None


def exact_match(answer: str, reference: str, *, numeric: bool = True) -> bool:
    """Whether the normalized `answer` equals the normalized `reference` (by value for plain numbers)."""
    a, r = normalize(answer), normalize(str(reference))
    if a == r:
        return bool(a)
    if numeric:
        a_num, r_num = as_number(a), as_number(r)
        return a_num is not None and r_num is not None and a_num == r_num
    return False
