"""Open a prompt source (local or s3://) and stream its raw rows with bounded memory.

    source = open_source("s3://bucket/prompts.jsonl", "auto", storage)
    for row, data, file in iter_raw_rows(source, columns=["question"], check_schema=...): ...

JSONL is read in binary chunks and split into lines here (exact byte
offsets for UTF-8 errors; `.gz`/`.bz2`/`.xz` are decompressed on the fly);
Parquet is read record batch by record batch, only the mapped columns. A
source is one file or a folder of files of one format, read in sorted order.
Each raw row is a dict, or a `RowError` when the row cannot even be parsed.
Row numbers are 0-based: the line number for JSONL (blank lines are skipped
but counted), the row index for Parquet, running on across a folder's files.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from potstill.pipelines.ingest.report import WHOLE_ROW, IngestError, RowError
from potstill.pipelines.output.storage import filesystem_for, is_remote, scrub
from potstill.schemas.generation import StorageConfig

RawRow = tuple[int, "dict[str, Any] | RowError", "str | None"]
"""(0-based source row, parsed row or why it could not be parsed, file name within a folder source)."""

PEEK_ROWS = 64
"""JSONL rows looked at before reading, to catch a field mapping that matches no row."""
CHUNK_BYTES = 1 << 20
READ_BLOCK_BYTES = 8 << 20
"""Remote read-ahead block: large enough for throughput, small enough to keep memory bounded."""
PARQUET_BATCH_ROWS = 1024
MAX_LINE_BYTES = 16 << 20
"""Longest JSONL line read into memory; a longer one is skipped unread (a RowError), never buffered whole."""
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet",
             ".parq": "parquet"}
_COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma", ".zst": "zstd"}


@dataclass(frozen=True)
class PromptSource:
    """A resolved prompt source: its filesystem, the files to read in order, and their format."""

    uri: str
    fs: Any
    files: list[str]
    format: str
    folder: bool

    def name_of(self, path: str) -> str | None:
        """The file's name relative to the folder (None for a single-file source)."""
        return path.rsplit("/", 1)[-1] if self.folder else None


def format_of(path: str) -> str | None:
    """`jsonl` or `parquet` from the file name (compression suffixes ignored), None if unknown."""
    name = path.rsplit("/", 1)[-1].lower()
    for suffix in _COMPRESSION:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return next((fmt for suffix, fmt in _SUFFIXES.items() if name.endswith(suffix)), None)


def open_source(uri: str, fmt: str, storage: StorageConfig | None) -> PromptSource:
    """Resolve `prompts.path`: check it exists, list a folder, settle the format; IngestError if unusable."""
    fs, path = filesystem_for(uri, storage)
    try:
        exists, is_dir = fs.exists(path), fs.isdir(path)
    except OSError as e:  # credentials, endpoint, permissions
        raise IngestError(f"prompts.path: cannot access {uri} ({scrub(str(e))}); check the storage endpoint "
                          "and the credentials (AWS_* environment variables)") from e
    if not exists:
        where = uri if is_remote(uri) else f"{uri} (resolved to {os.path.abspath(path)})"
        raise IngestError(f"prompts.path: no file or folder at {where}; fix the path or create the file")
    if not is_dir:
        file_fmt = fmt if fmt != "auto" else format_of(path)
        if file_fmt is None:
            raise IngestError(f"prompts.format: cannot tell the format of {uri} from its extension; set "
                              "prompts.format to jsonl or parquet")
        return PromptSource(uri, fs, [path], file_fmt, folder=False)
    names = sorted(p for p in fs.find(path) if not p.rsplit("/", 1)[-1].startswith(("_", ".")))
    found = {f for f in map(format_of, names) if f}
    if fmt == "auto":
        if len(found) != 1:
            what = "no .jsonl or .parquet files" if not found else "both JSONL and Parquet files"
            raise IngestError(f"prompts.path: folder {uri} holds {what}; point prompts.path at one file or a folder "
                              "of one format, or set prompts.format")
        fmt = found.pop()
    files = [p for p in names if format_of(p) == fmt]
    if not files:
        raise IngestError(f"prompts.path: folder {uri} holds no {fmt} files; fix prompts.path or prompts.format")
    return PromptSource(uri, fs, files, fmt, folder=True)


