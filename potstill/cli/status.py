"""`potstill status RUN_ID`: a live run's replicas, what pending ones wait for, backlog, rate and ETA."""

from __future__ import annotations

from typing import Optional

import typer

from potstill.cli.common import console, fail, print_json, reserve_stdout_for_json
from potstill.schemas.results import GenerationStatus

AddressOption = typer.Option(None, "--address", help="Ray cluster running the run (default: RAY_ADDRESS, or the local "
                                                     "Ray a `potstill generate` on this machine started).")


def status_lines(s: GenerationStatus) -> list[str]:
    """The human view of a run's status."""
    b = s.bounds
    rule = "" if b is None else (f"fixed at {b.fixed}" if b.fixed is not None else f"autoscaling {b.min_replicas}..{b.max_replicas}")
    eta = f"{s.eta_s:,.0f} s" if s.eta_s is not None else "unknown until a shard commits"
    per_prompt = f" · {s.tokens_per_prompt:,.0f} tokens/prompt" if s.tokens_per_prompt else ""
    lines = [
        f"run {s.run_id} · {s.phase} · prompts {s.prompts_done}/{s.prompts_total} · shards "
        f"{s.shards_done + s.shards_skipped}/{s.shards_total}" + (f" · error: {s.error}" if s.error else ""),
        f"backlog {s.backlog_prompts} prompts{per_prompt} · {s.tokens_per_s:,.0f} tokens/s · ETA {eta} · "
        f"accepted traces {s.accepted_traces} of {s.totals.traces}",
        f"replicas: target {s.target_replicas} ({rule}; {s.scale_reason})",
    ]
    for r in s.replicas:
        where = r.node_id[:12] if r.node_id else "-"
        rate = f"{r.tokens_per_s:,.0f} tok/s" if r.tokens_per_s is not None else "-"
        line = f"  {r.name:<12} {r.state:<9} node {where:<12} units {r.units_in_flight} in flight, {r.units_done} done · {rate}"
        if r.waiting_for:
            line += f"\n               waits for {r.waiting_for}"
        if r.draining_because:
            line += f"\n               draining: {r.draining_because}"
        lines.append(line)
    if s.start_backoff:
        lines.append(f"starts paused: {s.start_backoff}")
    changes = [f"{h.t_s:.0f}s: {h.ready} ready/{h.target}" for h in s.replica_history[-8:]]
    if changes:
        lines.append("replicas over time: " + ", ".join(changes))
    lines.append(f"replaced {s.replicas_replaced} {dict(s.replaced_for) or ''} · drained {s.replicas_drained} · "
                 f"preempted {s.replicas_preempted} · units requeued {s.units_requeued}, retried {s.units_retried}")
    return lines


def status(
    run_id: str = typer.Argument(..., help="The run id (potstill generate prints it)."),
    address: Optional[str] = AddressOption,
    json_out: bool = typer.Option(False, "--json", help="Print the status as one JSON object."),
) -> None:
    """Show a live generation run: replicas (state, node, tokens/s, units), pending ones and why, backlog, ETA."""
    if json_out:
        reserve_stdout_for_json()
    from potstill.pipelines.jobs.run_control import run_status

    try:
        s = run_status(run_id, address=address)
    except Exception as exc:  # noqa: BLE001 - one clear line
        fail(f"{type(exc).__name__}: {exc}", 1)
    if json_out:
        print_json(s.model_dump(mode="json"))
        return
    for line in status_lines(s):
        console.print(line, highlight=False)
