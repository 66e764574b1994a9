"""In-thread servers on loopback for tests and benchmarks: the one start/ready/stop every local server uses.

``serving(server)`` runs a ``socketserver`` server (``http.server``'s included) in a daemon thread. Such a
server binds and listens in its constructor (port 0: the OS picks a free port at bind time, so there is no
choose-then-bind race), so it is ready before the thread starts. ``serving_asgi(app)`` runs an ASGI app
under uvicorn on a socket bound the same way, and waits (with a deadline) until uvicorn reports it is
serving. Both stop their server by its own handle and fail if the thread does not end.

``serving_json(answer)`` is a small JSON API on top of ``serving``: every request goes to ``answer`` as a
``Recorded`` (method, path, lower-cased headers, decoded body, arrival time), which returns a status and a
JSON document. The fake provider APIs (tests/support) are built on it and keep the ``Recorded`` requests.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from benchmarks.support.waiting import wait_for

STOP_TIMEOUT = 10.0  # seconds a server thread gets to end once asked


@dataclass
class Recorded:
    """One request a fake API received."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # the JSON document, a form as a dict, or None when empty
    at: float = field(default_factory=time.monotonic)  # when it arrived


Answer = Callable[[Recorded], tuple[int, Any]]


def decode(headers: dict[str, str], raw: bytes) -> Any:
    """A request body as the fake APIs read it: a form (as SDKs send some calls) or JSON."""
    if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return dict(parse_qsl(raw.decode()))
    return json.loads(raw) if raw else None


@contextmanager
def serving(server: socketserver.BaseServer, name: str) -> Iterator[None]:
    """Serve ``server`` in a daemon thread until the block ends; then shut it down and close its socket."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
    )  # a short poll interval makes stopping quick
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=STOP_TIMEOUT)
        assert not thread.is_alive(), f"{name} did not stop"


@contextmanager
def serving_asgi(app: Any, name: str, startup_timeout: float = 10.0) -> Iterator[int]:
    """Serve the ASGI ``app`` under uvicorn on 127.0.0.1 until the block ends; yields the port."""
    import uvicorn  # only tests that serve an ASGI app need it

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    thread.start()
    try:

        def started() -> bool:
            assert thread.is_alive(), f"{name} exited while starting"
            return bool(server.started)

        wait_for(started, startup_timeout, f"{name} to start", interval=0.01)
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(timeout=STOP_TIMEOUT)
        sock.close()
        assert not thread.is_alive(), f"{name} did not stop"


@contextmanager
def serving_json(answer: Answer, name: str, content_type: str = "application/json") -> Iterator[str]:
    """Serve ``answer`` as a JSON API on 127.0.0.1 until the block ends; yields ``http://127.0.0.1:port``."""

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, payload = answer(Recorded(self.command, self.path, headers, decode(headers, raw)))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with serving(server, name):
        yield f"http://127.0.0.1:{server.server_address[1]}"
