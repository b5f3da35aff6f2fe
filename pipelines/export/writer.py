"""Pass 2 of an export: write the planned rows as shards in a hidden staging folder, publish them, card last.

    target = ExportTarget(Storage(cfg.out, cfg.storage), overwrite=cfg.overwrite)
    target.check()                                        # refuses a run root, or an export without --overwrite
    files = write_shards(runs, plan, formatter, target, "parquet")   # staged under .potstill-staging-<id>/
    target.publish(files, card_text)                      # data/train-0000i-of-0000N.* then README.md

A crash never leaves an export that looks complete: shards are written
under `.potstill-staging-<id>/` (a dot folder, which `datasets` and the Hub
skip), each object appearing whole (temp file + link locally, multipart
upload on S3); publishing moves them to `data/` (a rename locally, a
server-side copy on S3), removes a previous export's leftover shards, and
writes `README.md` last. An export is complete exactly when its README.md
exists; `check()` refuses to write over data without one unless asked to.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from potstill.pipelines.export.formats import ExportFormatter
from potstill.pipelines.export.plan import ExportError, ExportPlan
from potstill.pipelines.output.reader import CommittedRuns
from potstill.pipelines.output.storage import Storage

CARD = "README.md"
DATA_DIR = "data"
STAGING_PREFIX = ".potstill-staging-"
ROW_GROUP_ROWS = 1000
"""Parquet row group size of exported shards (small groups keep the Hub viewer and random access fast)."""


def shard_name(index: int, total: int, ext: str) -> str:
    """`data/train-00000-of-00003.parquet`: the Hugging Face naming `datasets` and the Hub recognize."""
    return f"{DATA_DIR}/train-{index:05d}-of-{total:05d}.{ext}"


class ExportTarget:
    """The export location: checks it, stages into it, publishes into it."""

    def __init__(self, storage: Storage, overwrite: bool = False):
        self.storage = storage
        self.overwrite = overwrite
        self.export_id = uuid.uuid4().hex[:12]
        self.staging = f"{STAGING_PREFIX}{self.export_id}"

    def check(self) -> None:
        """Refuse a generation run root; refuse an existing or half-written export unless `overwrite`."""
        s = self.storage
        if s.exists("run.json") or s.list("commits"):
            raise ExportError(f"--out {s.uri} is a generation run's output root (it has run.json/commits/); an export "
                              "there would mix with the run's data/ (and `potstill gc` would delete it). Choose another --out")
        has_card = s.exists(CARD)
        has_data = bool(s.list(DATA_DIR))
        if (has_card or has_data) and not self.overwrite:
            state = "an export" if has_card else "a half-written export (data/ without README.md: it crashed or is running)"
            raise ExportError(f"--out {s.uri} already holds {state}; pass --overwrite to replace it, or choose another --out")

    def staged(self, rel: str) -> str:
        return f"{self.staging}/{rel}"

    def _move(self, src: str, dst: str) -> None:
        s = self.storage
        if s.remote:  # server-side copy; every S3 request in it goes through the storage retry policy
            s.fs.copy(s.path(src), s.path(dst))
            s.delete(src)
            return
        os.makedirs(os.path.dirname(s.path(dst)), exist_ok=True)
        os.replace(s.path(src), s.path(dst))

    def publish(self, files: list[str], card: str) -> None:
        """Move the staged shards to their names, drop a previous export's other shards, then write the card."""
        s = self.storage
        s.delete(CARD)  # from here until the end the folder reads as incomplete
        old = set(s.list(DATA_DIR))
        for rel in files:
            self._move(self.staged(rel), rel)
        for rel in sorted(old - set(files)):
            s.delete(rel)
        if not s.remote:
            for rel in files[:1]:
                s.sync(rel)  # fsyncs the file and data/ itself: the renames are durable before the card
        self.discard()
        s.put(CARD, card.encode())

    def discard(self) -> None:
        """Remove this export's staging folder (what is left of it)."""
        for rel in self.storage.list(self.staging):
            self.storage.delete(rel)
        if not self.storage.remote:
            for dirpath, _, _ in sorted(os.walk(self.storage.path(self.staging)), key=lambda w: -len(w[0])):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass

    def clean_stale_staging(self) -> list[str]:
        """Remove staging folders that crashed exports left behind (called with --overwrite only: a staging
        folder may also belong to an export still running into the same location)."""
        stale = [info.rel for info in self.storage.list_info("", include_temp=True)
                 if info.rel.startswith(STAGING_PREFIX) and not info.rel.startswith(self.staging + "/")]
        for rel in stale:
            self.storage.delete(rel)
        return stale


def _write_parquet(f: Any, tables: list[pa.Table], schema: pa.Schema) -> None:
    with pq.ParquetWriter(f, schema, compression="zstd", compression_level=3) as writer:
        for t in tables:
            writer.write_table(t, row_group_size=ROW_GROUP_ROWS)


def write_shards(runs: CommittedRuns, plan: ExportPlan, formatter: ExportFormatter, target: ExportTarget,
                 file_format: str, on_progress: Callable[[str, int, int], None] | None = None) -> tuple[list[str], int]:
    """Write every planned row into the staged shards; returns (final shard paths, bytes written)."""
    ext = "jsonl" if file_format == "jsonl" else "parquet"
    names = [shard_name(i, plan.num_shards, ext) for i in range(plan.num_shards)]
    pending: list[pa.Table] = []
    current, position, written = 0, 0, 0

    def flush(index: int) -> None:
        nonlocal pending, written
        rel = target.staged(names[index])
        with target.storage.open_write(rel) as f:
            if ext == "parquet":
                _write_parquet(f, pending, formatter.schema)
            else:
                for t in pending:
                    f.write(formatter.to_jsonl(t.to_pylist()))
        if not target.storage.remote:
            target.storage.sync(rel)
        written += target.storage.size(rel)
        pending = []

    total = len(runs.shards)
    for i, shard in enumerate(runs.shards):
        if on_progress:
            on_progress("writing shards", i, total)
        rows = plan.keep[i]
        if len(rows) == 0:
            continue
        source = runs.read_shard(shard, formatter.source_columns, filtered=False).take(pa.array(rows))
        dest = plan.output_shard[position:position + len(rows)]
        position += len(rows)
        start = 0
        while start < len(rows):
            if dest[start] != current:
                flush(current)
                current = int(dest[start])
            end = start + int((dest[start:] == current).sum())
            part = source.slice(start, end - start)
            pending.append(formatter.to_table(part.to_pylist()) if ext == "parquet" else part)
            start = end
    if plan.num_shards:
        flush(current)
    if on_progress:
        on_progress("writing shards", total, total)
    if position != len(plan.output_shard):
        raise ExportError(f"wrote {position} rows but planned {len(plan.output_shard)}: a shard changed between the "
                          "two passes; re-run the export")
    return names, written
