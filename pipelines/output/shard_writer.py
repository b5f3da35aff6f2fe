"""Write one shard's rows as a Parquet object, hashing while streaming, then verify what was stored.

    written = write_shard(storage, run_id, shard_id, records_to_table(rows), "zstd", 3)

The Parquet bytes go once, straight from the encoder through a sha256 wrapper
into the storage stream (multipart on S3, at most one part buffered): no
second serialisation, no whole-file copy in memory. Verification then reads
the stored object back in one pass: it re-hashes the bytes, checks the size
and parses the footer (row count, schema) from the object's tail. A mismatch
deletes the object and raises `CorruptShardError`: nothing gets committed.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from potstill.pipelines.output import topk_codec
from potstill.pipelines.output.storage import Storage
from potstill.schemas.trace import TRACE_SCHEMA_VERSION, TraceRecord, trace_arrow_schema, trace_schema_hash

_READ_CHUNK = 2**20


class CorruptShardError(RuntimeError):
    """The stored shard object does not match what was written."""


@dataclass(frozen=True)
class WrittenShard:
    """A verified, not yet committed, shard data object."""

    data_path: str  # relative to the run output root
    row_count: int
    size_bytes: int
    sha256: str
    attempt_id: str


def data_path_for(shard_id: str, attempt_id: str) -> str:
    """Where an attempt's data object lives: data/<shard_id>/<attempt_id>.parquet."""
    return f"data/{shard_id}/{attempt_id}.parquet"


# ---- rows -> table --------------------------------------------------------

def warm_up() -> None:
    """Pay pyarrow's one-time start-up cost now: its first `pa.array` imports pandas (docs/PERFORMANCE.md),
    which would otherwise land in a replica's first shard write, on the cores its running engine needs."""
    records_to_table([])


def _defaults() -> dict[str, Any]:
    return {name: info.default for name, info in TraceRecord.model_fields.items() if not info.is_required()}


def _message_dicts(messages: Any) -> list[dict[str, str]]:
    return [m if isinstance(m, dict) else {"role": m.role, "content": m.content} for m in messages]


