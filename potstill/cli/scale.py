"""`potstill scale RUN_ID --replicas N` (or `--min/--max`): change a live run's teacher replicas."""

from __future__ import annotations

from typing import Optional

import typer

from potstill.cli.common import console, fail, print_json, reserve_stdout_for_json
from potstill.cli.status import AddressOption


def scale(
    run_id: str = typer.Argument(..., help="The run id (potstill generate prints it)."),
    replicas: Optional[int] = typer.Option(None, "--replicas", min=1, help="Run exactly this many replicas (autoscaling off)."),
    min_replicas: Optional[int] = typer.Option(None, "--min", min=1, help="Autoscale with at least this many."),
    max_replicas: Optional[int] = typer.Option(None, "--max", min=1, help="Autoscale with at most this many."),
    address: Optional[str] = AddressOption,
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Scale a live run: more replicas start; surplus ones drain (their in-flight units commit, nothing is redone)."""
    if json_out:
        reserve_stdout_for_json()
    if replicas is None and min_replicas is None and max_replicas is None:
        fail("pass --replicas N (a fixed count) or --min/--max (autoscaling bounds)")
    if replicas is not None and (min_replicas is not None or max_replicas is not None):
        fail("pass --replicas N or --min/--max, not both")
    from potstill.pipelines.jobs.run_control import scale_run

    try:
        result = scale_run(run_id, replicas, min_replicas=min_replicas, max_replicas=max_replicas, address=address)
    except Exception as exc:  # noqa: BLE001 - one clear line
        fail(f"{type(exc).__name__}: {exc}", 1)
    if json_out:
        print_json(result.model_dump(mode="json"))
        return
    b = result.bounds
    rule = f"fixed at {b.fixed}" if b.fixed is not None else f"autoscaling {b.min_replicas}..{b.max_replicas}"
    console.print(f"run {result.run_id}: target {result.target} replicas ({rule}); {result.replicas} alive now. "
                  f"Watch it with `potstill status {result.run_id}`.", highlight=False)
