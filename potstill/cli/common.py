"""Helpers shared by the CLI commands: config errors, storage options, output."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console

from potstill.schemas.generation import StorageConfig

console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print an error (no traceback) and exit."""
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def storage_from(endpoint_url: str | None) -> StorageConfig:
    return StorageConfig(endpoint_url=endpoint_url)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


EndpointOption = typer.Option(None, "--endpoint-url", help="S3 endpoint for s3:// URIs (MinIO, moto, ...).")


def last_json_line(output: str | bytes) -> Any:
    """The JSON object a `--json` command printed: its last line that parses as one.

    Ray forwards actor logs to the driver's stdout, and a few may arrive after
    the summary, so callers must not assume it is the very last line.
    """
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON object in the command's output")