def records_to_table(records: Sequence[TraceRecord | dict[str, Any]]) -> pa.Table:
    """Build a shard table column by column from TraceRecords or TraceRecord-shaped dicts.

    Dicts are not validated row by row (that is what makes this fast): a
    missing required key or a value of the wrong type raises ValueError
    naming the field. The teacher's top-k (per-token lists of ids and
    log-probabilities) are encoded in the compact layout (`topk_codec`), and
    every row is stamped with the layout version written (`TRACE_SCHEMA_VERSION`).
    """
    schema = trace_arrow_schema()
    defaults = _defaults()
    rows = [r if isinstance(r, dict) else r.__dict__ for r in records]
    arrays = []
    topk = None
    for field in schema:
        name = field.name
        if name == "schema_version":
            arrays.append(pa.array([TRACE_SCHEMA_VERSION] * len(rows), type=field.type))
            continue
        if name in (topk_codec.IDS_COLUMN, topk_codec.LOGPROBS_COLUMN):
            if topk is None:
                try:
                    topk = topk_codec.encode_topk_columns([r.get(topk_codec.IDS_COLUMN) for r in rows],
                                                          [r.get(topk_codec.LOGPROBS_COLUMN) for r in rows])
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"trace columns 'topk_ids'/'topk_logprobs' do not encode: {exc}. Give per-token "
                                     "lists of ids and log-probabilities of the same shape (or None for both).") from exc
            arrays.append(topk[0] if name == topk_codec.IDS_COLUMN else topk[1])
            continue
        try:
            if name in defaults:
                default = defaults[name]
                values = [r.get(name, default) for r in rows]
            else:
                values = [r[name] for r in rows]
        except KeyError:
            bad = next(i for i, r in enumerate(rows) if name not in r)
            raise ValueError(f"trace row {bad} has no {name!r}: every row needs the TraceRecord field {name!r}") from None
        if name == "messages":
            values = [_message_dicts(v) for v in values]
        try:
            arrays.append(pa.array(values, type=field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise ValueError(f"trace column {name!r} does not convert to {field.type}: {exc}. "
                             f"Give values of TraceRecord.{name}'s type.") from exc
    return pa.Table.from_arrays(arrays, schema=schema)


def _conform(table: pa.Table, run_id: str, shard_id: str, extra_meta: dict[bytes, bytes]) -> pa.Table:
    """`table` with exactly the trace schema (cast if only types differ), checked, with shard metadata."""
    schema = trace_arrow_schema()
    if (topk_codec.LOGPROBS_COLUMN in table.column_names
            and not topk_codec.is_compact(table.schema.field(topk_codec.LOGPROBS_COLUMN).type)):
        # A layout-1 table (float16 log-probabilities): re-encode its top-k and stamp the version written.
        ids, lps = topk_codec.reencode_v1(table.column(topk_codec.IDS_COLUMN), table.column(topk_codec.LOGPROBS_COLUMN))
        table = table.set_column(table.schema.get_field_index(topk_codec.IDS_COLUMN), topk_codec.IDS_COLUMN, ids)
        table = table.set_column(table.schema.get_field_index(topk_codec.LOGPROBS_COLUMN), topk_codec.LOGPROBS_COLUMN, lps)
        if "schema_version" in table.column_names:
            table = table.set_column(table.schema.get_field_index("schema_version"), "schema_version",
                                     pa.array([TRACE_SCHEMA_VERSION] * table.num_rows, pa.int16()))
    if not table.schema.remove_metadata().equals(schema.remove_metadata()):
        missing = [n for n in schema.names if n not in table.schema.names]
        extra = [n for n in table.schema.names if n not in schema.names]
        if missing or extra:
            raise ValueError(f"shard table does not match the trace schema: missing columns {missing}, "
                             f"unknown columns {extra}; build it with records_to_table()")
        try:
            table = table.select(schema.names).cast(schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValueError(f"shard table columns do not cast to the trace schema: {exc}") from exc
    for field in schema:
        if not field.nullable and table.column(field.name).null_count:
            raise ValueError(f"trace column {field.name!r} holds nulls but TraceRecord.{field.name} is required")
    for name, want in (("run_id", run_id), ("shard_id", shard_id)):
        got = set(pc.unique(table.column(name)).to_pylist()) - {want}
        if got:
            raise ValueError(f"trace column {name!r} holds {sorted(got)[:3]} but this shard is {name}={want!r}")
    return table.replace_schema_metadata({**(schema.metadata or {}), **extra_meta})


def parquet_leaf_paths(schema: pa.Schema) -> list[str]:
    """Parquet column paths of every leaf of `schema` (e.g. `messages.list.element.role`)."""
    def walk(prefix: str, typ: pa.DataType) -> list[str]:
        if pa.types.is_list(typ) or pa.types.is_large_list(typ):
            return walk(f"{prefix}.list.element", typ.value_type)
        if pa.types.is_struct(typ):
            return [p for i in range(typ.num_fields) for p in walk(f"{prefix}.{typ.field(i).name}", typ.field(i).type)]
        return [prefix]

    return [p for field in schema for p in walk(field.name, field.type)]


def encoding_options(schema: pa.Schema) -> dict[str, Any]:
    """`pq.write_table` options of a shard: BYTE_STREAM_SPLIT for the top-k ids (their bytes in separate streams
    compress about 30% better), dictionary encoding for every other column (pyarrow's default)."""
    leaves = parquet_leaf_paths(schema)
    split = [p for p in leaves if p == topk_codec.IDS_LEAF]
    return {"use_dictionary": [p for p in leaves if p not in split], "use_byte_stream_split": split}


# ---- streaming write with hashing ----------------------------------------

class _HashingWriter:
    """A write-only file that hashes and counts every byte on its way to `sink`.

    Inline on purpose: sha256 is far faster than the zstd encoder feeding it, so
    a helper thread would only add GIL hand-offs on a busy machine.
    """

    def __init__(self, sink: IO[bytes]):
        self._sink = sink
        self._hash = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: Any) -> int:
        self._hash.update(data)
        self._sink.write(data)
        n = memoryview(data).nbytes
        self.size += n
        return n

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._sink.flush()

    def close(self) -> None:  # the storage context manager owns the sink
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def write_shard(storage: Storage, run_id: str, shard_id: str, table_or_records: pa.Table | Sequence[TraceRecord | dict[str, Any]],
                compression: str = "zstd", level: int | None = 3, *, row_group_size: int | None = None) -> WrittenShard:
    """Write a shard as a new attempt object, verify it, and describe it for `commit_shard`.

    Raises CorruptShardError (after deleting the object) when the stored bytes
    differ from what was written; nothing is committed then.
    """
    table = table_or_records if isinstance(table_or_records, pa.Table) else records_to_table(table_or_records)
    attempt_id = uuid.uuid4().hex
    meta = {b"potstill.run_id": run_id.encode(), b"potstill.shard_id": shard_id.encode(),
            b"potstill.attempt_id": attempt_id.encode(), b"potstill.schema_hash": trace_schema_hash().encode()}
    table = _conform(table, run_id, shard_id, meta)
    rel = data_path_for(shard_id, attempt_id)
    codec = "none" if compression in (None, "none") else compression
    if codec in ("none", "snappy"):
        level = None  # these codecs have no levels; OutputConfig's default level is for zstd
    with storage.open_write(rel) as sink:
        out = _HashingWriter(sink)
        pq.write_table(table, out, compression=codec, compression_level=level, row_group_size=row_group_size,
                       **encoding_options(table.schema))
    written = WrittenShard(rel, table.num_rows, out.size, out.hexdigest(), attempt_id)
    # fsync (disk-bound) overlaps the read-back (page cache + hashing): both release the GIL.
    with ThreadPoolExecutor(1, thread_name_prefix="shard-sync") as pool:
        synced = pool.submit(storage.sync, rel)
        try:
            verify_shard(storage, written)
        except CorruptShardError:
            synced.result()
            storage.delete(rel)
            raise
        synced.result()
    return written


# ---- verification ---------------------------------------------------------

def _check_stored(storage: Storage, written: WrittenShard) -> bytes:
    """One pass over the stored object: sha256 and size must match; returns its Parquet footer bytes."""
    where = storage.uri_of(written.data_path)
    digest, size = hashlib.sha256(), 0
    buf = bytearray(_READ_CHUNK)
    view = memoryview(buf)
    with storage.open_read(written.data_path) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
            size += n
        if size != written.size_bytes:
            raise CorruptShardError(f"{where}: stored size {size} bytes != written {written.size_bytes}; the write was truncated or altered")
        sha = digest.hexdigest()
        if sha != written.sha256:
            raise CorruptShardError(f"{where}: stored sha256 {sha[:16]}… != written {written.sha256[:16]}…; the bytes changed in transit or at rest")
        return _footer_bytes(f, where, size)


def _footer_bytes(f: IO[bytes], where: str, size: int) -> bytes:
    """The footer (metadata + length + magic) read from the end of the open object."""
    if size < 12:
        raise CorruptShardError(f"{where}: {size} bytes is too small for a Parquet file")
    f.seek(size - 8)
    end = f.read(8)
    if end[4:] != b"PAR1":
        raise CorruptShardError(f"{where} does not end with a Parquet footer (PAR1 magic missing)")
    need = int.from_bytes(end[:4], "little") + 8
    if need > size - 4:
        raise CorruptShardError(f"{where}: Parquet footer length {need} exceeds the object size {size}")
    f.seek(size - need)
    return f.read(need)


def verify_shard(storage: Storage, written: WrittenShard) -> None:
    """Re-read the stored object: sha256, size, footer row count and schema must match `written`."""
    where = storage.uri_of(written.data_path)
    footer = storage.policy.call(lambda: _check_stored(storage, written), f"read back {where}")
    try:
        meta = pq.read_metadata(pa.BufferReader(footer))
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorruptShardError(f"{where}: unreadable Parquet footer: {exc}") from exc
    if meta.num_rows != written.row_count:
        raise CorruptShardError(f"{where}: footer says {meta.num_rows} rows, writer wrote {written.row_count}")
    try:
        stored = meta.schema.to_arrow_schema()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise CorruptShardError(f"{where}: footer schema unreadable: {exc}") from exc
    if not stored.remove_metadata().equals(trace_arrow_schema().remove_metadata()):
        raise CorruptShardError(f"{where}: stored schema differs from the trace schema (schema hash {trace_schema_hash()})")
