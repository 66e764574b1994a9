"""Concurrency limits: declared next to each job as a ``Queue``, enforced by Dagster's run queue.

A job puts ``Queue(...).job_tags()`` in its tags: ``Queue("batch", limit=2)`` lets two ``batch`` runs
execute at once; ``Queue("video", key_field="user_id", key_limit=2)`` lets two run per ``user_id``.
Dagster's QueuedRunCoordinator enforces *tag* limits written in the instance config. So that config never
names a job (``offload/`` imports no job, and the instance file is written before any code loads), its rules
are generic and the limit is part of the tag key: a run tagged ``offload/limit-2: batch`` waits while two
other runs tagged ``offload/limit-2: batch`` are in progress (``applyLimitPerUniqueValue``). There is one
rule per supported limit (``LIMITS``); the value says whose limit it is.

Child runs (a step that triggers a job and waits for its output) could deadlock a limited queue: a parent
holds its slot while it triggers its children and after it resumes (while it waits it is suspended and holds
none: offload/client/children.py), and its children need slots too. So every slot belongs to a nesting level:
``offload/depth`` is 0 for a run started from outside and parent + 1 for a child, each level has its own
``LEVEL_SLOTS`` runs at once, and a child's queue and key tags carry ``@<depth>``. A child then never
waits for a slot held by an ancestor, and the deepest level always makes progress. The price: a queue
limit holds per level (a ``limit=1`` queue runs one top-level run and one child run at once).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from offload.keys import ID_RULE, is_valid_id

QUEUE_TAG = "offload/queue"
DEPTH_TAG = "offload/depth"
KEY_FIELD_TAG = "offload/key_field"  # declaration: the payload field whose value is the concurrency key
KEY_LIMIT_TAG = "offload/key_limit"  # declaration: runs per key at once
LIMIT_PREFIX = "offload/limit-"  # offload/limit-<N>: <queue>       (job tag)
KEY_LIMIT_PREFIX = "offload/key-limit-"  # offload/key-limit-<N>: <queue>:<key>  (added by the client)

# Run-time limits (offload/runtime/queues.py) live in Dagster concurrency pools with these names.
QUEUE_POOL = "offload.queue."
KEY_POOL = "offload.key."
MAX_LIMIT = 10_000  # Dagster stores one row per slot of a pool

LIMITS = (*range(1, 11), 12, 15, 20, 25, 30, 40, 50, 100)
LEVEL_SLOTS = 10  # runs at once per nesting level; the embedded instance's only global cap


def limit_tag(limit: int) -> str:
    return f"{LIMIT_PREFIX}{limit}"


def key_limit_tag(limit: int) -> str:
    return f"{KEY_LIMIT_PREFIX}{limit}"


def _check_limit(field: str, value: int | None) -> None:
    if value is not None and value not in LIMITS:
        raise ValueError(f"{field}: {value!r} must be one of {', '.join(map(str, LIMITS))}")


@dataclass(frozen=True)
class Queue:
    """Where a job's runs wait for a slot. ``name`` is shared by jobs that share their limits."""

    name: str
    limit: int | None = None  # runs of this queue executing at once (per nesting level)
    key_field: str | None = (
        None  # payload field whose value keys ``key_limit`` (or trigger(concurrency_key=))
    )
    key_limit: int | None = None  # runs per key executing at once

    def __post_init__(self) -> None:
        if not is_valid_id(self.name):
            raise ValueError(f"queue name: {self.name!r} {ID_RULE}")
        _check_limit("limit", self.limit)
        _check_limit("key_limit", self.key_limit)
        if self.key_field is not None and self.key_limit is None:
            raise ValueError(f"key_field: {self.key_field!r} needs a key_limit")

    def job_tags(self) -> dict[str, str]:
        """Tags for the job definition; Dagster copies them onto every run, whoever launches it."""
        tags = {QUEUE_TAG: self.name, DEPTH_TAG: "0"}
        if self.limit is not None:
            tags[limit_tag(self.limit)] = self.name
        if self.key_limit is not None:
            tags[KEY_LIMIT_TAG] = str(self.key_limit)
        if self.key_field is not None:
            tags[KEY_FIELD_TAG] = self.key_field
        return tags


