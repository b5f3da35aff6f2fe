"""Word n-gram decontamination: normalization, n-gram and whole-short-text matches, benchmark files.

    .venv/bin/pytest tests/unit/export/test_decontaminate.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import potstill.pipelines.export.decontaminate as dc
from potstill.pipelines.export.benchmarks import BenchmarkError, load_benchmarks
from potstill.pipelines.export.decontaminate import NgramIndex, normalize, words
from potstill.schemas.export import BenchmarkSource, DecontaminationConfig

AIME = Path("/work/shared/data/aime24.jsonl")
LONG = ("Let $N$ be the greatest four-digit positive integer with the property that whenever one of its digits "
        "is changed to 1, the resulting number is divisible by 7.")


def test_normalization_folds_case_whitespace_punctuation_and_unicode():
    assert normalize("  What IS\t347 +\n589 ?? ") == "what is 347 + 589"
    assert words("347+589") == ["347", "+", "589"]  # symbols are words of their own, spacing or not
    assert normalize("Ｆｉｎｄ “x”, isn’t it…") == "find x isn t it"  # NFKC full-width, curly quotes, ellipsis
    assert normalize("2 + 3") != normalize("2 - 3")


def test_an_8gram_is_found_through_case_spacing_and_punctuation_changes():
    index = NgramIndex(n=8)
    assert index.add(LONG, "aime", 7)
    changed = "  let $n$   be THE greatest four digit positive integer with the PROPERTY ... anything"
    match = index.find("Some preamble. " + changed)
    assert match is not None and (match.benchmark, match.row) == ("aime", 7)
    assert len(match.ngram.split()) == 8
    # 7 shared words in a row are not an 8-gram
    assert index.find("be the greatest four digit positive integer, then stop") is None
    assert index.find("An unrelated question about apples and oranges in a basket of fruit.") is None


def test_short_benchmark_texts_match_whole_and_tiny_ones_are_ignored():
    index = NgramIndex(n=8, min_words=4)
    assert index.add("What is 347 + 589?", "arith", 0)  # 5 words: no 8-gram, matched as a whole
    assert not index.add("Yes.", "arith", 1)
    assert index.find("  WHAT is 347+589 ?") is not None
    assert index.find("what is 347 + 5890") is None
    assert index.find("yes, of course") is None


def test_hash_collisions_never_count_as_a_match(monkeypatch):
    index = NgramIndex(n=3, min_words=3)
    index.add("alpha beta gamma", "b", 0)
    monkeypatch.setattr(dc, "_word_hashes", lambda tokens: np.zeros(len(tokens), dtype=np.uint64))
    index._dirty = True  # every key is now equal: only the word-for-word check can tell them apart
    assert index.find("delta epsilon zeta eta") is None
    assert index.find("x alpha beta gamma y").ngram == "alpha beta gamma"


def test_benchmark_files_jsonl_parquet_messages_and_field_mapping(tmp_path):
    (tmp_path / "math.jsonl").write_text(json.dumps({"problem": LONG, "answer": "5694"}) + "\n"
                                         + json.dumps({"problem": "Short?", "answer": "1"}) + "\n")
    pq.write_table(pa.table({"Question": ["How many primes are there below one hundred in total?"],
                             "chat": [[{"role": "user", "content": "Name every even prime number that exists today"}]]}),
                   tmp_path / "gpqa.parquet")
    cfg = DecontaminationConfig(benchmarks=[BenchmarkSource.parse(str(tmp_path / "math.jsonl")),
                                            BenchmarkSource.parse(f"{tmp_path / 'gpqa.parquet'}:Question,chat")])
    index, reports = load_benchmarks(cfg, None)
    assert [(r.name, r.fields, r.texts, r.skipped_short) for r in reports] == [
        ("math", ["problem"], 1, 1), ("gpqa", ["Question", "chat"], 2, 0)]
    assert index.find("how many primes are there below one hundred").benchmark == "gpqa"
    assert index.find("so: name EVERY even prime number that exists today!") is not None


def test_benchmark_errors_name_the_file_and_the_fix(tmp_path):
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(BenchmarkError, match=r"none of the usual text columns .*it has text.*PATH:COLUMN"):
        load_benchmarks(DecontaminationConfig(benchmarks=[BenchmarkSource(path=str(tmp_path / "b.jsonl"))]), None)
    with pytest.raises(BenchmarkError, match=r"no column \['problem'\] \(it has text\)"):
        load_benchmarks(DecontaminationConfig(benchmarks=[BenchmarkSource.parse(f"{tmp_path / 'b.jsonl'}:problem")]), None)
    with pytest.raises(BenchmarkError, match="no file or folder at"):
        load_benchmarks(DecontaminationConfig(benchmarks=[BenchmarkSource(path=str(tmp_path / "missing.jsonl"))]), None)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"problem": LONG}) + "\n{not json\n")
    with pytest.raises(BenchmarkError, match="row 1: invalid JSON.*half-read benchmark"):
        load_benchmarks(DecontaminationConfig(benchmarks=[BenchmarkSource(path=str(tmp_path / "bad.jsonl"))]), None)


def test_source_spec_parsing_keeps_s3_uris_whole():
    assert BenchmarkSource.parse("s3://bucket/aime.jsonl").model_dump() == {"path": "s3://bucket/aime.jsonl", "fields": [], "name": None}
    assert BenchmarkSource.parse("s3://bucket/gpqa.parquet:Question").fields == ["Question"]
    assert BenchmarkSource.parse("data/math500.jsonl:problem,solution").fields == ["problem", "solution"]
    assert BenchmarkSource(path="x/aime24.jsonl.gz").display_name() == "aime24"


@pytest.mark.skipif(not AIME.is_file(), reason="the real AIME 2024 set lives in the repo's sibling shared/data/")
def test_real_aime_problems_are_caught_reworded_in_spacing_and_case():
    index, reports = load_benchmarks(DecontaminationConfig(benchmarks=[BenchmarkSource(path=str(AIME))]), None)
    problems = [json.loads(line)["problem"] for line in AIME.read_text().splitlines()]
    assert reports[0].texts == len(problems) == 30
    for i, p in enumerate(problems):
        leaked = "Solve this:\n\n" + "  ".join(p.upper().split()) + "\nThink step by step."
        match = index.find(leaked)
        assert match is not None and match.row == i, i
    assert index.find("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.") is None
