"""Pass 1 of an export: decide every row that goes out, and how the output shards are cut, before writing.

    plan = plan_export(runs, cfg, index, benchmark_reports, on_progress)
    plan.keep[i]          # row indices of committed shard i to export, in order
    plan.output_shard     # per exported row, its output shard (0..plan.num_shards-1)

Reads each committed shard once, without the large top-k columns: the row
filters, decontamination (prompts once per prompt id, traces row by row)
and the per-prompt choice need every candidate before anything is written,
and the shard count (the `-of-000NN` in the names) must be known before the
first shard is named. Shards are cut by exported text bytes, as `datasets`
sizes shards by their uncompressed size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from potstill.pipelines.export.decontaminate import Match, NgramIndex
from potstill.pipelines.export.filters import FILTER_COLUMNS, best_per_prompt, row_steps, verdict_rank
from potstill.pipelines.output.reader import CommittedRuns
from potstill.schemas.export import (
    BenchmarkReport, ContaminationExample, DecontaminationConfig, DecontaminationReport, ExportFilters, FilterCounts,
)

ProgressFn = Callable[[str, int, int], None]
"""on_progress(phase, done, total)."""

MAX_EXAMPLES = 20
ROW_OVERHEAD_BYTES = 64
"""Added to each row's text bytes for roles, keys and metadata when sizing shards."""
PROVENANCE_COLUMNS = ["teacher_model", "teacher_revision", "sampling", "verifier"]


class ExportError(ValueError):
    """The export cannot be made as asked (the message names the option and the fix)."""


@dataclass
class Contamination:
    """Decontamination over all committed rows; `None` index: nothing to check."""

    cfg: DecontaminationConfig
    index: NgramIndex
    reports: list[BenchmarkReport]
    prompt_match: dict[str, Match | None] = field(default_factory=dict)
    rows_checked: int = 0
    rows_matched: int = 0
    examples: list[ContaminationExample] = field(default_factory=list)

    def _note(self, prompt_id: str, where: str, match: Match) -> None:
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(ContaminationExample(prompt_id=prompt_id, where=where, benchmark=match.benchmark,
                                                      benchmark_row=match.row, ngram=match.ngram))

    def check(self, table: pa.Table) -> np.ndarray:
        """Mask of the rows of `table` (prompt_id, messages, completion) that overlap a benchmark."""
        n = table.num_rows
        hit = np.zeros(n, dtype=bool)
        prompt_ids = table.column("prompt_id").to_pylist()
        by_name = {r.name: r for r in self.reports}
        if self.cfg.scope in ("prompts", "both"):
            messages = table.column("messages").to_pylist()
            for i, pid in enumerate(prompt_ids):
                if pid not in self.prompt_match:
                    match = next((m for m in (self.index.find(msg["content"]) for msg in messages[i]) if m), None)
                    self.prompt_match[pid] = match
                    if match is not None:
                        by_name[match.benchmark].prompts_matched += 1
                        self._note(pid, "prompt", match)
                hit[i] = self.prompt_match[pid] is not None
        if self.cfg.scope in ("traces", "both"):
            for i, text in enumerate(table.column("completion").to_pylist()):
                if hit[i]:
                    continue
                match = self.index.find(text)
                if match is not None:
                    hit[i] = True
                    by_name[match.benchmark].traces_matched += 1
                    self._note(prompt_ids[i], "trace", match)
        self.rows_checked += n
        self.rows_matched += int(hit.sum())
        return hit

    def report(self, rows_removed: int) -> DecontaminationReport:
        return DecontaminationReport(
            ngram=self.cfg.ngram, scope=self.cfg.scope, benchmarks=self.reports, rows_checked=self.rows_checked,
            prompts_matched=sum(m is not None for m in self.prompt_match.values()), rows_matched=self.rows_matched,
            rows_removed=rows_removed, examples=self.examples,
        )


@dataclass
class ExportPlan:
    """Everything pass 2 needs, and the numbers the card reports."""

    keep: list[np.ndarray]  # per committed shard: row indices to export, ascending
    output_shard: np.ndarray  # per exported row (in shard, row order): its output shard
    num_shards: int
    counts: FilterCounts
    prompts: int
    text_bytes: int
    prompt_tokens: np.ndarray
    completion_tokens: np.ndarray
    judged: tuple[int, int]  # (verified, rejected) over every row read
    provenance: dict[str, dict[str, set[str]]]  # run uri -> column -> distinct values
    decontamination: DecontaminationReport | None = None


PASS1_COLUMNS = ["prompt_id", "sample_index", "messages", "completion", "reasoning", "answer", *FILTER_COLUMNS,
                 *PROVENANCE_COLUMNS]


def _text_bytes(table: pa.Table, reasoning: str) -> np.ndarray:
    """UTF-8 bytes of what a row exports: prompt contents plus the assistant turn."""
    messages = table.column("messages").combine_chunks()
    contents = pc.binary_length(pc.struct_field(pc.list_flatten(messages), "content")).to_numpy(zero_copy_only=False)
    parents = pc.list_parent_indices(messages).to_numpy(zero_copy_only=False)
    prompt = np.bincount(parents, weights=np.nan_to_num(contents.astype(np.float64)), minlength=table.num_rows)

    def lengths(name: str) -> np.ndarray:
        return np.nan_to_num(pc.binary_length(table.column(name)).to_numpy(zero_copy_only=False).astype(np.float64))

    reply = lengths("completion") if reasoning == "think" else lengths("answer")
    if reasoning == "field":
        reply = reply + lengths("reasoning")
    return (prompt + reply).astype(np.int64) + ROW_OVERHEAD_BYTES


