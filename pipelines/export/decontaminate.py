"""Word n-gram overlap between training text and benchmark text (the open-r1 / s1 decontamination).

    index = NgramIndex(n=8, min_words=4)
    index.add("Find the number of ordered pairs ...", benchmark="aime24", row=3)
    match = index.find("... find the NUMBER of ordered   pairs ...")   # -> Match(benchmark, row, ngram) or None

Both sides are normalized the same way: Unicode NFKC, case folding, every
punctuation character (Unicode category P*) replaced by a space, whitespace
collapsed. Symbols such as `+`, `=` or `$` are kept, each as a word of its
own, so `347+589` and `347 + 589` match while `2 + 3` and `2 - 3` stay
different. A benchmark text with at least `n` words contributes
all its n-grams; a shorter one (e.g. "What is 347 + 589?") is matched whole,
as one contiguous word sequence, since it has no n-gram at all (open-r1's
8-gram check never catches it). Texts under `min_words` words are ignored.

Lookups hash each word once and roll the hashes into n-gram keys with numpy;
a key hit is then confirmed word for word, so a hash collision can never
remove a row.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np

_BASE = np.uint64(1_000_003)


class _PunctuationToSpace(dict):
    """`str.translate` table built as characters are met: punctuation -> space, anything else -> itself."""

    def __missing__(self, codepoint: int) -> str | int:
        value: str | int = " " if unicodedata.category(chr(codepoint)).startswith("P") else codepoint
        self[codepoint] = value
        return value


_PUNCT = _PunctuationToSpace()
_WORD = re.compile(r"\w+|[^\w\s]")


def normalize(text: str) -> str:
    """NFKC, case-folded, punctuation to spaces, symbols split off as words, whitespace collapsed."""
    return " ".join(words(text))


def words(text: str) -> list[str]:
    """The normalized words of `text`: runs of letters/digits, and each remaining symbol (`+`, `=`, `$`) alone."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold().translate(_PUNCT))


@dataclass(frozen=True)
class Match:
    """The first overlap found in a text."""

    benchmark: str
    row: int
    ngram: str


def _word_hashes(tokens: list[str]) -> np.ndarray:
    return np.array(list(map(hash, tokens)), dtype=np.int64).view(np.uint64)


def _rolling_keys(hashes: np.ndarray, n: int) -> np.ndarray:
    """Key of every window of `n` consecutive words (polynomial hash, wrapping mod 2**64)."""
    count = len(hashes) - n + 1
    keys = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            keys = keys * _BASE + hashes[j:j + count]
    return keys


class NgramIndex:
    """Benchmark n-grams (and whole short texts), looked up by training texts."""

    def __init__(self, n: int = 8, min_words: int = 4):
        if n < 1 or min_words < 1:
            raise ValueError(f"n={n} and min_words={min_words} must both be at least 1")
        self.n = n
        self.min_words = min(min_words, n)
        # window length -> {word tuple -> (benchmark, row)}; length n holds the n-grams, shorter ones whole texts
        self._grams: dict[int, dict[tuple[str, ...], tuple[str, int]]] = {}
        self._keys: dict[int, np.ndarray] = {}
        self._dirty = False

    def __len__(self) -> int:
        return sum(len(g) for g in self._grams.values())

    def add(self, text: str, benchmark: str, row: int) -> bool:
        """Index one benchmark text; False when it is too short to index (under min_words words)."""
        tokens = words(text)
        if len(tokens) < self.min_words:
            return False
        length = min(len(tokens), self.n)
        grams = self._grams.setdefault(length, {})
        for i in range(len(tokens) - length + 1):
            grams.setdefault(tuple(tokens[i:i + length]), (benchmark, row))
        self._dirty = True
        return True

    def _freeze(self) -> None:
        if not self._dirty:
            return
        self._keys = {}
        for length, grams in self._grams.items():
            keys = [_rolling_keys(_word_hashes(list(g)), length)[0] for g in grams]
            self._keys[length] = np.unique(np.array(keys, dtype=np.uint64))
        self._dirty = False

    def find(self, text: str) -> Match | None:
        """The first benchmark n-gram (or whole short benchmark text) that `text` contains, else None."""
        return self.find_words(words(text)) if self._grams else None

    def find_words(self, tokens: list[str]) -> Match | None:
        """`find` for text already split by `words`."""
        if not self._grams:
            return None
        self._freeze()
        hashes = _word_hashes(tokens)
        for length in sorted(self._grams, reverse=True):
            if len(tokens) < length:
                continue
            keys = _rolling_keys(hashes, length)
            table = self._keys[length]
            at = np.searchsorted(table, keys)
            hits = np.nonzero(table[np.minimum(at, len(table) - 1)] == keys)[0]
            grams = self._grams[length]
            for i in hits:
                gram = tuple(tokens[i:i + length])
                owner = grams.get(gram)
                if owner is not None:  # confirmed word for word: a hash collision never counts
                    return Match(owner[0], owner[1], " ".join(gram))
        return None
