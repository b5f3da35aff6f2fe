"""`potstill generate CONFIG.yaml [--dry-run | --detach] [--verbose]`: run a generation job with a live progress line.

A run's engine, Ray and worker logs go to `<out>/logs/generate-<time>.log`
(`--verbose` or POTSTILL_LOG_LEVEL shows them on the terminal too; see
`potstill/cli/session.py`).

The summary ends with the run's cost (from `<out>/report.json`); `--dry-run`
prints what the run would produce, take and cost, and writes nothing;
`--detach` starts the run on a cluster and returns (`potstill status`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from potstill.cli.common import VerboseOption, console, fail, print_json, reserve_stdout_for_json
from potstill.schemas.results import GenerationSummary


def _usd(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) < 0.01:
        return f"${value:,.6f}"
    return f"${value:,.4f}" if abs(value) < 100 else f"${value:,.2f}"


def cost_lines(cost: dict[str, Any] | None) -> list[str]:
    """The run report's headline: throughput, GPU-hours, dollars per accepted trace and token, the budget."""
    if not cost:
        return []
    this, run = cost["this_invocation"], cost["run"]
    kinds = run["usd_by_kind"]
    lines = [
        f"cost: {_usd(run['usd_total'])} ({_usd(this['usd_total'])} this run) · {_usd(run['usd_per_accepted_trace'])} "
        f"per accepted trace · {_usd(run['usd_per_million_accepted_tokens'])} per million accepted tokens · "
        f"{run['gpu_hours']:.3f} GPU-hours",
        f"  charged to accepted {_usd(kinds['accepted'])} · rejected {_usd(kinds['rejected'])} · truncated "
        f"{_usd(kinds['truncated'])} · failed {_usd(kinds['failed'])}; rejection sampling "
        f"{_usd(run['resampling_usd'])} for {run['resampled_accepted']} more traces "
        f"({_usd(run['marginal_usd_per_resampled_trace'])} each vs {_usd(run['first_round_usd_per_trace'])} first-round)",
        f"  throughput {this['tokens_per_s']:,.0f} tokens/s overall; per replica: " + (", ".join(
            f"{r['name']} {r['tokens_per_s']:,.0f}" for r in cost["replicas"]) or "none"),
    ]
    if cost["status"] == "budget_exhausted":
        lines.append(f"stopped at the budget: {_usd(cost['spent_usd'])} spent of budget.max_usd {_usd(cost['budget_usd'])}; "
                     "what finished is committed; re-run with a larger budget.max_usd to resume")
    return lines


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
        *cost_lines(s.cost),
        f"output: {s.out}" + (f" (report: {s.report})" if s.report else ""),
    ]


def generate(
    config: Path = typer.Argument(..., help="Generation config YAML (see examples/)."),
    out: Optional[str] = typer.Option(None, "--out", help="Output root (local folder or s3://...); overrides output.uri."),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Run id; re-using one resumes that run (or attaches to it while it is live)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)."),
    detach: bool = typer.Option(False, "--detach", help="Start the run on the cluster and return; follow it with `potstill status RUN_ID`. Needs --address or RAY_ADDRESS."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary (with --detach: the status; with --dry-run: the estimate) as one JSON object."),
    dry_run_: bool = typer.Option(False, "--dry-run", help="Estimate prompts, output tokens, replicas, time and $ without running (nothing is written)."),
    sample: int = typer.Option(16, "--sample", min=0, help="--dry-run: prompts run through the teacher to measure lengths and acceptance (0 with --output-tokens: none)."),
    output_tokens: Optional[int] = typer.Option(None, "--output-tokens", min=1, help="--dry-run: assume this many completion tokens per sample instead of sampling the teacher."),
    verbose: bool = VerboseOption,
) -> None:
    """Generate verified reasoning traces from a teacher into committed Parquet shards."""
    if json_out and (dry_run_ or detach):
        reserve_stdout_for_json()  # a run's command session does this itself
    from potstill.cli.session import command_session
    from potstill.cli.views import generation_view
    from potstill.pipelines.jobs.run_generation import output_uri, run_generation, start_generation
    from potstill.pipelines.observe.redact import install_redaction
    from potstill.schemas import ConfigError, GenerationConfig, load_config

    try:
        cfg = load_config(config, GenerationConfig, {"output.uri": out, "run_id": run_id})
    except ConfigError as exc:
        fail(str(exc))
    install_redaction(cfg.model_dump())  # log records and error lines of this driver carry no config secret
    if dry_run_:
        _dry_run(cfg, sample, output_tokens, json_out, verbose)
        return
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
    with command_session("generate", output_uri(cfg), json_out=json_out, verbose=verbose,
                         storage=cfg.output.storage, config=cfg.model_dump()) as session:
        with session.phase("planning", "prompts", "generated") as phase:
            try:
                summary = run_generation(cfg, address=address, on_progress=generation_view(phase))
            except Exception as exc:  # noqa: BLE001 - shown as one clear line; committed shards stay committed
                fail(f"{_error_line(exc)}\nCommitted shards are kept; re-run the same command to resume "
                     f"(the log: {session.log_path}).", 1)
        if json_out:
            print_json(summary.model_dump(mode="json"))
            return
        for line in _summary_lines(summary):
            session.print(line)


