"""A loopback (127.0.0.1 only) HTTP(S) server for the tests: serves in-memory files with Range
support, answers GitHub-style 302 redirects, and injects faults on request."""

from __future__ import annotations

import re
import ssl
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class QuietHTTPServer(ThreadingHTTPServer):
    """A threading server that does not print a traceback when a client hangs up early (the
    fault and timeout tests do that on purpose)."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    def start(self) -> None:
        """Serve from a daemon thread."""
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, no request log on stderr (keeps pytest output clean)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:
        pass


@dataclass
class Fault:
    """One injected misbehaviour, consumed by one request for a file.

    kind: "status" (answer ``status`` with ``headers``), "drop" (send ``after`` bytes of the body,
    then cut the connection), "html" (200 with a web page), "stall" (sleep ``seconds`` first),
    "drip" (200 with the file's length, then one byte of it every ``seconds``, ``after`` bytes at
    most when set), "flood" (200 without a length, then zeros until ``after`` bytes or the client
    hangs up), "unsized" (200 with the file but no length: its end is where the connection closes),
    "body" (answer ``status`` with ``headers`` and exactly ``body``, e.g. gzip-encoded).
    """

    kind: str
    status: int = 503
    after: int = 0
    seconds: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class Hit:
    path: str
    range: str | None
    status: int
    body_bytes: int
    headers: dict[str, str] = field(default_factory=dict)  # the request's


class LoopbackServer:
    """Serve ``/files/<name>`` (with Range) and ``/release/<name>`` (302 to the file)."""

    def __init__(self, certfile: Path | None = None, keyfile: Path | None = None) -> None:
        self.files: dict[str, bytes] = {}
        self.content_types: dict[str, str] = {}
        self.faults: dict[str, deque[Fault]] = defaultdict(deque)
        self.delay_per_chunk: dict[str, float] = {}
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        handler = _make_handler(self)
        self.httpd = QuietHTTPServer(("127.0.0.1", 0), handler)
        scheme = "http"
        if certfile is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile, keyfile)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.base = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self.httpd.start()

    # -- setup -------------------------------------------------------------------------
    def serve(self, name: str, data: bytes | memoryview, content_type: str = "application/octet-stream") -> str:
        """Serve ``data`` at /files/<name>; returns its URL. Any bytes-like object that supports
        ``len`` and slicing works, e.g. a memoryview of a memory-mapped file for big files."""
        self.files[name] = data
        self.content_types[name] = content_type
        return self.url(name)

    def url(self, name: str) -> str:
        return f"{self.base}/files/{name}"

    def release_url(self, name: str) -> str:
        """A URL that answers 302 to a signed-looking URL of the file (like GitHub releases)."""
        return f"{self.base}/release/{name}"

    def inject(self, name: str, *faults: Fault) -> None:
        self.faults[name].extend(faults)

    def forget_faults(self) -> dict[str, int]:
        """Drop every fault not yet served and every per-chunk delay (one test's setup must not reach
        the next test that serves the same name); returns the unserved faults by name."""
        with self._lock:
            left = {name: len(queue) for name, queue in self.faults.items() if queue}
            self.faults.clear()
            self.delay_per_chunk.clear()
        return left

    # -- inspection --------------------------------------------------------------------
    def hits_for(self, name: str) -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if h.path.split("?")[0].rsplit("/", 1)[-1] == name]

    def bytes_sent(self, name: str) -> int:
        return sum(h.body_bytes for h in self.hits_for(name))

    def _record(self, hit: Hit) -> None:
        with self._lock:
            self.hits.append(hit)

    def close(self) -> None:
        self.httpd.stop()


def _make_handler(server: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            match = re.fullmatch(r"/(files|release)/([^/]+)", path)
            if not match:
                server._record(Hit(self.path, self.headers.get("Range"), 404, 0, dict(self.headers)))
                return self._plain(404, b"not found")
            kind, name = match.groups()
            if kind == "release":
                server._record(Hit(self.path, None, 302, 0, dict(self.headers)))
                self.send_response(302)
                self.send_header("Location", f"/files/{name}?sig={time.monotonic_ns()}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            fault = None
            with server._lock:
                if server.faults.get(name):
                    fault = server.faults[name].popleft()
            if fault is not None and fault.kind == "stall":
                time.sleep(fault.seconds)
                fault = None
            if fault is not None and fault.kind == "status":
                server._record(Hit(self.path, self.headers.get("Range"), fault.status, 0, dict(self.headers)))
                return self._plain(fault.status, b"injected", fault.headers)
            if fault is not None and fault.kind == "html":
                server._record(Hit(self.path, None, 200, 0, dict(self.headers)))
                return self._plain(200, b"<html><body>a web page</body></html>", {}, "text/html; charset=utf-8")
            if fault is not None and fault.kind == "body":
                server._record(
                    Hit(self.path, self.headers.get("Range"), fault.status, len(fault.body), dict(self.headers))
                )
                extra = {k: v for k, v in fault.headers.items() if k.lower() != "content-type"}
                return self._plain(
                    fault.status, fault.body, extra, fault.headers.get("Content-Type", "application/octet-stream")
                )
            if fault is not None and fault.kind in ("drip", "flood", "unsized"):
                return self._trickle(name, fault)
            if name not in server.files:
                server._record(Hit(self.path, self.headers.get("Range"), 404, 0, dict(self.headers)))
                return self._plain(404, b"no such file")
            data = server.files[name]
            start, status = 0, 200
            range_header = self.headers.get("Range")
            if range_header:
                m = re.fullmatch(r"bytes=(\d+)-", range_header.strip())
                if not m or int(m.group(1)) >= len(data):
                    server._record(Hit(self.path, range_header, 416, 0, dict(self.headers)))
                    return self._plain(416, b"bad range", {"Content-Range": f"bytes */{len(data)}"})
                start, status = int(m.group(1)), 206
            body = data[start:]
            self.send_response(status)
            self.send_header("Content-Type", server.content_types.get(name, "application/octet-stream"))
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            limit = fault.after if fault is not None and fault.kind == "drop" else len(body)
            sent = 0
            delay = server.delay_per_chunk.get(name, 0.0)
            try:
                while sent < limit:
                    chunk = body[sent : min(limit, sent + (1 << 16))]
                    self.wfile.write(chunk)
                    sent += len(chunk)
                    if delay:
                        time.sleep(delay)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            server._record(Hit(self.path, range_header, status, sent, dict(self.headers)))
            if sent < len(body):
                self.close_connection = True
                try:
                    import socket

                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        def _trickle(self, name: str, fault: Fault) -> None:
            data = server.files.get(name, b"")
            self.send_response(200)
            self.send_header("Content-Type", server.content_types.get(name, "application/octet-stream"))
            if fault.kind == "drip":
                self.send_header("Content-Length", str(len(data)))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            sent = 0
            try:
                if fault.kind == "drip":
                    limit = min(fault.after or len(data), len(data))
                    while sent < limit:
                        self.wfile.write(bytes(data[sent : sent + 1]))
                        self.wfile.flush()
                        sent += 1
                        time.sleep(fault.seconds)
                elif fault.kind == "unsized":
                    self.wfile.write(data)
                    sent = len(data)
                else:
                    block = b"\0" * (1 << 16)
                    while not fault.after or sent < fault.after:
                        self.wfile.write(block)
                        sent += len(block)
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass
            server._record(Hit(self.path, self.headers.get("Range"), 200, sent, dict(self.headers)))
            self.close_connection = True

        def _plain(
            self, status: int, body: bytes, headers: dict[str, str] | None = None, content_type: str = "text/plain"
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler
