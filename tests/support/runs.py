"""Reading a finished run: a step's output metadata, its failure texts, the steps that started; and moving a
run in time, to seed run history."""

from __future__ import annotations

import datetime as dt
from typing import Any

import dagster as dg


def output_metadata(result: dg.ExecuteInProcessResult, step_key: str | None = None) -> dict[str, Any]:
    """The metadata of the (only, or ``step_key``'s) successful output, as plain values."""
    events = [e for e in result.all_events if e.is_successful_output and step_key in (None, e.step_key)]
    assert len(events) == 1, [e.step_key for e in events]
    metadata = events[0].step_output_data.metadata
    return {key: getattr(value, "value", value) for key, value in metadata.items()}


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Every failed step's error message and failure description, joined."""
    texts = []
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        texts.append(data.error.message if data.error else "")
        if data.user_failure_data and data.user_failure_data.description:
            texts.append(data.user_failure_data.description)
    return " ".join(texts)


def started_steps(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records
    return {record.event_log_entry.step_key or "" for record in records}


def set_run_times(
    instance: dg.DagsterInstance,
    run_id: str,
    created: dt.datetime,
    seconds: float | None = None,
) -> None:
    """Move a finished run to ``created`` (its start too), lasting ``seconds``: history made on demand.
    The run storage keeps ``create_timestamp`` as naive UTC and start/end as Unix times."""
    from dagster._core.storage.runs.schema import RunsTable
    from dagster._core.storage.runs.sql_run_storage import SqlRunStorage

    storage = instance.run_storage
    assert isinstance(storage, SqlRunStorage), type(storage)
    values: dict[str, Any] = {"create_timestamp": created.astimezone(dt.UTC).replace(tzinfo=None)}
    if seconds is not None:
        values |= {"start_time": created.timestamp(), "end_time": created.timestamp() + seconds}
    with storage.connect() as connection:
        connection.execute(RunsTable.update().where(RunsTable.c.run_id == run_id).values(**values))
