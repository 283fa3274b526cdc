"""Servers for the remote-storage tests, started by the tests on 127.0.0.1 (no internet).

* :class:`RangeHTTPServer` serves a directory with HEAD, GET, single ``Range`` requests and HTML
  directory listings (what fsspec's HTTP filesystem lists and globs), counts requests per path,
  and injects faults on request: slow responses, connection resets, 5xx, truncated bodies
  (connection dropped mid-body), short bodies (a complete response that is too short), corrupt
  bodies (right length, wrong bytes).
* :class:`S3Server` is moto's S3 in server mode behind a request-counting WSGI wrapper.
"""

from __future__ import annotations

import html
import os
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

FAULTS = ("503", "500", "403", "reset", "truncate", "short", "corrupt", "slow")


@dataclass
class Fault:
    kind: str
    match: str  # substring of the request path
    times: int  # how many matching GETs fail
    delay: float = 0.0


class RangeHTTPServer:
    """A threaded HTTP file server for ``root``. Use as a context manager (stops on exit)."""

    def __init__(self, root: str | os.PathLike[str], *, delay: float = 0.0):
        self.root = os.path.abspath(os.fspath(root))
        self.delay = delay  # added to every GET (widens races in sharing tests)
        self.counts: Counter[tuple[str, str]] = Counter()
        self.ranges: Counter[str] = Counter()  # GETs with a Range header, per path
        self.active = 0
        self.max_active = 0
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> RangeHTTPServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def inject(self, kind: str, match: str = "", times: int = 1, delay: float = 1.0) -> None:
        """Make the next ``times`` GETs whose path contains ``match`` fail as ``kind``."""
        assert kind in FAULTS, kind
        with self._lock:
            self._faults.append(Fault(kind, match, times, delay))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self.counts.clear()
            self.ranges.clear()
            self.max_active = 0

    def gets(self, match: str = "") -> int:
        with self._lock:
            return sum(n for (m, p), n in self.counts.items() if m == "GET" and match in p)

    def get_counts(self, suffix: str = "") -> dict[str, int]:
        with self._lock:
            return {p: n for (m, p), n in self.counts.items() if m == "GET" and p.endswith(suffix)}

    def _fault_for(self, path: str) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.times > 0 and f.match in path:
                    f.times -= 1
                    return f
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # injected resets make handlers fail on purpose


