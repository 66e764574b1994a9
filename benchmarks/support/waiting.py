"""``wait_for``, the one way tests and benchmarks wait for something: poll a condition until a deadline,
never sleep a fixed time as synchronisation; and ``free_port``, a loopback port for a server to bind.

A failed wait raises ``AssertionError`` (a test failure, not an error of the code under test) naming what
was awaited and the condition's last value, plus ``detail()`` when given (e.g. the tail of a service's log,
read only when the wait fails).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.2,
    detail: Callable[[], str] | None = None,
) -> T:
    """``condition()``'s first truthy value, polled every ``interval`` seconds; ``AssertionError`` naming
    ``what`` and the last value seen after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() > deadline:
            message = f"timed out after {timeout:g} s waiting for {what} (last: {last!r})"
            raise AssertionError(f"{message}: {detail()}" if detail is not None else message)
        time.sleep(interval)  # the poll interval, not a synchronisation


def free_port() -> int:
    """A port no one listens on now, for a server started in another process (a server in this process
    binds port 0 instead, which has no choose-then-bind race)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
