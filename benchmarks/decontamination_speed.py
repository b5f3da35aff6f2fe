"""Decontamination lookup speed: potstill's NgramIndex against open-r1's lookup, on the same texts, in one run.
Prints one JSON object.

    .venv/bin/python benchmarks/decontamination_speed.py [--traces 2000] [--words 1500] [--benchmark-texts 500]

- `speedup_vs_joined_ngram_set`: seconds open-r1's method takes (each text's word 8-grams joined into strings
  and looked up in a set of the benchmark's joined 8-grams: scripts/decontaminate.py in huggingface/open-r1)
  divided by the seconds `NgramIndex.find_words` takes (word hashes rolled into 8-gram keys with numpy, a sorted-key
  lookup, hits confirmed word for word), over the same synthetic traces, both after the same normalization.
  Goal >= 1.3.
- `agree`: both methods flag exactly the same traces (some traces have a benchmark passage planted in them).

The texts are synthetic (words drawn from a fixed vocabulary with a seed), so the run needs no data set.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from potstill.pipelines.export.decontaminate import NgramIndex, words  # noqa: E402

N = 8


def synthetic(rng: random.Random, vocab: list[str], length: int) -> str:
    return " ".join(rng.choice(vocab) for _ in range(length))


def joined_ngrams(tokens: list[str], n: int) -> list[str]:
    return [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=int, default=2000, help="Training texts to check.")
    parser.add_argument("--words", type=int, default=1500, help="Words per training text.")
    parser.add_argument("--benchmark-texts", type=int, default=500, help="Benchmark texts indexed (~60 words each).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    vocab = [f"w{i}" for i in range(20_000)] + list("+-=$()")
    bench = [synthetic(rng, vocab, 60) for _ in range(args.benchmark_texts)]
    traces = [synthetic(rng, vocab, args.words) for _ in range(args.traces)]
    for i in range(0, len(traces), 50):  # plant a benchmark passage in every 50th trace
        traces[i] += " " + " ".join(bench[i % len(bench)].split()[10:30])

    index = NgramIndex(n=N, min_words=N)
    for row, text in enumerate(bench):
        index.add(text, "bench", row)
    reference = {g for text in bench for g in joined_ngrams(words(text), N)}
    tokenized = [words(t) for t in traces]  # both sides normalize alike; time only the lookups

    index.find("warm up the frozen keys " * 3)  # builds the sorted key arrays once
    start = time.perf_counter()
    ours = [index.find_words(t) is not None for t in tokenized]
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    theirs = [any(g in reference for g in joined_ngrams(t, N)) for t in tokenized]
    theirs_s = time.perf_counter() - start

    print(json.dumps({
        "speedup_vs_joined_ngram_set": round(theirs_s / ours_s, 2),
        "ngram_index_s": round(ours_s, 3), "joined_ngram_set_s": round(theirs_s, 3),
        "agree": ours == theirs, "flagged": sum(ours), "traces": len(traces), "words_per_trace": args.words, "n": N,
    }))


if __name__ == "__main__":
    main()