def peek_columns(source: PromptSource) -> list[str] | None:
    """Columns of the first file: the Parquet schema, or the keys seen in the first JSONL rows (None: no row parsed)."""
    first = source.files[0]
    if source.format == "parquet":
        return _parquet_columns(source.fs, first)
    columns: dict[str, None] = {}
    parsed = 0
    with _open_binary(source.fs, first, CHUNK_BYTES) as f:
        for _, data, _ in itertools.islice(_jsonl_rows(f, 0, None), PEEK_ROWS):
            if isinstance(data, dict):
                parsed += 1
                columns.update(dict.fromkeys(data))
    return list(columns) if parsed else None


def iter_raw_rows(source: PromptSource, columns: list[str],
                  check_schema: Callable[[list[str], str], None]) -> Iterator[RawRow]:
    """Every row of every file in order; Parquet reads only `columns`, after `check_schema(file columns, uri)`."""
    start = 0
    for path in source.files:
        name = source.name_of(path)
        if source.format == "parquet":
            uri = f"{source.uri.rstrip('/')}/{name}" if name else source.uri
            start = yield from _parquet_rows(source.fs, path, uri, columns, start, name, check_schema)
        else:
            with _open_binary(source.fs, path) as f:
                start = yield from _jsonl_rows(f, start, name)


def _parquet_rows(fs: Any, path: str, uri: str, columns: list[str], start: int, name: str | None,
                  check_schema: Callable[[list[str], str], None]) -> Generator[RawRow, None, int]:
    """The file's rows, batch by batch; returns the row number after its last row."""
    import pyarrow.parquet as pq

    row = start
    with fs.open(path, "rb", block_size=READ_BLOCK_BYTES) as f:
        pf = pq.ParquetFile(f)
        check_schema(pf.schema_arrow.names, uri)
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
            for data in _batch_rows(batch, row, name):
                yield row, data, name
                row += 1
    return row


def _batch_rows(batch: Any, first_row: int, name: str | None) -> Iterator[dict[str, Any] | RowError]:
    """A record batch as dicts; on undecodable text, decode cell by cell and name the bad row and column."""
    try:
        yield from batch.to_pylist()
        return
    except UnicodeDecodeError:
        pass
    for i in range(batch.num_rows):
        data: dict[str, Any] = {}
        for column, values in zip(batch.schema.names, batch.columns):
            try:
                data[column] = values[i].as_py()
            except UnicodeDecodeError as e:
                data = RowError(first_row + i, column, f"invalid UTF-8 at byte offset {e.start} of the value; "
                                "rewrite the column as UTF-8 text", "non_utf8", name)  # type: ignore[assignment]
                break
        yield data


def _parquet_columns(fs: Any, path: str) -> list[str]:
    import pyarrow.parquet as pq

    with fs.open(path, "rb", block_size=CHUNK_BYTES) as f:
        return list(pq.ParquetFile(f).schema_arrow.names)


def _open_binary(fs: Any, path: str, block_size: int = READ_BLOCK_BYTES) -> BinaryIO:
    """The file opened for binary reading, decompressed when its name ends in .gz/.bz2/.xz/.zst."""
    f = fs.open(path, "rb", block_size=block_size)
    compression = next((c for s, c in _COMPRESSION.items() if path.lower().endswith(s)), None)
    if compression is None:
        return f
    from fsspec.compression import compr

    if compression not in compr:
        f.close()
        raise IngestError(f"prompts.path: {path} is {compression}-compressed but that codec is not installed; "
                          "install it or decompress the file")
    return compr[compression](f, mode="rb")


