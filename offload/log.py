"""The one logging helper every step uses: ``log.info("msg", {fields})`` as in the seed.

Fields are rendered as compact JSON after the message, so they show in the Dagster event log and UI and can
be searched. Values of configured secrets (environment variables named like keys, secrets, tokens or
passwords, and passwords inside URLs) are replaced with ``***`` before anything is written: as they are, in
any letter case, and encoded as a hostile server might echo them (base64 at any offset, hex, URL-encoded,
JSON-escaped). Values of ``password=``/``token=``-style query parameters are masked whatever they hold.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import dagster as dg

from offload.redaction import MASK, holds_secret, redact, secret_values

__all__ = ["MASK", "Progress", "StepLog", "holds_secret", "redact", "secret_values"]


def _render(message: str, fields: Mapping[str, Any] | None) -> str:
    if not fields:
        return redact(message)
    return redact(f"{message} {json.dumps(fields, default=str, separators=(', ', ': '))}")


class StepLog:
    """Structured, redacted logging into a step's Dagster log."""

    def __init__(self, context: dg.OpExecutionContext | dg.AssetExecutionContext):
        self._log = context.log

    def debug(self, message: str, fields: Mapping[str, Any] | None = None) -> None:
        self._log.debug(_render(message, fields))

    def info(self, message: str, fields: Mapping[str, Any] | None = None) -> None:
        self._log.info(_render(message, fields))

    def warning(self, message: str, fields: Mapping[str, Any] | None = None) -> None:
        self._log.warning(_render(message, fields))

    def error(self, message: str, fields: Mapping[str, Any] | None = None) -> None:
        self._log.error(_render(message, fields))

    @contextmanager
    def timed(self, message: str, fields: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Log ``message`` when done with its duration; the yielded dict adds fields along the way."""
        extra: dict[str, Any] = dict(fields or {})
        started = time.perf_counter()
        yield extra
        extra["duration_s"] = round(time.perf_counter() - started, 3)
        self.info(message, extra)


class Progress:
    """Logs a long step's progress at each 10% boundary it crosses (never more often)."""

    def __init__(
        self,
        log: StepLog,
        what: str,
        step_percent: int = 10,
        on_point: Callable[[int], None] | None = None,
    ):
        """``on_point``: also called with the percent at each point logged (e.g. to publish it as the
        run's metadata, offload/metadata.py)."""
        self._log, self._what, self._step = log, what, step_percent
        self._next = step_percent
        self._on_point = on_point

    def update(self, fraction: float, fields: Mapping[str, Any] | None = None) -> None:
        percent = int(max(0.0, min(fraction, 1.0)) * 100)
        if percent >= self._next:
            self._log.info(f"{self._what} {percent}%", fields)
            if self._on_point is not None:
                self._on_point(percent)
            following = (percent // self._step + 1) * self._step
            # 100% is always logged, also when step_percent does not divide 100 (15: ... 90, 100).
            self._next = min(following, 100) if percent < 100 else following
