"""A real HTTP server on loopback for tests that need a peer: scripted routes, a request log, clean stop.

``LocalHTTPServer({"/path": route, ...})`` binds 127.0.0.1 (or ``::1``) on a port the OS picks, optionally
with TLS, runs in a thread (``threaded_server.serving``), serves each connection in a daemon thread and
records every request it receives (path, arrival time, method and body), so a test can assert that a
refused fetch never reached it or measure the wait between two attempts. Routes are small functions of
the request handler; the helpers below (``body``, ``chunked``, ``statuses``, ``sequence``, ``cut_short``,
``redirect``, ``hang``) cover what the HTTP tests need.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from benchmarks.support.threaded_server import serving

Route = Callable[["_Handler"], None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a client that keeps a connection open must not block the test's exit
    owner: LocalHTTPServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients of these tests hang up mid-response on purpose (size caps, timeouts): stay quiet."""


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # needed for chunked responses and keep-alive, as real servers do
    timeout = 30  # an idle keep-alive connection frees its thread eventually even if nobody closes it
    server: _Server

    def do_GET(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        owner._record(self.path, self.headers.get("Host", ""), self.command, self.rfile.read(length))
        route = owner.routes.get(self.path.split("?", 1)[0])
        if route is None:
            body(b"no such route", status=404)(self)
        else:
            route(self)

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Keep pytest output clean; the request log is ``LocalHTTPServer.paths``."""


class LocalHTTPServer:
    """A threaded HTTP server on loopback; use as a context manager, which stops it on exit."""

    def __init__(
        self,
        routes: Mapping[str, Route] | None = None,
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
    ):
        self.routes: dict[str, Route] = dict(routes or {})
        self.host = host
        self.paths: list[str] = []
        self.host_headers: list[str] = []
        self.times: list[float] = []  # time.monotonic() at each request's arrival
        self.methods: list[str] = []
        self.bodies: list[bytes] = []
        self.stopping = threading.Event()  # releases handlers that ``hang``
        self._lock = threading.Lock()
        server_class = _Server6 if ":" in host else _Server
        self._server = server_class((host, 0), _Handler)  # port 0: the OS picks a free one at bind time
        self._server.owner = self
        self.scheme = "https" if tls is not None else "http"
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._serving = serving(self._server, f"http-{self.port}")

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def origin(self) -> str:
        """``host:port`` as an allow list spells it (``[::1]:port`` for IPv6)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.origin}{path}"

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.paths)

    def _record(self, path: str, host_header: str, method: str, data: bytes) -> None:
        with self._lock:
            self.times.append(time.monotonic())
            self.paths.append(path)
            self.host_headers.append(host_header)
            self.methods.append(method)
            self.bodies.append(data)

    def count(self, path: str) -> int:
        """How many requests ``path`` received."""
        with self._lock:
            return sum(1 for seen in self.paths if seen.split("?", 1)[0] == path)

    def __enter__(self) -> LocalHTTPServer:
        self._serving.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stopping.set()  # first release the handlers that ``hang``
        self._serving.__exit__(exc_type, exc, tb)


# --- routes ----------------------------------------------------------------------------------------------


def body(data: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> Route:
    """Answer ``status`` with ``data`` and its Content-Length (unless ``headers`` sets one)."""

    def route(handler: _Handler) -> None:
        handler.send_response(status)
        sent = {k.lower() for k in (headers or {})}
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        if "content-length" not in sent:
            handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return route


def chunked(chunks: Iterable[bytes]) -> Route:
    """Answer 200 with chunked transfer encoding and no Content-Length: the size is unknown up front."""

    def route(handler: _Handler) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for chunk in chunks:
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        handler.wfile.write(b"0\r\n\r\n")

    return route


def statuses(*codes: int, then: Route) -> Route:
    """Answer the given error statuses to the first requests, in order, then behave like ``then``."""
    pending = list(codes)
    lock = threading.Lock()

    def route(handler: _Handler) -> None:
        with lock:
            code = pending.pop(0) if pending else None
        if code is None:
            then(handler)
        else:
            body(f"status {code}".encode(), status=code)(handler)

    return route


def sequence(*routes: Route) -> Route:
    """Answer the n-th request with ``routes[n]``; the last route answers every request after that."""
    pending = list(routes)
    lock = threading.Lock()

    def route(handler: _Handler) -> None:
        with lock:
            current = pending.pop(0) if len(pending) > 1 else pending[0]
        current(handler)

    return route


def cut_short(data: bytes, declared: int) -> Route:
    """Declare ``declared`` bytes, send ``data`` (fewer) and hang up: a connection lost mid-body."""

    def route(handler: _Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(declared))
        handler.end_headers()
        handler.wfile.write(data)
        handler.close_connection = True

    return route


def redirect(location: str, status: int = 302) -> Route:
    return body(b"", status=status, headers={"Location": location})


def hang(handler: _Handler) -> None:
    """Accept the request and never answer, until the server stops (a stuck upstream)."""
    handler.server.owner.stopping.wait()
