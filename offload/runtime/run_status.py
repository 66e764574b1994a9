"""A finished run's status is final: the first SUCCESS, FAILURE or CANCELED recorded for a run stands.

Dagster writes a run's status unconditionally (``SqlRunStorage.handle_run_event``: ``UPDATE runs SET
status = ...``), whoever writes it. Two writers that each read the run as in progress can therefore both
end it, and the later one wins. Seen once in four max-runtime runs: the worker stored ``RUN_SUCCESS``
(email sent, usage billed); the daemon's run monitor, holding the run record it had read as STARTED a
moment earlier, then stored ``RUN_CANCELING`` (a finished run back in progress) and offload's launcher
recorded ``RUN_FAILURE "exceeded max runtime"`` 2 ms after the success. The failed status freed the
run's idempotency key, so a retried trigger would have run and billed again.

:func:`handle_run_event` is Dagster's status write with one change: it updates the run only if its status
is not final, in one statement whose row count says whether it did. ``OffloadInstance`` (``offload/
reexecution.py``) installs it in place of its run storage's own (:func:`install`), so it is in every
process that opens the instance (run worker, daemon, webserver), and writes it before storing any status
event: a run that has reached a final status takes no other (not FAILURE after SUCCESS, not CANCELING
after SUCCESS, not a second FAILURE); the refused event is stored as an engine event that says so, never
as the status event, so run-failure sensors and the retry daemon, which read status events, never see
it. Between two writers racing to end a run, whichever writes first wins. Dagster's own second write of
the same event (its ``handle_new_event``) is skipped when the instance's write of that event object went
through (:func:`written`: it would write the same values again, a read and a transaction per status
event); any other caller's status write goes through the same check, so a write of an in-progress status
(CANCELING) can never land after another writer finished the run either.

**Why a conditional UPDATE** (``UPDATE runs SET ... WHERE run_id = :id AND status NOT IN (final)``)
rather than a re-read under a lock: the writers are separate processes, so no lock in Python spans them,
and SQLite has no ``SELECT ... FOR UPDATE``. One statement is atomic in both storages Dagster offers
here: SQLite takes its database write lock before it evaluates the WHERE clause (the statement opens a
write transaction first), so a second writer waits and then reads the committed status; Postgres locks
the row, and under READ COMMITTED an UPDATE that waited on a concurrent writer re-evaluates its WHERE
clause on the row's newest version, so it matches nothing once the first writer committed a final status.
The run's status, times and a failure's reason tag are written in one transaction, so no reader sees a
finished run without its end time or a failed one without its reason.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from datetime import datetime

from dagster._core.events import (
    EVENT_TYPE_TO_PIPELINE_RUN_STATUS,
    DagsterEvent,
    DagsterEventType,
    JobFailureData,
    RunFailureReason,
)
from dagster._core.storage.dagster_run import FINISHED_STATUSES, DagsterRunStatus
from dagster._core.storage.legacy_storage import LegacyRunStorage
from dagster._core.storage.runs.base import RunStorage
from dagster._core.storage.runs.schema import RunsTable, RunTagsTable
from dagster._core.storage.runs.sql_run_storage import SqlRunStorage
from dagster._core.storage.sqlalchemy_compat import db_select
from dagster._core.storage.tags import RUN_FAILURE_REASON_TAG
from dagster._serdes import serialize_value
from dagster._time import get_current_datetime
from sqlalchemy.engine import Connection

_FINAL = [status.value for status in FINISHED_STATUSES]
_written = threading.local()  # .event: the DagsterEvent this thread's instance has just written


@contextlib.contextmanager
def written(event: DagsterEvent) -> Iterator[None]:
    """While Dagster stores ``event``, whose status the instance has just written: its repeat of the
    same write (``handle_new_event`` then ``handle_run_event``) is skipped, in this thread only."""
    _written.event = event
    try:
        yield
    finally:
        _written.event = None


def handle_run_event(
    storage: SqlRunStorage, run_id: str, event: DagsterEvent, update_timestamp: datetime | None = None
) -> DagsterRunStatus | None:
    """Dagster's ``SqlRunStorage.handle_run_event`` (the run's status, body, start or end time, and a
    failure's reason tag), written only if the run has not finished, in one transaction.

    Returns None when written (or nothing to write: not a status event, an unknown run), else the final
    status that stands. :func:`install` puts it in the place of the storage's own method, so Dagster's
    write of every status event is this one too: a status write that had read the run as in progress
    can never land after another writer finished it.
    """
    if getattr(_written, "event", None) is event:
        return None  # written a moment ago by the instance, in this thread
    status = EVENT_TYPE_TO_PIPELINE_RUN_STATUS.get(event.event_type)
    run = storage._get_run_by_id(run_id) if status is not None else None  # Dagster's own read
    if status is None or run is None:
        return None
    at = update_timestamp or get_current_datetime()
    updated = run.with_status(status)
    reason = None
    if event.event_type == DagsterEventType.RUN_FAILURE and isinstance(
        event.event_specific_data, JobFailureData
    ):
        failure = event.event_specific_data.failure_reason
        reason = failure.value if failure and failure != RunFailureReason.UNKNOWN else None
    if reason is not None:
        updated = updated.with_tags({**run.tags, RUN_FAILURE_REASON_TAG: reason})
    values: dict[str, object] = {"run_body": serialize_value(updated), "status": status.value}
    values["update_timestamp"] = at
    if storage.has_run_stats_index_cols():
        if event.event_type == DagsterEventType.RUN_START:
            values["start_time"] = at.timestamp()
        if status in FINISHED_STATUSES:
            values["end_time"] = at.timestamp()
    with _transaction(storage) as connection:
        written = connection.execute(
            RunsTable.update()
            .where((RunsTable.c.run_id == run_id) & RunsTable.c.status.notin_(_FINAL))
            .values(**values)
        ).rowcount
        if not written:
            row = connection.execute(
                db_select([RunsTable.c.status]).where(RunsTable.c.run_id == run_id)
            ).first()
            return None if row is None else DagsterRunStatus(row[0])
        if reason is not None:
            tag = (RunTagsTable.c.run_id == run_id) & (RunTagsTable.c.key == RUN_FAILURE_REASON_TAG)
            if not connection.execute(RunTagsTable.update().where(tag).values(value=reason)).rowcount:
                connection.execute(
                    RunTagsTable.insert().values(run_id=run_id, key=RUN_FAILURE_REASON_TAG, value=reason)
                )
    return None


def install(storage: RunStorage) -> SqlRunStorage | None:
    """Make ``storage``'s status writes :func:`handle_run_event`; the SQL storage, or None if not SQL."""
    sql = _sql_run_storage(storage)
    if sql is not None:
        sql.handle_run_event = functools.partial(handle_run_event, sql)  # type: ignore[method-assign,assignment]
    return sql


@contextlib.contextmanager
def _transaction(storage: SqlRunStorage) -> Iterator[Connection]:
    """One transaction: SQLite's run storage opens one per connection; Postgres's connections autocommit
    each statement, so this one asks for a READ COMMITTED transaction (the status and the reason tag
    become visible together)."""
    with storage.connect() as connection:
        if connection.dialect.name == "sqlite":
            yield connection
            return
        transactional = connection.execution_options(isolation_level="READ COMMITTED")
        with transactional.begin():
            yield transactional


def _sql_run_storage(storage: RunStorage) -> SqlRunStorage | None:
    """The SQL run storage behind ``storage`` (a composite ``storage:`` block wraps it)."""
    if isinstance(storage, LegacyRunStorage):
        storage = storage._storage.run_storage  # no public accessor
    return storage if isinstance(storage, SqlRunStorage) else None
