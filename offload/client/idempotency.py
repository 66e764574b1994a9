"""Idempotency keys: the same key within its TTL gives back the run it first created.

Dagster has no such primitive (a run_key belongs to sensors, and a look-up-then-launch over GraphQL races),
so the client keeps one row per ``(job, key)`` in a small table whose primary key makes the claim atomic
across threads, processes and machines: SQLite under the data directory by default (one machine, any
number of app processes), any SQLAlchemy URL otherwise (``OFFLOAD_IDEMPOTENCY_DB``, e.g. the Postgres
database of the Dagster instance).

A claim is a row without a run id: whoever inserted it launches the run and records the id; everyone else
waits for that id. A claimer that died between claim and record leaves a stale claim; the next caller takes
it over after ``STALE_CLAIM_SECONDS`` (and first looks for a run already tagged with the key, so a launch
that happened just before the crash is found, not repeated).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from offload import paths

DEFAULT_TTL = timedelta(days=30)  # Trigger.dev's default
STALE_CLAIM_SECONDS = 30.0
MAX_KEY_LENGTH = 256
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^(\d+)([smhdw])$")


def ttl_seconds(ttl: float | timedelta | str) -> float:
    """A TTL in seconds, from seconds, a ``timedelta`` or a string like Trigger.dev's (``"1h"``, ``"7d"``)."""
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, str):
        match = _DURATION.fullmatch(ttl.strip())
        if not match:
            raise ValueError(
                f"idempotency_ttl: {ttl!r} must be a number of seconds or like '30s', '15m', '1h', '7d'"
            )
        seconds = int(match[1]) * _UNITS[match[2]]
    else:
        seconds = float(ttl)
    if seconds <= 0:
        raise ValueError(f"idempotency_ttl: {ttl!r} must be positive")
    return seconds


def check_key(key: str) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"idempotency_key: must be a string of 1-{MAX_KEY_LENGTH} characters")
    return key


def default_url() -> str:
    return os.environ.get("OFFLOAD_IDEMPOTENCY_DB") or f"sqlite:///{paths.data_dir() / 'idempotency.sqlite3'}"


@dataclass(frozen=True)
class Claim:
    """The outcome of ``claim``: either ours to launch (``run_id`` None) or somebody's run."""

    token: str
    run_id: str | None
    took_over: bool = False  # a stale claim: look for a run tagged with the key before launching
    since: float = 0.0  # when the stale claim was made: a run tagged with the key after it is that claim's


def __getattr__(name: str) -> Any:
    """The store and its table load on first use (PEP 562): SQLAlchemy takes longer to import than the rest
    of the client, and an app that never passes an idempotency key never needs it."""
    if name in ("IdempotencyStore", "keys_table"):
        from offload.client import idempotency_store

        return getattr(idempotency_store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
