"""`potstill decontaminate RUN_URI... --against FILE[:FIELD]`: the n-gram overlap between runs and benchmarks."""

from __future__ import annotations

from typing import Any, Optional

import typer

from potstill.cli.common import EndpointOption, console, fail, print_json, reserve_stdout_for_json


def summary_lines(d: dict[str, Any]) -> list[str]:
    """The human summary of a `DecontaminationReport`."""
    lines = [f"{d['rows_checked']:,} committed rows checked ({d['scope']}, word {d['ngram']}-grams): "
             f"{d['prompts_matched']:,} prompts and {d['rows_matched']:,} rows overlap a benchmark"]
    for b in d["benchmarks"]:
        lines.append(f"  {b['name']} ({b['source']}, {b['texts']:,} texts, column(s) {', '.join(b['fields'])}): "
                     f"{b['prompts_matched']:,} prompts, {b['traces_matched']:,} traces")
    for e in d["examples"][:5]:
        lines.append(f"  e.g. prompt {e['prompt_id'][:12]}… ({e['where']}) shares \"{e['ngram']}\" with "
                     f"{e['benchmark']} row {e['benchmark_row']}")
    if d["rows_matched"]:
        lines.append("export without them: potstill export RUN --format ... --out ... --against <the same files>")
    return lines


def decontaminate(
    runs: list[str] = typer.Argument(..., help="Generation run output roots (local or s3://)."),
    against: list[str] = typer.Option(..., "--against", help="Benchmark FILE[:FIELD,...] (JSONL/Parquet, local or s3://); repeatable."),
    ngram: int = typer.Option(8, "--ngram", help="Words per n-gram."),
    scope: str = typer.Option("both", "--scope", help="prompts | traces | both."),
    report: Optional[str] = typer.Option(None, "--report", help="Write one JSON line per overlapping row here (local or s3://)."),
    endpoint_url: Optional[str] = EndpointOption,
    json_out: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
) -> None:
    """Report which committed prompts and traces share n-grams with benchmark sets (nothing is modified)."""
    if json_out:
        reserve_stdout_for_json()
    from potstill.cli.export import PhaseBar
    from potstill.pipelines.export.benchmarks import BenchmarkError
    from potstill.pipelines.export.run_export import decontaminate_runs
    from potstill.pipelines.output.commit import CommitError
    from potstill.schemas import ConfigError, StorageConfig, validate_config
    from potstill.schemas.export import BenchmarkSource, DecontaminationConfig

    try:
        cfg = validate_config({"benchmarks": [BenchmarkSource.parse(a).model_dump() for a in against],
                               "ngram": ngram, "scope": scope}, DecontaminationConfig, "potstill decontaminate")
    except ConfigError as exc:
        fail(str(exc))
    with PhaseBar(disable=json_out) as bar:
        try:
            result = decontaminate_runs(runs, cfg, StorageConfig(endpoint_url=endpoint_url), report_uri=report,
                                        on_progress=bar)
        except (BenchmarkError, CommitError, FileNotFoundError, ValueError) as exc:
            fail(str(exc))
    out = result.model_dump(mode="json")
    if report:
        out["report"] = report
    if json_out:
        print_json(out)
        return
    for line in summary_lines(out):
        console.print(line, highlight=False)
    if report:
        console.print(f"report: {report}", highlight=False)
