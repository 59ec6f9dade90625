"""Loopback HTTP mirrors for the download tests: real files served from 127.0.0.1.

Every server runs on 127.0.0.1 (port 0) in a thread; its handler counts requests and
records their Range headers, so the tests can assert what went over the wire.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

FAST = dict(progress=False, backoff=0, timeout=5.0)  # fetch options that keep failing cases quick


class Server:
    """A loopback mirror of ``files`` ({name: bytes}) supporting ``Range: bytes=N-``.

    ``behave(name, n, body)`` decides the reply to the ``n``-th (0-based) request for
    ``name``: the body to serve (possibly a :class:`Cut`), or an int HTTP error status.
    ``honour_range=False`` makes it answer every request with a plain 200.
    """

    def __init__(self, files: dict[str, bytes], behave=None, honour_range: bool = True):
        self.files = files
        self.behave = behave
        self.honour_range = honour_range
        self.requests: list[tuple[str, str | None]] = []  # (file name, Range header)
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                with server.lock:
                    n = sum(1 for seen, _ in server.requests if seen == name)
                    server.requests.append((name, rng))
                if name not in server.files:
                    self.send_error(404)
                    return
                body = server.files[name]
                if server.behave is not None:
                    body = server.behave(name, n, body)
                if isinstance(body, int):
                    self.send_error(body)
                    return
                start = 0
                if rng and server.honour_range:
                    m = re.fullmatch(r"bytes=(\d+)-", rng)
                    assert m, rng
                    start = int(m.group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = bytes(body[start:])
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if isinstance(body, Cut):
                    self.wfile.write(payload[: body.cut_at])
                    self.wfile.flush()
                    time.sleep(body.stall)
                    self.close_connection = True
                else:
                    self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class Servers:
    """Starts :class:`Server` s over one set of files and closes them all at the end of a test."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.started: list[Server] = []

    def __call__(self, behave=None, honour_range: bool = True) -> Server:
        self.started.append(Server(self.files, behave, honour_range))
        return self.started[-1]

    def close(self):
        for server in self.started:
            server.close()


def serving(files: dict[str, bytes]):
    """A ``serve`` fixture for a test module: ``serve(behave, honour_range)`` starts a mirror of ``files``."""
    @pytest.fixture
    def serve():
        servers = Servers(files)
        yield servers
        servers.close()
    return serve


class Cut(bytes):
    """A body served with its full Content-Length, but only ``cut_at`` bytes of it are
    sent, then the server waits ``stall`` seconds and hangs up."""

    cut_at: int
    stall: float


def cut(body: bytes, at: int, stall: float = 0.0) -> Cut:
    c = Cut(body)
    c.cut_at, c.stall = at, stall
    return c


def flip(body: bytes) -> bytes:
    """``body`` with 64 bytes in the middle inverted."""
    mid = len(body) // 2
    return body[:mid] + bytes(b ^ 0xFF for b in body[mid : mid + 64]) + body[mid + 64 :]


def dead_url() -> str:
    """A loopback port nobody listens on: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"
