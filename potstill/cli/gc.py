"""`potstill gc OUT`: delete data objects no commit names (crashed attempts)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Optional

import typer

from potstill.cli.common import EndpointOption, console, print_json, reserve_stdout_for_json, storage_from


def gc(
    out: str = typer.Argument(..., help="Run output root (local folder or s3://...)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be deleted, delete nothing."),
    min_age_s: float = typer.Option(
        900.0, "--min-age-s",
        help="Only delete uncommitted objects older than this: a live run's attempt exists briefly before its "
             "commit. Use 0 when no run is writing to OUT."),
    endpoint_url: Optional[str] = EndpointOption,
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Remove uncommitted attempts of a run; committed shards are never touched."""
    if json_out:
        reserve_stdout_for_json()
    from potstill.pipelines.output.commit import gc_run

    report = gc_run(out, storage_from(endpoint_url), dry_run=dry_run, min_age_s=min_age_s)
    if json_out:
        print_json(asdict(report))
        return
    verb = "would remove" if dry_run else "removed"
    console.print(f"{verb} {len(report.removed)} uncommitted object(s), {report.bytes_freed:,} bytes; "
                  f"kept {report.kept} committed; {len(report.skipped_recent)} younger than {min_age_s:g} s left; "
                  f"{len(report.incomplete)} incomplete upload(s)/temp file(s) cleaned", highlight=False)
    for rel in report.removed:
        console.print(f"  {rel}", highlight=False)
