"""Delayed runs and TTLs, kept by the daemon's run-queue loop (the options: ``offload/trigger_options.py``).

**Delay.** A run tagged ``offload/delay_until`` is created at once, like any run, but offload's run
coordinator does not submit it: it stays ``NOT_STARTED`` (offload's status DELAYED) with its due time in
its tags, in the instance database. Every iteration of Dagster's queued-run daemon (every
``dequeue_interval_seconds``: 1 s in offload's instance) first runs :func:`release_due`, which puts each
due run in the queue (``RUN_ENQUEUED``, as the coordinator would have), and the same iteration then starts
it when it has a slot: a run starts within about one iteration of its due time, and a daemon that was
down releases every overdue run on its first iteration back. A delayed run is never held in the queue
itself: it takes no slot, counts against no limit, and does not stop other runs from starting at once.
Canceling it marks it CANCELED; Dagster's status write is conditional in offload
(``offload/runtime/run_status.py``), so a release racing the cancel cannot bring it back.

**TTL.** A run tagged ``offload/expires_at`` that has not started by then is canceled and tagged
``offload/expired`` (offload's status EXPIRED), and never runs: a due delayed run past its deadline is
expired instead of released, and a queued run is dropped from the daemon's batch before any limit is
counted (:func:`drop_expired`, run where the daemon orders its queue by priority, on the runs it has just
read: no extra query).

Dagster has no hook for either, so :func:`install` (called by offload's run coordinator, which every
process with the instance builds, the daemon first of all) wraps two methods of
``QueuedRunCoordinatorDaemon``: ``run_iteration`` (release first; after it, slots freed during the
interval are refilled: offload/runtime/queue_refill.py) and ``_priority_sort`` (drop expired runs, then
Dagster's sort). tests/test_trigger_options.py checks both on a real daemon.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter
from dagster._core.storage.runs.schema import RunsTable, RunTagsTable
from dagster._core.storage.sqlalchemy_compat import db_select
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from offload.runtime import queue_refill, queues, run_status
from offload.trigger_options import (
    DELAY_UNTIL_TAG,
    EXPIRED_TAG,
    epoch_tag,
    first_attempt,
    is_expired,
    is_held,
)

log = logging.getLogger("offload.runtime.delays")

_dagsters_run_iteration = QueuedRunCoordinatorDaemon.run_iteration
_dagsters_priority_sort = QueuedRunCoordinatorDaemon._priority_sort


def is_delayed(run: dg.DagsterRun) -> bool:
    """A run the coordinator leaves NOT_STARTED for the daemon to release (it carries a due time)."""
    return (
        run.status == DagsterRunStatus.NOT_STARTED
        and first_attempt(run.tags)
        and epoch_tag(run.tags, DELAY_UNTIL_TAG) is not None
    )


def hold(instance: dg.DagsterInstance, run: dg.DagsterRun, cls: type) -> None:
    """Say in the run's log why it has not been queued (the run stays NOT_STARTED)."""
    due = epoch_tag(run.tags, DELAY_UNTIL_TAG) or 0.0
    when = datetime.fromtimestamp(due, tz=UTC).isoformat(timespec="milliseconds")
    instance.report_engine_event(f"Delayed until {when}.", run, EngineEventData(), cls=cls)


def expire(instance: dg.DagsterInstance, run: dg.DagsterRun, now: float) -> None:
    """Cancel ``run``, which outlived its TTL without starting, and tag it expired (status EXPIRED)."""
    instance.add_run_tags(run.run_id, {EXPIRED_TAG: f"{now:.3f}"})
    instance.report_run_canceled(run, message="Expired: not started within its TTL.")


def _delayed_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """The NOT_STARTED runs that carry a due time. Read by their tag row first: the daemon asks every
    second, and NOT_STARTED also holds every run that resumes a wait (a thousand waiting runs are a
    thousand run bodies to read, for none of them delayed)."""
    storage = run_status._sql_run_storage(instance.run_storage)
    if storage is None:  # not a SQL run storage: every NOT_STARTED run, filtered by the caller
        return list(instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.NOT_STARTED])))
    query = (
        db_select([RunsTable.c.run_id])
        .select_from(RunsTable.join(RunTagsTable, RunsTable.c.run_id == RunTagsTable.c.run_id))
        .where(
            (RunsTable.c.status == DagsterRunStatus.NOT_STARTED.value)
            & (RunTagsTable.c.key == DELAY_UNTIL_TAG)
        )
    )
    with storage.connect() as connection:
        ids = [row[0] for row in connection.execute(query)]
    runs: list[dg.DagsterRun] = []
    for start in range(0, len(ids), 500):
        runs += instance.get_runs(RunsFilter(run_ids=ids[start : start + 500]))
    return runs


def release_due(instance: dg.DagsterInstance, now: float) -> int:
    """Queue every delayed run that is due (expire it instead when past its TTL); how many were queued."""
    released = 0
    for run in _delayed_runs(instance):
        if not is_delayed(run) or is_held(run.tags, now):
            continue
        if is_expired(run.tags, now):
            expire(instance, run, now)
            continue
        instance.report_dagster_event(DagsterEvent.job_enqueue(run), run_id=run.run_id)
        released += 1
    return released


def drop_expired(
    instance: dg.DagsterInstance, runs: Iterable[dg.DagsterRun], now: float
) -> list[dg.DagsterRun]:
    """``runs`` (queued) without those past their TTL, which are expired."""
    live = []
    for run in runs:
        if is_expired(run.tags, now):
            expire(instance, run, now)
        else:
            live.append(run)
    return live


def _run_iteration(
    self: QueuedRunCoordinatorDaemon,
    workspace_process_context: Any,
    fixed_iteration_time: float | None = None,
) -> Iterator[Any]:
    began = time.monotonic()
    instance = workspace_process_context.instance
    self._offload_instance = instance  # type: ignore[attr-defined]  # for _priority_sort
    queues.refresh(instance)  # the queue limits set at run time, for this iteration's counts
    try:
        released = release_due(instance, fixed_iteration_time or time.time())
        if released:
            self._logger.info("Released %d delayed runs to the queue.", released)
    except Exception:  # the queue must go on even if this pass fails; it is retried next iteration
        log.exception("releasing delayed runs failed")
    yield from _dagsters_run_iteration(self, workspace_process_context, fixed_iteration_time)
    if fixed_iteration_time is None:  # a test's frozen clock drives single iterations
        yield from queue_refill.refill(
            instance, lambda: _dagsters_run_iteration(self, workspace_process_context, None), began
        )


def _priority_sort(self: QueuedRunCoordinatorDaemon, runs: Iterable[dg.DagsterRun]) -> list[dg.DagsterRun]:
    instance = getattr(self, "_offload_instance", None)
    if instance is not None:
        try:
            runs = drop_expired(instance, list(runs), time.time())
        except Exception:
            log.exception("expiring queued runs failed")
    return _dagsters_priority_sort(self, runs)


def install() -> None:
    """Wrap the queued-run daemon's iteration and sort in this process (module docstring)."""
    QueuedRunCoordinatorDaemon.run_iteration = _run_iteration  # type: ignore[method-assign,assignment]
    QueuedRunCoordinatorDaemon._priority_sort = _priority_sort  # type: ignore[method-assign]
