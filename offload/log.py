"""The one logging helper every step uses: ``log.info("msg", {fields})`` as in the seed.

Fields are rendered as compact JSON after the message, so they show in the Dagster event log and UI and can
be searched. Values of configured secrets (environment variables named like keys, secrets, tokens or
passwords, and passwords inside URLs) are replaced with ``***`` before anything is written.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import dagster as dg

SECRET_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIALS?)$", re.I)
URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@", re.I)
MASK = "***"
_MIN_SECRET_LEN = 6  # shorter values would mask ordinary words


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values worth hiding: whole values of secret-named variables, and passwords inside any URL value."""
    env = os.environ if environ is None else environ
    found: set[str] = set()
    for name, value in env.items():
        if SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_LEN:
            found.add(value)
        for match in URL_PASSWORD.finditer(value):
            if len(match["pw"]) >= 3:
                found.add(match["pw"])
    return sorted(found, key=len, reverse=True)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with every configured secret and every URL password replaced by ``***``."""
    text = URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    for value in secret_values(environ):
        # Also as json.dumps writes it (``"``, ``\\`` and non-ASCII escaped): StepLog renders fields as JSON.
        text = text.replace(json.dumps(value)[1:-1], MASK).replace(value, MASK)
    return text


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

    def __init__(self, log: StepLog, what: str, step_percent: int = 10):
        self._log, self._what, self._step = log, what, step_percent
        self._next = step_percent

    def update(self, fraction: float, fields: Mapping[str, Any] | None = None) -> None:
        percent = int(max(0.0, min(fraction, 1.0)) * 100)
        if percent >= self._next:
            self._log.info(f"{self._what} {percent}%", fields)
            following = (percent // self._step + 1) * self._step
            # 100% is always logged, also when step_percent does not divide 100 (15: ... 90, 100).
            self._next = min(following, 100) if percent < 100 else following
