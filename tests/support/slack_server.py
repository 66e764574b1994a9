"""A fake Slack Web API on 127.0.0.1 for tests of the real slack-sdk: records every request and answers
``POST /api/chat.postMessage`` as Slack does (``ok``, ``channel``, ``ts``), or with the error queued in
``fail_next`` (e.g. ``(200, {"ok": False, "error": "invalid_auth"})``)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl


@dataclass
class SlackRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeSlack:
    url: str = ""  # the base URL to give slack-sdk, ending in /api/
    requests: list[SlackRequest] = field(default_factory=list)
    fail_next: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, request: SlackRequest) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append(request)
            if self.fail_next:
                return self.fail_next.pop(0)
        if request.path != "/api/chat.postMessage":
            return 404, {"ok": False, "error": "unknown_method"}
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return 200, {"ok": False, "error": "not_authed"}
        ts = f"{time.time():.6f}"
        message = {"type": "message", "text": request.body.get("text"), "ts": ts}
        return 200, {"ok": True, "channel": request.body.get("channel"), "ts": ts, "message": message}

    @property
    def messages(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r.body for r in self.requests if r.path == "/api/chat.postMessage"]


def _handler_for(fake: FakeSlack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            if self.headers.get("Content-Type", "").startswith("application/json"):
                payload = json.loads(raw or "{}")
            else:  # the SDK sends some methods form-encoded
                payload = dict(parse_qsl(raw))
            request = SlackRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, payload)
            status, answer = fake.answer(request)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
            pass

    return Handler


@contextmanager
def fake_slack_server() -> Iterator[FakeSlack]:
    """Serve a ``FakeSlack`` on 127.0.0.1 until the block ends (port 0: the OS picks a free one; the socket
    listens from the constructor on, so no readiness wait is needed)."""
    fake = FakeSlack()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(fake))
    host, port = server.server_address[:2]
    fake.url = f"http://{host!s}:{port}/api/"
    thread = threading.Thread(target=server.serve_forever, name="fake-slack", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        assert not thread.is_alive()
