"""The training dataset's pure parts: which runs the trace files come from, which rows to keep, how a group packs.

    sources = trace_sources(files, storage)            # teacher and top-k width per generation run
    table = pack_traces(group, ...)                    # the map_batches function of the Ray Data pipeline

The Ray Data pipeline over them is `potstill.pipelines.jobs.train_dataset`.
Only the explicit list of committed files is read (never a prefix listing).
Filtering, tokenization and packing run in one `map_batches` over groups of
`PACK_GROUP` traces: each group is packed on its own (best-fit decreasing),
which streams and scales with the data while keeping packing efficiency high.
Every output row has the same shapes, whatever trace layout it came from
(`trace_sources` records each run's layout, so the job can read runs of
different layouts in separate groups); the workers read their part of every
global batch (`global_order.py`), so every worker runs the same number of steps.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from potstill.pipelines.distill.packing import pack
from potstill.pipelines.distill.tokenize import TraceTokenizer, rows_from_arrow
from potstill.pipelines.output.topk_codec import is_compact

if TYPE_CHECKING:
    import pyarrow as pa

    from potstill.schemas.generation import StorageConfig
    from potstill.schemas.training import TraceDataConfig, TrainingConfig

log = logging.getLogger(__name__)

PACK_GROUP = 1024
"""Traces packed together: a group this large leaves best-fit decreasing little room to waste (the packing
efficiency reached is measured by `benchmarks/training_speed.py`, see docs/PERFORMANCE.md)."""

BASE_COLUMNS = ["prompt_id", "sample_index", "messages", "completion", "finish_reason", "verified", "completion_tokens"]


@dataclass(frozen=True)
class TraceSource:
    """What one generation run's rows say about how they were made."""

    run: str
    teacher_model: str
    topk_width: int
    """`sampling.logprobs` of the run: the most top-k entries a token can carry (0: none)."""
    layout: int = 2
    """Trace layout version of the run's shards (1: float16 top-k log-probabilities; 2: compact codes)."""


def arrow_filesystem(uri: str, storage: "StorageConfig") -> Any:
    """A pyarrow filesystem for s3:// URIs (None for local paths) over the project's one S3 stack.

    pyarrow's view (`PyFileSystem(FSSpecHandler(...))`) of `output.storage.s3_filesystem`, so trace reads,
    Ray Train's checkpoint uploads and downloads (`RunConfig.storage_filesystem`) and every other training read
    get the same endpoint handling and retry policy (`storage.max_retries`, backoff with jitter on 5xx,
    throttling and connection errors) as the commit protocol. One per process and storage config: each s3fs
    instance holds its own client and connection pool.
    """
    from potstill.pipelines.output.storage import is_remote

    if not is_remote(uri):
        return None
    return _arrow_s3(os.getpid(), storage.model_dump_json())


@functools.lru_cache(maxsize=8)
def _arrow_s3(pid: int, storage_json: str) -> Any:  # pid keys the cache: a forked child opens its own client
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    from potstill.pipelines.output.storage import s3_filesystem
    from potstill.schemas.generation import StorageConfig

    return PyFileSystem(FSSpecHandler(s3_filesystem(StorageConfig.model_validate_json(storage_json))))


def strip_scheme(uri: str) -> str:
    """`bucket/key` for `s3://bucket/key` (what pyarrow filesystems take); local paths unchanged."""
    return uri.split("://", 1)[1] if "://" in uri else uri


def read_columns(use_teacher_ids: bool, topk_width: int) -> list[str]:
    """The trace columns training reads (top-k only for KD, teacher ids only when the tokenizer is shared)."""
    return BASE_COLUMNS + (["completion_token_ids"] if use_teacher_ids else []) + (["topk_ids", "topk_logprobs"] if topk_width else [])


def run_of(path: str) -> str:
    """The generation run root a committed data file belongs to."""
    # Committed data lives at <run>/data/<shard_id>/<attempt>.parquet (DESIGN.md, commit protocol).
    return path.rsplit("/data/", 1)[0] if "/data/" in path else path


def trace_sources(data_files: list[str], storage: "StorageConfig") -> list[TraceSource]:
    """One `TraceSource` per generation run, read from the first row of one file of that run."""
    import pyarrow.parquet as pq

    first_file: dict[str, str] = {}
    for f in data_files:
        first_file.setdefault(run_of(f), f)
    sources = []
    for run, path in first_file.items():
        fs = arrow_filesystem(path, storage)
        with pq.ParquetFile(strip_scheme(path) if fs else path, filesystem=fs) as pf:
            if pf.metadata.num_rows == 0:
                continue
            head = pf.read_row_group(0, columns=["teacher_model", "sampling"]).slice(0, 1).to_pylist()
            schema = pf.schema_arrow
        if not head:
            continue
        sampling = json.loads(head[0]["sampling"] or "{}")
        layout = 2 if "topk_logprobs" not in schema.names or is_compact(schema.field("topk_logprobs").type) else 1
        sources.append(TraceSource(run, head[0]["teacher_model"], int(sampling.get("logprobs") or 0), layout))
    return sources


def keep_mask(table: "pa.Table", data: "TraceDataConfig") -> "pa.Array":
    """Rows to train on: verified (when `verified_only`), stopped (when `require_stop`), not too long."""
    import pyarrow as pa
    import pyarrow.compute as pc

    keep = pa.array(np.ones(table.num_rows, dtype=bool))
    if data.verified_only:
        keep = pc.and_(keep, pc.fill_null(table.column("verified"), False))
    if data.require_stop:
        keep = pc.and_(keep, pc.equal(table.column("finish_reason"), "stop"))
    if data.max_completion_tokens is not None:
        keep = pc.and_(keep, pc.less_equal(table.column("completion_tokens"), data.max_completion_tokens))
    return keep


@functools.lru_cache(maxsize=4)
def _trace_tokenizer(tokenizer_path: str, use_teacher_ids: bool, topk_width: int, storage_json: str) -> TraceTokenizer:
    from potstill.pipelines.distill.student import load_tokenizer
    from potstill.schemas.generation import StorageConfig

    storage = StorageConfig.model_validate_json(storage_json)
    return TraceTokenizer(load_tokenizer(tokenizer_path, storage), use_teacher_ids, topk_width)


def pack_traces(
    table: "pa.Table", data_cfg: dict[str, Any], tokenizer_path: str, use_teacher_ids: bool, topk_width: int,
    max_tokens: int, packing_enabled: bool,
) -> dict[str, np.ndarray]:
    """The `map_batches` function: filter, tokenize and pack one group of trace rows."""
    from potstill.schemas.training import TraceDataConfig

    data = TraceDataConfig.model_validate(data_cfg)
    tok = _trace_tokenizer(tokenizer_path, use_teacher_ids, topk_width, data.storage.model_dump_json())
    kept = table.filter(keep_mask(table, data))
    docs = [tok(row) for row in rows_from_arrow(kept, topk_width)]
    too_long = sum(len(d) > max_tokens for d in docs)
    if too_long:
        log.warning("%d of %d traces are longer than packing.max_tokens=%d and were left out", too_long, len(docs), max_tokens)
    pad = tok.tokenizer.pad_token_id if tok.tokenizer.pad_token_id is not None else 0
    return pack(docs, max_tokens, pad, topk_width, packing_enabled)