def _handler(server: RangeHTTPServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else headers and body in two sends cost 40 ms each

        def log_message(self, *args: Any) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def _count(self, method: str, path: str) -> None:
            with server._lock:
                server.counts[(method, path)] += 1
                if method == "GET" and self.headers.get("Range"):
                    server.ranges[path] += 1

        def _serve(self, head: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            self._count("HEAD" if head else "GET", path)
            local = os.path.normpath(os.path.join(server.root, path.lstrip("/")))
            if not (local == server.root or local.startswith(server.root + os.sep)):
                return self._error(403)
            if os.path.isdir(local):
                return self._listing(path, local, head)
            if not os.path.isfile(local):
                return self._error(404)
            with open(local, "rb") as f:
                data = f.read()
            status, body, extra = 200, data, {}
            rng = self.headers.get("Range")
            if rng:
                span = _parse_range(rng, len(data))
                if span is None:
                    return self._error(416)
                a, b = span
                status, body = 206, data[a : b + 1]
                extra["Content-Range"] = f"bytes {a}-{b}/{len(data)}"
            if head:
                return self._headers(200, len(data), {"ETag": _etag(local)})
            with server._lock:  # requests being served at once (counted before the body is
                server.active += 1  # sent, so a client's next request cannot overlap its last)
                server.max_active = max(server.max_active, server.active)
            try:
                if server.delay:
                    time.sleep(server.delay)
            finally:
                with server._lock:
                    server.active -= 1
            fault = server._fault_for(path)
            self._respond(status, body, {**extra, "ETag": _etag(local)}, fault)

        def _respond(self, status: int, body: bytes, extra: dict[str, str],
                     fault: Fault | None) -> None:
            kind = fault.kind if fault else None
            if kind == "slow":
                assert fault is not None
                time.sleep(fault.delay)
            if kind in ("503", "500", "403"):
                return self._error(int(kind))
            if kind == "reset":
                return self._reset()
            if kind == "truncate":  # promise everything, send half, drop the connection
                self._headers(status, len(body), extra)
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                return self._reset()
            if kind == "short":  # a complete HTTP response that is too short
                body = body[: len(body) // 2]
            if kind == "corrupt" and body:
                body = bytes([body[0] ^ 0xFF]) + body[1:]
            self._headers(status, len(body), extra)
            self.wfile.write(body)

        def _headers(self, status: int, length: int, extra: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            extra = {"Content-Type": "application/octet-stream", **extra}
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()

        def _error(self, status: int) -> None:
            body = f"error {status}\n".encode()
            self._headers(status, len(body), {})
            if self.command != "HEAD":
                self.wfile.write(body)

        def _reset(self) -> None:
            self.close_connection = True
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.connection.close()  # RST, not FIN
            except OSError:
                pass

        def _listing(self, path: str, local: str, head: bool) -> None:
            base = path if path.endswith("/") else path + "/"
            links = []
            for name in sorted(os.listdir(local)):
                slash = "/" if os.path.isdir(os.path.join(local, name)) else ""
                href = html.escape(base + name + slash)
                links.append(f'<a href="{href}">{html.escape(name)}{slash}</a>')
            body = ("<html><body>\n" + "<br>\n".join(links) + "\n</body></html>\n").encode()
            self._headers(200, len(body), {"Content-Type": "text/html"})
            if not head:
                self.wfile.write(body)

    return Handler


def _etag(path: str) -> str:
    st = os.stat(path)
    return f'"{st.st_size:x}-{st.st_mtime_ns:x}"'


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` -> inclusive (a, b), or None if unsatisfiable."""
    if not header.startswith("bytes=") or "," in header:
        return None
    a_s, _, b_s = header[len("bytes="):].partition("-")
    if a_s == "":
        n = int(b_s)
        a, b = max(0, size - n), size - 1
    else:
        a = int(a_s)
        b = min(int(b_s), size - 1) if b_s else size - 1
    return (a, b) if 0 <= a <= b < size else None


class S3Server:
    """moto's S3 on 127.0.0.1 with GET counting. Context manager; sets no environment itself."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        counts: Counter[tuple[str, str]] = Counter()
        lock = threading.Lock()
        self.counts, self._lock = counts, lock

        class Counting(ThreadedMotoServer):  # type: ignore[misc]
            def _server_entry(self) -> None:
                from moto.moto_server.werkzeug_app import (
                    DomainDispatcherApplication,
                    MotoRequestHandler,
                    create_backend_app,
                )
                from werkzeug.serving import make_server

                class Quiet(MotoRequestHandler):  # type: ignore[misc]
                    def log_request(self, *args: Any) -> None:
                        pass

                app = DomainDispatcherApplication(create_backend_app)

                def counted(environ: dict, start_response: Any) -> Any:
                    with lock:
                        counts[(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""))] += 1
                    return app(environ, start_response)

                self._server = make_server(self._ip_address, self._port, counted, True,
                                           request_handler=Quiet)
                self._server_ready_event.set()
                self._server.serve_forever()

        self._moto = Counting(ip_address="127.0.0.1", port=0, verbose=False)

    @property
    def endpoint(self) -> str:
        host, port = self._moto.get_host_and_port()
        return f"http://{host}:{port}"

    def __enter__(self) -> S3Server:
        self._moto.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._moto.stop()

    def gets(self, match: str = "") -> int:
        with self._lock:
            return sum(n for (m, p), n in self.counts.items() if m == "GET" and match in p)

    def upload(self, local_dir: str | os.PathLike[str], bucket: str, prefix: str = "") -> str:
        """Copy a local tree into ``s3://bucket/prefix``; returns that URL."""
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        try:
            client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        root = os.fspath(local_dir)
        for dirpath, _, files in os.walk(root):
            for name in files:
                full = os.path.join(dirpath, name)
                key = "/".join(p for p in (prefix, os.path.relpath(full, root).replace(os.sep, "/")) if p)
                client.upload_file(full, bucket, key)
        return f"s3://{bucket}/{prefix}".rstrip("/")
