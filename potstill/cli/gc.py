"""`potstill gc OUT`: delete data objects no commit names (crashed attempts)."""

from __future__ import annotations

from typing import Optional

import typer

from potstill.cli.common import EndpointOption, console, print_json, storage_from


def gc(
    out: str = typer.Argument(..., help="Run output root (local folder or s3://...)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be deleted, delete nothing."),
    endpoint_url: Optional[str] = EndpointOption,
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Remove uncommitted attempts of a run; committed shards are never touched."""
    from potstill.pipelines.commit import gc_run

    report = gc_run(out, storage_from(endpoint_url), dry_run=dry_run)
    if json_out:
        print_json(report.__dict__ if hasattr(report, "__dict__") else report)
        return
    console.print(str(report), highlight=False)
