"""torch.distributed.checkpoint (DCP) readers and writers over the project's one storage stack.

    writer = dcp_writer("s3://bucket/ckpt/run/checkpoint_000100", storage_cfg)
    dcp.save(state, storage_writer=writer)            # one `__<rank>_0.distcp` file per rank, then `.metadata`
    dcp.load(state, storage_reader=dcp_reader(uri, storage_cfg))

DCP's own `FsspecWriter` builds a fresh filesystem from the URL; these use the
filesystem `output.storage.filesystem_for` returns instead, so checkpoint
objects on S3 go through the same s3fs client, endpoint settings and retry
policy (`RetryPolicy`: exponential backoff with jitter on 5xx, throttling and
connection errors) as every other object potstill writes. Local folders use
DCP's plain file writer (fsync'd). A checkpoint is complete once `.metadata`
exists: DCP writes it last, after every rank's data file.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from potstill.schemas.generation import StorageConfig

METADATA = ".metadata"


def _storage_filesystem(fs: Any) -> Any:
    """DCP's fsspec `FileSystem` adapter bound to an existing fsspec filesystem object."""
    from torch.distributed.checkpoint._fsspec_filesystem import FileSystem

    class StorageFileSystem(FileSystem):
        def __init__(self) -> None:
            super().__init__()
            self.fs = fs

        def init_path(self, path: str | os.PathLike, **kwargs: Any) -> str | os.PathLike:
            return path

    return StorageFileSystem()


def dcp_writer(uri: str, storage: "StorageConfig | None" = None, thread_count: int = 1) -> Any:
    """A DCP `FileSystemWriter` for `uri` (local folder or s3://), writing through `filesystem_for`."""
    from torch.distributed.checkpoint import FileSystemWriter

    from potstill.pipelines.output.storage import filesystem_for, is_remote

    if not is_remote(uri):
        return FileSystemWriter(uri, thread_count=thread_count)
    fs, path = filesystem_for(uri, storage)
    # An acknowledged S3 PUT is durable; fsync would fall back to a machine-wide os.sync() on s3fs file objects.
    writer = FileSystemWriter(path, sync_files=False, thread_count=thread_count)
    writer.fs = _storage_filesystem(fs)
    writer.path = path
    return writer


def dcp_reader(uri: str, storage: "StorageConfig | None" = None) -> Any:
    """A DCP `FileSystemReader` for `uri` (local folder or s3://), reading through `filesystem_for`."""
    from torch.distributed.checkpoint import FileSystemReader

    from potstill.pipelines.output.storage import filesystem_for, is_remote

    if not is_remote(uri):
        return FileSystemReader(uri)
    fs, path = filesystem_for(uri, storage)
    reader = FileSystemReader(path)
    reader.fs = _storage_filesystem(fs)
    reader.path = path
    return reader


def is_complete(uri: str, storage: "StorageConfig | None" = None) -> bool:
    """True when the DCP checkpoint at `uri` has its `.metadata` (written after every rank's data)."""
    from potstill.pipelines.output.storage import filesystem_for

    fs, path = filesystem_for(uri, storage)
    return fs.exists(f"{path}/{METADATA}")


def write_text(uri: str, name: str, text: str, storage: "StorageConfig | None" = None) -> None:
    """Write a small text object `name` into the folder `uri` (local: atomically replaced)."""
    from potstill.pipelines.output.storage import Storage

    Storage(uri, storage).put(name, text.encode())


def read_text(uri: str, name: str, storage: "StorageConfig | None" = None) -> str:
    from potstill.pipelines.output.storage import Storage

    return Storage(uri, storage).read_bytes(name).decode()
