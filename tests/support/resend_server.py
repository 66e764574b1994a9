"""A fake Resend API on 127.0.0.1 for tests of the real resend SDK: records every request and answers
``POST /emails`` as Resend does (one id per ``Idempotency-Key``), or with an error queued in ``fail_next``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from benchmarks.support.threaded_server import Recorded, serving_json


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


@contextmanager
def fake_resend_server() -> Iterator[FakeResend]:
    """Serve a ``FakeResend`` on 127.0.0.1 until the block ends (``serving_json``: a port the OS picks,
    listening before the block starts)."""
    fake = FakeResend()
    with serving_json(fake.answer, "fake-resend") as fake.url:
        yield fake
