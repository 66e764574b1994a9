"""What keeps one sender from exhausting the gateway: per-source rate limit, request deadline, uvicorn limits.

The gateway faces the internet, so it bounds what any one client can take before the inbox is touched:

- **rate**: ``RateLimiter`` answers 429 with ``Retry-After`` once a source (the client address, or the
  ``X-Forwarded-For`` address a trusted proxy sets; uvicorn's ``--forwarded-allow-ips``) has sent more than
  ``OFFLOAD_WEBHOOK_RATE_LIMIT`` requests (``limits``' sliding window counter, in this process's memory);
- **time**: ``deadline_protocol`` closes a connection whose request (headers and body) has not fully arrived
  ``OFFLOAD_WEBHOOK_READ_TIMEOUT`` seconds after its first byte (slowloris). uvicorn has no such timeout: its
  keep-alive timer only runs between requests, so a client that dribbles a byte a second holds a
  connection forever;
- **size and count**: ``uvicorn_options`` passes uvicorn's own limits: header bytes buffered
  (``h11_max_incomplete_event_size``, hence the h11 parser: httptools has no such limit; h11 checks only
  headers still incomplete, so the app refuses a complete header block over the limit with 431), open
  connections (``limit_concurrency``: 503 past it) and the keep-alive timeout. The body limit is the
  app's (413).

None of these refuses a request after its event was stored: each one acts before the body is read or
while it is, and a sender that is refused sends again later (every provider retries 429 and 5xx).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import limits
from uvicorn.protocols.http.h11_impl import H11Protocol

_TIMED_OUT_BODY = b"request: not received in time\n"
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    + f"content-length: {len(_TIMED_OUT_BODY)}\r\n\r\n".encode()
    + _TIMED_OUT_BODY
)


def parse_rate(text: str) -> limits.RateLimitItem | None:
    """``"100/second"``, ``"600/minute"`` (``limits`` notation) as a limit; ``"off"`` as None.

    ``ValueError`` with the rule if the text is neither."""
    text = text.strip().lower()
    if text == "off":
        return None
    try:
        return limits.parse(text)
    except ValueError:
        raise ValueError(f"must be a rate like 100/second or 600/minute, or off; got {text!r}") from None


class RateLimiter:
    """Requests per source in a sliding window; ``check`` says how long a source over it must wait."""

    def __init__(self, rate: limits.RateLimitItem):
        self.rate = rate
        # The sliding window counter: two counters per source, O(1) per request, no burst at window edges.
        # (The moving window keeps every timestamp in a list: its cost grows with the limit.)
        self._limiter = limits.strategies.SlidingWindowCounterRateLimiter(limits.storage.MemoryStorage())

    def check(self, source: str) -> int | None:
        """Count one request from ``source``: None if it may go on, else the seconds until it may."""
        if self._limiter.hit(self.rate, source):
            return None
        reset = self._limiter.get_window_stats(self.rate, source).reset_time
        return max(1, math.ceil(reset - time.time()))


def deadline_protocol(read_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline on reading each request, ``read_timeout`` from its first byte.

    The timer starts at the connection (or, on a kept-alive connection, at the next request's first bytes)
    and stops when the request's body is complete; if it fires first, the client gets 408 (or nothing, if
    its answer has begun, which happens only for an early 413) and the connection is closed. The app sees a
    disconnect: a half-read webhook is never stored.
    """

    class DeadlineH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _armed_during: Any = None  # the request/response cycle current when the timer started

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._deadline is None:
                self._arm()
            super().data_received(data)
            cycle = self.cycle
            # A new cycle whose body is complete: this request has fully arrived.
            if cycle is not None and cycle is not self._armed_during and not cycle.more_body:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._armed_during = self.cycle
            self._deadline = self.loop.call_later(read_timeout, self._timed_out)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _timed_out(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            answering = self.cycle is not None and self.cycle is not self._armed_during
            if not (answering and self.cycle.response_started):
                self.transport.write(_TIMED_OUT)
            self.logger.info("closed a connection whose request took over %g s to arrive", read_timeout)
            self.transport.close()

    return DeadlineH11Protocol


def uvicorn_options(
    *, read_timeout: float, max_header_bytes: int, max_connections: int, keep_alive: float
) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` that apply the gateway's limits."""
    return {
        "http": deadline_protocol(read_timeout),
        "h11_max_incomplete_event_size": max_header_bytes,
        "limit_concurrency": max_connections,
        "timeout_keep_alive": keep_alive,
    }
