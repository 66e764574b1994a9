"""Queue limits changed at run time, without a deploy: ``offload queues set NAME LIMIT``,
``Client.set_queue_limit(name, limit)``, or the Dagster UI's pools page.

A ``Queue`` declares its limits in job tags (``offload/runtime/concurrency.py``): the tag key carries the
declared limit (``offload/limit-2: batch``). A limit set at run time overrides the declared one for every
run of that queue, on every nesting level and for every key's copy of it: any positive integer up to
:data:`MAX_LIMIT`, effective on the daemon's next look at the queue (every second) and for the next
start-at-once. Runs already executing are never stopped by a lower limit; new ones wait until the queue
is under it.

**Where the limits live.** In the instance database as Dagster concurrency pools named
``offload.queue.<name>`` (runs of the queue at once) and ``offload.key.<name>`` (runs per key at once):
Dagster already stores, shows (UI: Deployment, Concurrency) and edits them (GraphQL ``setConcurrencyLimit``,
``dagster instance concurrency set``), in SQLite and Postgres. No op uses these pools, so Dagster's op
concurrency never blocks on them; offload reads them as run limits.

**How they apply.** :class:`QueueLimitsCounter` is Dagster's ``TagConcurrencyLimitsCounter`` (the object
the run queue and offload's coordinator count limits with) that takes each ``offload/limit-N`` and
``offload/key-limit-N`` tag's limit from the pool when one is set, else from ``N``. :func:`install` puts
it in the queued-run daemon's place of Dagster's, fed with the limits :func:`refresh` reads at the start of
each daemon iteration (``offload/runtime/delays.py`` calls it).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from dagster._daemon.run_coordinator import queued_run_coordinator_daemon
from dagster._utils.tags import TagConcurrencyLimitsCounter

from offload.runtime.concurrency import (
    DEPTH_TAG,
    KEY_LIMIT_PREFIX,
    KEY_POOL,
    LIMIT_PREFIX,
    QUEUE_POOL,
    QUEUE_TAG,
    check_limit,
    is_queue_pool,
    pool_name,
)

__all__ = ["QueueLimitsCounter", "check_limit", "is_queue_pool", "pool_name", "read_limits", "set_limit"]

log = logging.getLogger("offload.runtime.queues")

Limits = Mapping[str, int]  # pool name -> limit

_daemon_limits: dict[str, int] = {}


def read_limits(instance: dg.DagsterInstance) -> dict[str, int]:
    """The run-time queue limits set on ``instance`` (pool name -> limit)."""
    return {
        pool.name: pool.limit
        for pool in instance.event_log_storage.get_pool_limits()
        if pool.name.startswith((QUEUE_POOL, KEY_POOL)) and not pool.from_default and pool.limit is not None
    }


def set_limit(instance: dg.DagsterInstance, queue: str, limit: int, *, per_key: bool = False) -> None:
    instance.event_log_storage.set_concurrency_slots(pool_name(queue, per_key=per_key), check_limit(limit))


def clear_limit(instance: dg.DagsterInstance, queue: str, *, per_key: bool = False) -> None:
    """Back to the limit the queue declares."""
    instance.event_log_storage.delete_concurrency_limit(pool_name(queue, per_key=per_key))


def _queue_of(value: str) -> str:
    """``batch`` of a limit tag's value: ``batch``, ``batch@1``, ``batch:acme``, ``video:u7@2``."""
    return value.split(":", 1)[0].split("@", 1)[0]


def limit_of(key: str, value: str, limits: Limits) -> int | None:
    """The limit an offload limit tag stands for (run-time pool, else declared), None for other tags."""
    for prefix, pool in ((KEY_LIMIT_PREFIX, KEY_POOL), (LIMIT_PREFIX, QUEUE_POOL)):
        if key.startswith(prefix) and key[len(prefix) :].isdigit():
            return limits.get(f"{pool}{_queue_of(value)}", int(key[len(prefix) :]))
    return None


class QueueLimitsCounter(TagConcurrencyLimitsCounter):
    """Dagster's counter, with offload's queue limits read from ``limits`` first (module docstring)."""

    def __init__(
        self, tag_concurrency_limits: Sequence[Mapping[str, Any]], in_progress: Sequence[Any], limits: Limits
    ):
        self._limits = dict(limits)
        self._slot_counts: Counter[tuple[str, str]] = Counter()
        super().__init__(list(tag_concurrency_limits), list(in_progress))

    def is_blocked(self, item: Any) -> bool:
        if any(self._slot_counts[slot] >= limit for slot, limit in slots(item.tags, self._limits)):
            return True
        return super().is_blocked(_Tagged(_other_tags(item.tags)))  # type: ignore[arg-type]

    def update_counters_with_launched_item(self, item: Any) -> None:
        super().update_counters_with_launched_item(_Tagged(_other_tags(item.tags)))  # type: ignore[arg-type]
        for slot, _ in slots(item.tags, self._limits):
            self._slot_counts[slot] += 1


def slots(tags: Mapping[str, str], limits: Limits) -> list[tuple[tuple[str, str], int]]:
    """The queue slots a run with ``tags`` takes, each with its limit: one per ``offload/limit-N`` and
    ``offload/key-limit-N`` tag (the run-time limit of its queue, else N); for a queue that declares no
    limit but has one set at run time, its queue on its nesting level."""
    found = [((key, value), limit) for key, value in tags.items() if (limit := limit_of(key, value, limits))]
    queue = tags.get(QUEUE_TAG)
    if queue and not any(key.startswith(LIMIT_PREFIX) for key in tags):
        limit = limits.get(f"{QUEUE_POOL}{queue}")
        if limit is not None:
            found.append(((QUEUE_TAG, f"{queue}@{tags.get(DEPTH_TAG, '0')}"), limit))
    return found


def _other_tags(tags: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items() if not k.startswith((LIMIT_PREFIX, KEY_LIMIT_PREFIX))}


class _Tagged:
    """What Dagster's counter reads of a run: its tags."""

    def __init__(self, tags: Mapping[str, str]):
        self.tags = tags


def refresh(instance: dg.DagsterInstance) -> None:
    """Read the run-time limits for this process's daemon (once per daemon iteration)."""
    global _daemon_limits
    try:
        _daemon_limits = read_limits(instance)
    except Exception:  # keep the last limits read: the queue must go on
        log.exception("reading queue limits failed")


def _daemon_counter(rules: Sequence[Mapping[str, Any]], in_progress: Sequence[Any]) -> QueueLimitsCounter:
    return QueueLimitsCounter(rules, in_progress, _daemon_limits)


def install() -> None:
    """Make the queued-run daemon in this process count limits with :class:`QueueLimitsCounter`."""
    queued_run_coordinator_daemon.TagConcurrencyLimitsCounter = _daemon_counter  # type: ignore[misc,assignment]
