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
