"""A fault-injecting HTTP proxy on 127.0.0.1 in front of an S3 endpoint (the moto server) or an API, for chaos tests.

    with FaultProxy(s3_server, fail_rate=0.3, seed=7) as proxy:
        storage = StorageConfig(endpoint_url=proxy.url)     # every S3 call now goes through it
        ...
        proxy.fail_rate = 1.0                               # settings can change while it runs

    with FaultProxy(api_url, fail_rate=0.3, fail_status=429, fail_headers={"Retry-After": "1"}) as proxy:
        ...                                                 # an API that rate-limits 30% of requests

    with FaultProxy(api_url, dead_after=9) as proxy:       # 9 requests get through, then every one is dropped
        ...
        proxy.dead_after = None                             # until the endpoint comes back

Per request, in this order: once `dead_after` requests have arrived (None:
never) every later one is dropped, as by an endpoint that went down; with
`refuse_conditional` a request carrying `If-None-Match` is answered 501
NotImplemented (a store without conditional writes; counted in `refused`); with
probability `drop_rate` the connection is closed without an answer (nothing
reaches S3); with `fail_rate` it is answered 503 with an S3
`SlowDown`/`ServiceUnavailable` error (nothing reaches S3); otherwise it is
forwarded. The failure's status is 503 with an S3 error body, or
`fail_status` with `fail_headers` and a JSON error body (an API's 429 and
Retry-After). `corrupt_puts(key) -> bool` picks successful object PUTs whose
stored bytes are then altered in place (same size, one byte flipped) before
the client hears back: corruption at rest, after writing.
Counts, the corrupted keys and every request's arrival (monotonic time and
what it was answered with) are kept on the proxy for assertions.
"""

from __future__ import annotations

import http.client
import random
import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade", "trailer"}
_OWN_HEADERS = {"server", "date"}  # BaseHTTPRequestHandler.send_response writes its own
_ERRORS = (("SlowDown", "Please reduce your request rate."), ("ServiceUnavailable", "Service is unable to handle request."))


class FaultProxy:
    """Threaded HTTP proxy with configurable failure injection; a context manager."""

    def __init__(self, upstream: str, *, fail_rate: float = 0.0, drop_rate: float = 0.0, seed: int = 0,
                 corrupt_puts: Callable[[str], bool] | None = None, refuse_conditional: bool = False,
                 fail_status: int = 503, fail_headers: dict[str, str] | None = None, dead_after: int | None = None):
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream_host, self.upstream_port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.upstream = upstream
        self.fail_rate, self.drop_rate = fail_rate, drop_rate
        self.dead_after = dead_after
        self.corrupt_puts = corrupt_puts
        self.refuse_conditional = refuse_conditional
        self.refused = 0
        self.fail_status, self.fail_headers = fail_status, dict(fail_headers or {})
        self.arrivals: list[tuple[float, str]] = []  # (time.monotonic(), 'drop' | 'fail' | 'forward') per request
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.requests = self.failed = self.dropped = 0
        self.corrupted: list[str] = []  # "bucket/key" of objects altered after their PUT
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def decide(self) -> str:
        """'drop', 'fail' or 'forward' for the next request (counts it)."""
        with self._lock:
            self.requests += 1
            roll = self._rng.random()
            if (self.dead_after is not None and self.requests > self.dead_after) or roll < self.drop_rate:
                self.dropped += 1
                action = "drop"
            elif roll < self.drop_rate + self.fail_rate:
                self.failed += 1
                action = "fail"
            else:
                action = "forward"
            self.arrivals.append((time.monotonic(), action))
            return action

    def error_body(self) -> bytes:
        if self.fail_status != 503:
            return json.dumps({"error": {"message": f"fault proxy: HTTP {self.fail_status}", "type": "rate_limit_error",
                                         "code": self.fail_status}}).encode()
        with self._lock:
            code, message = self._rng.choice(_ERRORS)
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                f"<RequestId>fault-proxy</RequestId></Error>").encode()

    def forward(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.getheaders(), data
        finally:
            conn.close()

    def maybe_corrupt(self, method: str, path: str, status: int) -> None:
        """After a successful plain object PUT the predicate picks: flip one stored byte (same size)."""
        parsed = urllib.parse.urlsplit(path)
        if method != "PUT" or status != 200 or self.corrupt_puts is None or parsed.query:
            return
        bucket_key = urllib.parse.unquote(parsed.path.lstrip("/"))
        bucket, _, key = bucket_key.partition("/")
        if not key:
            return
        with self._lock:
            if not self.corrupt_puts(bucket_key):
                return
            self.corrupted.append(bucket_key)
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.upstream, region_name="us-east-1")
        data = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        data[len(data) // 2] ^= 0xFF
        s3.put_object(Bucket=bucket, Key=key, Body=bytes(data))


def _read_body(rfile: Any, headers: Any) -> bytes:
    """The request body, by Content-Length or chunked transfer encoding (re-sent with a Content-Length)."""
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        chunks = []
        while True:
            size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(rfile.read(size))
            rfile.readline()
    return rfile.read(int(headers.get("Content-Length") or 0))


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet: tests assert on counters instead
            pass

        def _handle(self) -> None:
            body = _read_body(self.rfile, self.headers)
            if proxy.refuse_conditional and self.headers.get("If-None-Match") is not None:
                with proxy._lock:
                    proxy.refused += 1
                payload = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NotImplemented</Code><Message>A header '
                           b'you provided implies functionality that is not implemented</Message></Error>')
                self.send_response(501)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            action = proxy.decide()
            if action == "drop":
                self.close_connection = True
                return
            if action == "fail":
                payload = proxy.error_body()
                self.send_response(proxy.fail_status)
                for name, value in proxy.fail_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/xml" if proxy.fail_status == 503 else "application/json")
                self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                return
            status, headers, data = proxy.forward(self.command, self.path, list(self.headers.items()), body)
            proxy.maybe_corrupt(self.command, self.path, status)
            self.send_response(status)
            for name, value in headers:
                skip = name.lower() in _HOP_BY_HOP or name.lower() in _OWN_HEADERS
                if not skip and not (name.lower() == "content-length" and self.command != "HEAD"):
                    self.send_header(name, value)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler
