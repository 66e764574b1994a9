"""A finished run's status is final: the first SUCCESS, FAILURE or CANCELED recorded for a run stands.

Dagster writes a run's status unconditionally (``SqlRunStorage.handle_run_event``: ``UPDATE runs SET
status = ...``), whoever writes it. Two writers that each read the run as in progress can therefore both
end it, and the later one wins. Seen once in four max-runtime runs: the worker stored ``RUN_SUCCESS``
(email sent, usage billed); the daemon's run monitor, holding the run record it had read as STARTED a
moment earlier, then stored ``RUN_CANCELING`` (a finished run back in progress) and offload's launcher
recorded ``RUN_FAILURE "exceeded max runtime"`` 2 ms after the success. The failed status freed the
run's idempotency key, so a retried trigger would have run and billed again.

:func:`claim` makes every status change a compare-and-set on the runs table, and
``OffloadInstance.handle_new_event`` (``offload/reexecution.py``) claims before storing any event that
changes a run's status: a run that has reached a final status takes no other (not FAILURE after SUCCESS,
not CANCELING after SUCCESS, not a second FAILURE); the refused event is stored as an engine event that
says so, never as the status event, so run-failure sensors and the retry daemon, which read status
events, never see it. Between two writers racing to end a run, whichever claims first wins.

**Why a conditional UPDATE** (``UPDATE runs SET status = :new WHERE run_id = :id AND status NOT IN
(final)``, the row count saying who won) rather than a re-read under a lock: the writers are separate
processes (the run worker, the daemon, the webserver), so no lock in Python spans them, and SQLite has
no ``SELECT ... FOR UPDATE``. One statement is atomic in both storages Dagster offers here: SQLite takes
its database write lock before it evaluates the WHERE clause (the statement opens a write transaction
first), so a second writer waits and then reads the committed status; Postgres locks the row, and under
its default READ COMMITTED isolation an UPDATE that waited on a concurrent writer re-evaluates its WHERE
clause on the row's newest version, so it matches nothing once the first writer committed a final status.
The claim writes the status with its start or end time; Dagster then writes the rest of the run's row
(its body, a failure's reason tag) as it always does.
"""

from __future__ import annotations

from datetime import datetime

from dagster._core.events import EVENT_TYPE_TO_PIPELINE_RUN_STATUS, DagsterEvent, DagsterEventType
from dagster._core.storage.dagster_run import FINISHED_STATUSES, DagsterRunStatus
from dagster._core.storage.legacy_storage import LegacyRunStorage
from dagster._core.storage.runs.base import RunStorage
from dagster._core.storage.runs.schema import RunsTable
from dagster._core.storage.runs.sql_run_storage import SqlRunStorage

_FINAL = [status.value for status in FINISHED_STATUSES]


def new_status(event: DagsterEvent) -> DagsterRunStatus | None:
    """The run status ``event`` moves its run to, or None if it changes no status."""
    return EVENT_TYPE_TO_PIPELINE_RUN_STATUS.get(event.event_type) if event.is_job_event else None


def claim(storage: RunStorage, run_id: str, event: DagsterEvent, at: datetime) -> DagsterRunStatus | None:
    """Set ``run_id``'s status as ``event`` (stored at ``at``) does, unless the run has finished already.

    The status is written with the times Dagster writes with it (start time on RUN_START, end time with
    a final status), so no reader sees a finished run without its end time. Returns None when the status
    is ours (or the run is unknown: nothing to protect, Dagster ignores the status part of such an
    event), else the final status that stands. A run storage that is not SQL (none offload configures)
    is left to Dagster's unconditional write.
    """
    status = new_status(event)
    sql = _sql_run_storage(storage)
    if status is None or sql is None:
        return None
    values: dict[str, object] = {"status": status.value, "update_timestamp": at}
    if sql.has_run_stats_index_cols():
        if event.event_type == DagsterEventType.RUN_START:
            values["start_time"] = at.timestamp()
        if status in FINISHED_STATUSES:
            values["end_time"] = at.timestamp()
    with sql.connect() as connection:
        claimed = connection.execute(
            RunsTable.update()
            .where((RunsTable.c.run_id == run_id) & RunsTable.c.status.notin_(_FINAL))
            .values(**values)
        ).rowcount
        if claimed:
            return None
        row = connection.execute(
            RunsTable.select().with_only_columns(RunsTable.c.status).where(RunsTable.c.run_id == run_id)
        ).first()
    return None if row is None else DagsterRunStatus(row[0])


def _sql_run_storage(storage: RunStorage) -> SqlRunStorage | None:
    """The SQL run storage behind ``storage`` (a composite ``storage:`` block wraps it)."""
    if isinstance(storage, LegacyRunStorage):
        storage = storage._storage.run_storage  # no public accessor
    return storage if isinstance(storage, SqlRunStorage) else None
