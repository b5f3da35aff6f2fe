"""`potstill generate CONFIG.yaml`: run a generation job with a live progress bar."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import typer

from potstill.cli.common import console, fail, print_json, reserve_stdout_for_json


def _summary_lines(s: dict[str, Any]) -> list[str]:
    t = s["totals"]
    judged = t["verified"] + t["rejected"]
    acc = f"{t['verified'] / judged:.1%}" if judged else "n/a"
    new_tokens = s["this_run"]["completion_tokens"]
    tps = new_tokens / s["generation_s"] if s["generation_s"] > 0 else 0.0
    ingest = s["ingest"]
    return [
        f"run {s['run_id']}: {s['shards']} shards ({s['shards_skipped']} already committed) in {s['elapsed_s']:.1f} s",
        f"prompts {t['prompts']} · traces {t['traces']} · verified {t['verified']} ({acc} of judged) · "
        f"failed prompts {s['failed_prompts']}",
        f"completion tokens {t['completion_tokens']} ({new_tokens} this run, {tps:,.0f} tokens/s after engine start) · "
        f"engine requests {s['engine_requests']}",
        f"input rows {ingest['rows_read']} · valid {ingest['valid']} · invalid {ingest['invalid']} · "
        f"duplicates {ingest['duplicates']}" + (" (see errors/ingest.jsonl)" if ingest["invalid"] or ingest["duplicates"] else ""),
        f"output: {s['out']}",
    ]


def generate(
    config: Path = typer.Argument(..., help="Generation config YAML (see examples/)."),
    out: Optional[str] = typer.Option(None, "--out", help="Output root (local folder or s3://...); overrides output.uri."),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Run id; re-using one resumes that run."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
) -> None:
    """Generate verified reasoning traces from a teacher into committed Parquet shards."""
    if json_out:
        reserve_stdout_for_json()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from potstill.pipelines.jobs.run_generation import run_generation
    from potstill.pipelines.observe.redact import install_redaction
    from potstill.schemas import ConfigError, GenerationConfig, load_config

    try:
        cfg = load_config(config, GenerationConfig, {"output.uri": out, "run_id": run_id})
    except ConfigError as exc:
        fail(str(exc))
    install_redaction(cfg.model_dump())  # log records and error lines of this driver carry no config secret
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("prompts"),
               TextColumn("· traces {task.fields[traces]} · accepted {task.fields[acc]} · {task.fields[tps]} tok/s"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    start = time.time()
    with Progress(*columns, console=console, transient=False, disable=json_out) as bar:
        task = bar.add_task("planning", total=None, traces=0, acc="-", tps=0)

        def on_progress(p: dict[str, Any]) -> None:
            t = p["totals"]
            judged = t["verified"] + t["rejected"]
            elapsed = max(time.time() - start, 1e-6)
            bar.update(task, description=p["phase"], total=p["prompts_total"] or None, completed=p["prompts_done"],
                       traces=t["traces"], acc=f"{t['verified'] / judged:.0%}" if judged else "-",
                       tps=f"{t['completion_tokens'] / elapsed:,.0f}")

        try:
            summary = run_generation(cfg, address=address, on_progress=on_progress)
        except Exception as exc:  # noqa: BLE001 - shown as one clear line; committed shards stay committed
            cause = getattr(exc, "cause", None) or exc
            fail(f"{type(cause).__name__}: {cause}\nCommitted shards are kept; re-run the same command to resume.", 1)
    if json_out:
        print_json(summary)
        return
    for line in _summary_lines(summary):
        console.print(line, highlight=False)