def run_tags(
    job_tags: Mapping[str, str],
    payload: Mapping[str, Any],
    *,
    concurrency_key: str | None = None,
    depth: int = 0,
) -> dict[str, str]:
    """The concurrency tags of one run of a job with ``job_tags``: its key's limit and its nesting level.

    ``concurrency_key`` (else the payload's ``key_field``) picks the key. A key given for a queue without
    a ``key_limit`` gives that key its own copy of the queue's ``limit`` (Trigger.dev's ``concurrencyKey``).
    """
    tags = {DEPTH_TAG: str(depth)}
    queue = job_tags.get(QUEUE_TAG)
    if queue is None:
        if concurrency_key is not None:
            raise ValueError("concurrency_key: this job declares no queue, so there is no limit to key")
        return tags
    level = f"@{depth}" if depth else ""
    queue_limits = [key for key in job_tags if key.startswith(LIMIT_PREFIX)]
    field = job_tags.get(KEY_FIELD_TAG)
    key = concurrency_key if concurrency_key is not None else payload.get(field) if field else None
    key_limit = job_tags.get(KEY_LIMIT_TAG)
    if key is not None and key_limit is None:
        if not queue_limits:
            raise ValueError(f"concurrency_key: queue {queue!r} has no limit to apply per key")
        return tags | {name: f"{queue}:{key}{level}" for name in queue_limits}
    if key is not None and key_limit is not None:
        tags[key_limit_tag(int(key_limit))] = f"{queue}:{key}{level}"
    return tags | {name: f"{queue}{level}" for name in queue_limits}


def run_coordinator_config(level_slots: int = LEVEL_SLOTS) -> dict[str, Any]:
    """The instance's ``run_coordinator`` block: Dagster's run queue with the rules behind every ``Queue``,
    through offload's coordinator, which starts a run at once when it would not wait
    (offload/runtime/coordinator.py).

    ``max_concurrent_runs`` is off because it would count parents and children alike (the deadlock above);
    the ``offload/depth`` rule caps runs per level instead. The daemon looks for runs to start every second:
    Dagster's default, 5 s, would be most of a queued run's start latency."""
    return {
        "module": "offload.runtime.coordinator",
        "class": "OffloadRunCoordinator",
        "config": {
            "start_at_once": True,
            "max_concurrent_runs": -1,
            "dequeue_interval_seconds": 1,
            "dequeue_use_threads": True,
            "dequeue_num_workers": 4,
            "tag_concurrency_limits": tag_concurrency_limits(level_slots),
        },
    }


def tag_concurrency_limits(level_slots: int = LEVEL_SLOTS) -> list[dict[str, Any]]:
    """The QueuedRunCoordinator rules behind every ``Queue``: one per supported limit, plus the levels."""

    def rule(key: str, limit: int) -> dict[str, Any]:
        return {"key": key, "value": {"applyLimitPerUniqueValue": True}, "limit": limit}

    rules = [rule(DEPTH_TAG, level_slots)]
    for prefix in (LIMIT_PREFIX, KEY_LIMIT_PREFIX):
        rules += [rule(f"{prefix}{n}", n) for n in LIMITS]
    return rules


def pool_name(queue: str, *, per_key: bool = False) -> str:
    """The pool that holds ``queue``'s run-time limit (its per-key limit with ``per_key``)."""
    if not isinstance(queue, str) or not is_valid_id(queue):
        raise ValueError(f"queue name: {queue!r} {ID_RULE}")
    return f"{KEY_POOL if per_key else QUEUE_POOL}{queue}"


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit: {limit!r} must be a whole number from 1 to {MAX_LIMIT:,}")
    return limit


def is_queue_pool(name: str) -> bool:
    return name.startswith((QUEUE_POOL, KEY_POOL))
