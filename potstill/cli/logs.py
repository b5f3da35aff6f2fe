"""`potstill logs RUN_ID [--follow]`: the driver output of a run submitted with `potstill submit`.

    potstill logs run-3f2a91c0d4e5 --follow --address http://127.0.0.1:8265
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from potstill.cli.cluster_options import AddressOption, TokenFileOption, connect
from potstill.cli.common import console, fail


def logs(
    run_id: str = typer.Argument(..., help="The run id (generation run_id, training name) given to `potstill submit`."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job ends."),
    attempt: Optional[int] = typer.Option(None, "--attempt", help="Which attempt (default: the latest)."),
    address: Optional[str] = AddressOption,
    token_file: Optional[str] = TokenFileOption,
) -> None:
    """Print the logs of a run's latest attempt (or --attempt N); --follow streams them to the end."""
    from potstill.cluster.job_submission import ClusterError

    jobs = connect(address, token_file)
    try:
        chosen = jobs.latest(run_id)
        if attempt is not None:
            found = [a for a in jobs.attempts(run_id) if a.attempt == attempt]
            if not found:
                fail(f"--attempt: run {run_id!r} has no attempt {attempt} (it has "
                     f"{', '.join(str(a.attempt) for a in jobs.attempts(run_id))})")
            chosen = found[0]
        console.print(f"run {run_id}: job {chosen.submission_id} (attempt {chosen.attempt}) {chosen.status}",
                      highlight=False, soft_wrap=True)
        if not follow:
            sys.stdout.write(jobs.logs(chosen))
            sys.stdout.flush()
            return
        final = jobs.follow(chosen, lambda chunk: (sys.stdout.write(chunk), sys.stdout.flush()))
    except ClusterError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        console.print(f"stopped following; job {chosen.submission_id} keeps running (`potstill stop {run_id}` stops it)",
                      highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    console.print(f"job {final.submission_id} ended {final.status}", highlight=False)
    if final.status != "SUCCEEDED":
        raise typer.Exit(1)
