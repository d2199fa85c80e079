"""Counting the S3 requests one process makes: a forwarding HTTP proxy in front of the S3 server.

An object store bills per request, and a sink that commits more often makes more of them, so the
latency benchmark reports S3 requests per 1,000 rows beside the latency they buy. The local S3
server keeps no per-request log, so each sink of the run is pointed (`AWS_ENDPOINT_URL`) at a
proxy of its own, which forwards every request unchanged to the real server and counts it by
kind. The `Host` header is passed through as the client sent it, so the SigV4 signature, which
covers it, still holds. Path-style requests only (what the sink sends to a custom endpoint).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


def request_kind(method: str, target: str) -> str:
    """LIST, GET, PUT, HEAD, DELETE or POST; `log`/`data` says which objects it touched. A LIST
    from the first key of its prefix (no `start-after`) is "LIST all": on a `_delta_log/` it
    pages through every log file the table keeps."""
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    if method == "GET" and ("list-type" in query or "prefix" in query):
        return "LIST" if "start-after" in query else "LIST all"
    where = "log" if "/_delta_log/" in parts.path else "data"
    return f"{method} {where}"


class S3RequestCounter:
    """A proxy on a free local port forwarding to `upstream` (http://host:port); `counts` by
    `request_kind`, and `seconds` the server took to answer each kind (what a client waits
    for, beside its own work). Use as a context manager."""

    def __init__(self, upstream: str) -> None:
        parsed = urlsplit(upstream)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"can only count plain-HTTP S3 endpoints, not {upstream!r}")
        self._upstream = (parsed.hostname, parsed.port or 80)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._seconds: Counter[str] = Counter()
        self.errors = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="s3-request-counter", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(self._counts)

    def seconds(self) -> Counter[str]:
        """Seconds from forwarding each request to having the server's whole answer, by kind."""
        with self._lock:
            return Counter(self._seconds)

    def __enter__(self) -> S3RequestCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _count(self, kind: str, failed: bool, seconds: float = 0.0) -> None:
        with self._lock:
            self._counts[kind] += 1
            self._seconds[kind] += seconds
            if failed:
                self.errors += 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        counter = self
        local = threading.local()

        class Forward(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the client expects
            # The headers and the body go out in two writes; with Nagle's algorithm the body
            # waits for the client's (delayed, up to 40 ms) ACK of the headers: some 40 ms
            # added to every request, which the client would take for the S3 server's.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:
                return  # one line per request would drown the benchmark's output

            def _upstream(self) -> http.client.HTTPConnection:
                conn = getattr(local, "conn", None)
                if conn is None:
                    conn = local.conn = http.client.HTTPConnection(*counter._upstream, timeout=60)
                return conn

            def _body(self) -> bytes | None:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline().strip():  # trailers
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else None

            def _forward(self) -> None:
                body = self._body()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                begun = time.perf_counter()
                for attempt in (1, 2):  # a kept-alive upstream connection may have closed
                    conn = self._upstream()
                    try:
                        conn.request(self.command, self.path, body=body, headers=headers)
                        response = conn.getresponse()
                        data = response.read()
                        break
                    except (http.client.HTTPException, OSError):
                        conn.close()
                        local.conn = None
                        if attempt == 2:
                            counter._count(request_kind(self.command, self.path), True)
                            self.send_error(502, "S3 server unreachable through the counter")
                            return
                counter._count(
                    request_kind(self.command, self.path),
                    response.status >= 500,
                    time.perf_counter() - begun,
                )
                self.send_response_only(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() in _HOP_BY_HOP or key.lower() == "content-length":
                        continue
                    self.send_header(key, value)
                length = response.getheader("Content-Length")
                if self.command == "HEAD" and length is not None:
                    self.send_header("Content-Length", length)
                else:
                    self.send_header("Content-Length", str(len(data)))
                try:
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    # The client gave up on it: delta-rs reads ahead for commits that may not
                    # exist yet and drops those reads once it has its answer. Still a request.
                    self.close_connection = True

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        return Forward


def per_thousand_rows(counts: Counter[str], rows: int) -> dict[str, float | int | None]:
    """Requests in total and per kind, and per 1,000 rows landed."""
    total = sum(counts.values())
    return {
        "requests": total,
        "by_kind": dict(sorted(counts.items())),
        "per_1000_rows": None if not rows else round(1000 * total / rows, 3),
    }
