"""Trigger.dev's per-trigger options (``delay``, ``ttl``, ``priority``, ``max_duration``), checked and
turned into the run tags that carry them: pure functions, so every rule is tested without a server.

A run's options travel as tags because tags are stored with the run in the instance database (they survive
restarts of every process) and every process that handles the run reads them: offload's run coordinator
holds a delayed run, the daemon releases it when due and expires a queued run past its TTL
(``offload/runtime/delays.py``), Dagster's queue orders by ``dagster/priority`` and its run monitor
enforces ``dagster/max_runtime``. Times are absolute (seconds since the epoch, UTC), computed from the
triggering process's clock.

* ``delay``: ``"30s"``, ``"2h"``, ``"1h30m"``, a number of seconds, a ``timedelta``, or a timezone-aware
  ``datetime`` (the due time). A due time not in the future is no delay at all: the run is queued now.
* ``ttl``: the run must start within this long of becoming due (of the trigger, without a delay), else
  it is EXPIRED and never runs. Trigger.dev counts a delayed run's TTL from the end of its delay too.
* ``priority``: an integer; among runs waiting for the same slots, higher starts first (Dagster's
  ``dagster/priority`` tag; Trigger.dev's priority is a time offset, offload's is an order).
* ``max_duration``: seconds (or a duration string) the run may execute, over the job's own limit.
* ``debounce``: ``(key, window)`` or ``{"key": ..., "delay": ...}``: the run is DELAYED by the window and
  collects later triggers with the same key (``offload/runtime/debounce.py``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

DELAY_UNTIL_TAG = "offload/delay_until"  # epoch seconds the run may start at (held until then)
EXPIRES_AT_TAG = "offload/expires_at"  # epoch seconds after which a run that has not started expires
DEBOUNCE_KEY_TAG = "offload/debounce_key"  # triggers of a job with one key collapse (runtime/debounce.py)
EXPIRED_TAG = "offload/expired"  # set (to the time) on a run the TTL canceled: offload's status EXPIRED
PRIORITY_TAG = "dagster/priority"  # Dagster's run queue orders by it (higher first)
PARENT_RUN_TAG = "dagster/parent_run_id"  # Dagster's, on every attempt after a run's first
MAX_RUNTIME_TAG = "dagster/max_runtime"  # Dagster's run monitor (and offload's launcher) enforce it

MAX_DEBOUNCE_KEY = 256
PRIORITY_RANGE = 1_000_000  # |priority| at most this: a bound that keeps the tag a plain small integer

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)"
_DURATION = re.compile(rf"^(?:{_PART})+$")
_PARTS = re.compile(_PART)

Duration = float | int | timedelta | str


def duration_seconds(field: str, value: Duration) -> float:
    """``value`` in seconds (> 0): a number of seconds, a ``timedelta``, or ``"30s"``, ``"2h"``, ``"1h30m"``.
    A bad one raises ``ValueError`` naming ``field`` and the rule."""
    if isinstance(value, bool):
        raise ValueError(f"{field}: {value!r} must be a duration like '30s', '15m', '2h', '1d' or seconds")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        text = value.strip()
        if not _DURATION.fullmatch(text):
            raise ValueError(f"{field}: {value!r} must be a duration like '30s', '15m', '2h', '1h30m', '1d'")
        seconds = sum(float(number) * _UNITS[unit] for number, unit in _PARTS.findall(text))
    elif isinstance(value, int | float):
        seconds = float(value)
    else:
        raise ValueError(f"{field}: {value!r} must be a duration like '30s', '15m', '2h', '1d' or seconds")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{field}: {value!r} must be positive")
    return seconds


def due_time(delay: Duration | datetime, now: float) -> float:
    """The epoch time a run delayed by ``delay`` (a duration, or a timezone-aware ``datetime``) is due."""
    if isinstance(delay, datetime):
        if delay.tzinfo is None or delay.utcoffset() is None:
            raise ValueError(f"delay: {delay.isoformat()} must be timezone-aware (e.g. tzinfo=UTC)")
        return delay.timestamp()
    return now + duration_seconds("delay", delay)


def check_priority(priority: int) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > PRIORITY_RANGE:
        raise ValueError(
            f"priority: {priority!r} must be a whole number from -{PRIORITY_RANGE:,} to {PRIORITY_RANGE:,}"
        )
    return priority


def debounce_tags(debounce: tuple[str, Duration] | Mapping[str, Any], now: float) -> dict[str, str]:
    """The tags of a debounced trigger: its key, and its due time one window from ``now``."""
    if isinstance(debounce, Mapping):
        unknown = set(debounce) - {"key", "delay"}
        if unknown or "key" not in debounce or "delay" not in debounce:
            raise ValueError("debounce: must be (key, window) or {'key': ..., 'delay': ...}")
        key, window = debounce["key"], debounce["delay"]
    elif isinstance(debounce, tuple) and len(debounce) == 2:
        key, window = debounce
    else:
        raise ValueError("debounce: must be (key, window) or {'key': ..., 'delay': ...}")
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_DEBOUNCE_KEY:
        raise ValueError(f"debounce: key {key!r} must be a string of 1-{MAX_DEBOUNCE_KEY} characters")
    seconds = duration_seconds("debounce", window)
    return {DEBOUNCE_KEY_TAG: key, DELAY_UNTIL_TAG: _epoch(now + seconds)}


def option_tags(
    *,
    delay: Duration | datetime | None = None,
    ttl: Duration | None = None,
    priority: int | None = None,
    max_duration: Duration | None = None,
    debounce: tuple[str, Duration] | Mapping[str, Any] | None = None,
    now: float | None = None,
) -> dict[str, str]:
    """The tags that carry these options on a run (nothing for an option not given)."""
    now = time.time() if now is None else now
    tags: dict[str, str] = {}
    due = now
    if debounce is not None:
        if delay is not None:
            raise ValueError("debounce: give either delay or debounce (the window is the delay)")
        tags |= debounce_tags(debounce, now)
        due = float(tags[DELAY_UNTIL_TAG])
    if delay is not None:
        due = due_time(delay, now)
        if due > now:
            tags[DELAY_UNTIL_TAG] = _epoch(due)
        due = max(due, now)
    if ttl is not None:
        tags[EXPIRES_AT_TAG] = _epoch(due + duration_seconds("ttl", ttl))
    if priority is not None:
        tags[PRIORITY_TAG] = str(check_priority(priority))
    if max_duration is not None:
        tags[MAX_RUNTIME_TAG] = str(max(1, math.ceil(duration_seconds("max_duration", max_duration))))
    return tags


def _epoch(seconds: float) -> str:
    return f"{seconds:.3f}"


def epoch_tag(tags: Mapping[str, str], key: str) -> float | None:
    """The epoch time in tag ``key``, or None when absent or unreadable (then the option does not apply)."""
    raw = tags.get(key)
    try:
        value = float(raw) if raw else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def first_attempt(tags: Mapping[str, str]) -> bool:
    """Whether a run with ``tags`` is its family's first attempt. ``delay``, ``ttl`` and ``debounce`` are
    about when a run first starts: a retry, a crash-resume or the run that resumes a wait carries the first
    attempt's tags (with Dagster's parent run tag) and starts when its own turn comes, never delayed,
    expired or debounced by them."""
    return PARENT_RUN_TAG not in tags


def is_held(tags: Mapping[str, str], now: float) -> bool:
    """Whether a run with ``tags`` is delayed past ``now``."""
    due = epoch_tag(tags, DELAY_UNTIL_TAG) if first_attempt(tags) else None
    return due is not None and due > now


def is_expired(tags: Mapping[str, str], now: float) -> bool:
    """Whether a run with ``tags`` that has not started by ``now`` has outlived its TTL."""
    deadline = epoch_tag(tags, EXPIRES_AT_TAG) if first_attempt(tags) else None
    return deadline is not None and now > deadline
