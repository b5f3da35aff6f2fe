"""`potstill export` and `potstill decontaminate`: committed runs -> a chat-format dataset with a card.

    summary = export_runs(ExportConfig(runs=["runs/r1"], out="exports/r1", format="trl"))
    report = decontaminate_runs(["runs/r1"], DecontaminationConfig(benchmarks=[BenchmarkSource(path="aime24.jsonl")]))

An export reads only committed shards (`read_run`), plans every row in one
pass (filters, decontamination, per-prompt choice, shard cut), writes the
shards into a staging folder in a second pass, publishes them and writes the
card last (see `writer`). Nothing here needs Ray, vLLM or torch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from potstill.pipelines.export.benchmarks import load_benchmarks
from potstill.pipelines.export.card import render_card
from potstill.pipelines.export.formats import ExportFormatter
from potstill.pipelines.export.plan import Contamination, ExportError, ExportPlan, describe_empty, plan_export
from potstill.pipelines.export.writer import ExportTarget, write_shards
from potstill.pipelines.output.reader import CommittedRuns, RunInfo, read_run
from potstill.pipelines.output.storage import Storage, scrub
from potstill.schemas.export import (
    DecontaminationConfig, DecontaminationReport, ExportConfig, ExportSummary, RunSummary, TokenStats,
)
from potstill.schemas.generation import StorageConfig

ProgressFn = Callable[[str, int, int], None]


def token_stats(values: np.ndarray) -> TokenStats:
    """Total, mean, percentiles and max of a token count."""
    if len(values) == 0:
        return TokenStats()
    ordered = np.sort(values)

    def q(p: float) -> float:
        return float(ordered[min(len(ordered) - 1, int(p * len(ordered)))])

    return TokenStats(total=int(ordered.sum()), mean=float(ordered.mean()), p50=q(0.5), p90=q(0.9), p99=q(0.99),
                      max=int(ordered[-1]))


def _sampling_of(run: RunInfo, seen: dict[str, set[str]]) -> dict[str, Any] | None:
    if run.config and run.config.get("sampling"):
        return run.config["sampling"]
    values = sorted(seen.get("sampling", ()))
    return json.loads(values[0]) if len(values) == 1 else None


def _one(values: set[str] | None) -> str | None:
    return ", ".join(sorted(values)) if values else None


def run_summaries(runs: CommittedRuns, plan: ExportPlan) -> list[RunSummary]:
    """What the card says about each source run."""
    out = []
    for run in runs.runs:
        seen = plan.provenance.get(run.uri, {})
        out.append(RunSummary(
            run_id=run.run_id, uri=scrub(run.uri), finished=run.finished, config_fingerprint=run.config_fingerprint,
            teacher_model=run.teacher_model or _one(seen.get("teacher_model")),
            teacher_revision=run.teacher_revision or _one(seen.get("teacher_revision")),
            sampling=_sampling_of(run, seen), verifier=_one(seen.get("verifier")),
            shards=sum(1 for s in runs.shards if s.run_uri == run.uri), traces=run.totals.traces,
            verified=run.totals.verified, rejected=run.totals.rejected, accepted_fraction=run.accepted_fraction,
        ))
    return out


def _contamination(cfg: DecontaminationConfig | None, storage: StorageConfig) -> Contamination | None:
    if cfg is None:
        return None
    index, reports = load_benchmarks(cfg, storage)
    return Contamination(cfg, index, reports)


def export_runs(cfg: ExportConfig, on_progress: ProgressFn | None = None) -> ExportSummary:
    """Export the committed rows of `cfg.runs` to `cfg.out` (see the module docstring)."""
    start = time.time()
    target = ExportTarget(Storage(cfg.out, cfg.storage), overwrite=cfg.overwrite)
    target.check()
    runs = read_run(cfg.runs, verified_only=False, storage=cfg.storage, allow_live=cfg.allow_live)
    contamination = _contamination(cfg.decontamination, cfg.storage)
    plan = plan_export(runs, cfg.filters, cfg.reasoning, cfg.shard_bytes, contamination, on_progress)
    if plan.counts.exported == 0:
        raise ExportError(f"no row passed the filters ({describe_empty(plan.counts)}); loosen the filters "
                          "(e.g. --all-rows to keep unverified rows) or check the runs with `potstill inspect`")
    formatter = ExportFormatter(cfg.format, cfg.reasoning, cfg.resolved_metadata())
    file_format = cfg.resolved_file_format()
    if cfg.overwrite:
        target.clean_stale_staging()
    try:
        files, size = write_shards(runs, plan, formatter, target, file_format, on_progress)
    except BaseException:
        target.discard()
        raise
    verified, rejected = plan.judged
    summary = ExportSummary(
        out=scrub(target.storage.uri), format=cfg.format, reasoning=cfg.reasoning, file_format=file_format,
        files=files, rows=plan.counts.exported, prompts=plan.prompts, bytes=size, text_bytes=plan.text_bytes,
        counts=plan.counts, filters=cfg.filters, runs=run_summaries(runs, plan),
        duplicate_shards_skipped=runs.duplicate_shards,
        accepted_fraction=verified / (verified + rejected) if verified + rejected else None,
        prompt_tokens=token_stats(plan.prompt_tokens), completion_tokens=token_stats(plan.completion_tokens),
        decontamination=plan.decontamination, license=cfg.license,
    )
    summary.elapsed_s = round(time.time() - start, 3)
    target.publish(files, render_card(summary, formatter.schema, cfg.pretty_name))
    return summary


def decontaminate_runs(uris: Sequence[str], cfg: DecontaminationConfig, storage: StorageConfig | None = None, *,
                       report_uri: str | None = None, on_progress: ProgressFn | None = None) -> DecontaminationReport:
    """The overlap between every committed row of `uris` and the benchmarks; nothing is modified.

    `report_uri` (a local path or s3:// URI) gets one JSON line per
    overlapping row: run_id, prompt_id, sample_index, where, benchmark, row, n-gram.
    """
    storage = storage or StorageConfig()
    runs = read_run(list(uris), verified_only=False, storage=storage)
    contamination = _contamination(cfg, storage)
    assert contamination is not None
    lines: list[str] = []
    total = len(runs.shards)
    columns = ["run_id", "prompt_id", "sample_index", "messages", "completion"]
    for i, (_, table) in enumerate(runs.iter_tables(columns)):
        if on_progress:
            on_progress("checking", i, total)
        hit = contamination.check(table)
        if report_uri is None or not hit.any():
            continue
        for row in np.nonzero(hit)[0]:
            r = table.slice(int(row), 1).select(["run_id", "prompt_id", "sample_index", "completion"]).to_pylist()[0]
            match = contamination.prompt_match.get(r["prompt_id"])
            where = "prompt"
            if match is None:
                match, where = contamination.index.find(r["completion"]), "trace"
            lines.append(json.dumps({"run_id": r["run_id"], "prompt_id": r["prompt_id"], "sample_index": r["sample_index"],
                                     "where": where, "benchmark": match.benchmark if match else None,
                                     "benchmark_row": match.row if match else None,
                                     "ngram": match.ngram if match else None}, ensure_ascii=False))
    if on_progress:
        on_progress("checking", total, total)
    if report_uri is not None:
        head, _, name = report_uri.rstrip("/").rpartition("/")
        Storage(head or ".", storage).put(name, ("\n".join(lines) + "\n" if lines else "").encode())
    return contamination.report(rows_removed=0)
