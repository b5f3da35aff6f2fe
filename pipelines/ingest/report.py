"""What prompt ingestion found: row errors, duplicates and counts, written next to the run.

    report = IngestReport()
    prompts = list(iter_prompts(cfg.prompts, cfg.output.storage, report))
    print(report.summary())
    report.write(cfg.output.storage, "s3://bucket/runs/r1")  # -> errors/ingest.jsonl, errors/ingest_summary.json

Every rejected row is a `RowError` naming its 0-based source row, the source
field, the problem and the fix; duplicates are listed too (kind
`duplicate`) but are not failures. The report keeps at most `max_errors`
errors in memory (a file of millions of duplicates must not grow memory
without bound); the counts always cover every row, and the summary says how
many errors were counted but not listed.
"""

from __future__ import annotations

import collections
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from potstill.schemas.generation import StorageConfig

ERRORS_FILE = "errors/ingest.jsonl"
SUMMARY_FILE = "errors/ingest_summary.json"
WHOLE_ROW = "<row>"
"""`RowError.field` for problems of the whole row (invalid JSON, not an object)."""


class IngestError(ValueError):
    """The prompt source cannot be read at all (missing file, a mapping that fails on every row)."""


@dataclass(frozen=True, slots=True)
class RowError:
    """One rejected (or duplicate) source row.

    `row` is the 0-based row in the source (the line number for JSONL, counted
    over all files in order for a folder), `field` the source column (or
    `<row>`), `reason` the problem and its fix, `kind` a stable code for
    grouping (e.g. `invalid_json`, `unknown_role`, `duplicate`), and `file`
    the file it came from when the source is a folder.
    """

    row: int
    field: str
    reason: str
    kind: str = "invalid"
    file: str | None = None


@dataclass
class IngestReport:
    """Counts and errors of one pass over the prompt source (filled while iterating)."""

    source: str = ""
    max_errors: int = 10_000
    rows_read: int = 0
    valid: int = 0
    invalid: int = 0
    duplicates: int = 0
    errors: list[RowError] = field(default_factory=list)
    errors_not_kept: int = 0
    by_kind: collections.Counter = field(default_factory=collections.Counter)

    def add(self, error: RowError) -> None:
        """Record a rejected row, or a duplicate when `error.kind == "duplicate"`."""
        if error.kind == "duplicate":
            self.duplicates += 1
        else:
            self.invalid += 1
        self.by_kind[error.kind] += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(error)
        else:
            self.errors_not_kept += 1

    def counts(self) -> dict[str, int]:
        """rows_read = valid + invalid + duplicates; `valid` counts distinct prompts passed on."""
        return {"rows_read": self.rows_read, "valid": self.valid, "invalid": self.invalid,
                "duplicates": self.duplicates}

    def to_dict(self) -> dict[str, Any]:
        """The summary written to `errors/ingest_summary.json`."""
        return {"source": self.source, **self.counts(), "by_kind": dict(sorted(self.by_kind.items())),
                "errors_listed": len(self.errors), "errors_not_listed": self.errors_not_kept}

    def summary(self, examples: int = 5) -> str:
        """A few lines for the CLI: counts, problems by kind, the first rejected rows."""
        c = self.counts()
        head = (f"prompts from {self.source or '?'}: {c['rows_read']} rows read, {c['valid']} valid, "
                f"{c['invalid']} invalid, {c['duplicates']} duplicates")
        lines = [head]
        if self.by_kind:
            lines.append("  by kind: " + ", ".join(f"{k} {n}" for k, n in self.by_kind.most_common()))
        rejected = [e for e in self.errors if e.kind != "duplicate"][:examples]
        for e in rejected:
            where = f"{e.file} " if e.file else ""
            lines.append(f"  {where}row {e.row} [{e.field}]: {e.reason}")
        if self.invalid > len(rejected):
            lines.append(f"  ... {self.invalid - len(rejected)} more invalid rows, listed in {ERRORS_FILE}")
        if self.errors_not_kept:
            lines.append(f"  ({self.errors_not_kept} errors counted but not listed: over max_errors={self.max_errors})")
        return "\n".join(lines)

    def write(self, target: Any = None, uri: str | None = None) -> str:
        """Write `errors/ingest.jsonl` (one JSON object per error) and the summary JSON; return the errors URI.

        `target` is a run `Storage` (written at its root, or at `uri` with its
        settings), a `StorageConfig` or None (with `uri`), or an fsspec
        filesystem (with `uri`). Both files are replaced on every write.
        """
        from fsspec import AbstractFileSystem

        from potstill.pipelines.output.storage import Storage

        errors = "".join(json.dumps(asdict(e), ensure_ascii=False) + "\n" for e in self.errors).encode("utf-8")
        summary = json.dumps(self.to_dict(), indent=2, ensure_ascii=False).encode("utf-8")
        if isinstance(target, AbstractFileSystem):
            if uri is None:
                raise TypeError("IngestReport.write(fs, uri): pass the output root `uri` with a filesystem")
            root = target._strip_protocol(uri).rstrip("/")
            for rel, data in ((ERRORS_FILE, errors), (SUMMARY_FILE, summary)):
                target.makedirs(f"{root}/{rel}".rsplit("/", 1)[0], exist_ok=True)
                target.pipe_file(f"{root}/{rel}", data)
            return f"{uri.rstrip('/')}/{ERRORS_FILE}"
        if isinstance(target, Storage):
            store = target if uri is None else Storage(uri, target.config)
        elif target is None or isinstance(target, StorageConfig):
            if uri is None:
                raise TypeError("IngestReport.write(storage_config, uri): pass the output root `uri`")
            store = Storage(uri, target)
        else:
            raise TypeError(f"IngestReport.write: target must be a Storage, a StorageConfig, an fsspec filesystem "
                            f"or None, not {type(target).__name__}")
        store.put(ERRORS_FILE, errors)
        store.put(SUMMARY_FILE, summary)
        return store.uri_of(ERRORS_FILE)
