"""`potstill gc OUT`: delete attempt objects of a run that no commit names and none ever can (crashed attempts)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Optional

import typer

from potstill.cli.common import EndpointOption, console, fail, print_json, reserve_stdout_for_json, storage_from


def gc(
    out: str = typer.Argument(..., help="Run output root (local folder or s3://...); must hold potstill's run.json."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be deleted, delete nothing."),
    min_age_s: float = typer.Option(
        900.0, "--min-age-s",
        help="Only delete objects older than this, by the store's clock (never this machine's). Use 0 when no run "
             "is writing to OUT."),
    force: bool = typer.Option(
        False, "--force",
        help="Also delete attempts of shards that have no commit yet in an unfinished run. Only when no writer of "
             "the run is running (a paused writer could still commit them)."),
    endpoint_url: Optional[str] = EndpointOption,
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Remove uncommitted attempts of a run; committed shards and files potstill did not write are never touched."""
    if json_out:
        reserve_stdout_for_json()
    from potstill.pipelines.output.commit import gc_run
    from potstill.pipelines.output.run_record import NotARunError

    try:
        report = gc_run(out, storage_from(endpoint_url), dry_run=dry_run, min_age_s=min_age_s, force=force)
    except NotARunError as exc:
        fail(str(exc))
    if json_out:
        print_json(asdict(report))
        return
    verb = "would remove" if dry_run else "removed"
    console.print(f"{verb} {len(report.removed)} uncommitted object(s), {report.bytes_freed:,} bytes; "
                  f"kept {report.kept} committed; {len(report.skipped_recent)} younger than {min_age_s:g} s left; "
                  f"{len(report.incomplete)} incomplete upload(s)/temp file(s) cleaned", highlight=False)
    for rel in report.removed:
        console.print(f"  {rel}", highlight=False)
    if report.skipped_live:
        console.print(f"run not finished: kept {len(report.skipped_live)} attempt(s) of shards with no commit yet (a "
                      "live or paused writer may still commit them); --force removes them when no writer runs",
                      highlight=False)
    if report.foreign:
        console.print(f"left {len(report.foreign)} file(s) under data/ that potstill did not write, e.g. "
                      f"{report.foreign[0]}", highlight=False)
