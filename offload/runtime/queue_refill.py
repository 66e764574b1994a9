"""A freed slot is filled within a tenth of a second while runs are queued, not at the daemon's next look.

Dagster's queued-run daemon starts queued runs once per iteration, every ``dequeue_interval_seconds`` (1 s in
offload's instance; the loop waits in half-second steps). Under a backlog that is the pace of the whole
queue: the runs at once are capped (10 per nesting level in the embedded instance), short runs end well
within the second, and their slots stay empty until the next look. With 10 webhook events a second and
runs of ~0.4 s, the daemon started 6-7 runs a second and the backlog grew for as long as the load lasted.

:func:`refill` runs after each of the daemon's iterations, in the daemon's own thread (so no run is ever
started twice: the daemon stays the only process that starts queued runs), for the rest of the interval:
while runs are queued, it counts the runs in progress every 0.1 s (one count query) and runs the
iteration again when that count has dropped, so a slot freed by a finished run is filled at once. With
nothing queued it returns at once: an idle daemon does no more work than before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES, DagsterRunStatus, RunsFilter

POLL_SECONDS = 0.1  # how often the runs in progress are counted while runs are queued
WINDOW_SECONDS = 0.9  # refilling stops this long after the iteration began, before the daemon's next one


def refill(
    instance: dg.DagsterInstance, iteration: Callable[[], Iterator[Any]], began: float
) -> Iterator[Any]:
    """Run ``iteration`` (the daemon's dequeue) again each time the runs in progress drop, while any run
    is queued, until ``WINDOW_SECONDS`` after ``began`` (a ``time.monotonic()``)."""
    in_progress = _count(instance, IN_PROGRESS_RUN_STATUSES)
    while time.monotonic() - began < WINDOW_SECONDS and _count(instance, [DagsterRunStatus.QUEUED]):
        time.sleep(POLL_SECONDS)
        yield None  # the daemon's controller heartbeats between yields
        now = _count(instance, IN_PROGRESS_RUN_STATUSES)
        if now < in_progress:
            yield from iteration()
            now = _count(instance, IN_PROGRESS_RUN_STATUSES)
        in_progress = now


def _count(instance: dg.DagsterInstance, statuses: list[DagsterRunStatus]) -> int:
    return instance.get_runs_count(RunsFilter(statuses=statuses))
