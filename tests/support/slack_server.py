"""A fake Slack Web API on 127.0.0.1 for tests of the real slack-sdk: records every request and answers
``POST /api/chat.postMessage`` as Slack does (``ok``, ``channel``, ``ts``), or with the error queued in
``fail_next`` (e.g. ``(200, {"ok": False, "error": "invalid_auth"})``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from benchmarks.support.threaded_server import Recorded, serving_json


@dataclass
class FakeSlack:
    url: str = ""  # the base URL to give slack-sdk, ending in /api/
    requests: list[Recorded] = field(default_factory=list)
    fail_next: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, request: Recorded) -> tuple[int, dict[str, Any]]:
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
    with serving_json(fake.answer, "fake-slack", "application/json; charset=utf-8") as origin:
        fake.url = f"{origin}/api/"
        yield fake
