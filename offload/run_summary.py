"""Reading runs for people: a run's link in the UI and the one line that says why it failed.

Shared by the ops alert (``sensors/failure_alerts.py``) and the daily report, so both name a failure the
same way and link to the same page.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

from offload.runtime.dagster_internals import SerializableErrorInfo

DEFAULT_UI_URL = "http://127.0.0.1:3000"

_WRAPPERS = (
    "DagsterExecutionStepExecutionError",
    "DagsterUserCodeExecutionError",
    "DagsterResourceFunctionError",
    "RetryRequested",
)


def run_url(run_id: str, environ: Mapping[str, str] | None = None) -> str:
    """The run's page in the Dagster UI (``OFFLOAD_UI_URL``, default the local UI)."""
    env = os.environ if environ is None else environ
    base = (env.get("OFFLOAD_UI_URL") or DEFAULT_UI_URL).rstrip("/")
    return f"{base}/runs/{run_id}"


def cause_line(error: SerializableErrorInfo | None) -> str:
    """The innermost cause of ``error`` past Dagster's wrappers ("Error occurred while executing op ...",
    "Error executing resource_fn", "Exceeded max_retries of 2"), first line only."""
    if error is None:
        return "unknown error"
    while error.cause is not None and (
        error.cls_name in _WRAPPERS or error.message.startswith("Exceeded max_retries")
    ):
        error = error.cause
    lines = error.message.strip().splitlines()
    return lines[0] if lines else error.cls_name or "unknown error"


def step_error_line(event: dg.DagsterEvent) -> str:
    """A failed step's own error: a ``Failure``'s description, else its innermost cause (``cause_line``)."""
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    return cause_line(data.error)


def run_failure_line(event: dg.DagsterEvent) -> str:
    """Why a run failed outside its steps (a resource that would not set up, a crash): the innermost cause of
    the run failure's error, else its message."""
    data = event.event_specific_data
    error = getattr(data, "error", None)
    return cause_line(error) if error is not None else (event.message or "run failed")


def run_error_lines(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """One ``step: error`` line per failed step of the run, or why the run itself failed."""
    steps = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    lines = [
        f"{record.event_log_entry.step_key}: {step_error_line(record.event_log_entry.get_dagster_event())}"
        for record in steps
        if record.event_log_entry.dagster_event is not None
    ]
    if lines:
        return lines
    failures = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    return [
        run_failure_line(record.event_log_entry.dagster_event)
        if record.event_log_entry.dagster_event is not None
        else record.event_log_entry.message or "run failed"
        for record in failures[-1:]
    ] or ["run failed"]
