"""Storage access for local folders and s3:// URIs: one small, retrying, conditional-create API.

    store = Storage("s3://bucket/runs/r1", StorageConfig(endpoint_url="http://127.0.0.1:9000"))
    store.put_if_absent("commits/000000-ab.json", b"{...}")   # False: someone else created it

Everything the commit protocol needs is here: conditional create (S3
`PutObject` with `If-None-Match: *`; locally a temp file hard-linked into
place, so a half-written object is never visible), streaming writes
(multipart on S3), reads, listings and deletes. Every S3 request is retried
with exponential backoff and full jitter on 5xx, throttling, timeouts and
connection errors, at most `StorageConfig.max_retries` times; other 4xx are
never retried. Credentials are never passed here: s3fs reads them from the
environment (or the instance role), and error messages are scrubbed of them.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Any, TypeVar

from potstill.schemas.generation import StorageConfig

T = TypeVar("T")

TEMP_SUFFIX = ".potstill-tmp"

# Error codes S3 (and S3-compatible stores) send for "try again later".
_RETRYABLE_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestLimitExceeded", "TooManyRequestsException", "ProvisionedThroughputExceededException",
    "RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable",
    # 409s that S3 documents as "a conflicting operation is in progress, retry".
    "OperationAborted", "ConditionalRequestConflict",
})


PROBE_PREFIX = "_potstill_probe"
"""Name prefix of short-lived probe objects at the root (conditional-create check, the store's clock); never part of a run."""


class StorageUnavailableError(OSError):
    """A storage request still failed with a transient error after every retry."""


class ConditionalWritesUnsupportedError(RuntimeError):
    """The store does not implement conditional writes (`If-None-Match: *`), so exactly-once commits are impossible."""


def is_remote(uri: str) -> bool:
    """True for s3:// (and s3a://) URIs."""
    return uri.startswith(("s3://", "s3a://"))


def scrub(text: str) -> str:
    """`text` without anything that looks like a credential (keys, tokens, URL userinfo, signatures)."""
    for var in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"):
        secret = os.environ.get(var)
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = re.sub(r"(://)[^/@\s]+@", r"\1***@", text)
    text = re.sub(r"\b(A3T[A-Z0-9]|AKIA|ASIA|AGPA|AIDA|AROA)[A-Z0-9]{16}\b", "***", text)
    return re.sub(r"(?i)(X-Amz-(?:Signature|Credential|Security-Token)=)[^&\s]+", r"\1***", text)


def _client_error(exc: BaseException) -> Any | None:
    """The botocore ClientError behind `exc` (s3fs translates them into OSErrors), if any."""
    seen = 0
    while exc is not None and seen < 5:
        if hasattr(exc, "response") and isinstance(getattr(exc, "response"), dict):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def error_code(exc: BaseException) -> tuple[str | None, int | None]:
    """(S3 error code, HTTP status) behind `exc`, or (None, None) when it is not an S3 response."""
    err = _client_error(exc)
    if err is None:
        return None, None
    resp = err.response
    return resp.get("Error", {}).get("Code"), resp.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _transient_types() -> tuple[type[BaseException], ...]:
    import botocore.exceptions as bx
    from fsspec.exceptions import FSTimeoutError

    types: list[type[BaseException]] = [
        TimeoutError, ConnectionError, FSTimeoutError, bx.HTTPClientError, bx.ConnectionError, bx.IncompleteReadError,
    ]
    try:
        from botocore.parsers import ResponseParserError  # throttling replies sometimes carry broken XML

        types.append(ResponseParserError)
    except ImportError:  # pragma: no cover - older botocore
        pass
    try:
        import aiohttp

        types += [aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, aiohttp.ServerTimeoutError]
    except ImportError:  # pragma: no cover - aiohttp always comes with aiobotocore
        pass
    return tuple(types)


def is_not_implemented(exc: BaseException) -> bool:
    """True when the store answered 501 NotImplemented: a missing feature, not a passing fault."""
    code, status = error_code(exc)
    return code == "NotImplemented" or status == 501


def is_retryable(exc: BaseException) -> bool:
    """True for errors worth retrying: 5xx (but 501), 429/throttling, timeouts, connection errors. Never other 4xx."""
    if isinstance(exc, StorageUnavailableError):
        return False  # retries already exhausted below: never multiply the attempts
    if is_not_implemented(exc):
        return False  # the store lacks the feature: asking again gets the same answer
    code, status = error_code(exc)
    if code is not None or status is not None:
        return code in _RETRYABLE_CODES or status == 429 or (status is not None and status >= 500)
    return isinstance(exc, _transient_types())


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: sleep uniform(0, min(max_delay, base_delay * 2**attempt))."""

    max_retries: int = 8
    base_delay: float = 0.2
    max_delay: float = 20.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0.0, min(self.max_delay, self.base_delay * 2**attempt))

    def exhausted(self, what: str, attempts: int, exc: BaseException) -> StorageUnavailableError:
        err = StorageUnavailableError(
            f"{what} failed after {attempts} attempts: {type(exc).__name__}: {scrub(str(exc))}. "
            f"Every attempt failed with a transient error (5xx, throttling, timeout or connection); "
            f"check the endpoint and network, or raise storage.max_retries (now {self.max_retries}).")
        err.__cause__ = exc
        return err

    def call(self, fn: Callable[[], T], what: str) -> T:
        """Run `fn`, retrying transient failures; raises StorageUnavailableError when they persist."""
        for attempt in range(self.max_retries + 1):
            try:
                return fn()
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                if attempt == self.max_retries:
                    raise self.exhausted(what, attempt + 1, exc) from exc
                time.sleep(self.delay(attempt))
        raise AssertionError("unreachable")


def _retrying_s3_class():
    """An s3fs filesystem whose every S3 request goes through one RetryPolicy.

    s3fs's own retry loop (`retries`) and botocore's are both set to a single
    attempt so retries never multiply; s3fs's `_call_s3` still translates
    errors (404 -> FileNotFoundError, 412 If-None-Match -> FileExistsError).
    """
    import s3fs
    from fsspec.asyn import sync_wrapper

    class RetryingS3FileSystem(s3fs.S3FileSystem):
        retries = 1

        def __init__(self, *args: Any, retry_policy: RetryPolicy | None = None, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.retry_policy = retry_policy or RetryPolicy()

        async def _call_s3(self, method, *akwarglist, **kwargs):
            policy = self.retry_policy
            for attempt in range(policy.max_retries + 1):
                try:
                    return await super()._call_s3(method, *akwarglist, **kwargs)
                except Exception as exc:
                    if not is_retryable(exc):
                        raise
                    if attempt == policy.max_retries:
                        where = f"{kwargs.get('Bucket', '')}/{kwargs.get('Key', '')}".rstrip("/")
                        raise policy.exhausted(f"S3 {method} s3://{where}", attempt + 1, exc) from exc
                    await asyncio.sleep(policy.delay(attempt))

        # The parent's sync `call_s3` wraps the parent's coroutine directly, not by name.
        call_s3 = sync_wrapper(_call_s3)

        async def _get_bytes(self, bucket: str, key: str) -> bytes:
            """One GET (s3fs's cat_file adds a HEAD and, on 404, a LIST)."""
            resp = await self._call_s3("get_object", Bucket=bucket, Key=key)
            try:
                return await resp["Body"].read()
            finally:
                resp["Body"].close()

        async def _get_many(self, pairs: list[tuple[str, str]], concurrency: int = 32) -> list[bytes]:
            gate = asyncio.Semaphore(concurrency)

            async def one(bucket: str, key: str) -> bytes:
                async with gate:
                    return await self._get_bytes(bucket, key)

            return await asyncio.gather(*(one(b, k) for b, k in pairs))

        get_bytes = sync_wrapper(_get_bytes)
        get_many = sync_wrapper(_get_many)

    # Pickles by name, through the module __getattr__ below.
    RetryingS3FileSystem.__module__, RetryingS3FileSystem.__qualname__ = __name__, "RetryingS3FileSystem"
    return RetryingS3FileSystem


_S3_CLASS = None


def __getattr__(name: str) -> Any:
    # The s3fs subclass is built on first use (s3fs/aiobotocore import slowly) yet pickles
    # by reference, as Ray needs when a Storage or filesystem goes to a worker.
    global _S3_CLASS
    if name == "RetryingS3FileSystem":
        if _S3_CLASS is None:
            _S3_CLASS = _retrying_s3_class()
        return _S3_CLASS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def s3_filesystem(storage: StorageConfig, policy: RetryPolicy | None = None):
    """An s3fs filesystem for `storage` (endpoint passed explicitly, never read from AWS_ENDPOINT_URL)."""
    client_kwargs: dict[str, Any] = {}
    if storage.endpoint_url:
        client_kwargs["endpoint_url"] = storage.endpoint_url
    if storage.region:
        client_kwargs["region_name"] = storage.region
    return __getattr__("RetryingS3FileSystem")(
        anon=storage.anonymous,
        client_kwargs=client_kwargs,
        config_kwargs={"retries": {"max_attempts": 1, "mode": "standard"}},
        skip_instance_cache=False,  # one client per process and settings (fsspec drops it after a fork)
        use_listings_cache=False,
        retry_policy=policy or RetryPolicy(max_retries=storage.max_retries),
    )


def filesystem_for(uri: str, storage: StorageConfig | None = None):
    """The fsspec filesystem that serves `uri`, and the path within it."""
    import fsspec

    storage = storage or StorageConfig()
    if is_remote(uri):
        return s3_filesystem(storage), uri.split("://", 1)[1].rstrip("/")
    return fsspec.filesystem("file"), uri.rstrip("/") if uri not in ("/",) else uri


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object, as a listing returns it."""

    rel: str
    size: int
    modified: datetime


class Storage:
    """A run output root (local folder or s3:// prefix) addressed by paths relative to it."""

    def __init__(self, uri: str, config: StorageConfig | None = None, *, policy: RetryPolicy | None = None,
                 part_size: int = 64 * 2**20):
        if part_size < 5 * 2**20:
            raise ValueError(f"part_size={part_size} is below S3's 5 MiB minimum multipart part size")
        self.config = config or StorageConfig()
        self.part_size = part_size
        self.remote = is_remote(uri)
        self.policy = policy or RetryPolicy(max_retries=self.config.max_retries)
        if self.remote:
            self.scheme, rest = uri.split("://", 1)
            self.root = rest.rstrip("/")
            if not self.root:
                raise ValueError(f"storage URI {uri!r} names no bucket; use s3://bucket/prefix")
            self.fs = s3_filesystem(self.config, self.policy)
            self.uri = f"{self.scheme}://{self.root}"
        else:
            import fsspec

            local = uri[len("file://"):] if uri.startswith("file://") else uri
            self.root = os.path.abspath(os.path.expanduser(local))
            self.fs = fsspec.filesystem("file")
            self.uri = self.root

    def __repr__(self) -> str:  # never the client config: it may hold credentials
        return f"Storage({self.uri!r})"

    def __reduce__(self):  # travels to Ray workers as its arguments; each process opens its own client
        return _rebuild_storage, (self.uri, self.config, self.policy, self.part_size)

    def check_conditional_create(self) -> None:
        """Fail fast if the store ignores `If-None-Match: *` (then exactly-once commits are impossible).

        AWS S3 honours it since 2024-08; some S3-compatible stores accept the
        header and overwrite anyway. Call once when a run starts.
        """
        rel = f"{PROBE_PREFIX}-{uuid.uuid4().hex}"
        try:
            if not self.put_if_absent(rel, b"1") or self.put_if_absent(rel, b"2"):
                raise RuntimeError(
                    f"{self.uri_of(rel)}: the store overwrote an object despite If-None-Match: * (or refused a "
                    f"fresh create); potstill's exactly-once commits need conditional writes. Use AWS S3 or an "
                    f"S3-compatible store/version that supports them")
        finally:
            self.delete(rel)

    # paths ---------------------------------------------------------------

    def path(self, rel: str) -> str:
        """The filesystem path of `rel` (bucket/key on S3, absolute path locally)."""
        rel = rel.strip("/")
        if not rel or any(part in ("", ".", "..") for part in rel.split("/")):
            raise ValueError(f"storage path {rel!r} is not a clean relative path (no '', '.', '..' parts)")
        return f"{self.root}/{rel}" if self.remote else os.path.join(self.root, *rel.split("/"))

    def uri_of(self, rel: str) -> str:
        """The full URI of `rel`: s3://bucket/prefix/rel, or an absolute local path."""
        return f"{self.scheme}://{self.path(rel)}" if self.remote else self.path(rel)

    def _split(self, rel: str) -> tuple[str, str]:
        bucket, _, key = self.path(rel).partition("/")
        return bucket, key

    # writes --------------------------------------------------------------

    def put_if_absent(self, rel: str, data: bytes) -> bool:
        """Create `rel` holding `data` unless something is there. True iff `rel` now holds exactly `data`.

        A conditional PUT that S3 (or botocore) retries after its first try
        landed but the reply was lost gets 412 on the retry although the object
        is ours, so a 412 is resolved by reading the object: identical bytes
        answer True, anything else False. Callers whose bytes are unique per
        writer (a commit names its attempt) can read True as "we created it";
        locally the same rule applies so both backends answer alike.
        """
        if self.remote:
            bucket, key = self._split(rel)
            try:
                self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
                return True
            except Exception as exc:
                if is_not_implemented(exc):
                    raise ConditionalWritesUnsupportedError(
                        f"{self.uri_of(rel)}: the store answered 501 NotImplemented to a conditional write (PutObject "
                        f"with If-None-Match: *). potstill's exactly-once commits need conditional writes; use AWS S3 "
                        f"or an S3-compatible store (and version) that implements them") from None
                if not (isinstance(exc, FileExistsError) or error_code(exc)[1] == 412):
                    raise
        elif self._local_create(rel, data):
            return True
        try:
            return self.read_bytes(rel) == data
        except FileNotFoundError:  # deleted right after: it was never ours
            return False

    def put(self, rel: str, data: bytes) -> None:
        """Write `rel`, replacing any previous content (atomically: readers see old or new bytes)."""
        if self.remote:
            bucket, key = self._split(rel)
            self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data)
            return
        final = self.path(rel)
        tmp = _durable_temp_copy(final, data)
        try:
            os.replace(tmp, final)
        finally:
            _remove_quietly(tmp)

    @contextmanager
    def open_write(self, rel: str) -> Iterator[IO[bytes]]:
        """Stream a new object to `rel` (multipart on S3); it appears only if the block exits cleanly.

        On an exception the partial object is discarded (S3: the multipart
        upload is aborted; locally the temp file is removed). Never
        overwrites: locally an existing `rel` raises FileExistsError. Locally
        the object is not yet durable: call `sync(rel)` before publishing it.
        """
        if self.remote:
            # "wb", not "xb": keys are unique per attempt, and a conditional complete whose
            # reply was lost would fail its retry with 412 although the object landed.
            f = self.fs.open(self.path(rel), "wb", block_size=self.part_size)
            try:
                yield f
            except BaseException:
                f.discard()
                f.closed = True  # else fsspec's __del__ would try to upload the discarded buffer
                raise
            f.close()
            return
        final = self.path(rel)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        tmp = f"{final}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
        try:
            with open(tmp, "wb") as f:
                yield f
            os.link(tmp, final)  # the complete file appears at once, and never over another
        finally:
            _remove_quietly(tmp)

    def sync(self, rel: str) -> None:
        """Make `rel` durable (locally: fsync it and its folder; an acknowledged S3 PUT already is)."""
        if self.remote:
            return
        fd = os.open(self.path(rel), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(os.path.dirname(self.path(rel)))

    def _local_create(self, rel: str, data: bytes) -> bool:
        final = self.path(rel)
        tmp = _durable_temp_copy(final, data)
        try:
            try:
                os.link(tmp, final)  # atomic and exclusive: the full file appears, or FileExistsError
            except FileExistsError:
                return False
        finally:
            _remove_quietly(tmp)
        _fsync_dir(os.path.dirname(final))
        return True

    def delete(self, rel: str) -> None:
        """Remove `rel`; a missing object is not an error."""
        if self.remote:
            bucket, key = self._split(rel)
            self.fs.call_s3("delete_object", Bucket=bucket, Key=key)
        else:
            _remove_quietly(self.path(rel))

    # reads ---------------------------------------------------------------

    def read_bytes(self, rel: str) -> bytes:
        """The whole content of `rel` (FileNotFoundError when absent)."""
        if self.remote:
            return self.policy.call(lambda: self.fs.get_bytes(*self._split(rel)), f"read {self.uri_of(rel)}")
        with open(self.path(rel), "rb") as f:
            return f.read()

    def read_many(self, rels: list[str]) -> dict[str, bytes]:
        """Contents of several objects (concurrent requests on S3)."""
        if not rels:
            return {}
        if not self.remote:
            return {rel: self.read_bytes(rel) for rel in rels}
        pairs = [self._split(rel) for rel in rels]
        got = self.policy.call(lambda: self.fs.get_many(pairs), f"read {len(rels)} objects under {self.uri}")
        return dict(zip(rels, got))

    def open_read(self, rel: str) -> IO[bytes]:
        """A seekable binary file over `rel` (for Parquet footers and streaming reads)."""
        return self.fs.open(self.path(rel), "rb") if self.remote else open(self.path(rel), "rb")

    def read_table(self, rel: str, columns: list[str] | None = None) -> Any:
        """The Parquet file at `rel` as a pyarrow Table (only `columns` when given).

        Reads through `ParquetFile` rather than `pq.read_table`: the latter scans
        with Arrow's dataset machinery, whose IO threads may drop the last
        reference to our Python file object after the read returned; if that
        happens while the interpreter exits, the thread cannot take the GIL and
        the process aborts ("terminate called without an active exception").
        """
        import pyarrow.parquet as pq

        with self.open_read(rel) as f, pq.ParquetFile(f) as parquet:
            return parquet.read(columns=columns)

    def exists(self, rel: str) -> bool:
        """True when an object (not a folder) is stored at `rel`."""
        if not self.remote:
            return os.path.isfile(self.path(rel))
        try:
            self.size(rel)
            return True
        except FileNotFoundError:
            return False

    def size(self, rel: str) -> int:
        """Size of `rel` in bytes (FileNotFoundError when absent)."""
        if not self.remote:
            return os.path.getsize(self.path(rel))
        bucket, key = self._split(rel)
        try:
            return int(self.fs.call_s3("head_object", Bucket=bucket, Key=key)["ContentLength"])
        except Exception as exc:
            if error_code(exc)[1] == 404:
                raise FileNotFoundError(self.uri_of(rel)) from exc
            raise

    def modified(self, rel: str) -> datetime:
        """When the store last wrote `rel`, by the store's own clock (FileNotFoundError when absent)."""
        if not self.remote:
            return datetime.fromtimestamp(os.stat(self.path(rel)).st_mtime, timezone.utc)
        bucket, key = self._split(rel)
        try:
            return self.fs.call_s3("head_object", Bucket=bucket, Key=key)["LastModified"].astimezone(timezone.utc)
        except Exception as exc:
            if error_code(exc)[1] == 404:
                raise FileNotFoundError(self.uri_of(rel)) from exc
            raise

    def store_now(self) -> datetime:
        """The store's current time: the modification time it gives a fresh probe object.

        Ages of stored objects are measured against this, never against this
        machine's clock, which may be skewed from the store's by minutes.
        """
        rel = f"{PROBE_PREFIX}-{uuid.uuid4().hex}"
        self.put(rel, b"")
        try:
            return self.modified(rel)
        finally:
            self.delete(rel)

    def top_level(self, limit: int = 16) -> list[str]:
        """Up to `limit` names directly under the root (objects and folders), without listing deeper."""
        if not self.remote:
            try:
                with os.scandir(self.root) as entries:
                    return sorted(e.name for _, e in zip(range(limit), entries))
            except (FileNotFoundError, NotADirectoryError):
                return []
        bucket, _, key = self.root.partition("/")
        prefix = f"{key}/" if key else ""
        page = self.fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, Delimiter="/", MaxKeys=limit)
        names = [p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
        names += [o["Key"][len(prefix):] for o in page.get("Contents", [])]
        return sorted(names)[:limit]

    def list(self, rel_prefix: str = "") -> list[str]:
        """Relative paths of every object under the folder `rel_prefix`, sorted."""
        return [info.rel for info in self.list_info(rel_prefix)]

    def list_info(self, rel_prefix: str = "", *, include_temp: bool = False) -> list[ObjectInfo]:
        """Objects under the folder `rel_prefix` with size and modification time, sorted by path."""
        base = self.path(rel_prefix) if rel_prefix.strip("/") else self.root
        out: list[ObjectInfo] = []
        if self.remote:
            try:
                found = self.fs.find(base, detail=True)
            except FileNotFoundError:
                found = {}
            for name, info in found.items():
                if info.get("type") != "file" or not name.startswith(self.root + "/"):
                    continue
                modified = info.get("LastModified") or datetime.now(timezone.utc)
                out.append(ObjectInfo(name[len(self.root) + 1:], int(info.get("size", 0)), modified.astimezone(timezone.utc)))
        else:
            for dirpath, _, files in os.walk(base):
                for name in files:
                    if name.endswith(TEMP_SUFFIX) and not include_temp:
                        continue
                    full = os.path.join(dirpath, name)
                    try:
                        st = os.stat(full)
                    except FileNotFoundError:
                        continue
                    rel = os.path.relpath(full, self.root).replace(os.sep, "/")
                    out.append(ObjectInfo(rel, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc)))
        return sorted(out, key=lambda i: i.rel)

    # housekeeping --------------------------------------------------------

    def incomplete(self, rel_prefix: str) -> list[IncompleteWrite]:
        """Partial writes under the folder `rel_prefix` that never became objects (or have not yet).

        S3: multipart uploads not completed; locally: temp files of
        `open_write`/`put_if_absent`. Each names the object it was writing.
        """
        found: list[IncompleteWrite] = []
        if not self.remote:
            for info in self.list_info(rel_prefix, include_temp=True):
                if info.rel.endswith(TEMP_SUFFIX):
                    target = info.rel[: -len(TEMP_SUFFIX)].rsplit(".", 1)[0]
                    found.append(IncompleteWrite(target, info.modified, info.rel, None))
            return found
        bucket, key = self._split(rel_prefix)
        root_key = self.root.partition("/")[2]
        kw: dict[str, str] = {}
        while True:
            page = self.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key.rstrip("/") + "/", **kw)
            for upload in page.get("Uploads", []):
                rel = upload["Key"][len(root_key):].lstrip("/")
                found.append(IncompleteWrite(rel, upload["Initiated"].astimezone(timezone.utc), rel, upload["UploadId"]))
            if not page.get("IsTruncated"):
                return found
            kw = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}

    def discard(self, write: IncompleteWrite) -> None:
        """Remove a partial write: abort the multipart upload, or delete the temp file."""
        if write.upload_id is None:
            self.delete(write.stored)
            return
        bucket, key = self._split(write.stored)
        self.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=write.upload_id)


@dataclass(frozen=True)
class IncompleteWrite:
    """A partial write: the object it was writing, when it started (store clock), what holds it."""

    target: str  # the object's path relative to the root
    started: datetime
    stored: str  # local: the temp file's relative path; S3: the upload's key
    upload_id: str | None  # S3 multipart upload id; None for a local temp file

    def describe(self) -> str:
        return f"{self.target} (incomplete upload {self.upload_id})" if self.upload_id else self.stored


def _rebuild_storage(uri: str, config: StorageConfig, policy: RetryPolicy, part_size: int) -> Storage:
    return Storage(uri, config, policy=policy, part_size=part_size)


def _durable_temp_copy(final: str, data: bytes) -> str:
    """`data` written and fsynced to a fresh temp file beside `final` (its folder created); returns its path."""
    os.makedirs(os.path.dirname(final), exist_ok=True)
    tmp = f"{final}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _remove_quietly(tmp)
        raise
    return tmp


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _fsync_dir(path: str) -> None:
    """Make a new directory entry durable (a crash must not lose a commit we reported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
