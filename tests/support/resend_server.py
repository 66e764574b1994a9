"""A fake Resend API on 127.0.0.1 for tests of the real resend SDK: records every request and answers
``POST /emails`` as Resend does (one id per ``Idempotency-Key``), or with an error queued in ``fail_next``.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeResend:
    """A tiny Resend look-alike: records each request and answers ``POST /emails`` like Resend does, with
    one id per ``Idempotency-Key``, or with the error queued in ``fail_next``."""

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    ids_by_key: dict[str, str] = field(default_factory=dict)
    fail_next: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, recorded: Recorded) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append(recorded)
            if self.fail_next:
                return self.fail_next.pop(0)
            if recorded.method != "POST" or recorded.path != "/emails":
                return 404, {"statusCode": 404, "name": "not_found", "message": "Route not found"}
            key = recorded.headers.get("idempotency-key") or uuid.uuid4().hex
            return 200, {"id": self.ids_by_key.setdefault(key, str(uuid.uuid4()))}


def _handler_for(fake: FakeResend) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            recorded = Recorded(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=json.loads(raw) if raw else None,
            )
            status, payload = fake.answer(recorded)
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
            pass

    return Handler


@contextmanager
def fake_resend_server() -> Iterator[FakeResend]:
    """Serve a ``FakeResend`` on 127.0.0.1 until the block ends; port 0 makes the OS pick a free port when
    the socket binds, and the socket listens from the constructor on, so no readiness wait is needed."""
    fake = FakeResend()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(fake))
    host, port = server.server_address[:2]
    fake.url = f"http://{host!s}:{port}"
    thread = threading.Thread(target=server.serve_forever, name="fake-resend", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        assert not thread.is_alive()
