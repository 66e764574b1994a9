"""Debounced triggers: triggers of one job with the same key, each within the window of the one before,
collapse into one run, which starts once a window has passed without a new trigger and runs with the
latest trigger's payload and options (``trigger(debounce=(key, window))``; rule in docs/client.md).

Each debounced trigger creates its run as usual, DELAYED by the window (``offload/delay_until``) and
tagged ``offload/debounce_key``. Offload's run coordinator then calls :func:`collapse` before holding it:

* One row per (job, key) in the table ``offload_debounce`` (in the run storage's database, so shared by
  every webserver and gateway process) names the run that collects the key's triggers. Its primary key
  makes the first claim atomic: of two first triggers at once, one inserts, the other joins it.
* A new trigger joins that run while it is still DELAYED, more than :data:`JOIN_MARGIN` before its due
  time and less than :data:`MAX_WAIT` after the key's first trigger: the run's payload and tags become the
  new run's (its due time pushed to the new one, never past the first trigger + ``MAX_WAIT``), the new run
  is deleted, and the trigger gets the collecting run's id. The rewrite is one conditional UPDATE (``WHERE
  status = 'NOT_STARTED'``) with the tag rows in the same transaction, so a run the daemon has released or
  a user canceled meanwhile is never changed.
* Otherwise the new run takes the row over (compare-and-set on the old run id) and collects from then on.

``JOIN_MARGIN``: the daemon releases a due run by reading it, then writing its status and body (Dagster's
status write); a rewrite landing in between would be lost, so a run within a second of its due time is no
longer joined (its trigger starts the next collecting run instead).
"""

from __future__ import annotations

import time

import dagster as dg
import sqlalchemy as sa
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.storage.runs.schema import RunsTable, RunTagsTable
from dagster._core.storage.runs.sql_run_storage import SqlRunStorage
from dagster._serdes import serialize_value
from dagster_shared.record import copy

from offload.runtime import run_status
from offload.trigger_options import DEBOUNCE_KEY_TAG, DELAY_UNTIL_TAG, epoch_tag, first_attempt

JOIN_MARGIN = 1.0  # seconds before its due time a collecting run stops taking new triggers
MAX_WAIT = 600.0  # seconds after a key's first trigger its run stops being pushed back (Trigger.dev's 10 min)
ATTEMPTS = 10

_metadata = sa.MetaData()
debounce_table = sa.Table(
    "offload_debounce",
    _metadata,
    sa.Column("job", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(256), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False),  # the run collecting this key's triggers
    sa.Column("first_at", sa.Float, nullable=False),  # when that run was first triggered
)
_created: set[int] = set()


def key_of(run: dg.DagsterRun) -> str | None:
    """The run's debounce key; None for a later attempt (offload/trigger_options.py ``first_attempt``)."""
    return run.tags.get(DEBOUNCE_KEY_TAG) if first_attempt(run.tags) else None


def _storage(instance: dg.DagsterInstance) -> SqlRunStorage:
    storage = run_status._sql_run_storage(instance.run_storage)
    if storage is None:
        raise RuntimeError("debounce needs a SQL run storage (SQLite or Postgres)")
    if id(storage) not in _created:
        with storage.connect() as connection:
            _metadata.create_all(connection, checkfirst=True)
        _created.add(id(storage))
    return storage


def collapse(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dg.DagsterRun:
    """The run that ``run`` (new, NOT_STARTED, with a debounce key) collapses into: ``run`` itself when it
    starts a new collection, else the collecting run, rewritten with ``run``'s payload and tags (and
    ``run`` deleted)."""
    storage = _storage(instance)
    key, job, now = key_of(run) or "", run.job_name, time.time()
    where = (debounce_table.c.job == job) & (debounce_table.c.key == key)
    select = sa.select(debounce_table.c.run_id, debounce_table.c.first_at)
    for _ in range(ATTEMPTS):
        with storage.connect() as connection:
            row = connection.execute(select.where(where)).first()
        if row is None:
            try:
                with storage.connect() as connection:
                    claim = {"job": job, "key": key, "run_id": run.run_id, "first_at": now}
                    connection.execute(debounce_table.insert().values(**claim))
            except sa.exc.IntegrityError:
                continue  # another first trigger won: join it
            return run
        held_id, first_at = row
        held = instance.get_run_by_id(held_id)
        if held is not None and _joinable(held, first_at, now) and _rewrite(storage, held, run, first_at):
            instance.delete_run(run.run_id)
            current = instance.get_run_by_id(held_id)
            assert current is not None
            return current
        with storage.connect() as connection:
            taken = connection.execute(
                debounce_table.update()
                .where(where & (debounce_table.c.run_id == held_id))
                .values(run_id=run.run_id, first_at=now)
            ).rowcount
        if taken:
            return run
    raise RuntimeError(f"debounce key {key!r} of {job}: too many concurrent triggers, try again")


def _joinable(held: dg.DagsterRun, first_at: float, now: float) -> bool:
    due = epoch_tag(held.tags, DELAY_UNTIL_TAG)
    return (
        held.status == DagsterRunStatus.NOT_STARTED
        and due is not None
        and due - now > JOIN_MARGIN
        and now - first_at < MAX_WAIT
    )


def _rewrite(storage: SqlRunStorage, held: dg.DagsterRun, new: dg.DagsterRun, first_at: float) -> bool:
    """Give ``held`` the payload and tags of ``new`` (its due time capped at ``first_at + MAX_WAIT``), if it
    is still NOT_STARTED; whether it was."""
    tags = dict(new.tags)
    due = epoch_tag(tags, DELAY_UNTIL_TAG) or time.time()
    tags[DELAY_UNTIL_TAG] = f"{min(due, first_at + MAX_WAIT):.3f}"
    body = copy(held, run_config=new.run_config, tags=tags)
    not_started = (RunsTable.c.run_id == held.run_id) & (
        RunsTable.c.status == DagsterRunStatus.NOT_STARTED.value
    )
    with run_status._transaction(storage) as connection:  # the body and the tag rows together
        written = connection.execute(
            RunsTable.update().where(not_started).values(run_body=serialize_value(body))
        ).rowcount
        if not written:
            return False
        connection.execute(RunTagsTable.delete().where(RunTagsTable.c.run_id == held.run_id))
        rows = [{"run_id": held.run_id, "key": k, "value": v} for k, v in tags.items()]
        connection.execute(RunTagsTable.insert(), rows)
    return True
