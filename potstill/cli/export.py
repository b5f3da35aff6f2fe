"""`potstill export RUN_URI... --format trl --out DIR`: committed traces -> a Hugging Face-style dataset with a card."""

from __future__ import annotations

import re
from typing import Any, Optional

import typer

from potstill.cli.common import EndpointOption, console, fail, print_json, reserve_stdout_for_json

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
          "tb": 10**12, "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30, "gib": 2**30, "ti": 2**40,
          "tib": 2**40}


def parse_size(text: str) -> int:
    """`256MB`, `1GiB`, `500000` -> bytes; ValueError naming the accepted forms otherwise."""
    m = _SIZE.match(text)
    unit = (m.group(2) or "").lower() if m else None
    if not m or unit not in _UNITS:
        raise ValueError(f"--shard-size {text!r} is not a size; write e.g. 256MB, 1GiB or a byte count")
    return int(float(m.group(1)) * _UNITS[unit])


class PhaseBar:
    """A rich progress bar over export phases (selecting rows, writing shards), counted in committed shards."""

    def __init__(self, disable: bool):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("shards"), TimeElapsedColumn(), console=console, disable=disable)
        self.task = self.progress.add_task("reading commits", total=None)

    def __enter__(self) -> "PhaseBar":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, phase: str, done: int, total: int) -> None:
        self.progress.update(self.task, description=phase, completed=done, total=total)


def summary_lines(s: dict[str, Any]) -> list[str]:
    """The human summary of an `ExportSummary`."""
    c = s["counts"]
    removed = ", ".join(f"{k.replace('_', ' ')} {c[k]}" for k in
                        ("unverified", "finish_reason", "token_length", "decontaminated", "per_prompt") if c[k])
    lines = [
        f"exported {s['rows']:,} rows ({s['prompts']:,} prompts) from {len(s['runs'])} run(s) as {s['format']} "
        f"(reasoning: {s['reasoning']}) in {s['elapsed_s']:.1f} s ({s['rows'] / max(s['elapsed_s'], 1e-9):,.0f} rows/s)",
        f"rows read {c['rows_read']:,} · removed: {removed or 'none'}",
        f"completion tokens mean {s['completion_tokens']['mean'] or 0:.1f} · total {s['completion_tokens']['total']:,}"
        f" · accepted fraction {'n/a' if s['accepted_fraction'] is None else format(s['accepted_fraction'], '.1%')}",
    ]
    d = s.get("decontamination")
    if d:
        lines.append(f"decontamination ({d['ngram']}-grams, {d['scope']}): {d['prompts_matched']} prompts / "
                     f"{d['rows_matched']} rows overlap {', '.join(b['name'] for b in d['benchmarks'])}; "
                     f"{d['rows_removed']} rows removed")
    lines.append(f"output: {s['out']} ({len(s['files'])} {s['file_format']} shard(s), {s['bytes']:,} bytes, README.md card)")
    return lines


def export(
    runs: list[str] = typer.Argument(..., help="Generation run output roots (local or s3://); read as one dataset."),
    out: str = typer.Option(..., "--out", help="Export folder or s3:// prefix."),
    format: str = typer.Option(..., "--format", help="trl | prompt-completion | sharegpt | openai."),
    reasoning: str = typer.Option("think", "--reasoning", help="think: keep <think>...</think> in the reply; field: "
                                  "reasoning_content; drop: answer only."),
    file_format: str = typer.Option("auto", "--file-format", help="auto (JSONL for openai, else Parquet) | parquet | jsonl."),
    shard_size: str = typer.Option("256MB", "--shard-size", help="Target shard size (exported text, before compression)."),
    all_rows: bool = typer.Option(False, "--all-rows", help="Keep rows the verifier did not accept (default: verified only)."),
    finish_reason: Optional[list[str]] = typer.Option(None, "--finish-reason", help="Keep only this finish reason (repeatable), e.g. stop."),
    min_completion_tokens: Optional[int] = typer.Option(None, "--min-completion-tokens"),
    max_completion_tokens: Optional[int] = typer.Option(None, "--max-completion-tokens"),
    max_prompt_tokens: Optional[int] = typer.Option(None, "--max-prompt-tokens"),
    max_total_tokens: Optional[int] = typer.Option(None, "--max-total-tokens"),
    per_prompt: Optional[int] = typer.Option(None, "--per-prompt", help="Keep at most K samples per prompt (best first)."),
    best_by: str = typer.Option("verified,shortest", "--best-by", help="Ranking for --per-prompt: comma list of "
                                "verified, shortest, longest, first."),
    against: Optional[list[str]] = typer.Option(None, "--against", help="Benchmark FILE[:FIELD,...] (JSONL/Parquet, local "
                                                "or s3://) to decontaminate against; repeatable."),
    ngram: int = typer.Option(8, "--ngram", help="Words per n-gram for decontamination."),
    scope: str = typer.Option("both", "--decontaminate", help="What decontamination checks: prompts | traces | both."),
    metadata: Optional[bool] = typer.Option(None, "--metadata/--no-metadata", help="Provenance columns (default: on, "
                                            "off for openai)."),
    live: bool = typer.Option(False, "--live", help="Also export runs that have not finished (committed shards so far)."),
    license: str = typer.Option("other", "--license", help="Card license id, e.g. apache-2.0."),
    pretty_name: Optional[str] = typer.Option(None, "--pretty-name", help="Dataset name for the card."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing or half-written export at --out."),
    endpoint_url: Optional[str] = EndpointOption,
    json_out: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
) -> None:
    """Export committed traces as TRL / prompt-completion / ShareGPT / OpenAI shards with a dataset card."""
    if json_out:
        reserve_stdout_for_json()
    from potstill.pipelines.export.benchmarks import BenchmarkError
    from potstill.pipelines.export.plan import ExportError
    from potstill.pipelines.export.run_export import export_runs
    from potstill.pipelines.output.commit import CommitError
    from potstill.schemas import ConfigError, validate_config
    from potstill.schemas.export import BenchmarkSource, ExportConfig

    try:
        shard_bytes = parse_size(shard_size)
    except ValueError as exc:
        fail(str(exc))
    data: dict[str, Any] = {
        "runs": runs, "out": out, "format": format, "reasoning": reasoning, "file_format": file_format,
        "shard_bytes": shard_bytes, "metadata": metadata, "allow_live": live, "license": license,
        "pretty_name": pretty_name, "overwrite": overwrite, "storage": {"endpoint_url": endpoint_url},
        "filters": {
            "verified_only": not all_rows, "finish_reasons": finish_reason or None,
            "min_completion_tokens": min_completion_tokens, "max_completion_tokens": max_completion_tokens,
            "max_prompt_tokens": max_prompt_tokens, "max_total_tokens": max_total_tokens, "per_prompt": per_prompt,
            "best_by": [k.strip() for k in best_by.split(",") if k.strip()],
        },
    }
    if against:
        data["decontamination"] = {"benchmarks": [BenchmarkSource.parse(a).model_dump() for a in against],
                                   "ngram": ngram, "scope": scope}
    try:
        cfg = validate_config(data, ExportConfig, "potstill export")
    except ConfigError as exc:
        fail(str(exc))
    with PhaseBar(disable=json_out) as bar:
        try:
            summary = export_runs(cfg, on_progress=bar)
        except (ExportError, BenchmarkError, CommitError, FileNotFoundError, ValueError) as exc:
            fail(str(exc))
    result = summary.model_dump(mode="json")
    if json_out:
        print_json(result)
        return
    for line in summary_lines(result):
        console.print(line, highlight=False)