def _error_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    return f"{type(cause).__name__}: {cause}"


def estimate_lines(e: dict[str, Any]) -> list[str]:
    hours = "n/a" if e["hours"] is None else (f"{e['hours'] * 60:,.1f} min" if e["hours"] < 1 else f"{e['hours']:,.2f} h")
    lines = [
        f"dry run of {e['run_id']}: nothing was written",
        f"prompts {e['prompts']} valid ({e['invalid_rows']} invalid, {e['duplicates']} duplicates) in {e['shards']} shards"
        + (f", {e['shards_committed']} already committed" if e["shards_committed"] else ""),
        f"estimated output {e['output_tokens']:,} tokens (+{e['prompt_tokens']:,} prompt tokens) · "
        f"{e['samples_per_prompt']:.2f} samples per prompt"
        + (f" · {e['accepted_per_prompt']:.2f} accepted" if e["accepted_per_prompt"] is not None else "")
        + (f" (measured on {e['sampled_prompts']} prompts" + (f", which cost {_usd(e['sample_usd'])}" if e["sample_usd"] else "")
           + ")" if e["sampled_prompts"] else ""),
        f"replicas planned {e['replicas']} x {e['gpus_per_replica']:g} GPU · time {hours}"
        + (f" (bound: {e['limited_by']})" if e["limited_by"] else "")
        + (f" · {e['tokens_per_s_per_replica']:,.0f} tokens/s per replica" if e["tokens_per_s_per_replica"] else ""),
        f"estimated cost {_usd(e['usd'])} · {_usd(e['usd_per_accepted_trace'])} per accepted trace"
        + (f" · budget {_usd(e['budget_usd'])}: {'fits' if e['fits_budget'] else 'does NOT fit'}" if e["budget_usd"] else ""),
    ]
    return lines + [f"note: {n}" for n in e["notes"]]


def _dry_run(cfg: Any, sample: int, output_tokens: int | None, json_out: bool, verbose: bool) -> None:
    """The estimate, in a command session whose log stays in ~/.cache/potstill/logs: a dry run writes nothing to
    the output, and the teacher it samples (a vLLM engine in this process) logs there, not on the terminal."""
    from potstill.cli.session import command_session
    from potstill.pipelines.jobs.dry_run import dry_run
    from potstill.pipelines.jobs.run_generation import output_uri

    with command_session("generate-dry-run", None, json_out=json_out, verbose=verbose, storage=cfg.output.storage,
                         config=cfg.model_dump()) as session:
        phase = session.next_phase("dry run", "prompts", "estimated", total=sample or None)
        try:
            estimate = dry_run(cfg, output_uri(cfg), sample_prompts=sample, output_tokens=output_tokens,
                               on_status=lambda msg: phase.update(status=f"dry run: {msg}"))
        except Exception as exc:  # noqa: BLE001 - one clear line; a dry run writes nothing
            fail(_error_line(exc), 1)
        phase.update(done=estimate.sampled_prompts)
        session.end_phase()
        result = estimate.model_dump(mode="json")
        if json_out:
            print_json(result)
            return
        for line in estimate_lines(result):
            session.print(line)
