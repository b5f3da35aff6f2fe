"""Helpers shared by the CLI commands: config errors, storage options, output."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO

import typer
from rich.markup import escape

from potstill.cli.display import TerminalConsole
from potstill.schemas.generation import StorageConfig

console = TerminalConsole(stderr=True)
"""The terminal: progress, warnings, summaries and errors (never engine logs; see session.py)."""


def fail(message: str, code: int = 2) -> None:
    """Print an error (no traceback, credentials redacted) and exit."""
    from potstill.pipelines.observe.redact import redact

    console.print(f"[bold red]error:[/] {escape(redact(message))}", highlight=False)
    raise typer.Exit(code)


def storage_from(endpoint_url: str | None) -> StorageConfig:
    return StorageConfig(endpoint_url=endpoint_url)


_json_stream: TextIO | None = None  # the real stdout, once reserve_stdout_for_json moved descriptor 1


def reserve_stdout_for_json() -> None:
    """`--json`: from here on stdout carries only the summary object; everything else goes to stderr.

    Ray forwards actor output to the driver's stdout from a background thread,
    one `print` (two writes) per line, and vLLM's engine subprocesses log to
    file descriptor 1. Left alone, a forwarded line can wrap the summary
    (`(Replica pid=..) text{...}`), so descriptor 1 itself is pointed at stderr
    and the summary keeps a private duplicate of the real stdout.
    """
    global _json_stream
    if _json_stream is not None:
        return
    sys.stdout.flush()
    try:
        out_fd, err_fd = sys.stdout.fileno(), sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # captured in-process (CliRunner): no descriptor to move
        return
    _json_stream = os.fdopen(os.dup(out_fd), "w", encoding="utf-8")
    os.dup2(err_fd, out_fd)


def print_json(obj: Any) -> None:
    """One JSON object on its own line, in a single write, on the real stdout."""
    stream = _json_stream or sys.stdout
    stream.write(json.dumps(obj, default=str) + "\n")
    stream.flush()


EndpointOption = typer.Option(None, "--endpoint-url", help="S3 endpoint for s3:// URIs (MinIO, moto, ...).")
VerboseOption = typer.Option(False, "--verbose", "-v", help="Also show the engine, Ray and worker logs on the terminal "
                             "(they always go to the log file in the output folder; POTSTILL_LOG_LEVEL does the same).")


def last_json_line(output: str | bytes) -> Any:
    """The JSON object a `--json` command printed: the last one that ends a line.

    For callers that read stdout and stderr merged (one log file): other
    processes' lines may come after the summary, and a line one of them had
    half written may sit in front of it, so neither "the last line" nor "a line
    starting with {" is safe.
    """
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    decoder = json.JSONDecoder()
    for line in reversed(text.splitlines()):
        line = line.rstrip()
        start = line.find("{")
        while start != -1:
            try:
                obj, end = decoder.raw_decode(line, start)
            except json.JSONDecodeError:
                obj, end = None, -1
            if end == len(line) and isinstance(obj, dict):
                return obj
            start = line.find("{", start + 1)
    raise ValueError("no JSON object in the command's output")
