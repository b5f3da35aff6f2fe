"""`potstill stop RUN_ID`: stop the live job of a run submitted with `potstill submit`.

    potstill stop run-3f2a91c0d4e5 --address http://127.0.0.1:8265

The driver gets SIGTERM (then SIGKILL) and its actors end with it. Nothing
committed is lost: `potstill submit` of the same config resumes the run as
its next attempt.
"""

from __future__ import annotations

from typing import Optional

import typer

from potstill.cli.cluster_options import AddressOption, TokenFileOption, connect
from potstill.cli.common import console, fail, print_json, reserve_stdout_for_json


def stop(
    run_id: str = typer.Argument(..., help="The run id (generation run_id, training name) given to `potstill submit`."),
    timeout: float = typer.Option(120, "--timeout", help="Seconds to wait for the job to reach STOPPED."),
    address: Optional[str] = AddressOption,
    token_file: Optional[str] = TokenFileOption,
    json_out: bool = typer.Option(False, "--json", help="Print the outcome as one JSON object."),
) -> None:
    """Stop a run's live job and wait until it has stopped; a later submit resumes the run."""
    if json_out:
        reserve_stdout_for_json()
    from dataclasses import asdict

    from potstill.cluster.job_submission import ClusterError

    jobs = connect(address, token_file)
    try:
        latest = jobs.latest(run_id)
        final = latest
        if latest.live:
            with console.status(f"stopping job {latest.submission_id} (attempt {latest.attempt}) of run {run_id} ..."):
                final = jobs.stop(latest, timeout_s=timeout)
    except ClusterError as exc:
        fail(str(exc))
    result = {"action": "stopped" if latest.live else "not_running", "address": jobs.address, **asdict(final)}
    if json_out:
        print_json(result)
    elif not latest.live:
        console.print(f"run {run_id} has no live job: its latest, {final.submission_id} (attempt {final.attempt}), "
                      f"is {final.status}; nothing to stop", highlight=False, soft_wrap=True)
    else:
        console.print(f"run {run_id}: job {final.submission_id} (attempt {final.attempt}) is {final.status}; committed "
                      f"work is kept: `potstill submit CONFIG.yaml --address {jobs.address}` resumes it as attempt "
                      f"{final.attempt + 1}", highlight=False, soft_wrap=True)
    if latest.live and final.status != "STOPPED" and final.status not in ("SUCCEEDED", "FAILED"):
        fail(f"job {final.submission_id} is still {final.status} after {timeout:g} s; run `potstill stop {run_id}` again", 1)
