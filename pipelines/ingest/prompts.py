"""Prompt ingestion: read, validate and deduplicate prompts into `PromptRecord`s (data flow step 1).

    report = IngestReport()
    for record in iter_prompts(cfg.prompts, cfg.output.storage, report):
        ...
    print(report.summary()); report.write(cfg.output.storage, out_uri)

Sources are JSONL or Parquet files (or folders of them), local or s3://, or
generated addition problems (`prompts.arithmetic`). Rows stream through
with bounded memory: only the distinct prompt ids seen so far are kept, to
collapse duplicates. Each bad row becomes a `RowError` in the report and is
never yielded; valid rows come out in source order. A source that cannot
work at all (missing file, a mapped column no row has) raises `IngestError`
when `iter_prompts` is called, before anything is read past the first rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

from potstill.pipelines.ingest.report import IngestError, IngestReport, RowError
from potstill.pipelines.ingest.rows import RowConverter
from potstill.pipelines.ingest.sources import RawRow, iter_raw_rows, open_source, peek_columns
from potstill.schemas.generation import ArithmeticPromptsConfig, FieldMapping, PromptsConfig, StorageConfig
from potstill.schemas.prompt import PromptRecord

__all__ = ["IngestError", "IngestReport", "RowError", "iter_prompts"]


def iter_prompts(cfg: PromptsConfig, storage: StorageConfig | None = None,
                 report: IngestReport | None = None) -> Iterator[PromptRecord]:
    """Distinct valid prompts of the source, in order; `report` is filled as the iterator is consumed.

    Raises IngestError right away (not on first `next`) when the source is
    missing or the field mapping matches no column of the source.
    """
    report = report if report is not None else IngestReport()
    if cfg.arithmetic is not None:
        report.source = _arithmetic_name(cfg.arithmetic)
        converter = RowConverter(cfg, FieldMapping(prompt="question", reference="answer"))
        rows: Iterable[RawRow] = _arithmetic_rows(cfg.arithmetic)
    else:
        assert cfg.path is not None  # PromptsConfig allows exactly one of path / arithmetic
        report.source = cfg.path
        converter = RowConverter(cfg)
        source = open_source(cfg.path, cfg.format, storage)
        columns = peek_columns(source)
        if columns is not None:
            where = cfg.path if source.format == "parquet" else f"the first rows of {cfg.path}"
            converter.check_columns(columns, where)
        rows = iter_raw_rows(source, converter.projection(), converter.check_columns)
    return _validated(rows, converter, cfg.limit, report)


def _validated(rows: Iterable[RawRow], converter: RowConverter, limit: int | None,
               report: IngestReport) -> Iterator[PromptRecord]:
    """Convert, report and deduplicate; keeps one entry per distinct prompt (32-byte id -> first row)."""
    first_row: dict[bytes, int] = {}
    for row, data, file in itertools.islice(rows, limit):
        report.rows_read += 1
        result = data if isinstance(data, RowError) else converter.convert(row, data, file)
        if isinstance(result, RowError):
            report.add(result)
            continue
        first = first_row.setdefault(bytes.fromhex(result.prompt_id), row)
        if first != row:
            report.add(RowError(row, "prompt_id", f"duplicate of row {first} (same prompt_id "
                                f"{result.prompt_id[:12]}…); the first occurrence is kept", "duplicate", file))
            continue
        report.valid += 1
        yield result


def _arithmetic_rows(cfg: ArithmeticPromptsConfig) -> Iterator[RawRow]:
    from potstill.pipelines.arithmetic.problems import fresh_problems  # lazy: a sibling stage, imported only when used

    for row, (question, answer) in enumerate(fresh_problems(cfg.count, cfg.digits, cfg.seed)):
        yield row, {"question": question, "answer": answer}, None


def _arithmetic_name(cfg: ArithmeticPromptsConfig) -> str:
    return f"arithmetic(count={cfg.count}, digits={cfg.digits}, seed={cfg.seed})"