def _jsonl_rows(f: BinaryIO, start: int, name: str | None,
                max_line_bytes: int = MAX_LINE_BYTES) -> Generator[RawRow, None, int]:
    """Parse each non-blank line, numbered by line from `start`; returns the row number after the last line."""
    index = -1
    for index, offset, line, size in _lines(f, max_line_bytes):
        if line is None:
            yield start + index, RowError(
                start + index, WHOLE_ROW, f"the line is {size:,} bytes (at byte {offset:,} of the file), over the "
                f"{max_line_bytes:,} a prompt row may take; it was skipped without being read whole. Move long "
                "fields out of the prompt file, or split the row", "line_too_long", name), name
        elif line.strip():
            yield start + index, _parse_line(start + index, line, offset, name, first=index == 0), name
    return start + index + 1


def _lines(f: BinaryIO, max_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, int, bytes | None, int]]:
    """(line index, byte offset, line without its newline, its size), reading fixed-size chunks.

    A line longer than `max_bytes` comes back as None (with its full size): its bytes are dropped as they are
    read, so memory holds at most `max_bytes` of one line.
    """
    index, offset, parts, size = 0, 0, [], 0
    while chunk := f.read(CHUNK_BYTES):
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            size += end - start
            if size <= max_bytes:
                parts.append(chunk[start:end])
                yield index, offset, b"".join(parts) if len(parts) > 1 else parts[0], size
            else:
                yield index, offset, None, size
            index, offset, start, parts, size = index + 1, offset + size + 1, end + 1, [], 0
        if start < len(chunk):
            size += len(chunk) - start
            if size <= max_bytes:
                parts.append(chunk[start:])
            else:
                parts = []  # too long: count the rest of the line, keep none of it
    if size:
        yield index, offset, b"".join(parts) if size <= max_bytes else None, size


def _parse_line(row: int, line: bytes, offset: int, name: str | None, first: bool) -> dict[str, Any] | RowError:
    if first and line.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte order mark
        line, offset = line[3:], offset + 3
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        return _utf8_error(row, line, offset, e, name)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        near = text[max(0, e.pos - 20): e.pos + 20].strip()
        return RowError(row, WHOLE_ROW, f"invalid JSON: {e.msg} (character {e.pos}, near {near!r}); make the line "
                        "one complete JSON object", "invalid_json", name)
    if not isinstance(data, dict):
        kind = type(data).__name__
        return RowError(row, WHOLE_ROW, f"the line is a JSON {kind}, not an object; write each row as one JSON "
                        'object, e.g. {"prompt": "..."}', "not_an_object", name)
    return data


def _utf8_error(row: int, line: bytes, offset: int, e: UnicodeDecodeError, name: str | None) -> RowError:
    """Name the bad byte, its offsets, and the field it sits in when the rest of the line parses."""
    field = WHOLE_ROW
    try:
        data = json.loads(line.decode("utf-8", "surrogateescape"))
        if isinstance(data, dict):
            field = next((k for k, v in data.items() if _has_escaped_byte(k) or _has_escaped_byte(v)), WHOLE_ROW)
    except json.JSONDecodeError:
        pass
    return RowError(row, field, f"not valid UTF-8: byte 0x{line[e.start]:02x} at byte offset {e.start} of the line "
                    f"(byte {offset + e.start} of the file); re-encode the file as UTF-8 "
                    "(e.g. iconv -f latin1 -t utf-8)", "non_utf8", name)


def _has_escaped_byte(value: Any) -> bool:
    if isinstance(value, str):
        return any("\udc80" <= ch <= "\udcff" for ch in value)
    if isinstance(value, list):
        return any(map(_has_escaped_byte, value))
    if isinstance(value, dict):
        return any(_has_escaped_byte(k) or _has_escaped_byte(v) for k, v in value.items())
    return False
