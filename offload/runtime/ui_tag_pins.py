"""The Dagster UI's runs list shows a run's own tags (``video_id``, ``user_id``...), not offload's own.

Every run carries 5-12 ``offload/*`` tags the framework keeps for itself (its kind, retry policy, queue,
idempotency key, worker host...). The UI shows every tag outside Dagster's ``dagster/`` namespace in the
runs list unless the viewer has unpinned it; unpinned tags stay one click away under "View all tags (N)"
and on the run's page. The UI keeps the unpinned keys in the browser (``localStorage["unpinned-tags"]``),
so this middleware puts a short script, carrying the page's own CSP nonce, into the UI's HTML page: it
unpins each ``offload/*`` key the browser has not been offered yet. A key the viewer pins again stays
pinned: the script remembers the keys it offered (``localStorage["offload.unpinned-defaults"]``).

The keys are those the code sets (``KNOWN_KEYS``: tests/test_ui_tag_pins.py finds every one in the source)
and the instance's own (``get_run_tag_keys``, read at most once a minute), which add the limit tags such
as ``offload/limit-2`` whose key holds a number. ``offload dev`` serves the UI with this middleware.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

KNOWN_KEYS = (
    "offload/batch", "offload/batch_index", "offload/concurrency_key", "offload/configuration_error",
    "offload/debounce_key", "offload/delay_until", "offload/depth", "offload/expired", "offload/expires_at",
    "offload/idempotency_key", "offload/key_field", "offload/key_limit", "offload/kind",
    "offload/last_timestamp", "offload/launched_by", "offload/max_attempts", "offload/metadata",
    "offload/parent_run", "offload/queue", "offload/replay_of", "offload/resumes", "offload/retry",
    "offload/start_method", "offload/suspended", "offload/timestamp", "offload/timezone",
    "offload/webhook_event", "offload/webhook_outcome", "offload/webhook_provider", "offload/worker_host",
)  # fmt: skip
REFRESH_SECONDS = 60.0
# Only keys of this shape go into the script: nothing a run's creator chose can close the <script> element.
_KEY = re.compile(r"^offload/[A-Za-z0-9_.:-]{1,100}$")
# The script goes right after the one that sets webpack's nonce: before the UI's bundle reads the storage.
_ANCHOR = re.compile(r'<script id="webpack-nonce-setter" nonce="([0-9a-f]{8,64})">.*?</script>', re.S)
_SCRIPT = """<script nonce="{nonce}">(function () {{
  try {{
    var keys = {keys}, offered = JSON.parse(localStorage.getItem("offload.unpinned-defaults") || "[]"),
      unpinned = JSON.parse(localStorage.getItem("unpinned-tags") || "[]");
    if (!Array.isArray(offered)) offered = [];
    if (!Array.isArray(unpinned)) unpinned = [];
    keys.forEach(function (key) {{
      if (offered.indexOf(key) !== -1) return;
      offered.push(key);
      if (unpinned.indexOf(key) === -1) unpinned.push(key);
    }});
    localStorage.setItem("unpinned-tags", JSON.stringify(unpinned));
    localStorage.setItem("offload.unpinned-defaults", JSON.stringify(offered));
  }} catch (e) {{}}
}})();</script>"""


def internal_keys(keys: Iterable[str]) -> list[str]:
    """``KNOWN_KEYS`` and the ``offload/*`` keys among ``keys`` that may go into the script, sorted."""
    return sorted({key for key in [*KNOWN_KEYS, *keys] if _KEY.match(key)})


def with_unpin_script(html: str, keys: list[str]) -> str:
    """``html`` (the UI's page) with the unpinning script after webpack's nonce setter; unchanged when the
    page has no such script (another Dagster version: the UI then shows every tag)."""
    found = _ANCHOR.search(html)
    if found is None:
        return html
    script = _SCRIPT.format(nonce=found.group(1), keys=json.dumps(keys))
    return html[: found.end()] + script + html[found.end() :]


class TagKeys:
    """``internal_keys`` of the instance's run tag keys, read again when the last read is a minute old."""

    def __init__(self, read: Callable[[], Iterable[str]], refresh_seconds: float = REFRESH_SECONDS) -> None:
        self._read = read
        self._refresh = refresh_seconds
        self._lock = threading.Lock()
        self._keys: list[str] = []
        self._read_at = float("-inf")

    def __call__(self) -> list[str]:
        with self._lock:
            if time.monotonic() - self._read_at >= self._refresh:
                self._keys = internal_keys(self._read())
                self._read_at = time.monotonic()
            return self._keys


class UITagPins:
    """ASGI middleware: the UI's HTML pages (``GET``, ``text/html``) get the unpinning script."""

    def __init__(self, app: ASGIApp, keys: Callable[[], list[str]]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "GET":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def edit(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                if content_type.startswith(b"text/html"):
                    start = message  # held until the whole page is here
                    return
            elif start is not None and message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                keys = await run_in_threadpool(self.keys)  # a database read, once a minute
                page = with_unpin_script(b"".join(chunks).decode(), keys).encode()
                headers = [(k, v) for k, v in start["headers"] if k != b"content-length"]
                await send({**start, "headers": [*headers, (b"content-length", str(len(page)).encode())]})
                await send({"type": "http.response.body", "body": page})
                return
            await send(message)

        await self.app(scope, receive, edit)
