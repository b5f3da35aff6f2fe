"""`potstill generate CONFIG.yaml`: run a generation job with a live progress bar (or `--detach` it)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from potstill.cli.common import console, fail, print_json, reserve_stdout_for_json
from potstill.schemas.results import GenerationStatus, GenerationSummary


def _summary_lines(s: GenerationSummary) -> list[str]:
    t = s.totals
    judged = t.verified + t.rejected
    acc = f"{t.verified / judged:.1%}" if judged else "n/a"
    ingest = s.ingest
    replicas = f"replicas: peak {s.peak_replicas}"
    if s.replicas_drained or s.replicas_preempted or s.replicas_replaced:
        replicas += (f" · drained {s.replicas_drained} · preempted {s.replicas_preempted} · "
                     f"replaced {s.replicas_replaced}")
    return [
        f"run {s.run_id}: {s.shards} shards ({s.shards_skipped} already committed) in {s.elapsed_s:.1f} s"
        + (" (attached to the live controller)" if s.attached else ""),
        f"prompts {t.prompts} · traces {t.traces} · verified {t.verified} ({acc} of judged) · "
        f"failed prompts {s.failed_prompts}",
        f"completion tokens {t.completion_tokens} ({s.this_run.completion_tokens} this run, {s.tokens_per_s:,.0f} "
        f"tokens/s after engine start) · engine requests {s.engine_requests}",
        replicas,
        f"input rows {ingest.get('rows_read', 0)} · valid {ingest.get('valid', 0)} · invalid {ingest.get('invalid', 0)} · "
        f"duplicates {ingest.get('duplicates', 0)}"
        + (" (see errors/ingest.jsonl)" if ingest.get("invalid") or ingest.get("duplicates") else ""),
        f"output: {s.out}",
    ]


def generate(
    config: Path = typer.Argument(..., help="Generation config YAML (see examples/)."),
    out: Optional[str] = typer.Option(None, "--out", help="Output root (local folder or s3://...); overrides output.uri."),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Run id; re-using one resumes that run (or attaches to it while it is live)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)."),
    detach: bool = typer.Option(False, "--detach", help="Start the run on the cluster and return; follow it with `potstill status RUN_ID`. Needs --address or RAY_ADDRESS."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary (with --detach: the status) as one JSON object."),
) -> None:
    """Generate verified reasoning traces from a teacher into committed Parquet shards."""
    if json_out:
        reserve_stdout_for_json()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from potstill.pipelines.jobs.run_generation import run_generation, start_generation
    from potstill.pipelines.observe.redact import install_redaction
    from potstill.schemas import ConfigError, GenerationConfig, load_config

    try:
        cfg = load_config(config, GenerationConfig, {"output.uri": out, "run_id": run_id})
    except ConfigError as exc:
        fail(str(exc))
    install_redaction(cfg.model_dump())  # log records and error lines of this driver carry no config secret
    if detach:
        try:
            status = start_generation(cfg, address=address)
        except Exception as exc:  # noqa: BLE001 - one clear line
            fail(_error_line(exc), 1)
        if json_out:
            print_json(status.model_dump(mode="json"))
            return
        console.print(f"run {status.run_id} is working on the cluster (phase {status.phase}); output {status.out}\n"
                      f"follow it:  potstill status {status.run_id} --address {address or '$RAY_ADDRESS'}\n"
                      f"scale it:   potstill scale {status.run_id} --replicas N --address {address or '$RAY_ADDRESS'}",
                      highlight=False)
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("prompts"),
               TextColumn("· replicas {task.fields[replicas]} · traces {task.fields[traces]} · accepted "
                          "{task.fields[acc]} · {task.fields[tps]} tok/s"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False, disable=json_out) as bar:
        task = bar.add_task("planning", total=None, traces=0, acc="-", tps=0, replicas="-")

        def on_progress(p: GenerationStatus) -> None:
            t = p.totals
            judged = t.verified + t.rejected
            ready = sum(r.state == "ready" for r in p.replicas)
            pending = len(p.pending)
            bar.update(task, description=p.phase, total=p.prompts_total or None, completed=p.prompts_done,
                       traces=t.traces, acc=f"{t.verified / judged:.0%}" if judged else "-",
                       tps=f"{p.tokens_per_s:,.0f}",
                       replicas=f"{ready}/{p.target_replicas}" + (f" ({pending} pending)" if pending else ""))

        try:
            summary = run_generation(cfg, address=address, on_progress=on_progress)
        except Exception as exc:  # noqa: BLE001 - shown as one clear line; committed shards stay committed
            fail(f"{_error_line(exc)}\nCommitted shards are kept; re-run the same command to resume.", 1)
    if json_out:
        print_json(summary.model_dump(mode="json"))
        return
    for line in _summary_lines(summary):
        console.print(line, highlight=False)


def _error_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    return f"{type(cause).__name__}: {cause}"
