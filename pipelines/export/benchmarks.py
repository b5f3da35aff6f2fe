"""Load the benchmark sets a user names into one n-gram index.

    index, reports = load_benchmarks(cfg.decontamination, storage)   # -> NgramIndex, [BenchmarkReport]

A benchmark is a JSONL or Parquet file (or folder of them), local or s3://,
read with the same readers as prompt files (`pipelines/ingest/sources.py`).
Its text columns are named by `BenchmarkSource.fields`, or guessed from the
usual names (MATH/AIME `problem`, GSM8K `question`, GPQA `Question`); a
column may hold a string or a chat `messages` list (every content is
indexed). A row that cannot be parsed, or a named column that is missing,
is an error naming the file, the row and the fix: a benchmark silently half
read would let contamination through.
"""

from __future__ import annotations

from typing import Any

from potstill.pipelines.export.decontaminate import NgramIndex
from potstill.pipelines.ingest.report import IngestError, RowError
from potstill.pipelines.ingest.sources import iter_raw_rows, open_source, peek_columns
from potstill.pipelines.output.storage import scrub
from potstill.schemas.export import BENCHMARK_FIELD_GUESSES, BenchmarkReport, BenchmarkSource, DecontaminationConfig
from potstill.schemas.generation import StorageConfig


class BenchmarkError(ValueError):
    """A benchmark source cannot be read as asked (the message names the source and the fix)."""


def _texts(value: Any) -> list[str]:
    """The strings a benchmark cell holds: itself, or each message's content."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        out: list[str] = []
        for item in value:
            out.extend(_texts(item.get("content") if isinstance(item, dict) else item))
        return out
    return [str(value)]


def _resolve_fields(source: BenchmarkSource, columns: list[str] | None, where: str) -> list[str]:
    if source.fields:
        if columns is not None:
            missing = [f for f in source.fields if f not in columns]
            if missing:
                raise BenchmarkError(f"benchmark {where}: no column {missing} (it has {', '.join(columns)}); name the "
                                     f"text column as PATH:COLUMN")
        return list(source.fields)
    found = [f for f in BENCHMARK_FIELD_GUESSES if columns and f in columns]
    if not found:
        has = ", ".join(columns) if columns else "no readable row"
        raise BenchmarkError(f"benchmark {where}: none of the usual text columns ({', '.join(BENCHMARK_FIELD_GUESSES)}) "
                             f"is there (it has {has}); name the text column as PATH:COLUMN")
    return [found[0]]


def load_benchmark(source: BenchmarkSource, index: NgramIndex, storage: StorageConfig | None) -> BenchmarkReport:
    """Add every text of one benchmark to `index`; returns what was indexed."""
    where = scrub(source.path)
    try:
        opened = open_source(source.path, "auto", storage)
        fields = _resolve_fields(source, peek_columns(opened), where)

        def check(columns: list[str], uri: str) -> None:
            missing = [f for f in fields if f not in columns]
            if missing:
                raise BenchmarkError(f"benchmark {scrub(uri)}: no column {missing}; name the text column as PATH:COLUMN")

        name = source.display_name()
        texts = skipped = 0
        for row, data, file in iter_raw_rows(opened, fields, check):
            if isinstance(data, RowError):
                raise BenchmarkError(f"benchmark {where}{f' ({file})' if file else ''}, row {row}: {data.reason}; fix "
                                     "the file (a half-read benchmark would let contamination through)")
            for column in fields:
                for text in _texts(data.get(column)):
                    if index.add(text, name, row):
                        texts += 1
                    elif text.strip():
                        skipped += 1
    except IngestError as exc:
        message = str(exc).removeprefix("prompts.path: ").removeprefix("prompts.format: ")
        raise BenchmarkError(f"benchmark {where}: {message.replace('prompts.format', 'the file extension')}") from None
    if texts == 0:
        raise BenchmarkError(f"benchmark {where}: no text of at least {index.min_words} words in column(s) {fields}; "
                             "check the column mapping (PATH:COLUMN)")
    return BenchmarkReport(name=name, source=where, fields=fields, texts=texts, skipped_short=skipped)


def load_benchmarks(cfg: DecontaminationConfig, storage: StorageConfig | None) -> tuple[NgramIndex, list[BenchmarkReport]]:
    """One index over every benchmark of `cfg`, and a report per benchmark."""
    names = [b.display_name() for b in cfg.benchmarks]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise BenchmarkError(f"benchmarks {clashes} share a name; give each its own file name or `name`")
    index = NgramIndex(cfg.ngram, cfg.min_words)
    return index, [load_benchmark(b, index, storage) for b in cfg.benchmarks]
