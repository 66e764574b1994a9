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
from typing import Any
from urllib.parse import parse_qsl

from benchmarks.support.threaded_server import serving_json


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


@contextmanager
def fake_slack_server() -> Iterator[FakeSlack]:
    """Serve a ``FakeSlack`` on 127.0.0.1 until the block ends (``serving_json``: a port the OS picks,
    listening before the block starts)."""
    fake = FakeSlack()

    def answer(method: str, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, Any]]:
        if headers.get("content-type", "").startswith("application/json"):
            payload = json.loads(raw or b"{}")
        else:  # the SDK sends some methods form-encoded
            payload = dict(parse_qsl(raw.decode()))
        return fake.answer(SlackRequest(path, headers, payload))

    with serving_json(answer, "fake-slack", "application/json; charset=utf-8") as origin:
        fake.url = f"{origin}/api/"
        yield fake