def cut_shards(row_bytes: np.ndarray, shard_bytes: int) -> tuple[np.ndarray, int]:
    """Output shard of each row, in order: a shard closes once it holds `shard_bytes` (so none is empty)."""
    if len(row_bytes) == 0:
        return np.zeros(0, dtype=np.int64), 0
    starts = np.cumsum(row_bytes) - row_bytes
    raw = starts // shard_bytes
    _, dense = np.unique(raw, return_inverse=True)
    return dense.astype(np.int64), int(dense.max()) + 1


def plan_export(runs: CommittedRuns, filters: ExportFilters, reasoning: str, shard_bytes: int,
                contamination: Contamination | None = None, on_progress: ProgressFn | None = None) -> ExportPlan:
    """Pass 1 (see the module docstring). `runs` must be read with verified_only=False: filters are applied here."""
    if runs.row_filter.columns:
        raise ValueError("plan_export needs every committed row: read the runs with verified_only=False")
    counts = FilterCounts()
    candidates: dict[str, list[np.ndarray]] = {k: [] for k in ("shard", "row", "prompt", "verdict", "tokens", "sample",
                                                                "bytes", "prompt_tokens")}
    prompt_codes: dict[str, int] = {}
    provenance: dict[str, dict[str, set[str]]] = {}
    judged = [0, 0]
    columns = PASS1_COLUMNS
    total = len(runs.shards)
    for i, (shard, table) in enumerate(runs.iter_tables(columns)):
        if on_progress:
            on_progress("selecting rows", i, total)
        n = table.num_rows
        counts.rows_read += n
        seen = provenance.setdefault(shard.run_uri, {c: set() for c in PROVENANCE_COLUMNS})
        for c in PROVENANCE_COLUMNS:
            seen[c].update(v for v in pc.unique(table.column(c)).to_pylist() if v is not None)
        verified_list = table.column("verified").to_pylist()
        judged[0] += sum(v is True for v in verified_list)
        judged[1] += sum(v is False for v in verified_list)
        steps = row_steps(table, filters)
        dirty = contamination.check(table) if contamination else np.zeros(n, dtype=bool)
        counts.unverified += int((~steps.verified).sum())
        passed = steps.verified
        counts.finish_reason += int((passed & ~steps.finish_reason).sum())
        passed = passed & steps.finish_reason
        counts.token_length += int((passed & ~steps.token_length).sum())
        passed = passed & steps.token_length
        counts.decontaminated += int((passed & dirty).sum())
        passed = passed & ~dirty
        rows = np.nonzero(passed)[0]
        if len(rows) == 0:
            continue
        sub = table.take(pa.array(rows))
        pids = sub.column("prompt_id").to_pylist()
        candidates["shard"].append(np.full(len(rows), i, dtype=np.int64))
        candidates["row"].append(rows.astype(np.int64))
        candidates["prompt"].append(np.array([prompt_codes.setdefault(p, len(prompt_codes)) for p in pids], dtype=np.int64))
        candidates["verdict"].append(verdict_rank(sub.column("verified").to_pylist()))
        candidates["tokens"].append(sub.column("completion_tokens").to_numpy(zero_copy_only=False).astype(np.int64))
        candidates["prompt_tokens"].append(sub.column("prompt_tokens").to_numpy(zero_copy_only=False).astype(np.int64))
        candidates["sample"].append(sub.column("sample_index").to_numpy(zero_copy_only=False).astype(np.int64))
        candidates["bytes"].append(_text_bytes(sub, reasoning))
    if on_progress:
        on_progress("selecting rows", total, total)
    cand = {k: (np.concatenate(v) if v else np.zeros(0, dtype=np.int64)) for k, v in candidates.items()}
    chosen = np.ones(len(cand["shard"]), dtype=bool)
    if filters.per_prompt is not None:
        chosen = best_per_prompt(cand["prompt"], cand["verdict"], cand["tokens"], cand["sample"],
                                 filters.per_prompt, list(filters.best_by))
        counts.per_prompt = int((~chosen).sum())
    kept = {k: v[chosen] for k, v in cand.items()}
    counts.exported = int(chosen.sum())
    keep = [kept["row"][kept["shard"] == i] for i in range(total)]
    output_shard, num_shards = cut_shards(kept["bytes"], shard_bytes)
    report = contamination.report(counts.decontaminated) if contamination else None
    return ExportPlan(
        keep=keep, output_shard=output_shard, num_shards=num_shards, counts=counts,
        prompts=len(np.unique(kept["prompt"])), text_bytes=int(kept["bytes"].sum()),
        prompt_tokens=kept["prompt_tokens"], completion_tokens=kept["tokens"], judged=(judged[0], judged[1]),
        provenance=provenance, decontamination=report,
    )


def describe_empty(counts: FilterCounts) -> str:
    """Why nothing passed, step by step, for the error message."""
    steps: dict[str, Any] = counts.model_dump()
    parts = [f"{k.replace('_', ' ')} {v}" for k, v in steps.items() if k not in ("rows_read", "exported") and v]
    return f"{counts.rows_read} rows read; removed: {', '.join(parts) if parts else 'none'}"
